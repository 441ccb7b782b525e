"""Split-conformal widening: a posterior whose central intervals hold the truth as often as they say.

Neural posterior estimates from a few hundred simulations are over-confident (docs, Benchmarks,
Calibration: the default's central 90% intervals held the truth in 70-82% of the checks). Given
``n`` pairs ``(theta_i, x_i)`` the network was not trained on, drawn from the distribution it
is the posterior of (the prior after round 1; TSNPE's truncated prior after a later round),
[`conformal_scales`][sbi_tumor.conformal.conformal_scales] measures, per parameter, how much
each pair's central interval of mass ``m`` around the posterior's median would have to be
scaled to hold its truth (in the prior's unbounded coordinates, where scaling cannot leave the
prior's box), and takes the ``ceil((n + 1) m)``-th smallest of these scores. A posterior
widened (or narrowed) by that factor about its median,
[`ConformalPosterior`][sbi_tumor.conformal.ConformalPosterior], holds the truth of a further pair
drawn the same way with probability at least ``m`` (split conformal prediction: Vovk et al. 2005,
Lei et al. 2018), whatever the network's error, as long as the pairs are exchangeable with it.
The guarantee is on average over such draws, not conditional on one observation x_o. With
``augment`` the K pairs of one solve share (D, rho) and are scored together: they are
exchangeable only as blocks, so the finite-sample guarantee becomes approximate (the scale is the
same quantile, estimated from more, correlated scores); it is exact with ``augment=1``.

The scaling is affine in the unbounded coordinates ``z = T(theta)`` (sbi's ``biject_to`` of the
prior's box), about the median ``c(x)`` of the posterior's draws at ``x``:
``z' = c(x) + s (z - c(x))``. Its density is the posterior's, moved: ``log q'(theta | x) =
log q(theta_b | x) - log|dT/dtheta|(theta_b) - sum(log s) + log|dT/dtheta|(theta)``, with
``theta_b = T^-1(c + (T(theta) - c) / s)``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from torch.distributions import Distribution, biject_to

from .config import CONFORMAL_MASS, MIN_CALIBRATION_SOLVES
from .posteriors import PosteriorView, best_of_draws
from .prior import box_of
from .sbi_compat import InferenceError, sample_unrejected

__all__ = ["CONFORMAL_MASS", "MIN_CALIBRATION_SOLVES", "ConformalPosterior", "conformal_scales", "inside_box", "interval_scores",
           "unbounded_transform"]

#: A calibration pair whose posterior puts less of its mass inside the prior's box than this
#: counts as not covered at any scale (sbi's rejection sampling there would not end).
MIN_INSIDE = 0.01
#: Posterior draws that fix the median of a ``ConformalPosterior`` at one ``x``.
CENTER_SAMPLES = 10_000
#: ``sample_batched`` widens about the median of its own draws from this many per x on.
MIN_OWN_CENTER = 100


def unbounded_transform(prior: Distribution, off: str = "calibration_solves=0") -> torch.distributions.Transform:
    """``T``: theta in the prior's box -> R^d (logit of the box), from the prior's support;
    ``off`` names the setting that does without it, for the error on a prior without a box."""
    box_of(prior, off)
    return biject_to(prior.support).inv  # biject_to maps R^d onto the support


def inside_box(transform: torch.distributions.Transform, theta: torch.Tensor) -> torch.Tensor:
    """bool ``(...)``: theta ``(..., d)`` strictly inside the box of ``T`` (``unbounded_transform``;
    torch reports T's domain as all of R^d)."""
    z = transform(theta.double())
    return torch.isfinite(z).all(-1) & torch.isclose(transform.inv(z), theta.double(), rtol=1e-5, atol=1e-6).all(-1)


def interval_scores(samples_z: torch.Tensor, truth_z: torch.Tensor, mass: float = CONFORMAL_MASS) -> torch.Tensor:
    """How far each central interval of mass ``mass`` must be scaled about its median to hold its truth.

    Args:
        samples_z: posterior draws in unbounded coordinates, ``(L, N, d)`` (L per pair).
        truth_z: the pairs' truths in the same coordinates, ``(N, d)``.

    Returns:
        ``(N, d)``: ``(z - c) / (hi - c)`` above the median ``c`` and ``(c - z) / (c - lo)`` below,
        ``lo``, ``hi`` the interval's ends; <= 1 where the interval holds the truth.
    """
    q = torch.tensor([(1 - mass) / 2, 0.5, (1 + mass) / 2], dtype=samples_z.dtype)
    lo, center, hi = torch.quantile(samples_z, q, dim=0)
    tiny = torch.finfo(samples_z.dtype).tiny
    above = (truth_z - center) / (hi - center).clamp_min(tiny)
    below = (center - truth_z) / (center - lo).clamp_min(tiny)
    return torch.where(truth_z >= center, above, below)


def conformal_scales(posterior: Any, theta: torch.Tensor, x: torch.Tensor, transform: torch.distributions.Transform,
                     mass: float = CONFORMAL_MASS, num_posterior_samples: int = 1000) -> torch.Tensor:
    """Per parameter, the split-conformal scale of ``posterior``'s central ``mass`` intervals, ``(d,)``.

    Args:
        posterior: an sbi posterior with ``sample(shape, x=..., show_progress_bars=...)``.
        theta: calibration truths ``(n, d)``, not trained on.
        x: their simulations ``(n, ...)``.
        transform: ``T`` of [`unbounded_transform`][sbi_tumor.conformal.unbounded_transform].
        mass: the interval's mass.
        num_posterior_samples: draws per pair.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32)
    scores = torch.stack([_scores(posterior, t, xi, transform, mass, num_posterior_samples) for t, xi in zip(theta, x)])
    n = len(theta)
    k = min(math.ceil((n + 1) * mass), n)  # the (n + 1) m-th score; with n < 1 / (1 - m) - 1, the largest
    scales = scores.sort(dim=0).values[k - 1].float()
    if not torch.isfinite(scales).all():
        raise InferenceError(f"More than {1 - mass:.0%} of the {n} calibration solves have a posterior with less than "
                             f"{MIN_INSIDE:.0%} of its mass inside the prior: the network does not fit there. Train "
                             "on more solves (num_simulations), or set calibration_solves=0.")
    return scales


def _scores(posterior: Any, theta: torch.Tensor, x: torch.Tensor, transform: torch.distributions.Transform,
            mass: float, num_samples: int) -> torch.Tensor:
    """``interval_scores`` of one pair, ``(d,)``; infinite (not covered at any scale) where the
    posterior at ``x`` puts less than ``MIN_INSIDE`` of its mass inside the prior's box.

    One x at a time: sbi's batched rejection sampling draws for every x until the x with the lowest
    acceptance has its samples, keeping all the others' (13 GB for 50 label maps of the human
    case), and at an acceptance near 0 it never ends.
    """
    probe = sample_unrejected(posterior, num_samples, x[None])
    if inside_box(transform, probe).float().mean() < MIN_INSIDE:
        return torch.full(theta.shape, math.inf, dtype=torch.float64)
    samples = posterior.sample((num_samples,), x=x[None], show_progress_bars=False)
    return interval_scores(transform(samples.double())[:, None], transform(theta.double())[None], mass)[0]


class ConformalPosterior(PosteriorView):
    """An sbi posterior widened per parameter by ``scales`` about its median (module docstring).

    Offers what an sbi posterior offers to this package and to sbi's diagnostics (``sample``,
    ``sample_batched``, ``log_prob``, ``map``, ``set_default_x``, ``default_x``); the posterior
    it widens is ``.posterior``.

    Args:
        posterior: the posterior over theta ``(d,)``.
        scales: per parameter, ``(d,)``; 1 leaves it as it is.
        transform: ``T`` of [`unbounded_transform`][sbi_tumor.conformal.unbounded_transform].
    """

    def __init__(self, posterior: Any, scales: torch.Tensor, transform: torch.distributions.Transform):
        super().__init__(posterior)
        self.scales, self.transform = torch.as_tensor(scales, dtype=torch.float64), transform
        self._centers: dict[str, torch.Tensor] = {}  # sha1 of x -> its median

    def center(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The median in unbounded coordinates of ``CENTER_SAMPLES`` draws at ``x``, ``(d,)``
        (drawn with a seed of their own, so that it is the same on every call)."""
        x = self.default_x if x is None else x
        data = torch.as_tensor(x).detach().cpu().float()
        key = hashlib.sha1(data.numpy().tobytes() + str(tuple(data.shape)).encode()).hexdigest()
        if key not in self._centers:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                draws = self.posterior.sample((CENTER_SAMPLES,), x=x, show_progress_bars=False)
            self._centers[key] = self.transform(draws.double()).median(0).values
        return self._centers[key]

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_centers": {}}  # medians are recomputed where the posterior is loaded

    def _widen(self, samples: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        z = self.transform(samples.double())
        return self.transform.inv(center + self.scales * (z - center)).to(samples.dtype)

    def sample(self, sample_shape=torch.Size(), x: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Draws of theta, ``(*sample_shape, d)``."""
        return self._widen(self.posterior.sample(sample_shape, x=x, **kwargs), self.center(x))

    def sample_batched(self, sample_shape, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Draws for each of a batch of x, ``(*sample_shape, len(x), d)``, each x's widened about
        the median of its own draws, as the scales were measured (about ``center(x)`` below
        ``MIN_OWN_CENTER`` draws)."""
        samples = self.posterior.sample_batched(sample_shape, x=x, **kwargs)
        flat = samples.reshape(-1, *samples.shape[-2:])
        if len(flat) >= MIN_OWN_CENTER:
            center = self.transform(flat.double()).median(0).values
        else:
            center = torch.stack([self.center(xi[None]) for xi in x])
        return self._widen(samples, center)

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """``log q'(theta | x)``, ``(...)`` for theta ``(..., d)`` (module docstring)."""
        theta = torch.as_tensor(theta).double()
        center, z = self.center(x), self.transform(theta)
        z_b = center + (z - center) / self.scales
        theta_b = self.transform.inv(z_b)
        jac = self.transform.log_abs_det_jacobian
        base = self.posterior.log_prob(theta_b.float(), x=x, **kwargs).double()
        out = base - jac(theta_b, z_b) - self.scales.log().sum() + jac(theta, z)
        return torch.where(inside_box(self.transform, theta), out, -math.inf).float()

    def map(self, num_init_samples: int = 1000, **_: Any) -> torch.Tensor:
        """The best of ``num_init_samples`` draws by the widened density, at ``default_x``."""
        return best_of_draws(self, num_init_samples)
