"""One scan, origin and age unknown: the model in the quantities such a scan can determine.

Rescaling time by the proliferation rate, ``t' = rho t``, turns the Fisher-Kolmogorov equation
``du/dt = div(D k grad u) + rho u (1 - u)`` into ``du/dt' = div(ell^2 k grad u) + u (1 - u)`` with
the infiltration length ``ell = sqrt(D / rho)`` (mm). A tumour grown from a point for ``T`` days is
therefore the same tumour for every (D, rho, T) with the same ``ell`` and the same dimensionless
age ``tau = rho T``: one scan of a tumour whose origin and age are unknown determines

    theta = (x, y, z [mm], ell [mm], tau [-], u_T1, u_T2)

and nothing else. With a known age ``T`` (days since the origin), ``rho = tau / T`` and
``D = ell^2 tau / T`` follow ([`rates`][sbi_tumor.one_scan.rates]); a second, later scan fixes
them too (the ADC workflow of ``sbi_tumor.patient``).

The prior ([`OneScanPrior`][sbi_tumor.one_scan.OneScanPrior]) puts the origin uniformly inside the
visible tumour (the T1 core, or the T2 region when there is none), on tissue, and ``ell`` and the
asymptotic front radius ``2 ell tau`` (the distance the front has travelled) log-uniform on
``config.INFILTRATION_LENGTH_MM`` (1-20 mm: the human preset's 0.3-27 mm cut to what the 2 mm grid
resolves and what still shows an edge) and ``config.FRONT_RADIUS_MM``. The thresholds keep the preset's box. The label maps are observed on a
window centred on the segmentation, not on the (unknown) origin, so the radial embedding is
centred there too and the origin shows in its centroid features.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, biject_to, constraints

from .anatomy import Anatomy
from .identifiability import front_speed
from .config import FRONT_RADIUS_MM, INFILTRATION_LENGTH_MM, ONE_SCAN_NAMES, PRESETS, SEED_SIGMA_MM
from .observation import check_thresholds, label_map
from .simulator import Backend, InitialCondition, TumorSimulator, as_batch
from .solver import SolverConfig, seed_density

__all__ = ["AGE_UNIT", "OneScanPrior", "OneScanSimulator", "one_scan_prior", "rates"]

# Columns of theta, so the code reads by name.
_ORIGIN, _ELL, _TAU, _UT1, _UT2 = slice(0, 3), 3, 4, 5, 6

#: The scan's time when the age is unknown: times are then in units of the age (rho = tau).
AGE_UNIT = 1.0


def rates(theta, age_days: float) -> np.ndarray:
    """``(D [mm^2/day], rho [1/day], u_T1, u_T2)`` ``(N, 4)`` of one-scan theta ``(N, 7)`` for a
    tumour ``age_days`` old: ``rho = tau / T``, ``D = ell^2 tau / T``."""
    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    if not 0 < age_days < math.inf:
        raise ValueError(f"The age must be a finite number of days > 0, got {age_days}.")
    return np.concatenate([_d_rho(theta, age_days), theta[:, _UT1:]], axis=1)


def _d_rho(theta: np.ndarray, age: float) -> np.ndarray:
    """``(D, rho)`` ``(N, 2)`` of theta's (ell, tau) for a tumour ``age`` old (days, or units of the
    age): the one place the rescaling is written."""
    rho = theta[:, _TAU] / age
    return np.stack([theta[:, _ELL] ** 2 * rho, rho], axis=1)


class _InRegion(constraints.Constraint):
    """theta ``(..., 7)`` whose origin lies in one of a set of voxels and whose (ell, tau, u_T1,
    u_T2) lie in the prior's ranges; ``check`` -> bool ``(...)``."""

    event_dim = 1

    def __init__(self, prior: "OneScanPrior"):
        self.prior = prior

    def check(self, value: Tensor) -> Tensor:
        return self.prior.inside(value)


# sbi maps a bounded prior to an unconstrained space (MAP search, MCMC) with torch's biject_to: map
# the region through its bounding box, outside which the prior is zero anyway.
@biject_to.register(_InRegion)
def _box_bijection(constraint: _InRegion):
    return biject_to(constraint.prior.bounding_box)


