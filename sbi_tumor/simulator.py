"""The batched tumour simulator that sbi calls: ``simulator(theta) -> x``.

theta is ``(B, 4)`` = (D_white [mm^2/day], rho [1/day], u_T1, u_T2); x is ``(B, 1, nx, ny, nz)``
float32 label maps (0 healthy, 1 T2 only, 2 T1 core) on a fixed region of interest (ROI) around
the tumour, at the observation day.

Two backends solve the same scheme: ``"numba"`` ([`FKSolver`][sbi_tumor.solver.FKSolver], one
parameter set at a time over all CPU cores) and ``"torch"`` ([`TorchFKSolver`][sbi_tumor.torch_solver.TorchFKSolver],
the whole batch at once). ``"auto"`` takes torch on a GPU and numba otherwise:
on the CPU, numba is 2.5-3.5x faster per simulation (``benchmarks/batch.py``).

The forward model runs on the whole anatomy (or a ``domain_mm`` cube of it), where the only walls
are the brain's own no-flux boundary; only the observation is cut to the ROI. A tumour larger
than the ROI is therefore still the right tumour, seen through a window, and every prior draw
is simulated with the same physics. (A solve costs little more on the whole anatomy: the
solver updates only the box the tumour has reached.) A ``domain_mm`` cube is faster for very
large images; a warning says when a tumour reaches its faces where they cut tissue.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Literal, Sequence, get_args

import numpy as np
import torch

from .anatomy import Anatomy
from .observation import check_thresholds, label_map
from .config import PARAMETER_NAMES, SEED_SIGMA_MM
from .identifiability import front_speed
from .solver import FKSolver, SolverConfig, seed_density
from .torch_solver import TorchFKSolver

Backend = Literal["auto", "numba", "numpy", "torch"]

__all__ = ["TumorSimulator", "InitialCondition"]


@dataclass(frozen=True)
class InitialCondition:
    """Where the tumour starts: a seed point (world mm) or a density map on the anatomy grid.

    Attributes:
        seed_mm: seed point in world mm: a Gaussian bump of width ``sigma_mm`` and peak 1, the
            same tumour on every grid (see [`seed_density`][sbi_tumor.solver.seed_density]).
        density: density map in [0, 1], shape of the (uncropped) anatomy.
        sigma_mm: width of the seed (mm), default ``SEED_SIGMA_MM`` (3 mm).
    """

    seed_mm: tuple[float, float, float] | None = None
    density: np.ndarray | None = None
    sigma_mm: float = SEED_SIGMA_MM

    def __post_init__(self) -> None:
        if (self.seed_mm is None) == (self.density is None):
            raise ValueError("Give exactly one of seed_mm (a point in mm) or density (a map).")

    def centre_mm(self, anatomy: Anatomy) -> np.ndarray:
        """The seed, or the density-weighted centre of the map (world mm)."""
        if self.seed_mm is not None:
            return np.asarray(self.seed_mm, dtype=float)
        d = np.asarray(self.density, dtype=np.float64)
        if d.shape != anatomy.shape:
            raise ValueError(f"The initial density has shape {d.shape}, the anatomy {anatomy.shape}.")
        if d.sum() <= 0:
            raise ValueError("The initial density map is empty (all zeros).")
        idx = np.indices(d.shape).reshape(3, -1)
        return anatomy.voxel_to_world((idx * d.ravel()).sum(1) / d.sum())

    def on(self, anatomy: Anatomy, roi: Anatomy) -> np.ndarray:
        """Initial density on the ROI grid, float32."""
        if self.seed_mm is not None:
            return seed_density(roi, self.seed_mm, self.sigma_mm)
        return np.ascontiguousarray(np.asarray(self.density, np.float32)[anatomy.crop_slices(roi)])


class TumorSimulator:
    """Batched forward model + observation model, picklable for ``simulate_for_sbi`` workers.

    Args:
        anatomy: the brain anatomy (full image; the ROI is cropped from it).
        initial: the initial condition (or pass ``seed_mm=``).
        day: observation day (days after the initial condition).
        roi_size_mm: edge of the cubic ROI centred on the initial tumour (mm): the region the
            label maps x cover.
        domain_mm: edge of the cubic region the model is solved on (mm); default ``None``, the
            whole anatomy.
        solver_config: numerical settings of the forward model.
        border_warning: warn when the density on a face of a ``domain_mm`` cube that cuts tissue
            exceeds this value.
        backend: the one solver setting: ``"numba"`` (the parallel CPU kernel), ``"numpy"`` (the
            readable reference, for tests), ``"torch"`` (the batch on a GPU or CPU) or ``"auto"``:
            torch when ``device`` is given or CUDA is available, else numba. ``"auto"`` is decided
            in the process that simulates, so a simulator sent to GPU workers uses their GPUs.
            (``SolverConfig.backend``, the kernel of a bare ``FKSolver``, follows it.)
        device: torch device of the torch backend (default: CUDA when available, else CPU).

    Examples:
        >>> sim = TumorSimulator(load_mni152(2.0), seed_mm=(-30, 20, 30), day=9.0)
        >>> x = sim(torch.tensor([[2.0, 0.6, 0.7, 0.25]]))  # (1, 1, nx, ny, nz)
    """

    def __init__(self, anatomy: Anatomy, initial: InitialCondition | None = None, *,
                 seed_mm: Sequence[float] | None = None, day: float,
                 roi_size_mm: float = 64.0, domain_mm: float | None = None,
                 solver_config: SolverConfig | None = None,
                 border_warning: float = 0.05, backend: Backend = "auto",
                 device: str | torch.device | None = None):
        if initial is None:
            if seed_mm is None:
                raise ValueError("Give an initial condition: seed_mm=(x, y, z) or initial=...")
            initial = InitialCondition(seed_mm=tuple(float(v) for v in seed_mm))
        if not 0 < day < np.inf:
            raise ValueError(f"The observation day must be a finite number > 0 (days after the initial condition), "
                             f"got {day}.")
        if not 0 < roi_size_mm < np.inf:
            raise ValueError(f"roi_size_mm must be a finite number of mm > 0, got {roi_size_mm}.")
        if backend not in get_args(Backend):
            raise ValueError(f"backend must be one of {list(get_args(Backend))}, got {backend!r}.")
        solver_config = solver_config or SolverConfig()
        if solver_config.backend == "numpy" and backend not in ("auto", "numpy"):
            raise ValueError(f"solver_config.backend is 'numpy' but backend={backend!r}: give the solver once, "
                             "as backend=...")
        if solver_config.backend == "numpy":
            backend = "numpy"
        solver_config = replace(solver_config, backend="numpy" if backend == "numpy" else "numba")
        self.initial = initial
        self.backend = backend
        self.device = None if device is None else str(device)  # str: picklable, device-free
        self._torch_solver: TorchFKSolver | None = None  # built on first use, in each process
        self.day = float(day)
        centre = initial.centre_mm(anatomy)
        self.roi = anatomy.crop(centre, roi_size_mm)
        #: the anatomy the model is solved on (the ROI is a window of it)
        self.domain = anatomy if domain_mm is None else anatomy.crop(centre, max(domain_mm, roi_size_mm))
        self.solver = FKSolver(self.domain, solver_config)
        self.u0 = initial.on(anatomy, self.domain)
        self.border_warning = border_warning
        #: slices of the full anatomy grid covered by the ROI (to paste results back)
        self.roi_slices = anatomy.crop_slices(self.roi)
        self._window = self.domain.crop_slices(self.roi)
        self._walls = _cut_faces(anatomy, self.domain)
        self.full_shape = anatomy.shape

    parameter_names: tuple[str, ...] = PARAMETER_NAMES

    def front_speed(self, theta) -> np.ndarray:
        """Asymptotic front speed ``2 sqrt(D rho)`` (mm/day) of theta ``(B, 2+)``, ``(B,)``."""
        return front_speed(_as_theta(theta, min_columns=2))

    def __getstate__(self) -> dict:
        # The torch solver holds device tensors; workers rebuild it on their own device.
        return self.__dict__ | {"_torch_solver": None}

    @property
    def resolved_backend(self) -> str:
        """The backend this process uses: ``"numba"``, ``"numpy"`` or ``"torch"``."""
        if self.backend != "auto":
            return self.backend
        return "torch" if self.device is not None or torch.cuda.is_available() else "numba"

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one simulation, ``(1, nx, ny, nz)``."""
        return (1,) + self.roi.shape

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """Label maps at the observation day, float32 ``(B, 1, nx, ny, nz)``."""
        theta = _as_theta(theta)  # invalid thresholds raise before the solve
        return self.observe(self.solve(theta), theta)

    def solve(self, theta) -> np.ndarray:
        """The forward model alone: density at the observation day, float32 ``(B, nx, ny, nz)``;
        theta ``(B, 2+)`` (only D and rho are used)."""
        return self.density(theta, [self.day])[:, 0]

    def observe(self, density: np.ndarray, theta) -> torch.Tensor:
        """The observation model alone: label maps of ``density`` ``(B, nx, ny, nz)`` with the
        thresholds of theta ``(B, 4)``, float32 ``(B, 1, nx, ny, nz)``.

        ``simulator(theta) == observe(solve(theta), theta)``; one solve can be observed with
        several thresholds (``InferenceConfig.augment``).
        """
        theta = _as_theta(theta)
        labels = label_map(np.asarray(density)[:, None], theta[:, 2].reshape(-1, 1, 1, 1, 1),
                           theta[:, 3].reshape(-1, 1, 1, 1, 1))
        return torch.from_numpy(labels).to(torch.float32)

    def labels(self, theta, days: Sequence[float]) -> np.ndarray:
        """Label maps, uint8 ``(B, len(days), nx, ny, nz)``."""
        theta = _as_theta(theta)
        density = self.density(theta[:, :2], days)
        t1 = theta[:, 2].reshape(-1, 1, 1, 1, 1)
        t2 = theta[:, 3].reshape(-1, 1, 1, 1, 1)
        return label_map(density, t1, t2)

    def density(self, theta, days: Sequence[float], progress: bool = False,
                u0: np.ndarray | None = None) -> np.ndarray:
        """Tumour density on the ROI, float32 ``(B, len(days), nx, ny, nz)``; theta ``(B, 2+)``
        (D, rho, ...). ``u0``: initial densities on the domain, one per row ``(B, ...)``, instead
        of the simulator's own (an origin that varies with theta:
        [`OneScanSimulator`][sbi_tumor.one_scan.OneScanSimulator])."""
        theta = _as_theta(theta, min_columns=2)
        u0 = self.u0 if u0 is None else u0
        window = (slice(None), slice(None)) + self._window
        if self.resolved_backend == "torch":
            if self._torch_solver is None:
                self._torch_solver = TorchFKSolver(self.domain, self.solver.config, self.device)
            full = self._torch_solver.solve(theta[:, 0], theta[:, 1], u0, days, progress=progress)
            self._check_border(full)
            return np.ascontiguousarray(full[window])
        out = np.empty((len(theta), len(days)) + self.roi.shape, dtype=np.float32)
        for b, (d, rho) in enumerate(theta[:, :2]):
            full = self.solver.solve(d, rho, u0 if u0.ndim == 3 else u0[b], days, progress=progress)[None]
            self._check_border(full)
            out[b] = full[window]
        return out

    def to_full_grid(self, roi_array: np.ndarray) -> np.ndarray:
        """Paste an ROI array ``(..., nx, ny, nz)`` into the full anatomy grid (zeros elsewhere)."""
        full = np.zeros(roi_array.shape[:-3] + self.full_shape, dtype=roi_array.dtype)
        full[(Ellipsis,) + tuple(self.roi_slices)] = roi_array
        return full

    def _check_border(self, density: np.ndarray) -> None:
        """Warn when the tumour reaches a face of the domain that cuts tissue (an artificial wall)."""
        for axis, side in self._walls:
            face = np.take(density, [0 if side == 0 else -1], axis=density.ndim - 3 + axis)
            if face.max(initial=0) > self.border_warning:
                warnings.warn(
                    f"The tumour density reaches {face.max():.2f} at a face of the {self.domain.shape}-voxel "
                    "domain that cuts brain tissue, which acts as a wall; increase domain_mm, or leave it "
                    "None to solve on the whole anatomy.", stacklevel=3)
                return


