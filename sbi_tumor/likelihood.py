"""Explicit voxelwise Bernoulli likelihood of the T1/T2 segmentations (Lipkova et al., 2019).

Given the tumour density ``u`` predicted by the forward model, every voxel of the T1-gadolinium
segmentation is Bernoulli with ``P(tumour) = f(u - u_T1)`` and every voxel of the T2/FLAIR
segmentation is Bernoulli with ``P(tumour) = f(u - u_T2)``, all voxels and both scans independent.
The link ``f`` is one of

``"logistic"``
    ``f(d) = sigmoid(d / s)``; default ``s = 0.05`` (``P`` goes from 0.12 to 0.88 over
    ``|d| <= 0.1``).
``"reference"``
    Exactly what the published reference code computes (``HGG_Likelihood::_computeLogBernoulli``
    in ``JanaLipkova/GliomaSolver``)::

        f(d) = 0.5 * exp(-d**2 / s)       for d <= 0
        f(d) = 1 - 0.5 * exp(-1 / s)      for d > 0

    i.e. a half-Gaussian rise to 0.5 at the threshold and a *jump* to (almost) 1 above it. The
    code writes this as ``0.5 + 0.5 sign(d) (1 - exp(-w / s))`` with ``w = 1`` for ``d > 0``; its
    comment keeps the symmetric ``w = d**2`` as the "OLD version". We follow the code because it
    is what produced the published posteriors. Default ``s = 0.01``, which gives ``P = 0.18`` at
    ``d = -0.1``, close to the logistic default.
``"symmetric"``
    The old/symmetric version ``0.5 + 0.5 sign(d) (1 - exp(-d**2 / s))``, continuous at the
    threshold (useful for samplers that dislike the jump); default ``s = 0.01``.

All forms are evaluated in log-space without forming ``p`` first (log-sigmoid, ``log1p``), and the
probabilities are clipped to ``[eps, 1 - eps]``, i.e. each voxel log-probability is clamped to
``[log(eps), log1p(-eps)]``. The clip is a floor on the label-noise rate: with the default
``eps = 1e-6`` a single contradicting voxel costs at most ``13.8`` nats, so isolated segmentation
errors cannot dominate the posterior. [`sample_masks`][sbi_tumor.likelihood.BernoulliLikelihood.sample_masks] draws from exactly
the clipped probabilities, so likelihood and simulator match and the posterior is well defined.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .observation import encode_masks

if TYPE_CHECKING:
    from .simulator import TumorSimulator

__all__ = ["BernoulliLikelihood", "DEFAULT_SLOPES", "MaskCodeSimulator"]

Array = Union[np.ndarray, Tensor]
Form = Literal["logistic", "reference", "symmetric"]

DEFAULT_SLOPES: dict[str, float] = {"logistic": 0.05, "reference": 0.01, "symmetric": 0.01}

_LOG_HALF = math.log(0.5)


@dataclass(frozen=True)
class BernoulliLikelihood:
    """Voxelwise Bernoulli likelihood of binary T1 and T2 segmentations given a density ``u``.

    Args:
        form: Link ``f`` from ``u - u_c`` to ``P(tumour)``: ``"logistic"``, ``"reference"`` or
            ``"symmetric"`` (see the module docstring).
        slope: Width ``s`` of the link, in density units for ``"logistic"`` and squared density
            units for the Gaussian forms; ``None`` picks ``DEFAULT_SLOPES[form]``.
        eps: Probabilities are clipped to ``[eps, 1 - eps]``; ``0`` disables the clip.
    """

    form: Form = "logistic"
    slope: Optional[float] = None
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.form not in DEFAULT_SLOPES:
            raise ValueError(f"form must be one of {sorted(DEFAULT_SLOPES)}, got {self.form!r}.")
        if self.slope is None:
            object.__setattr__(self, "slope", DEFAULT_SLOPES[self.form])
        if not self.slope > 0:
            raise ValueError(f"slope must be positive, got {self.slope}.")
        if not 0 <= self.eps < 0.5:
            raise ValueError(f"eps must lie in [0, 0.5), got {self.eps}.")

    def log_prob_voxels(self, u: Tensor, u_c: Tensor, y: Tensor) -> Tensor:
        """Per-voxel ``log P(y | u)`` for labels ``y`` (bool), broadcasting ``u``, ``u_c``, ``y``."""
        d = u - u_c
        if self.form == "logistic":
            # log sigmoid(z) if y else log sigmoid(-z): one stable call for both labels.
            z = d / self.slope
            logp = torch.nn.functional.logsigmoid(torch.where(y, z, -z))
        else:
            # Write p = 1 - 0.5 exp(-q) on the "likely" side and p = 0.5 exp(-q) on the other;
            # both logs are then exact for any q >= 0, no p is ever formed.
            above = d > 0
            w = torch.ones_like(d) if self.form == "reference" else d * d
            q = torch.where(above, w, d * d) / self.slope
            unlikely = _LOG_HALF - q
            likely = torch.log1p(-0.5 * torch.exp(-q))
            logp = torch.where(above == y, likely, unlikely)
        if self.eps > 0:
            logp = logp.clamp(math.log(self.eps), math.log1p(-self.eps))
        return logp

    def tumour_probability(self, u: Array, u_c: Union[float, Array]) -> Array:
        """Clipped ``P(tumour | u)``; ``u_c`` scalar or of shape ``u.shape[:k]`` (leading dims)."""
        ut, back = _as_tensor(u)
        return back(self._tumour_probability(ut, u_c))

    def _tumour_probability(self, u: Tensor, u_c: Union[float, Array]) -> Tensor:
        uc = _to_like(u_c, u)
        uc = uc.reshape(*uc.shape, *([1] * (u.ndim - uc.ndim)))
        return self.log_prob_voxels(u, uc, torch.ones_like(u, dtype=torch.bool)).exp()

    def log_likelihood(
        self,
        u: Array,
        t1_mask: Array,
        t2_mask: Array,
        u_t1: Union[float, Array],
        u_t2: Union[float, Array],
        roi: Optional[Array] = None,
    ) -> Array:
        """Log-likelihood ``log p(T1, T2 | u, u_T1, u_T2)`` summed over voxels.

        Args:
            u: Densities, shape ``(*batch, nx, ny, nz)`` (e.g. ``(B, nx, ny, nz)``), values in [0, 1].
            t1_mask: T1 segmentation, ``(nx, ny, nz)`` (or broadcastable to ``u``); nonzero = tumour.
            t2_mask: T2 segmentation, same shape as ``t1_mask``.
            u_t1: T1 thresholds, scalar or shape ``batch`` (e.g. ``(B,)``).
            u_t2: T2 thresholds, scalar or shape ``batch``.
            roi: Optional boolean ``(nx, ny, nz)`` region; only its voxels are summed.

        Returns:
            Shape ``batch``: numpy float64 for numpy ``u``; for a tensor ``u`` a tensor of
            ``u.dtype`` on ``u.device`` (the voxel sum is accumulated in float64).
        """
        ut, back = _as_tensor(u)
        space = np.ndim(t1_mask)
        if ut.ndim < space:
            raise ValueError(f"u has shape {tuple(ut.shape)} but the masks have {space} dims.")
        batch = ut.shape[: ut.ndim - space]
        masks = [_as_bool(m, ut.device) for m in (t1_mask, t2_mask)]
        if roi is not None:
            keep = _as_bool(roi, ut.device)
            ut = ut[..., keep]
            masks = [m[..., keep] for m in masks]
        else:
            ut = ut.reshape(*batch, -1)
            masks = [m.reshape(*m.shape[: m.ndim - space], -1) for m in masks]

        total = torch.zeros(batch, dtype=torch.float64, device=ut.device)
        for mask, threshold in zip(masks, (u_t1, u_t2)):
            uc = _to_like(threshold, ut).expand(batch)
            total = total + self.log_prob_voxels(ut, uc[..., None], mask).sum(-1, dtype=torch.float64)
        return back(total) if back is _to_numpy else total.to(ut.dtype)

    def sample_masks(
        self,
        u: Array,
        u_t1: Union[float, Array],
        u_t2: Union[float, Array],
        generator: Union[None, int, np.random.Generator, torch.Generator] = None,
    ) -> tuple[Array, Array]:
        """Draw T1 and T2 segmentations from this likelihood.

        Each voxel of each mask is an independent Bernoulli draw with the clipped probability used
        by [`log_likelihood`][sbi_tumor.likelihood.BernoulliLikelihood.log_likelihood], so a T1 voxel may fall outside the T2 mask, as the likelihood
        allows.

        Args:
            u: Densities ``(*batch, nx, ny, nz)``.
            u_t1: Thresholds, scalar or shape ``batch``.
            u_t2: Thresholds, scalar or shape ``batch``.
            generator: ``numpy.random.Generator`` or seed (numpy ``u``), ``torch.Generator``
                (tensor ``u``); ``None`` uses fresh entropy / the global torch RNG.

        Returns:
            ``(t1_mask, t2_mask)``, booleans of ``u``'s shape and array type.
        """
        ut, back = _as_tensor(u)
        p1, p2 = (self._tumour_probability(ut, uc) for uc in (u_t1, u_t2))
        if back is _to_numpy:
            rng = np.random.default_rng(generator)  # passes a Generator through unchanged
            return rng.random(p1.shape) < p1.numpy(), rng.random(p2.shape) < p2.numpy()
        draws = (torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device) for p in (p1, p2))
        return tuple(d < p for d, p in zip(draws, (p1, p2)))


def _to_numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _identity(x: Tensor) -> Tensor:
    return x


def _as_tensor(u: Array):
    """Tensor view of ``u`` and the function converting results back to ``u``'s array type."""
    if isinstance(u, Tensor):
        return (u if u.is_floating_point() else u.to(torch.get_default_dtype())), _identity
    # float64 on purpose: numpy callers get float64 results as promised.
    array = np.asarray(u, dtype=np.float64)
    with warnings.catch_warnings():
        # Read-only inputs (e.g. np.broadcast_to batches) are fine: the tensor is never written,
        # and copying would materialise the broadcast.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array), _to_numpy


