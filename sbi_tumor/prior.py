"""Priors over the tumour-growth parameters theta = (D, rho, u_T1, u_T2).

* ``D``: white-matter diffusivity of the Fisher-Kolmogorov model, mm^2/day.
* ``rho``: proliferation rate, 1/day.
* ``u_T1``, ``u_T2``: detection thresholds (dimensionless, on the normalised
  tumour cell density in [0, 1]) above which a voxel is labelled as enhancing
  core (T1Gd) and oedema (FLAIR/T2). The imaging model needs ``u_T1 > u_T2``;
  all priors here enforce it by requiring the box's ``u_T2`` upper bound to be
  at most its ``u_T1`` lower bound, so the prior stays a product distribution
  (which NPE and the MCMC transforms of ``sbi`` rely on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from sbi.utils import BoxUniform
from torch import Tensor
from torch.distributions import Distribution, constraints

from .config import PARAMETER_NAMES, PRESETS

__all__ = [
    "LogUniformBox",
    "box_of",
    "log_rates",
    "log_rates_prior",
    "make_prior",
    "rates",
    "support_box",
]

# Index of each parameter in theta, so checks read by name rather than number.
_D, _RHO, _UT1, _UT2 = range(4)


class LogUniformBox(Distribution):
    r"""Product of independent uniform and log-uniform marginals on a box.

    Dimension ``i`` is log-uniform on ``[low_i, high_i]`` (density
    \(1 / (x \log(high_i / low_i))\)) if ``log_dims[i]`` and uniform otherwise.
    Bounded ``support`` lets ``sbi`` map it to an unconstrained space for MCMC.

    Args:
        low: Lower bounds, shape ``(d,)``; must be ``> 0`` where ``log_dims``.
        high: Upper bounds, shape ``(d,)``.
        log_dims: Boolean mask, shape ``(d,)``.
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(self, low: Tensor, high: Tensor, log_dims: Tensor, validate_args=None):
        self.low, self.high = torch.broadcast_tensors(
            torch.as_tensor(low, dtype=torch.float32),
            torch.as_tensor(high, dtype=torch.float32).to(torch.as_tensor(low).device),
        )
        self.log_dims = torch.as_tensor(log_dims, dtype=torch.bool, device=self.low.device)
        if self.low.dim() != 1 or self.log_dims.shape != self.low.shape:
            raise ValueError("low, high and log_dims must be 1D tensors of equal length.")
        if torch.any(self.low[self.log_dims] <= 0):
            raise ValueError("Log-uniform dimensions need strictly positive bounds.")
        # Work in the coordinates where every marginal is uniform: log x or x.
        self._a = torch.where(self.log_dims, self.low.log(), self.low)
        self._b = torch.where(self.log_dims, self.high.log(), self.high)
        super().__init__(event_shape=self.low.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    @property
    def mean(self) -> Tensor:
        log_mean = (self.high - self.low) / (self._b - self._a)
        return torch.where(self.log_dims, log_mean, (self.low + self.high) / 2)

    @property
    def variance(self) -> Tensor:
        log_second = (self.high**2 - self.low**2) / (2 * (self._b - self._a))
        log_var = log_second - self.mean**2
        return torch.where(self.log_dims, log_var, (self.high - self.low) ** 2 / 12)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, device=self.low.device)
        z = self._a + u * (self._b - self._a)
        return torch.where(self.log_dims, z.exp(), z).clamp(self.low, self.high)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density, shape ``value.shape[:-1]``; ``-inf`` outside the box."""
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value, dtype=self.low.dtype, device=self.low.device)
        inside = ((value >= self.low) & (value <= self.high)).all(-1)
        # Change of variables from log x: log p(x) = -log x - log(log high - log low).
        log_jac = torch.where(self.log_dims, value.clamp_min(1e-30).log(), 0.0)
        log_p = -(self._b - self._a).log().sum() - log_jac.sum(-1)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))


def _check_bounds(low: Tensor, high: Tensor, log_uniform: bool) -> None:
    """Raise ``ValueError`` unless (low, high) is a valid box for theta."""
    names = PARAMETER_NAMES
    if low.shape != (4,) or high.shape != (4,):
        raise ValueError(
            f"Bounds need 4 entries {names}, got low {tuple(low.shape)} "
            f"and high {tuple(high.shape)}."
        )
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError("Bounds must be finite.")
    for i, name in enumerate(names):
        if low[i] >= high[i]:
            raise ValueError(
                f"Lower bound of {name} ({low[i]:g}) must be below its upper bound "
                f"({high[i]:g})."
            )
    for i in (_D, _RHO):
        if low[i] < 0 or (log_uniform and low[i] == 0):
            raise ValueError(
                f"Lower bound of {names[i]} must be "
                f"{'> 0 for a log-uniform prior' if log_uniform else '>= 0'}, "
                f"got {low[i]:g}."
            )
    for i in (_UT1, _UT2):
        if low[i] < 0 or high[i] > 1:
            raise ValueError(
                f"Threshold {names[i]} lives on the normalised density and must lie "
                f"in [0, 1], got [{low[i]:g}, {high[i]:g}]."
            )
    if high[_UT2] > low[_UT1]:
        raise ValueError(
            f"The box allows u_T2 > u_T1: upper bound of u_T2 ({high[_UT2]:g}) must be "
            f"<= lower bound of u_T1 ({low[_UT1]:g})."
        )


def make_prior(
    preset: str = "human",
    *,
    log_uniform: bool = False,
    device: str | torch.device = "cpu",
    bounds: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Distribution:
    """Prior over theta = (D [mm^2/day], rho [1/day], u_T1 [-], u_T2 [-]).

    Args:
        preset: Name of an entry of ``PRESETS`` (``"human"`` or ``"paper"``).
        log_uniform: If True, D and rho are log-uniform (scale parameters spanning
            two orders of magnitude) and the thresholds uniform. Otherwise a
            ``BoxUniform``, the only bounded prior that ``NPE_A`` accepts.
        device: Device of the prior's tensors (and hence of its samples).
        bounds: ``(low, high)``, each of length 4, overriding the preset's box.

    Returns:
        Distribution with ``event_shape == (4,)``; ``log_prob`` takes ``(..., 4)``.

    Raises:
        ValueError: Unknown preset or invalid bounds.
    """
    if preset not in PRESETS:
        raise ValueError(
            f"Unknown prior preset {preset!r}; valid presets: {sorted(PRESETS)}."
        )
    low, high = bounds if bounds is not None else (PRESETS[preset].low, PRESETS[preset].high)
    low = torch.as_tensor(low, dtype=torch.float32).flatten()
    high = torch.as_tensor(high, dtype=torch.float32).flatten()
    _check_bounds(low, high, log_uniform)

    low, high = low.to(device), high.to(device)
    if log_uniform:
        log_dims = torch.tensor([True, True, False, False], device=device)
        return LogUniformBox(low, high, log_dims)
    return BoxUniform(low=low, high=high, device=str(device))


def log_rates(theta: Tensor) -> Tensor:
    """``(D, rho, u_T1, u_T2) -> (log D, log rho, u_T1, u_T2)``, shape ``(..., 4)``."""
    return torch.cat([theta[..., :2].log(), theta[..., 2:]], dim=-1)


def rates(phi: Tensor) -> Tensor:
    """Inverse of [`log_rates`][sbi_tumor.prior.log_rates]."""
    return torch.cat([phi[..., :2].exp(), phi[..., 2:]], dim=-1)


class _LogRatesPrior(Distribution):
    """A ``BoxUniform`` over theta seen in ``phi = log_rates(theta)``: ``p(phi) = p(theta) D rho``."""

    arg_constraints = {}
    has_rsample = False

    def __init__(self, prior: BoxUniform):
        self.prior = prior
        box = support_box(prior.support)
        a, b = box.lower_bound, box.upper_bound
        self.low, self.high, self._theta_low, self._theta_high = log_rates(a), log_rates(b), a, b
        # Moments of log x for x uniform on [a, b] (sbi z-scores theta with them).
        a2, b2 = a[:2].double(), b[:2].double()
        m1 = (b2 * b2.log() - b2 - a2 * a2.log() + a2) / (b2 - a2)
        m2 = (b2 * (b2.log() ** 2 - 2 * b2.log() + 2) - a2 * (a2.log() ** 2 - 2 * a2.log() + 2)) / (b2 - a2)
        self._mean = torch.cat([m1.to(a.dtype), (a[2:] + b[2:]) / 2])
        self._variance = torch.cat([(m2 - m1**2).to(a.dtype), (b[2:] - a[2:]) ** 2 / 12])
        super().__init__(event_shape=self.low.shape, validate_args=False)

    @property
    def mean(self) -> Tensor:
        return self._mean

    @property
    def variance(self) -> Tensor:
        return self._variance

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return log_rates(self.prior.sample(sample_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        value = torch.as_tensor(value, dtype=self.low.dtype, device=self.low.device)
        inside = ((value >= self.low) & (value <= self.high)).all(-1)
        # Clamp into the box so that rates() of far-off values stays finite, and clamp again in
        # theta: exp(log a) can round to just below a, where the BoxUniform gives -inf.
        theta = rates(torch.minimum(torch.maximum(value, self.low), self.high))
        log_p = self.prior.log_prob(torch.minimum(torch.maximum(theta, self._theta_low), self._theta_high))
        log_p = log_p + value[..., 0] + value[..., 1]
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))


def support_box(support: constraints.Constraint) -> constraints.interval | None:
    """The interval under a support's ``independent`` wrappers (a box's ``(d,)`` bounds), or None
    for a support that is no box."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support if isinstance(support, constraints.interval) else None


