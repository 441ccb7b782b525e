"""The batched tumour simulator that sbi calls: ``simulator(theta) -> x``.

theta is ``(B, 4)`` = (D_white [mm^2/day], rho [1/day], u_T1, u_T2); x is ``(B, 1, nx, ny, nz)``
float32 label maps (0 healthy, 1 T2 only, 2 T1 core) on a fixed region of interest (ROI) around
the tumour, at the observation day.

Two backends solve the same scheme: ``"numba"`` ([`FKSolver`][sbi_tumor.solver.FKSolver], one
parameter set at a time over all CPU cores) and ``"torch"`` (:class:`~sbi_tumor.torch_solver.
TorchFKSolver`, the whole batch at once). ``"auto"`` takes torch on a GPU and numba otherwise:
on the CPU, numba is 2.5-3.5x faster per simulation (``benchmarks/batch.py``).

The forward model runs on the ROI only: its faces act as a no-flux boundary, so choose the ROI
large enough to contain the tumour at the latest day you simulate (a warning says when the
density at the ROI border exceeds ``border_warning``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from .anatomy import Anatomy
from .observation import check_thresholds, label_map
from .solver import FKSolver, SolverConfig, seed_density
from .torch_solver import TorchFKSolver

Backend = Literal["auto", "numba", "torch"]

__all__ = ["TumorSimulator", "InitialCondition"]


@dataclass(frozen=True)
class InitialCondition:
    """Where the tumour starts: a seed point (world mm) or a density map on the anatomy grid.

    Attributes:
        seed_mm: seed point in world mm (a Gaussian bump of width ``sigma_mm``, default 1 voxel).
        density: density map in [0, 1], shape of the (uncropped) anatomy.
    """

    seed_mm: tuple[float, float, float] | None = None
    density: np.ndarray | None = None
    sigma_mm: float | None = None

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
        roi_size_mm: edge of the cubic ROI centred on the initial tumour (mm).
        solver_config: numerical settings of the forward model.
        border_warning: warn when the density on the ROI border exceeds this value.
        backend: ``"numba"``, ``"torch"`` or ``"auto"``: torch when ``device`` is given or CUDA is
            available, else numba. ``"auto"`` is decided in the process that simulates, so a
            simulator sent to GPU workers uses their GPUs.
        device: torch device of the torch backend (default: CUDA when available, else CPU).

    Example:
        >>> sim = TumorSimulator(load_mni152(2.0), seed_mm=(-30, 20, 30), day=9.0)
        >>> x = sim(torch.tensor([[2.0, 0.6, 0.7, 0.25]]))  # (1, 1, nx, ny, nz)
    """

    def __init__(self, anatomy: Anatomy, initial: InitialCondition | None = None, *,
                 seed_mm: Sequence[float] | None = None, day: float,
                 roi_size_mm: float = 64.0, solver_config: SolverConfig | None = None,
                 border_warning: float = 0.05, backend: Backend = "auto",
                 device: str | torch.device | None = None):
        if initial is None:
            if seed_mm is None:
                raise ValueError("Give an initial condition: seed_mm=(x, y, z) or initial=...")
            initial = InitialCondition(seed_mm=tuple(float(v) for v in seed_mm))
        if not day > 0:
            raise ValueError(f"The observation day must be > 0 (days after the initial condition), got {day}.")
        if backend not in ("auto", "numba", "torch"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}.")
        self.initial = initial
        self.backend = backend
        self.device = None if device is None else str(device)  # str: picklable, device-free
        self._torch_solver: TorchFKSolver | None = None  # built on first use, in each process
        self.day = float(day)
        self.roi = anatomy.crop(initial.centre_mm(anatomy), roi_size_mm)
        self.solver = FKSolver(self.roi, solver_config)
        self.u0 = initial.on(anatomy, self.roi)
        self.border_warning = border_warning
        #: slices of the full anatomy grid covered by the ROI (to paste results back)
        self.roi_slices = anatomy.crop_slices(self.roi)
        self.full_shape = anatomy.shape

    def __getstate__(self) -> dict:
        # The torch solver holds device tensors; workers rebuild it on their own device.
        return self.__dict__ | {"_torch_solver": None}

    @property
    def resolved_backend(self) -> str:
        """The backend this process uses: ``"numba"`` or ``"torch"``."""
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

    def density(self, theta, days: Sequence[float], progress: bool = False) -> np.ndarray:
        """Tumour density, float32 ``(B, len(days), nx, ny, nz)``; theta ``(B, 2+)`` (D, rho, ...)."""
        theta = _as_theta(theta, min_columns=2)
        if self.resolved_backend == "torch":
            if self._torch_solver is None:
                self._torch_solver = TorchFKSolver(self.roi, self.solver.config, self.device)
            out = self._torch_solver.solve(theta[:, 0], theta[:, 1], self.u0, days, progress=progress)
        else:
            out = np.empty((len(theta), len(days)) + self.roi.shape, dtype=np.float32)
            for b, (d, rho) in enumerate(theta[:, :2]):
                out[b] = self.solver.solve(d, rho, self.u0, days, progress=progress)
        self._check_border(out)
        return out

    def to_full_grid(self, roi_array: np.ndarray) -> np.ndarray:
        """Paste an ROI array ``(..., nx, ny, nz)`` into the full anatomy grid (zeros elsewhere)."""
        full = np.zeros(roi_array.shape[:-3] + self.full_shape, dtype=roi_array.dtype)
        full[(Ellipsis,) + tuple(self.roi_slices)] = roi_array
        return full

    def _check_border(self, density: np.ndarray) -> None:
        border = max(density[..., [0, -1], :, :].max(initial=0), density[..., :, [0, -1], :].max(initial=0),
                     density[..., :, :, [0, -1]].max(initial=0))
        if border > self.border_warning:
            warnings.warn(
                f"The tumour density reaches {border:.2f} at the border of the {self.roi.shape} region of "
                "interest, whose faces act as walls; increase roi_size_mm.", stacklevel=3)


def _as_theta(theta, min_columns: int = 4) -> np.ndarray:
    """theta as float64 numpy ``(B, k)``, validated (documented treatment: invalid sets raise)."""
    if isinstance(theta, torch.Tensor):
        theta = theta.detach().cpu().numpy()
    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    if theta.ndim != 2 or theta.shape[1] < min_columns:
        raise ValueError(f"theta must have shape (B, 4) = (D, rho, u_T1, u_T2), got {theta.shape}.")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains NaN or infinite values.")
    bad = np.flatnonzero((theta[:, 0] < 0) | (theta[:, 1] < 0))
    if len(bad):
        raise ValueError(f"D and rho must be >= 0; row {bad[0]} is {theta[bad[0]].tolist()}.")
    if theta.shape[1] >= 4:
        check_thresholds(theta[:, 2], theta[:, 3])
    return theta
