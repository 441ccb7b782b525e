"""Views of an sbi posterior that change what it takes or returns, built on sbi's public API only.

* [`FeaturePosterior`][sbi_tumor.posteriors.FeaturePosterior]: a posterior trained on fixed
  features of the label maps (computed once per simulation, not once per epoch), made to take
  label maps again;
* [`LogRatesPosterior`][sbi_tumor.posteriors.LogRatesPosterior]: a posterior trained on
  ``(log D, log rho, u_T1, u_T2)``, seen in theta.

Both offer what an sbi posterior offers to this package and to sbi's diagnostics (``sample``,
``sample_batched``, ``log_prob``, ``map``, ``set_default_x``, ``default_x``); the wrapped sbi
posterior is ``.posterior``.
"""

from __future__ import annotations

from typing import Any

import torch

from .prior import log_rates, rates

__all__ = ["FeaturePosterior", "LogRatesPosterior", "label_map_features"]


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


class LogRatesPosterior:
    """Theta-space view of an sbi posterior trained on ``phi = (log D, log rho, u_T1, u_T2)``.

    ``sample``, ``log_prob``, ``map`` and ``set_default_x`` behave as on an sbi posterior over
    theta; the posterior over phi is ``.posterior``.
    """

    def __init__(self, posterior: Any):
        self.posterior = posterior

    @property
    def default_x(self) -> torch.Tensor | None:
        return self.posterior.default_x

    def set_default_x(self, x: torch.Tensor) -> "LogRatesPosterior":
        self.posterior.set_default_x(x)
        return self

    def sample(self, sample_shape=torch.Size(), x: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Samples of theta, ``(*sample_shape, 4)``."""
        return rates(self.posterior.sample(sample_shape, x=x, **kwargs))

    def sample_batched(self, sample_shape, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Samples of theta for each of a batch of x, ``(*sample_shape, len(x), 4)`` (as sbi's)."""
        return rates(self.posterior.sample_batched(sample_shape, x=x, **kwargs))

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """``log p(theta | x) = log p(phi | x) - log D - log rho``."""
        theta = torch.as_tensor(theta, dtype=torch.float32)
        return self.posterior.log_prob(log_rates(theta), x=x, **kwargs) - theta[..., :2].log().sum(-1)

    def map(self, **kwargs) -> torch.Tensor:
        """The mode in phi, mapped to theta."""
        return rates(self.posterior.map(**kwargs))
