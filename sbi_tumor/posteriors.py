"""Views of an sbi posterior that change what it takes or returns, built on sbi's public API only.

* [`FeaturePosterior`][sbi_tumor.posteriors.FeaturePosterior]: a posterior trained on fixed
  features of the label maps (computed once per simulation, not once per epoch), made to take
  label maps again;
* [`LogRatesPosterior`][sbi_tumor.posteriors.LogRatesPosterior]: a posterior trained on
  ``(log D, log rho, u_T1, u_T2)``, seen in theta;
* [`UnitBoxPosterior`][sbi_tumor.posteriors.UnitBoxPosterior]: a posterior trained on the prior's
  box mapped onto the unit cube, seen in theta.

All offer what an sbi posterior offers to this package and to sbi's diagnostics (``sample``,
``sample_batched``, ``log_prob``, ``map``, ``set_default_x``, ``default_x``); the wrapped sbi
posterior is ``.posterior``.
"""

from __future__ import annotations

from typing import Any

import torch

from .prior import log_rates, rates

__all__ = ["FeaturePosterior", "LogRatesPosterior", "PosteriorView", "ReparametrizedPosterior", "UnitBoxPosterior",
           "best_of_draws", "label_map_features"]


@torch.no_grad()
def label_map_features(embedding: torch.nn.Module, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Label maps ``(N, 1, nx, ny, nz)`` (or one map) -> ``embedding.features`` ``(N, F)`` float32,
    ``chunk`` maps at a time (bounds the memory of the feature map)."""
    x = torch.as_tensor(x)
    x = x.reshape((-1, 1) + tuple(x.shape[-3:]))
    return torch.cat([embedding.features(c) for c in torch.split(x, chunk)])


class FeaturePosterior:
    """An sbi posterior whose net takes the features ``embedding.features(x)``, given label maps.

    Args:
        posterior: the sbi posterior, trained on features ``(N, F)``.
        embedding: the embedding net with the fixed feature map in front (``features``).
        chunk: label maps per call of the feature map (bounds its memory).
    """

    def __init__(self, posterior: Any, embedding: torch.nn.Module, chunk: int = 256):
        self.posterior, self.embedding, self.chunk = posterior, embedding, chunk
        self._default_x: torch.Tensor | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Label maps ``(N, 1, nx, ny, nz)`` (or one map) -> features ``(N, F)`` float32."""
        return label_map_features(self.embedding, x, self.chunk)

    @property
    def default_x(self) -> torch.Tensor | None:
        return self._default_x

    def set_default_x(self, x: torch.Tensor) -> "FeaturePosterior":
        self._default_x = torch.as_tensor(x)
        self.posterior.set_default_x(self.features(x))
        return self

    def _x(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else self.features(x)

    def sample(self, sample_shape=torch.Size(), x: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.posterior.sample(sample_shape, x=self._x(x), **kwargs)

    def sample_batched(self, sample_shape, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.posterior.sample_batched(sample_shape, x=self.features(x), **kwargs)

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.posterior.log_prob(theta, x=self._x(x), **kwargs)

    def map(self, **kwargs) -> torch.Tensor:
        """The mode at ``default_x`` (sbi 0.27's ``map`` takes no ``x``)."""
        return self.posterior.map(**kwargs)


def best_of_draws(posterior: Any, draws: int | torch.Tensor) -> torch.Tensor:
    """The best of ``draws`` (a number of new draws at ``default_x``, or draws already made,
    ``(N, d)``) by the posterior's own ``log_prob``: the MAP of a posterior whose density sbi's
    ``map()`` does not climb, or climbs too slowly (FMPE's, through its ODE)."""
    theta = posterior.sample((draws,), show_progress_bars=False) if isinstance(draws, int) else draws
    return theta[posterior.log_prob(theta).argmax()]


class PosteriorView:
    """A view of the posterior ``.posterior`` that shares its default x."""

    def __init__(self, posterior: Any):
        self.posterior = posterior

    @property
    def default_x(self) -> torch.Tensor | None:
        return self.posterior.default_x

    def set_default_x(self, x: torch.Tensor) -> "PosteriorView":
        self.posterior.set_default_x(x)
        return self


class ReparametrizedPosterior(PosteriorView):
    """Theta-space view of an sbi posterior trained on ``phi = to_phi(theta)``, a bijection.

    ``sample``, ``log_prob``, ``map`` and ``set_default_x`` behave as on an sbi posterior over
    theta; the posterior over phi is ``.posterior``. Subclasses define ``to_theta``, ``to_phi``
    and ``log_det(theta)``, the log absolute Jacobian determinant of ``to_phi``.
    """

    def to_theta(self, phi: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_phi(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_det(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, sample_shape=torch.Size(), x: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Samples of theta, ``(*sample_shape, d)``."""
        return self.to_theta(self.posterior.sample(sample_shape, x=x, **kwargs))

    def sample_batched(self, sample_shape, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Samples of theta for each of a batch of x, ``(*sample_shape, len(x), d)`` (as sbi's)."""
        return self.to_theta(self.posterior.sample_batched(sample_shape, x=x, **kwargs))

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """``log p(theta | x) = log p(phi | x) + log |d phi / d theta|``."""
        theta = torch.as_tensor(theta, dtype=torch.float32)
        return self.posterior.log_prob(self.to_phi(theta), x=x, **kwargs) + self.log_det(theta)

    def map(self, **kwargs) -> torch.Tensor:
        """The mode in phi, mapped to theta."""
        return self.to_theta(self.posterior.map(**kwargs))


class LogRatesPosterior(ReparametrizedPosterior):
    """Theta-space view of an sbi posterior trained on ``phi = (log D, log rho, u_T1, u_T2)``."""

    def to_theta(self, phi: torch.Tensor) -> torch.Tensor:
        return rates(phi)

    def to_phi(self, theta: torch.Tensor) -> torch.Tensor:
        return log_rates(theta)

    def log_det(self, theta: torch.Tensor) -> torch.Tensor:
        return -theta[..., :2].log().sum(-1)


class UnitBoxPosterior(ReparametrizedPosterior):
    """Theta-space view of an sbi posterior trained on ``phi = (theta - low) / (high - low)``,
    the prior's box mapped onto the unit cube (NPE_A: see ``sbi_tumor.inference``)."""

    def __init__(self, posterior: Any, low: torch.Tensor, high: torch.Tensor):
        super().__init__(posterior)
        self.low, self.width = torch.as_tensor(low), torch.as_tensor(high) - torch.as_tensor(low)

    def to_theta(self, phi: torch.Tensor) -> torch.Tensor:
        return self.low + self.width * phi

    def to_phi(self, theta: torch.Tensor) -> torch.Tensor:
        return (theta - self.low) / self.width

    def log_det(self, theta: torch.Tensor) -> torch.Tensor:
        return -self.width.log().sum().expand(theta.shape[:-1])

    def map(self, num_init_samples: int = 1000, **_: Any) -> torch.Tensor:
        """The best of ``num_init_samples`` draws by the corrected density: sbi's NPE_A posterior
        corrects ``sample`` and ``log_prob``, but its ``map()`` climbs the uncorrected network."""
        return best_of_draws(self, num_init_samples)

    def sample_batched(self, sample_shape, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """One ``sample`` per x, stacked as sbi's ``(*sample_shape, len(x), d)``: sbi's NPE_A
        posterior corrects ``sample`` but its batched sampling draws the uncorrected network."""
        return torch.stack([self.sample(sample_shape, x=xi[None], **kwargs) for xi in x], dim=-2)
