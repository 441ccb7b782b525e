"""What one observation determines: the identifiable combinations of (D, rho), and how much the
posterior of each parameter contracted from its prior.

A Fisher-Kolmogorov tumour grown from a seed is, after a short transient, a front that moves at
``2 sqrt(D rho)`` (mm/day) with a profile of width ``sqrt(D / rho)`` (mm, the infiltration length).
A label map with a known age shows where two density levels (u_T1, u_T2) lie. With a known seed and
day, D and rho follow from the front's position and the shape of its contours in grey and white
matter. The thresholds are fixed only jointly with D and rho: a threshold moves its contour by a
fraction of the infiltration length, and a slightly different (D, rho) moves it back. On the
human case of ``benchmarks/identifiability.py --human human-100d``, label maps within 1% of the
observed one's voxels allow u_T1 over 86% and u_T2 over 59% of their prior ranges while the front
speed stays within 6%: one label map determines the thresholds only weakly. With an unknown origin
and age, only ``sqrt(D / rho)`` and ``rho T`` are identifiable.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Distribution

__all__ = ["WEAK_CONTRACTION", "contraction", "derived", "front_speed", "infiltration_length",
           "weakly_determined"]

#: A parameter whose posterior std is more than half its prior's (contraction below this) is called
#: weakly determined by the observation in reports and pair plots.
WEAK_CONTRACTION = 0.5


def front_speed(theta) -> np.ndarray:
    """Asymptotic front speed ``2 sqrt(D rho)`` (mm/day) of theta ``(N, 2+)`` -> ``(N,)``."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    return 2 * np.sqrt(theta[:, 0] * theta[:, 1])


def infiltration_length(theta) -> np.ndarray:
    """Infiltration length ``sqrt(D / rho)`` (mm) of theta ``(N, 2+)`` -> ``(N,)``."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    return np.sqrt(theta[:, 0] / theta[:, 1])


def derived(theta) -> dict[str, np.ndarray]:
    """The identifiable combinations: ``{"front_speed": (N,), "infiltration_length": (N,)}``."""
    return {"front_speed": front_speed(theta), "infiltration_length": infiltration_length(theta)}


def contraction(samples: torch.Tensor, prior: Distribution) -> list[float]:
    """Per parameter, ``1 - posterior std / prior std``: 0 learned nothing, 1 pinned down.

    ``samples`` ``(N, d)`` from the posterior; the prior's std is its ``variance`` where the
    distribution defines one, else that of 10,000 of its draws (from a fixed generator state, so
    that the caller's random stream does not move).
    """
    try:
        prior_std = prior.variance.sqrt()
    except NotImplementedError:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            prior_std = prior.sample((10_000,)).std(0)
    post_std = torch.as_tensor(samples, dtype=torch.float64).std(0)
    return (1 - post_std / prior_std.to(post_std)).tolist()


def weakly_determined(names, contractions) -> list[str]:
    """The names whose contraction is below ``WEAK_CONTRACTION``."""
    return [n for n, c in zip(names, contractions) if c < WEAK_CONTRACTION]