class OneScanPrior(Distribution):
    """Prior over theta = (x, y, z [mm], ell [mm], tau [-], u_T1, u_T2), ``event_shape (7,)``.

    * origin: uniform over the voxels of ``origin_mask`` (world mm, uniform within each voxel);
    * ell = sqrt(D / rho): log-uniform on ``ell_mm``;
    * tau = rho T given ell: the front radius ``2 ell tau`` log-uniform on ``radius_mm``, so
      ``p(tau | ell) = 1 / (tau log(r_high / r_low))`` on ``[r_low, r_high] / (2 ell)``;
    * u_T1, u_T2: uniform on ``thresholds`` (``((u_T1 low, u_T2 low), (u_T1 high, u_T2 high))``).

    Args:
        anatomy: the grid of ``origin_mask``.
        origin_mask: bool ``anatomy.shape``, where the tumour may have started.
        ell_mm: ``(low, high)`` of the infiltration length, mm.
        radius_mm: ``(low, high)`` of the front radius ``2 ell tau``, mm.
        thresholds: bounds of (u_T1, u_T2), as above.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, anatomy: Anatomy, origin_mask: np.ndarray, *,
                 ell_mm: tuple[float, float] = INFILTRATION_LENGTH_MM,
                 radius_mm: tuple[float, float] = FRONT_RADIUS_MM,
                 thresholds: tuple[tuple[float, float], tuple[float, float]] = (
                     PRESETS["human"].low[2:], PRESETS["human"].high[2:])):
        mask = np.asarray(origin_mask, dtype=bool)
        if mask.shape != anatomy.shape:
            raise ValueError(f"origin_mask has shape {mask.shape}, the anatomy {anatomy.shape}.")
        if not mask.any():
            raise ValueError("origin_mask is empty: the tumour's origin must be allowed somewhere.")
        for name, (lo, hi) in (("ell_mm", ell_mm), ("radius_mm", radius_mm)):
            if not 0 < lo < hi < math.inf:
                raise ValueError(f"{name} must be (low, high) with 0 < low < high, got {(lo, hi)}.")
        (t1_lo, t2_lo), (t1_hi, t2_hi) = thresholds
        if not 0 <= t2_lo < t2_hi <= t1_lo < t1_hi <= 1:
            raise ValueError(f"Threshold bounds must satisfy 0 <= u_T2 low < u_T2 high <= u_T1 low < u_T1 high <= 1 "
                             f"(T2/FLAIR sees more than T1-gadolinium), got {thresholds}.")
        self.mask = mask
        self.affine = np.asarray(anatomy.affine, dtype=np.float64)
        self._inverse = np.linalg.inv(self.affine)
        self.voxels = torch.from_numpy(np.argwhere(mask)).to(torch.float64)
        self.ell_mm, self.radius_mm = tuple(map(float, ell_mm)), tuple(map(float, radius_mm))
        self.low_t = torch.tensor([t1_lo, t2_lo], dtype=torch.float32)
        self.high_t = torch.tensor([t1_hi, t2_hi], dtype=torch.float32)
        voxel_mm3 = abs(np.linalg.det(self.affine[:3, :3]))
        self._log_norm = (math.log(len(self.voxels) * voxel_mm3) + math.log(math.log(ell_mm[1] / ell_mm[0]))
                          + math.log(math.log(radius_mm[1] / radius_mm[0]))
                          + float(torch.log(self.high_t - self.low_t).sum()))
        linear, shift = torch.from_numpy(self.affine[:3, :3]), torch.from_numpy(self.affine[:3, 3])
        #: voxel centres (world mm) and the half-extent of a voxel along each world axis
        self._centres = self.voxels @ linear.T + shift
        self._half = 0.5 * linear.abs().sum(1)
        lo, hi = self.voxels.min(0).values - 0.5, self.voxels.max(0).values + 0.5
        corners = torch.stack([torch.where(torch.tensor(c, dtype=torch.bool), hi, lo)
                               for c in itertools.product((0, 1), repeat=3)])
        ends = corners @ linear.T + shift  # the 8 corners of the voxels' index box, in world mm
        tau = (radius_mm[0] / (2 * ell_mm[1]), radius_mm[1] / (2 * ell_mm[0]))
        #: the smallest box holding the support (theta's bounds one parameter at a time)
        self.bounding_box = constraints.independent(constraints.interval(
            torch.cat([ends.min(0).values.float(), torch.tensor([ell_mm[0], tau[0]]), self.low_t]),
            torch.cat([ends.max(0).values.float(), torch.tensor([ell_mm[1], tau[1]]), self.high_t])), 1)
        super().__init__(event_shape=torch.Size([7]), validate_args=False)
        with torch.random.fork_rng():  # moments for sbi's z-scoring, without moving the caller's stream
            torch.manual_seed(0)
            draws = self.sample((20_000,)).double()
        self._mean, self._variance = draws.mean(0).float(), draws.var(0).float()

    @property
    def mean(self) -> Tensor:
        return self._mean

    @property
    def variance(self) -> Tensor:
        return self._variance

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return _InRegion(self)

    def origin_voxel(self, origin_mm: Tensor) -> Tensor:
        """Nearest voxel index ``(..., 3)`` (long) of origins ``(..., 3)`` in world mm."""
        points = torch.as_tensor(origin_mm, dtype=torch.float64)
        inv = torch.from_numpy(self._inverse)
        return torch.round(points @ inv[:3, :3].T + inv[:3, 3]).long()

    def inside(self, value: Tensor) -> Tensor:
        """bool ``(...)``: theta ``(..., 7)`` in the prior's support."""
        value = torch.as_tensor(value)
        ijk = self.origin_voxel(value[..., _ORIGIN])
        shape = torch.tensor(self.mask.shape)
        in_image = ((ijk >= 0) & (ijk < shape)).all(-1)
        ijk = torch.where(in_image[..., None], ijk, torch.zeros_like(ijk))
        in_mask = torch.from_numpy(self.mask)[ijk[..., 0], ijk[..., 1], ijk[..., 2]] & in_image
        ell, tau = value[..., _ELL].double(), value[..., _TAU].double()
        radius = 2 * ell * tau
        ok = ((ell >= self.ell_mm[0]) & (ell <= self.ell_mm[1]) & (radius >= self.radius_mm[0])
              & (radius <= self.radius_mm[1]))
        t = value[..., _UT1:].float()
        ok &= ((t >= self.low_t) & (t <= self.high_t)).all(-1)
        return in_mask & ok

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape)
        n = int(np.prod(shape)) if len(shape) else 1
        index = self.voxels[torch.randint(len(self.voxels), (n,))]
        # Uniform within the voxel; 0.999 keeps the point off the faces, where rounding is ambiguous.
        ijk = index + 0.999 * (torch.rand(n, 3, dtype=torch.float64) - 0.5)
        affine = torch.from_numpy(self.affine)
        origin = ijk @ affine[:3, :3].T + affine[:3, 3]
        log_ell = torch.empty(n, dtype=torch.float64).uniform_(*np.log(self.ell_mm))
        log_r = torch.empty(n, dtype=torch.float64).uniform_(*np.log(self.radius_mm))
        ell = log_ell.exp()
        tau = log_r.exp() / (2 * ell)
        t = self.low_t + torch.rand(n, 2) * (self.high_t - self.low_t)
        theta = torch.cat([origin, ell[:, None], tau[:, None], t.double()], dim=1).float()
        return theta.reshape(shape + (7,))

    def sample_within(self, low: Tensor, high: Tensor, n: int) -> Tensor:
        """Draws of the prior restricted to the box ``[low, high]`` (each ``(7,)``), exactly: at most
        ``n`` of them (those of ``n`` candidates that land in the box), ``(m, 7)``.

        Used by TSNPE once its truncated region is too small a part of the prior for rejection
        from the whole prior (``inference.BoxedRegion``). Origins are drawn from the voxels that
        reach into the box, ell from its log-uniform law cut to the box, the front radius from
        its whole range (tau outside the box is rejected, which keeps p(tau | ell) exact).
        """
        low, high = torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64)
        near = ((self._centres + self._half >= low[:3]) & (self._centres - self._half <= high[:3])).all(1)
        ell_lo, ell_hi = max(self.ell_mm[0], float(low[_ELL])), min(self.ell_mm[1], float(high[_ELL]))
        t_lo, t_hi = torch.maximum(self.low_t.double(), low[_UT1:]), torch.minimum(self.high_t.double(), high[_UT1:])
        if not near.any() or ell_lo >= ell_hi or bool((t_lo >= t_hi).any()):
            return torch.empty(0, 7)
        voxels = self.voxels[near]
        ijk = voxels[torch.randint(len(voxels), (n,))] + 0.999 * (torch.rand(n, 3, dtype=torch.float64) - 0.5)
        affine = torch.from_numpy(self.affine)
        origin = ijk @ affine[:3, :3].T + affine[:3, 3]
        ell = torch.empty(n, dtype=torch.float64).uniform_(math.log(ell_lo), math.log(ell_hi)).exp()
        tau = torch.empty(n, dtype=torch.float64).uniform_(*np.log(self.radius_mm)).exp() / (2 * ell)
        t = t_lo + torch.rand(n, 2, dtype=torch.float64) * (t_hi - t_lo)
        theta = torch.cat([origin, ell[:, None], tau[:, None], t], dim=1)
        keep = ((origin >= low[:3]) & (origin <= high[:3])).all(1) & (tau >= low[_TAU]) & (tau <= high[_TAU])
        return theta[keep].float()

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density, ``-inf`` outside the support; value ``(..., 7)`` -> ``(...)``."""
        value = torch.as_tensor(value, dtype=torch.float32)
        ell, tau = value[..., _ELL].clamp_min(1e-12), value[..., _TAU].clamp_min(1e-12)
        log_p = -self._log_norm - ell.log() - tau.log()
        return torch.where(self.inside(value), log_p, torch.full_like(log_p, -math.inf))


def one_scan_prior(anatomy: Anatomy, t1: np.ndarray, t2: np.ndarray, preset: str = "human",
                   **kwargs) -> OneScanPrior:
    """The prior of a patient seen once: the origin inside the T1 core (or the T2 region when the
    core is empty) and on tissue, the thresholds of ``PRESETS[preset]``; ``kwargs`` go to
    [`OneScanPrior`][sbi_tumor.one_scan.OneScanPrior]."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown prior preset {preset!r}; valid presets: {sorted(PRESETS)}.")
    region = np.asarray(t1 if np.any(t1) else t2, dtype=bool) & anatomy.tissue
    if not region.any():
        raise ValueError("No voxel of the T1 core (or T2 region) lies on brain tissue: the origin has "
                         "nowhere to be; check that the segmentations are registered to the anatomy.")
    p = PRESETS[preset]
    return OneScanPrior(anatomy, region, thresholds=(p.low[2:], p.high[2:]), **kwargs)