def box_of(prior: Distribution, off: str) -> constraints.interval:
    """The box a prior lives on (its support's interval, ``(d,)`` bounds), for the settings that map
    it onto R^d; ``off`` names the setting that does without it, for the error on a prior without one."""
    box = support_box(prior.support)
    if box is None:
        raise ValueError(f"The logit of the prior's box needs a prior on a box (as make_prior returns), got "
                         f"{type(prior).__name__} with support {prior.support}; set {off}.")
    return box


def log_rates_prior(prior: Distribution) -> Distribution:
    """The prior of ``phi = (log D, log rho, u_T1, u_T2)`` for a box prior over theta.

    The log-uniform box of ``make_prior(..., log_uniform=True)`` becomes a ``BoxUniform`` (which
    ``NPE_A`` needs); a ``BoxUniform`` over theta gets the change of variables
    ``p(phi) = p(theta) D rho``.
    """
    if isinstance(prior, LogUniformBox) and prior.log_dims.tolist() == [True, True, False, False]:
        low, high = log_rates(prior.low), log_rates(prior.high)
        return BoxUniform(low=low, high=high, device=str(low.device))
    if isinstance(prior, BoxUniform) and torch.all(support_box(prior.support).lower_bound[:2] > 0):
        return _LogRatesPrior(prior)
    raise ValueError("Training on (log D, log rho) needs a make_prior(...) prior (BoxUniform or log-uniform) "
                     f"with D > 0 and rho > 0, got {prior}.")
