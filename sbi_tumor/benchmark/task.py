"""The matched problem of the benchmark: one synthetic case that NPE and TMCMC both solve.

The observed T1/T2 segmentations are drawn from the voxelwise Bernoulli likelihood of
[`sbi_tumor.likelihood`][sbi_tumor.likelihood] at the true parameters, TMCMC evaluates exactly that
likelihood, and the NPE simulator draws its segmentations from the same likelihood. Both methods
therefore target the same posterior, and a long TMCMC run (more samples, more Metropolis steps per
stage, another seed) serves as the reference for C2ST. Both masks reach the network through one
lossless code per voxel, ``T2 + 2 T1`` (values 0-3), so the network sees all the data TMCMC sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..anatomy import load_mni152
from ..likelihood import BernoulliLikelihood, MaskCodeSimulator
from ..observation import dice, encode_masks, label_map
from ..config import PRESETS
from ..prior import make_prior
from ..simulator import TumorSimulator
from .config import CASE_SEEDS_MM, BenchmarkConfig

__all__ = ["MatchedProblem"]


@dataclass
class MatchedProblem:
    """A synthetic case whose observation is drawn from the Bernoulli likelihood at the truth.

    Build with ``create``. ``log_likelihood`` is what TMCMC samples with and
    ``npe_simulator`` what NPE learns from; both use ``likelihood``.
    """

    simulator: TumorSimulator
    likelihood: BernoulliLikelihood
    prior: torch.distributions.Distribution
    truth: np.ndarray
    day: float
    validation_day: float
    t1_mask: np.ndarray
    t2_mask: np.ndarray
    truth_labels: np.ndarray = field(repr=False)

    @classmethod
    def create(cls, config: BenchmarkConfig) -> "MatchedProblem":
        preset = PRESETS[config.case]
        anatomy = load_mni152(config.resolution_mm)
        simulator = TumorSimulator(anatomy, seed_mm=CASE_SEEDS_MM[config.case], day=preset.day,
                                   roi_size_mm=config.roi_size_mm)
        likelihood = BernoulliLikelihood()
        truth = np.asarray(preset.truth, dtype=np.float64)
        days = [preset.day, preset.validation_day]
        density = simulator.density(truth[None], days)[0]
        t1, t2 = likelihood.sample_masks(density[0], truth[2], truth[3], generator=config.seed)
        return cls(simulator=simulator, likelihood=likelihood, prior=make_prior(config.case),
                   truth=truth, day=preset.day, validation_day=preset.validation_day,
                   t1_mask=t1, t2_mask=t2, truth_labels=label_map(density, truth[2], truth[3]))

    @property
    def x_o(self) -> torch.Tensor:
        """The observation as NPE sees it, ``(1, nx, ny, nz)`` float32."""
        return torch.from_numpy(encode_masks(self.t1_mask, self.t2_mask)[None]).to(torch.float32)

    def npe_simulator(self, seed: int) -> MaskCodeSimulator:
        return MaskCodeSimulator(self.simulator, self.likelihood, seed)

    def log_likelihood(self, theta: np.ndarray, chunk: int = 64) -> np.ndarray:
        """``log p(T1, T2 | theta)`` of the observation, ``(n, 4) -> (n,)``; one solve per row."""
        out = np.empty(len(theta))
        for start in range(0, len(theta), chunk):
            batch = theta[start:start + chunk]
            u = self.simulator.density(batch, [self.day])[:, 0]
            out[start:start + chunk] = self.likelihood.log_likelihood(
                u, self.t1_mask, self.t2_mask, batch[:, 2], batch[:, 3])
        return out

    def map_dice(self, theta: np.ndarray) -> dict[str, float]:
        """Dice of the noise-free T1 core and T2 whole tumour re-simulated at ``theta`` against
        the truth's, at the calibration and the validation day."""
        days = [self.day, self.validation_day]
        density = self.simulator.density(np.asarray(theta, dtype=np.float64)[None], days)[0]
        labels = label_map(density, theta[2], theta[3])
        out = {}
        for i, day in enumerate(days):
            for name, level in (("T1", 2), ("T2", 1)):
                out[f"{name}_day{day:g}"] = dice(labels[i] >= level, self.truth_labels[i] >= level)
        return out