class OneScanSimulator:
    """``simulator(theta (B, 7)) -> x (B, 1, nx, ny, nz)``: the tumour grown from ``(x, y, z)`` with
    infiltration length ``ell`` to the dimensionless age ``tau``, observed with (u_T1, u_T2).

    The label maps cover a cube of ``roi_size_mm`` centred on ``centre_mm`` (the segmentation's
    centre: the same window for every origin); the model runs on the whole anatomy. Each origin is
    a Gaussian seed of width ``sigma_mm`` and peak 1, as in
    [`TumorSimulator`][sbi_tumor.simulator.TumorSimulator]; times are in units of the age
    (``1.0`` is the scan, 1.2 a fifth of the age later), or in days since the origin when the age
    is known (``age_days``; the scan is then day ``age_days``). ``day`` is the scan either way.

    Args:
        anatomy: the brain anatomy.
        centre_mm: centre of the observation window (world mm).
        roi_size_mm: edge of the window (mm).
        ratio: D_white / D_grey.
        sigma_mm: width of the seed (mm).
        backend: as for ``TumorSimulator``.
        device: as for ``TumorSimulator``.
        age_days: the tumour's age at the scan, if known (days since the origin).
    """

    parameter_names: tuple[str, ...] = ONE_SCAN_NAMES

    def __init__(self, anatomy: Anatomy, centre_mm: Sequence[float], *, roi_size_mm: float = 64.0,
                 ratio: float | None = None, sigma_mm: float = SEED_SIGMA_MM, backend: Backend = "auto",
                 device: str | torch.device | None = None, age_days: float | None = None):
        if age_days is not None and not 0 < age_days < math.inf:
            raise ValueError(f"age_days must be a finite number of days > 0, got {age_days}.")
        #: the time of the scan: the age in days when known, else 1 (times in units of the age)
        self.day = AGE_UNIT if age_days is None else float(age_days)
        self.age_days = age_days
        config = SolverConfig() if ratio is None else SolverConfig(ratio=ratio)
        self.anatomy = anatomy
        self.sigma_mm = float(sigma_mm)
        # The window's centre need not be tissue (a tumour may surround a ventricle): mark it as
        # a one-voxel "density", whose centre is all TumorSimulator takes from it here.
        ijk = tuple(int(v) for v in np.rint(anatomy.world_to_voxel(np.asarray(centre_mm, dtype=float))))
        if not all(0 <= i < n for i, n in zip(ijk, anatomy.shape)):
            raise ValueError(f"The window centre {tuple(centre_mm)} mm lies outside the image.")
        marker = np.zeros(anatomy.shape, np.float32)
        marker[ijk] = 1
        self.base = TumorSimulator(anatomy, InitialCondition(density=marker), day=self.day,
                                   roi_size_mm=roi_size_mm, solver_config=config, backend=backend,
                                   device=device)
        self.roi, self.roi_slices = self.base.roi, self.base.roi_slices

    @property
    def x_shape(self) -> tuple[int, ...]:
        return self.base.x_shape

    def __call__(self, theta: Tensor) -> Tensor:
        theta = _as_theta(theta)
        return self.observe(self.solve(theta), theta)

    def solve(self, theta) -> np.ndarray:
        """Density at the scan, float32 ``(B, nx, ny, nz)``; theta ``(B, 5+)`` (origin, ell, tau)."""
        return self.density(theta, [self.day])[:, 0]

    def density(self, theta, days: Sequence[float], progress: bool = False) -> np.ndarray:
        """Density on the window at ``days`` (see the class: units of the age, or days since the
        origin), float32 ``(B, len(days), nx, ny, nz)``; theta ``(B, 5+)``."""
        theta = _as_theta(theta, columns=5)
        domain = self.base.domain
        u0 = np.stack([seed_density(domain, row[_ORIGIN], self.sigma_mm) for row in theta])
        # T, the scan's time, is in the units of ``days``
        return self.base.density(_d_rho(theta, self.day), days, progress=progress, u0=u0)

    def front_speed(self, theta) -> np.ndarray:
        """Asymptotic front speed ``2 sqrt(D rho) = 2 ell tau / T`` (mm per unit of ``days``), ``(B,)``."""
        return front_speed(_d_rho(_as_theta(theta, columns=5), self.day))

    def observe(self, density: np.ndarray, theta) -> Tensor:
        """Label maps of ``density`` ``(B, nx, ny, nz)`` with theta's thresholds, float32
        ``(B, 1, nx, ny, nz)``; ``simulator(theta) == observe(solve(theta), theta)``."""
        theta = _as_theta(theta)
        labels = label_map(np.asarray(density)[:, None], theta[:, _UT1].reshape(-1, 1, 1, 1, 1),
                           theta[:, _UT2].reshape(-1, 1, 1, 1, 1))
        return torch.from_numpy(labels).to(torch.float32)

    def labels(self, theta, days: Sequence[float]) -> np.ndarray:
        """Label maps at ``days``, uint8 ``(B, len(days), nx, ny, nz)``."""
        theta = _as_theta(theta)
        density = self.density(theta, days)
        return label_map(density, theta[:, _UT1].reshape(-1, 1, 1, 1, 1), theta[:, _UT2].reshape(-1, 1, 1, 1, 1))

    def to_full_grid(self, roi_array: np.ndarray) -> np.ndarray:
        return self.base.to_full_grid(roi_array)


def _as_theta(theta, columns: int = 7) -> np.ndarray:
    """theta as float64 numpy ``(B, columns+)``, checked: finite, ell and tau > 0, thresholds valid."""
    theta = as_batch(theta, columns, ONE_SCAN_NAMES)
    bad = np.flatnonzero((theta[:, _ELL] <= 0) | (theta[:, _TAU] <= 0))
    if len(bad):
        raise ValueError(f"ell and tau must be > 0; row {bad[0]} is {theta[bad[0]].tolist()}.")
    if theta.shape[1] >= 7:
        check_thresholds(theta[:, _UT1], theta[:, _UT2])
    return theta
