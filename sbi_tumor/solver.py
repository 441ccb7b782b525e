"""3D Fisher-Kolmogorov reaction-diffusion solver.

    du/dt = div(D(x) grad u) + rho u (1 - u),   no flux through the brain's boundary,

with ``D(x) = D_white * k(x)`` and ``k`` the relative diffusivity of [`sbi_tumor.anatomy`][sbi_tumor.anatomy].
Units: mm, days; ``D_white`` in mm^2/day, ``rho`` in 1/day, ``u`` a density in [0, 1].

Scheme
------
* Conservative finite volumes on the voxel grid. The diffusivity of the face between two voxels
  is the harmonic mean of theirs, so a face touching CSF or background (k = 0) carries no flux.
  Face coefficients ``c = harmonic(k_i, k_j) / h^2`` depend only on the anatomy and are computed
  once ([`Stencil`][sbi_tumor.solver.Stencil]); ``D_white`` scales them at run time. The arrays carry one layer of
  zero padding, which makes the outer boundary no-flux without branches in the kernel.
* Each step is Lie splitting of an explicit diffusion step followed by the *exact* logistic
  solution over the step: ``v = u + dt D sum_f c_f (u_f - u)``, ``u' = v e / (1 + v (e - 1))``
  with ``e = exp(rho dt)``. The step is ``dt <= safety / (D_white * max_i sum_f c_f)``
  (safety 0.9 by default), which makes the diffusion step a convex combination of neighbours;
  together with the exact reaction this keeps ``0 <= u <= 1`` exactly (a discrete maximum
  principle). ``rho dt`` is also capped (``max_reaction_step``) to bound the splitting error.
* Output times are hit exactly: between two requested times the steps are equal.
* Only the *active box* is updated: the bounding box of ``u > active_tol``, grown by one voxel
  per step (the explicit stencil's reach) and shrunk back to the data every few steps. Voxels
  outside it hold values below ``active_tol`` (1e-6 by default); ``active_tol=0`` updates the
  exact domain of dependence and is exactly conservative.

Two implementations of the same scheme: a parallel numba kernel (used by default) and a plain
numpy reference ([`reference_step`][sbi_tumor.solver.reference_step]) used by the tests.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np

from .anatomy import Anatomy, AnatomyError
from .config import GREY_MATTER_RATIO, SEED_SIGMA_MM

__all__ = ["SEED_SIGMA_MM", "SolverConfig", "Stencil", "FKSolver", "seed_density", "reference_step", "stable_step"]


@dataclass(frozen=True)
class SolverConfig:
    """Numerical settings of [`FKSolver`][sbi_tumor.solver.FKSolver].

    Attributes:
        ratio: D_white / D_grey (10 by default).
        safety: fraction of the explicit stability limit used as time step (0 < safety <= 1).
        max_reaction_step: upper bound on ``rho * dt`` (splitting-error control).
        active_tol: densities below this are treated as zero for the active box; 0 disables it.
        shrink_every: steps between re-fits of the active box to the data.
        backend: ``"numba"`` (parallel CPU kernel) or ``"numpy"`` (the readable reference).
    """

    ratio: float = GREY_MATTER_RATIO
    safety: float = 0.9
    max_reaction_step: float = 0.1
    active_tol: float = 1e-6
    shrink_every: int = 8
    backend: str = "numba"

    def __post_init__(self) -> None:
        if not 0 < self.safety <= 1:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}.")
        if not self.max_reaction_step > 0:
            raise ValueError(f"max_reaction_step must be > 0, got {self.max_reaction_step}.")
        if self.active_tol < 0:
            raise ValueError(f"active_tol must be >= 0, got {self.active_tol}.")
        if self.backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {self.backend!r}.")


class Stencil:
    """Face coefficients of one anatomy, precomputed once and shared by every solve.

    ``cx[i, j, k]`` couples padded voxels ``(i, j, k)`` and ``(i + 1, j, k)`` (likewise ``cy``,
    ``cz``), in 1/mm^2; all arrays have the padded shape ``(nx + 2, ny + 2, nz + 2)``, float32.
    """

    def __init__(self, anatomy: Anatomy, ratio: float = GREY_MATTER_RATIO):
        k = np.pad(anatomy.relative_diffusivity(ratio).astype(np.float64), 1)
        h2 = anatomy.spacing ** 2
        faces = []
        for axis in range(3):
            a = k
            b = np.roll(k, -1, axis=axis)  # neighbour at +1; the wrap-around lands in padding (0)
            with np.errstate(invalid="ignore", divide="ignore"):
                hm = np.where(a + b > 0, 2 * a * b / (a + b), 0.0)
            faces.append(np.ascontiguousarray(hm / h2[axis], dtype=np.float32))
        self.cx, self.cy, self.cz = faces
        self.shape = anatomy.shape
        self.tissue = np.pad(anatomy.tissue, 1)
        total = self.cx + self.cy + self.cz
        total = total + np.roll(self.cx, 1, 0) + np.roll(self.cy, 1, 1) + np.roll(self.cz, 1, 2)
        #: max over voxels of the sum of their face coefficients (1/mm^2): sets the stable step
        self.max_coupling = float(total.max())

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        return self.cx.shape  # type: ignore[return-value]


def stable_step(stencil: Stencil, d_white: float, rho: float, config: SolverConfig) -> float:
    """Largest time step (days) allowed for the given parameters."""
    limits = [config.max_reaction_step / rho if rho > 0 else math.inf]
    if d_white > 0 and stencil.max_coupling > 0:
        limits.append(config.safety / (d_white * stencil.max_coupling))
    return min(limits)


def seed_density(anatomy: Anatomy, seed_mm: Sequence[float], sigma_mm: float = SEED_SIGMA_MM,
                 amplitude: float = 1.0) -> np.ndarray:
    """Initial density from a seed point: a Gaussian bump at ``seed_mm`` (world mm), tissue only.

    The bump ``amplitude * exp(-|x - seed|^2 / (2 sigma_mm^2))`` is defined in mm, not voxels,
    and each voxel holds its *average* over the voxel (a product of error functions), so the
    tumour's mass ``amplitude (2 pi)^{3/2} sigma_mm^3`` (mm^3 of density) is the same on every
    grid, wherever the seed lies within its voxel. On grids finer than ``sigma_mm`` the solution
    converges with the grid (``tests/test_solver.py``, ``benchmarks/solver.py``); on coarser ones
    the bump is one smeared voxel, and a warning says so. Voxels outside tissue get no density
    (a seed next to CSF loses that part of its mass). Returns float32 ``(nx, ny, nz)``.
    """
    from scipy.special import erf

    if not (np.isfinite(sigma_mm) and sigma_mm > 0):
        raise ValueError(f"The seed width sigma_mm must be a positive number of mm, got {sigma_mm}.")
    if not 0 < amplitude <= 1:
        raise ValueError(f"The seed's peak density amplitude must be in (0, 1] (a cell density), got {amplitude}.")
    anatomy.check_seed(np.asarray(seed_mm, dtype=float))
    spacing = anatomy.spacing
    if spacing.max() > sigma_mm:
        warnings.warn(
            f"The grid spacing ({spacing.max():g} mm) is coarser than the seed's width (sigma "
            f"{sigma_mm:g} mm): the seed is not resolved, and the tumour differs from that of a finer "
            f"grid. Use a resolution of {sigma_mm:g} mm or finer.", stacklevel=2)
    centre = anatomy.world_to_voxel(np.asarray(seed_mm, dtype=float))
    profiles = []
    for n, c, h in zip(anatomy.shape, centre, spacing):
        edges = (np.arange(n + 1) - 0.5 - c) * h / (math.sqrt(2) * sigma_mm)  # voxel faces, in units
        profiles.append(0.5 * np.diff(erf(edges)) * math.sqrt(2 * math.pi) * sigma_mm / h)
    u0 = amplitude * np.einsum("i,j,k->ijk", *profiles)
    u0[u0 < 1e-6 * amplitude] = 0  # keep the initial support, hence the active box, small
    return np.where(anatomy.tissue, u0, 0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Reference implementation (numpy): one step on the whole padded grid.
# --------------------------------------------------------------------------------------------
def reference_step(u: np.ndarray, stencil: Stencil, dt: float, d_white: float, rho: float) -> np.ndarray:
    """One step of the scheme on a padded array; plain numpy, for tests and as a baseline."""
    flux = np.zeros_like(u)
    for axis, c in enumerate((stencil.cx, stencil.cy, stencil.cz)):
        f = c * (np.roll(u, -1, axis) - u)  # flux through the +face of every voxel
        flux += f - np.roll(f, 1, axis)
    v = u + np.float32(dt * d_white) * flux
    e = np.float32(math.exp(rho * dt))
    return v * e / (1 + v * (e - 1))


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------
def _step(u, out, cx, cy, cz, dtd, e, lo0, hi0, lo1, hi1, lo2, hi2):  # pragma: no cover - jit
    """One step of the scheme on the box [lo0, hi0) x [lo1, hi1) x [lo2, hi2) (padded indices).

    Works on contiguous rows along the last axis so that numba vectorises the inner loop
    (indexing ``u[i, j, k - 1]`` directly costs a 4x slow-down from negative-index checks).
    """
    one = np.float32(1.0)
    zero = np.float32(0.0)
    tiny = np.float32(1e-30)
    em1 = e - one
    m = hi2 - lo2
    for i in numba.prange(lo0, hi0):
        for j in range(lo1, hi1):
            uc = u[i, j, lo2 - 1:hi2 + 1]
            uxp = u[i + 1, j, lo2:hi2]
            uxm = u[i - 1, j, lo2:hi2]
            uyp = u[i, j + 1, lo2:hi2]
            uym = u[i, j - 1, lo2:hi2]
            cxp = cx[i, j, lo2:hi2]
            cxm = cx[i - 1, j, lo2:hi2]
            cyp = cy[i, j, lo2:hi2]
            cym = cy[i, j - 1, lo2:hi2]
            czr = cz[i, j, lo2 - 1:hi2]
            o = out[i, j, lo2:hi2]
            for k in range(m):
                c = uc[k + 1]
                flux = (cxp[k] * (uxp[k] - c) + cxm[k] * (uxm[k] - c)
                        + cyp[k] * (uyp[k] - c) + cym[k] * (uym[k] - c)
                        + czr[k + 1] * (uc[k + 2] - c) + czr[k] * (uc[k] - c))
                v = c + dtd * flux
                r = v * e / (one + v * em1)
                # Flush what would become denormal floats (the far tail of the front), which run
                # an order of magnitude slower on x86.
                o[k] = r if r > tiny else zero


# A parallel region costs a barrier per step, which only tiny boxes cannot amortise: measured on 2
# idle cores, a 33^3 region of interest runs in 4.7 ms per simulation in parallel against 14 ms on
# one thread. (On cores busy with other work the barrier waits for a descheduled thread; there,
# NUMBA_NUM_THREADS=1 is faster.) The kernel is compiled both ways and chosen per step.
# Only one of the two may use numba's on-disk cache: its key does not include `parallel`, so two
# cached compilations of the same function overwrite each other.
_step_parallel = numba.njit(parallel=True, cache=True)(_step)
_step_serial = numba.njit(cache=False)(_step)
PARALLEL_MIN_VOXELS = 2**14


@numba.njit(cache=True)
def _shrink(u, out, box, tol):  # pragma: no cover - jit
    """Fit ``box`` to the voxels with ``u > tol`` and make both buffers agree on the old box.

    ``box`` = [lo0, hi0, lo1, hi1, lo2, hi2] in padded indices, updated in place.
    """
    lo = np.array([box[1], box[3], box[5]])
    hi = np.array([box[0] - 1, box[2] - 1, box[4] - 1])
    for i in range(box[0], box[1]):
        for j in range(box[2], box[3]):
            for k in range(box[4], box[5]):
                out[i, j, k] = u[i, j, k]
                if u[i, j, k] > tol:
                    lo[0] = min(lo[0], i)
                    hi[0] = max(hi[0], i)
                    lo[1] = min(lo[1], j)
                    hi[1] = max(hi[1], j)
                    lo[2] = min(lo[2], k)
                    hi[2] = max(hi[2], k)
    if hi[0] < lo[0]:  # nothing above tol: keep a minimal box so the loop bounds stay valid
        hi[:] = lo
    for a in range(3):
        box[2 * a] = lo[a]
        box[2 * a + 1] = hi[a] + 1


def _initial_box(u: np.ndarray, tol: float) -> np.ndarray:
    """Active box (padded indices) of a padded density; the whole interior when tol = 0."""
    n = u.shape
    if tol <= 0:
        return np.array([1, n[0] - 1, 1, n[1] - 1, 1, n[2] - 1], dtype=np.int64)
    idx = np.nonzero(u > tol)
    if len(idx[0]) == 0:
        return np.array([1, 1, 1, 1, 1, 1], dtype=np.int64)
    return np.array([v for ax in idx for v in (ax.min(), ax.max() + 1)], dtype=np.int64)


class FKSolver:
    """Fisher-Kolmogorov solver on one anatomy.

    Examples:
        >>> solver = FKSolver(load_mni152(2.0))
        >>> u0 = seed_density(solver.anatomy, [-30, 20, 30])
        >>> u = solver.solve(d_white=0.13, rho=0.025, u0=u0, times=[100, 300])  # (2, nx, ny, nz)
    """

    def __init__(self, anatomy: Anatomy, config: SolverConfig | None = None):
        self.anatomy = anatomy
        self.config = config or SolverConfig()
        self.stencil = Stencil(anatomy, self.config.ratio)
        #: voxel updates done so far (for benchmarks)
        self.updates = 0

    def n_steps(self, d_white: float, rho: float, times: Sequence[float]) -> list[int]:
        """Number of steps of each interval between consecutive output times."""
        dt_max = stable_step(self.stencil, d_white, rho, self.config)
        edges = np.concatenate([[0.0], np.asarray(times, dtype=float)])
        return [max(1, math.ceil(round(float(dt) / dt_max, 9))) if dt > 0 else 0
                for dt in np.diff(edges)]

    def solve(self, d_white: float, rho: float, u0: np.ndarray, times: Sequence[float],
              progress: bool = False) -> np.ndarray:
        """Density at each requested time (days after ``u0``), float32 ``(len(times), nx, ny, nz)``.

        Args:
            d_white: white-matter diffusivity (mm^2/day), >= 0.
            rho: proliferation rate (1/day), >= 0.
            u0: initial density, ``(nx, ny, nz)`` in [0, 1]; values outside tissue are ignored.
            times: output times in days, non-decreasing, >= 0.
            progress: show a progress bar over the time steps.
        """
        d_white, rho = float(d_white), float(rho)
        if not (np.isfinite(d_white) and d_white >= 0 and np.isfinite(rho) and rho >= 0):
            raise ValueError(f"Need finite D >= 0 and rho >= 0, got D={d_white}, rho={rho}.")
        times = np.atleast_1d(np.asarray(times, dtype=float))
        if times.ndim != 1 or np.any(times < 0) or np.any(np.diff(times) < 0):
            raise ValueError(f"times must be non-decreasing days >= 0, got {times.tolist()}.")
        u0 = np.asarray(u0)
        if u0.shape != self.anatomy.shape:
            raise AnatomyError(f"u0 has shape {u0.shape}, the anatomy {self.anatomy.shape}.")
        if not np.all(np.isfinite(u0)) or u0.min() < 0 or u0.max() > 1:
            raise ValueError("u0 must be a finite density with values in [0, 1].")

        cfg = self.config
        u = np.ascontiguousarray(np.pad(np.where(self.anatomy.tissue, u0, 0), 1), dtype=np.float32)
        out = u.copy()
        box = _initial_box(u, cfg.active_tol)
        result = np.empty((len(times),) + self.anatomy.shape, dtype=np.float32)
        counts = self.n_steps(d_white, rho, times)
        bar = _progress(sum(counts), progress)
        edges = np.concatenate([[0.0], times])
        for n, (t0, t1) in enumerate(zip(edges[:-1], edges[1:])):
            if counts[n]:
                dt = (t1 - t0) / counts[n]
                u, out = self._advance(u, out, box, counts[n], dt, d_white, rho, bar)
            result[n] = u[1:-1, 1:-1, 1:-1]
        if bar is not None:
            bar.close()
        return result

    def _advance(self, u, out, box, nsteps, dt, d_white, rho, bar):
        cfg, st = self.config, self.stencil
        if cfg.backend == "numpy":
            for _ in range(nsteps):
                u = reference_step(u, st, dt, d_white, rho)
                if bar is not None:
                    bar.update()
            return u, out
        dtd, e = np.float32(dt * d_white), np.float32(math.exp(rho * dt))
        upper = np.array(u.shape) - 1
        for step in range(nsteps):
            # The stencil reaches one voxel further each step.
            box[0::2] = np.maximum(box[0::2] - 1, 1)
            box[1::2] = np.minimum(box[1::2] + 1, upper)
            big = np.prod(box[1::2] - box[0::2]) >= PARALLEL_MIN_VOXELS
            (_step_parallel if big else _step_serial)(u, out, st.cx, st.cy, st.cz, dtd, e, *box)
            u, out = out, u
            self.updates += int(np.prod(box[1::2] - box[0::2]))
            if cfg.active_tol > 0 and (step + 1) % cfg.shrink_every == 0:
                _shrink(u, out, box, np.float32(cfg.active_tol))
            if bar is not None:
                bar.update()
        return u, out


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="solve", unit="step")