def _cut_faces(anatomy: Anatomy, domain: Anatomy) -> list[tuple[int, int]]:
    """``(axis, 0 | 1)`` of the faces of ``domain`` (a crop of ``anatomy``) that lie inside the image
    and have tissue on them: the faces that are walls of the crop, not of the brain."""
    faces = []
    for axis, (sl, n) in enumerate(zip(anatomy.crop_slices(domain), anatomy.shape)):
        for side, inside in ((0, sl.start > 0), (1, sl.stop < n)):
            face = np.take(domain.tissue, [0 if side == 0 else -1], axis=axis)
            if inside and face.any():
                faces.append((axis, side))
    return faces


def as_batch(theta, min_columns: int, names: Sequence[str]) -> np.ndarray:
    """theta as float64 numpy ``(B, k)`` with ``k >= min_columns``, finite; the error names the
    ``names`` of a full row."""
    if isinstance(theta, torch.Tensor):
        theta = theta.detach().cpu().numpy()
    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    if theta.ndim != 2 or theta.shape[1] < min_columns:
        raise ValueError(f"theta must have shape (B, {len(names)}) = ({', '.join(names)}), got {theta.shape}.")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains NaN or infinite values.")
    return theta


def _as_theta(theta, min_columns: int = 4) -> np.ndarray:
    """theta as float64 numpy ``(B, k)``, validated (documented treatment: invalid sets raise)."""
    theta = as_batch(theta, min_columns, PARAMETER_NAMES)
    bad = np.flatnonzero((theta[:, 0] < 0) | (theta[:, 1] < 0))
    if len(bad):
        raise ValueError(f"D and rho must be >= 0; row {bad[0]} is {theta[bad[0]].tolist()}.")
    if theta.shape[1] >= 4:
        check_thresholds(theta[:, 2], theta[:, 3])
    return theta