def _as_bool(mask: Array, device: torch.device) -> Tensor:
    if isinstance(mask, Tensor):
        return mask.to(device=device, dtype=torch.bool)
    return torch.from_numpy(np.asarray(mask) != 0).to(device)


def _to_like(value: Union[float, Array], like: Tensor) -> Tensor:
    """``value`` as a tensor with ``like``'s dtype and device."""
    t = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float64))
    return t.to(dtype=like.dtype, device=like.device)


class MaskCodeSimulator:
    """NPE simulator of the matched problem: segmentations drawn from the Bernoulli likelihood.

    ``theta (B, 4) -> x (B, 1, nx, ny, nz)`` float32 with the voxel code ``T2 + 2 T1``.

    Args:
        simulator: The forward model (its observation day is used).
        likelihood: The likelihood the masks are drawn from.
        seed: Seed of the mask draws.
    """

    def __init__(self, simulator: TumorSimulator, likelihood: BernoulliLikelihood, seed: int):
        self.simulator = simulator
        self.likelihood = likelihood
        self.rng = np.random.default_rng(seed)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return self.observe(self.solve(theta), theta)

    def solve(self, theta) -> np.ndarray:
        """Density at the observation day, float32 ``(B, nx, ny, nz)``."""
        return self.simulator.solve(theta)

    def observe(self, density: np.ndarray, theta) -> torch.Tensor:
        """Mask codes drawn from the likelihood of ``density`` with theta's thresholds."""
        theta = np.asarray(torch.as_tensor(theta).detach().cpu(), dtype=np.float64).reshape(-1, 4)
        t1, t2 = self.likelihood.sample_masks(density, theta[:, 2], theta[:, 3], generator=self.rng)
        return torch.from_numpy(encode_masks(t1, t2)[:, None]).to(torch.float32)
