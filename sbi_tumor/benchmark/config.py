"""Settings of the NPE-vs-MCMC benchmark (importable without torch: the command line reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import EMBEDDING_NAMES, METHODS, PRESETS, SYNTHETIC_SEED_MM, InferenceConfig, check_counts, check_positive

__all__ = ["BenchmarkConfig", "CASE_SEEDS_MM"]


#: Seed point of the synthetic tumours of the benchmark cases (frontal white matter, world mm).
CASE_SEEDS_MM: dict[str, tuple[float, float, float]] = {"paper": SYNTHETIC_SEED_MM}


@dataclass
class BenchmarkConfig:
    """Settings of [`run_npe_vs_mcmc`][sbi_tumor.benchmark.runners.run_npe_vs_mcmc].

    Attributes:
        case: Name of a prior preset with a ground truth (``"paper"``).
        budgets: Forward-simulation budgets at which both methods run.
        tmcmc_factor: TMCMC also runs at ``tmcmc_factor * max(budgets)`` (the paper's comparison
            of NPE against TMCMC with ten times more simulations); 0 disables it.
        seed: Seed of the observation, the networks, the samplers and C2ST.
        resolution_mm: Grid spacing of the atlas.
        roi_size_mm: Edge of the cubic region the forward model runs on.
        npe_method: ``"TSNPE"`` (the package default), ``"NPE_B"`` (the paper's), ``"NPE_A"`` or
            ``"NPE_C"``. The NPE defaults are those of `InferenceConfig`.
        npe_rounds: Rounds of sequential NPE (the budget is split evenly over them).
        npe_log_space: Train NPE on ``(log D, log rho, u_T1, u_T2)``.
        npe_augment: NPE training pairs per forward solve (``TSNPE`` only): each solve is
            observed with this many threshold pairs and mask draws (``InferenceConfig.augment``;
            ``None``: its default).
        embedding: ``"radial"`` (the default), ``"mlp"`` (the paper's one tanh layer) or ``"cnn"``.
        embedding_kwargs: Extra arguments of the embedding net (e.g. ``{"octants": True}``).
        npe_settings: Further [`InferenceConfig`][sbi_tumor.config.InferenceConfig] settings of
            the NPE runs, by name (e.g. ``{"density_estimator": "nsf"}``).
        refine_solves: Solves per iteration of the refinement of NPE's posterior with the
            likelihood TMCMC samples (adaptive importance sampling,
            [`sbi_tumor.importance`][sbi_tumor.importance]), taken from each budget: NPE then
            trains on the budget less their sum. Empty (the default): NPE alone.
        max_num_epochs: Cap on training epochs per NPE round.
        stop_after_epochs: Early-stopping patience of NPE.
        num_posterior_samples: Samples drawn from each NPE posterior.
        tmcmc_extra_steps: Metropolis steps per stage beyond the first, for the budget runs.
        tmcmc_stage_guess: Expected TMCMC stages, used to size populations from budgets.
        tmcmc_min_samples: Smallest TMCMC population (small budgets may then be exceeded).
        reference_samples: Population of the reference TMCMC run.
        reference_extra_steps: Its extra Metropolis steps per stage.
        c2st_samples: At most this many samples of each posterior enter C2ST.
        threads: numba and torch threads. One thread per solve is the fastest on a small ROI
            on a shared machine: numba's parallel loops spin at every step when the cores are
            busy (15 ms per solve on one thread against 840 ms on two, measured on 2 busy cores).
    """

    case: str = "paper"
    budgets: tuple[int, ...] = (500, 1000)
    tmcmc_factor: int = 10
    seed: int = 0
    resolution_mm: float = 2.0
    roi_size_mm: float = 64.0
    npe_method: str = InferenceConfig.method
    npe_rounds: int = InferenceConfig.num_rounds
    npe_log_space: bool = InferenceConfig.log_space
    npe_augment: int | None = None
    embedding: str = InferenceConfig.embedding
    embedding_kwargs: dict = field(default_factory=dict)
    npe_settings: dict = field(default_factory=dict)
    refine_solves: tuple[int, ...] = ()
    max_num_epochs: int = 200
    stop_after_epochs: int = 20
    num_posterior_samples: int = 1000
    tmcmc_extra_steps: int = 0
    tmcmc_stage_guess: int = 11
    tmcmc_min_samples: int = 20
    reference_samples: int = 1000
    reference_extra_steps: int = 2
    c2st_samples: int = 1000
    threads: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.budgets, (int, str)) or not all(isinstance(b, int) for b in self.budgets):
            raise ValueError(f"budgets must be a sequence of integers, e.g. (500, 1000), got {self.budgets!r}.")
        self.budgets = tuple(sorted(self.budgets))
        check_counts(self, "npe_rounds threads max_num_epochs stop_after_epochs num_posterior_samples "
                           "tmcmc_stage_guess tmcmc_min_samples reference_samples c2st_samples")
        check_counts(self, "tmcmc_factor tmcmc_extra_steps reference_extra_steps", minimum=0)
        check_positive(self, "resolution_mm roi_size_mm")
        if not isinstance(self.embedding_kwargs, dict):
            raise ValueError(f"embedding_kwargs must be a dict of keyword arguments, got {self.embedding_kwargs!r}.")
        if not isinstance(self.npe_settings, dict):
            raise ValueError(f"npe_settings must be a dict of InferenceConfig settings, got {self.npe_settings!r}.")
        fixed = {"method", "num_rounds", "log_space", "augment", "num_simulations", "embedding",
                 "embedding_kwargs", "max_num_epochs", "stop_after_epochs", "num_posterior_samples", "seed"}
        unknown = set(self.npe_settings) - (set(InferenceConfig.__dataclass_fields__) - fixed)
        if unknown:
            raise ValueError(f"npe_settings {sorted(unknown)} are not InferenceConfig settings, or have a "
                             "benchmark setting of their own (npe_method, npe_rounds, ...).")
        self.refine_solves = tuple(self.refine_solves)
        if not all(isinstance(n, int) and n >= 1 for n in self.refine_solves):
            raise ValueError(f"refine_solves must be positive counts per iteration, got {list(self.refine_solves)}.")
        preset = PRESETS.get(self.case)
        if preset is None or preset.truth is None or self.case not in CASE_SEEDS_MM:
            raise ValueError(f"Unknown benchmark case {self.case!r}; valid cases: {sorted(CASE_SEEDS_MM)}.")
        if not self.budgets or self.budgets[0] - sum(self.refine_solves) < 2 * self.npe_rounds:
            raise ValueError(f"Every budget must allow >= 2 simulations per NPE round ({self.npe_rounds} rounds) "
                             f"after {sum(self.refine_solves)} refinement solves, got budgets {list(self.budgets)}.")
        if self.npe_method not in METHODS:
            raise ValueError(f"npe_method must be one of {list(METHODS)}, got {self.npe_method!r}.")
        if self.npe_augment is None:
            self.npe_augment = InferenceConfig(method=self.npe_method).augment
        if self.npe_augment < 1 or (self.npe_augment > 1 and self.npe_method != "TSNPE"):
            raise ValueError(f"npe_augment must be 1, or > 1 with npe_method 'TSNPE', got {self.npe_augment} "
                             f"with {self.npe_method!r}.")
        if self.embedding not in EMBEDDING_NAMES:
            raise ValueError(f"embedding must be one of {sorted(EMBEDDING_NAMES)}, got {self.embedding!r}.")

    @classmethod
    def quick(cls, **overrides: Any) -> "BenchmarkConfig":
        """A version that finishes in about a minute: for tests, not for conclusions."""
        settings: dict[str, Any] = dict(
            budgets=(120,), tmcmc_factor=4, roi_size_mm=48.0, npe_rounds=2, max_num_epochs=15,
            stop_after_epochs=5, num_posterior_samples=300, reference_samples=100,
            reference_extra_steps=1, c2st_samples=300)
        settings.update(overrides)
        return cls(**settings)
