"""Benchmark: sequential NPE against TMCMC on the same case, prior and likelihood.

``sbi-tumor benchmark npe-vs-mcmc --case paper --budgets 500 1000 --out DIR`` (or
``python benchmarks/npe_vs_mcmc.py ...``) infers theta = (D, rho, u_T1, u_T2) of a synthetic tumour
with both methods at each simulation budget and writes ``results.json``, ``table.md``,
``samples.npz`` and plots to ``DIR``.

The *matched problem*: the observed T1/T2 segmentations are drawn from the voxelwise Bernoulli
likelihood of [`sbi_tumor.likelihood`][sbi_tumor.likelihood] at the true parameters, TMCMC evaluates exactly that
likelihood, and the NPE simulator draws its segmentations from the same likelihood. Both methods
therefore target the same posterior, and a long TMCMC run (more samples, more Metropolis steps per
stage, another seed) serves as the reference for C2ST. Both masks reach the network through one
lossless code per voxel, ``T2 + 2 T1`` (values 0-3), so the network sees all the data TMCMC sees.

One forward simulation is one solve of the growth model at one parameter set: NPE uses
``budget`` of them (split evenly over its rounds), TMCMC one per likelihood evaluation. TMCMC's
count depends on its number of stages, so its population is sized from a stage guess (corrected
by the reference run's stage count) and the actual count is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .anatomy import load_mni152
from .baselines import tmcmc
from .embedding import EMBEDDINGS
from .identifiability import derived
from .inference import METHODS, InferenceConfig, run_sequential_npe
from .likelihood import BernoulliLikelihood
from .observation import dice, label_map
from .prior import PARAMETER_LABELS, PARAMETER_NAMES, PRESETS, make_prior
from .simulator import TumorSimulator

__all__ = [
    "BenchmarkConfig",
    "MatchedProblem",
    "add_benchmark_parser",
    "run_npe_vs_mcmc",
]

#: Seed point of the synthetic tumours of the benchmark cases (frontal white matter, world mm).
CASE_SEEDS_MM: dict[str, tuple[float, float, float]] = {"paper": (-30.0, 20.0, 30.0)}


@dataclass
class BenchmarkConfig:
    """Settings of [`run_npe_vs_mcmc`][sbi_tumor.benchmark.run_npe_vs_mcmc].

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
        self.budgets = tuple(sorted(int(b) for b in self.budgets))
        preset = PRESETS.get(self.case)
        if preset is None or preset.truth is None or self.case not in CASE_SEEDS_MM:
            raise ValueError(f"Unknown benchmark case {self.case!r}; valid cases: {sorted(CASE_SEEDS_MM)}.")
        if not self.budgets or self.budgets[0] < 2 * self.npe_rounds:
            raise ValueError(f"Every budget must allow >= 2 simulations per NPE round "
                             f"({self.npe_rounds} rounds), got budgets {list(self.budgets)}.")
        if self.npe_method not in METHODS:
            raise ValueError(f"npe_method must be one of {list(METHODS)}, got {self.npe_method!r}.")
        if self.npe_augment is None:
            self.npe_augment = InferenceConfig(method=self.npe_method).augment
        if self.npe_augment < 1 or (self.npe_augment > 1 and self.npe_method != "TSNPE"):
            raise ValueError(f"npe_augment must be 1, or > 1 with npe_method 'TSNPE', got {self.npe_augment} "
                             f"with {self.npe_method!r}.")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {sorted(EMBEDDINGS)}, got {self.embedding!r}.")
        if self.tmcmc_factor < 0 or self.threads < 1:
            raise ValueError("Need tmcmc_factor >= 0 and threads >= 1.")

    @classmethod
    def quick(cls, **overrides: Any) -> "BenchmarkConfig":
        """A version that finishes in about a minute: for tests, not for conclusions."""
        settings: dict[str, Any] = dict(
            budgets=(120,), tmcmc_factor=4, roi_size_mm=48.0, npe_rounds=2, max_num_epochs=15,
            stop_after_epochs=5, num_posterior_samples=300, reference_samples=100,
            reference_extra_steps=1, c2st_samples=300)
        settings.update(overrides)
        return cls(**settings)


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


def encode_masks(t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """Lossless voxel code ``T2 + 2 T1`` (uint8, 0-3) of two binary masks."""
    return (np.asarray(t2, dtype=np.uint8) + 2 * np.asarray(t1, dtype=np.uint8)).astype(np.uint8)


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


def posterior_metrics(samples: np.ndarray, map_: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Per parameter (and derived quantity): mean, median, MAP, 90% interval, relative errors, coverage."""
    out: dict[str, Any] = {}
    columns = dict(zip(PARAMETER_NAMES, samples.T))
    columns.update(derived(samples))
    map_values = dict(zip(PARAMETER_NAMES, map_))
    map_values.update({k: float(v[0]) for k, v in derived(map_).items()})
    true_values = dict(zip(PARAMETER_NAMES, truth))
    true_values.update({k: float(v[0]) for k, v in derived(truth).items()})
    for name, values in columns.items():
        lo, median, hi = np.quantile(values, [0.05, 0.5, 0.95])
        mean, true = float(values.mean()), float(true_values[name])
        out[name] = {"truth": true, "mean": mean, "std": float(values.std()), "map": float(map_values[name]),
                     "q05": float(lo), "median": float(median), "q95": float(hi),
                     "mean_rel_error": abs(mean - true) / abs(true),
                     "median_rel_error": abs(float(median) - true) / abs(true),
                     "map_rel_error": abs(float(map_values[name]) - true) / abs(true),
                     "truth_in_90": bool(lo <= true <= hi)}
    return out


def c2st_score(samples: np.ndarray, reference: np.ndarray, max_samples: int, seed: int) -> float:
    """C2ST accuracy (0.5: indistinguishable) on equally many samples of each set."""
    from sbi.utils.metrics import c2st

    rng = np.random.default_rng(seed)
    n = min(len(samples), len(reference), max_samples)
    x = reference[rng.choice(len(reference), n, replace=False)]
    y = samples[rng.choice(len(samples), n, replace=False)]
    return float(c2st(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32),
                      seed=seed))


def run_tmcmc(problem: MatchedProblem, num_samples: int, extra_steps: int, seed: int) -> dict[str, Any]:
    """One TMCMC run on the matched problem: samples, MAP (best sample), count and time."""
    result = tmcmc(problem.log_likelihood, problem.prior, num_samples, extra_steps=extra_steps, seed=seed)
    log_post = result.log_likelihoods + problem.prior.log_prob(
        torch.as_tensor(result.samples, dtype=torch.float32)).double().numpy()
    return {"samples": result.samples, "map": result.samples[int(np.argmax(log_post))],
            "num_simulations": result.num_simulations, "wall_time_s": result.wall_time,
            "extra": {"population": num_samples, "extra_steps": extra_steps, "stages": result.num_stages,
                      "mean_acceptance": float(result.acceptance_rates.mean()),
                      "log_evidence": result.log_evidence}}


def run_npe(problem: MatchedProblem, budget: int, config: BenchmarkConfig, seed: int) -> dict[str, Any]:
    """Sequential NPE on the matched problem with ``budget`` simulations in all."""
    # The mask code T2 + 2 T1 has four values.
    embedding_kwargs = config.embedding_kwargs if config.embedding == "mlp" else \
        {"num_classes": 4} | config.embedding_kwargs
    npe_config = InferenceConfig(
        method=config.npe_method, num_components=1 if config.npe_method == "NPE_A" else 5,
        num_rounds=config.npe_rounds, log_space=config.npe_log_space, augment=config.npe_augment,
        num_simulations=budget // config.npe_rounds,
        embedding=config.embedding, embedding_kwargs=embedding_kwargs,
        max_num_epochs=config.max_num_epochs, stop_after_epochs=config.stop_after_epochs,
        num_posterior_samples=config.num_posterior_samples, seed=seed)
    _, result = run_sequential_npe(problem.npe_simulator(seed), problem.prior, problem.x_o, npe_config,
                                   progress=False)
    return {"samples": result.samples.double().numpy(), "map": result.map.double().numpy(),
            "num_simulations": result.num_simulations, "wall_time_s": result.wall_time,
            "extra": {"npe_method": config.npe_method, "rounds": config.npe_rounds,
                      "log_space": config.npe_log_space, "augment": config.npe_augment,
                      "embedding": config.embedding,
                      "embedding_kwargs": config.embedding_kwargs,
                      "simulation_time_s": result.simulation_time, "training_time_s": result.training_time,
                      "epochs_per_round": [t.get("epochs_trained") for t in result.training]}}


def run_npe_vs_mcmc(config: BenchmarkConfig, log=print) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the benchmark; returns ``(results, samples)`` (JSON-able dict, samples per run)."""
    import numba

    numba.set_num_threads(min(config.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Parameter sets far from the posterior grow tumours that reach the ROI walls.
        warnings.filterwarnings("ignore", message="The tumour density reaches")
        # Label voxels far from the tumour are constant; x is deliberately not z-scored.
        warnings.filterwarnings("ignore", message="Data has constant values")
        problem = MatchedProblem.create(config)
        log(f"case {config.case}: ROI {problem.simulator.roi.shape}, observed T1 {int(problem.t1_mask.sum())} "
            f"and T2 {int(problem.t2_mask.sum())} voxels")

        log(f"reference TMCMC: {config.reference_samples} samples, {config.reference_extra_steps} extra steps")
        reference = run_tmcmc(problem, config.reference_samples, config.reference_extra_steps,
                              seed=config.seed + 1000)
        log(f"  {reference['num_simulations']} simulations, {reference['wall_time_s']:.0f} s")
        stages = reference["extra"]["stages"] or config.tmcmc_stage_guess

        plan = [("NPE", b) for b in config.budgets] + [("TMCMC", b) for b in config.budgets]
        if config.tmcmc_factor:
            plan.append(("TMCMC", config.tmcmc_factor * config.budgets[-1]))
        runs, samples = [], {"reference": reference["samples"]}
        for i, (method, budget) in enumerate(plan):
            seed = config.seed + 1 + i
            if method == "NPE":
                run = run_npe(problem, budget, config, seed)
            else:
                population = max(config.tmcmc_min_samples,
                                 round(budget / (1 + stages * (1 + config.tmcmc_extra_steps))))
                run = run_tmcmc(problem, population, config.tmcmc_extra_steps, seed)
            row = {"method": method, "budget": budget, "num_simulations": run["num_simulations"],
                   "wall_time_s": run["wall_time_s"],
                   "c2st": c2st_score(run["samples"], reference["samples"], config.c2st_samples, config.seed),
                   "parameters": posterior_metrics(run["samples"], run["map"], problem.truth),
                   "map_dice": problem.map_dice(run["map"]), **run["extra"]}
            runs.append(row)
            samples[f"{method}_{budget}"] = run["samples"]
            log(f"{method} budget {budget}: {row['num_simulations']} simulations, "
                f"{row['wall_time_s']:.0f} s, C2ST {row['c2st']:.3f}")

    results = {
        "benchmark": "npe-vs-mcmc",
        "config": asdict(config),
        "case": {"name": config.case, "truth": dict(zip(PARAMETER_NAMES, problem.truth.tolist())),
                 "seed_mm": list(CASE_SEEDS_MM[config.case]), "day": problem.day,
                 "validation_day": problem.validation_day, "roi_shape": list(problem.simulator.roi.shape),
                 "prior_low": list(PRESETS[config.case].low), "prior_high": list(PRESETS[config.case].high),
                 "likelihood": asdict(problem.likelihood),
                 "observed_voxels": {"T1": int(problem.t1_mask.sum()), "T2": int(problem.t2_mask.sum())}},
        "reference": {"num_simulations": reference["num_simulations"], "wall_time_s": reference["wall_time_s"],
                      "num_samples": len(reference["samples"]),
                      "parameters": posterior_metrics(reference["samples"], reference["map"], problem.truth),
                      "map_dice": problem.map_dice(reference["map"]), **reference["extra"]},
        "runs": runs,
        "target": _target(runs, config),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": config.threads, "platform": platform.platform()},
        "total_wall_time_s": time.perf_counter() - start,
    }
    return results, samples


#: C2ST at or above which a posterior is told apart from the reference almost perfectly: two such
#: runs are both failures, and which is "closer" says nothing.
C2ST_DISTINGUISHABLE = 0.95


def _target(runs: list[dict], config: BenchmarkConfig) -> dict[str, Any]:
    """Is NPE at the largest budget at least as accurate (C2ST) as TMCMC with the factor more?"""
    if not config.tmcmc_factor:
        return {}
    npe = next(r for r in runs if r["method"] == "NPE" and r["budget"] == config.budgets[-1])
    mcmc = next(r for r in runs if r["method"] == "TMCMC" and r["budget"] == config.tmcmc_factor * config.budgets[-1])
    both_fail = min(npe["c2st"], mcmc["c2st"]) >= C2ST_DISTINGUISHABLE
    return {"npe_budget": npe["budget"], "tmcmc_budget": mcmc["budget"], "npe_c2st": npe["c2st"],
            "tmcmc_c2st": mcmc["c2st"], "met": npe["c2st"] <= mcmc["c2st"] and not both_fail,
            "both_distinguishable": both_fail}


def markdown_table(results: dict[str, Any], command: str | None = None) -> str:
    """The results as a markdown table (plus the command that produced them)."""
    names = ("D", "rho", "u_T1", "u_T2")
    case = results["case"]
    days = (f"day{case['day']:g}", f"day{case['validation_day']:g}")
    lines = []
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        f"Case `{case['name']}`: truth D={case['truth']['D']:g} mm²/day, ρ={case['truth']['rho']:g}/day, "
        f"u_T1={case['truth']['u_T1']:g}, u_T2={case['truth']['u_T2']:g}; observation drawn from the "
        f"Bernoulli likelihood at day {case['day']:g} on a {'×'.join(map(str, case['roi_shape']))} ROI; "
        f"validation day {case['validation_day']:g}. Reference: TMCMC with {results['reference']['num_samples']} "
        f"samples and {results['reference']['num_simulations']} simulations.",
        "",
        "Errors are relative errors in % for D / ρ / u_T1 / u_T2; 90% CI lists whether each truth lies in "
        "the central 90% interval (y/n); v = 2√(Dρ) is the front speed; Dice of the MAP tumour against the "
        "true one (T2 whole tumour / T1 core).",
        "",
        "| method | budget | simulations | wall [s] | C2ST ↓ | mean error (%) | MAP error (%) | 90% CI | "
        f"v error (%) | Dice {days[0]} | Dice {days[1]} |",
        "|---|---:|---:|---:|---:|---|---|---|---:|---|---|",
    ]
    for r in results["runs"]:
        p = r["parameters"]
        mean = " / ".join(f"{100 * p[n]['mean_rel_error']:.1f}" for n in names)
        map_ = " / ".join(f"{100 * p[n]['map_rel_error']:.1f}" for n in names)
        ci = "".join("y" if p[n]["truth_in_90"] else "n" for n in names)
        dices = [f"{r['map_dice'][f'T2_{d}']:.3f} / {r['map_dice'][f'T1_{d}']:.3f}" for d in days]
        lines.append(f"| {r['method']} | {r['budget']} | {r['num_simulations']} | {r['wall_time_s']:.0f} | "
                     f"{r['c2st']:.3f} | {mean} | {map_} | {ci} | "
                     f"{100 * p['front_speed']['mean_rel_error']:.1f} | {dices[0]} | {dices[1]} |")
    target = results.get("target")
    if target:
        lines += ["", f"Target (NPE at {target['npe_budget']} simulations at least as accurate as TMCMC at "
                      f"{target['tmcmc_budget']}, by C2ST): {'met' if target['met'] else 'not met'} "
                      f"({target['npe_c2st']:.3f} vs {target['tmcmc_c2st']:.3f}"
                      + (f"; both at or above {C2ST_DISTINGUISHABLE}, so both fail" if target.get("both_distinguishable")
                         else "") + ")."]
    return "\n".join(lines) + "\n"


def plot_accuracy(results: dict[str, Any], path: Path) -> None:
    """Relative errors of front speed and infiltration length, and C2ST, against simulations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("front_speed", "front speed 2√(Dρ): rel. error of mean"),
              ("infiltration_length", "infiltration length √(D/ρ): rel. error of mean"), ("c2st", "C2ST")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for method, style in (("NPE", "o-"), ("TMCMC", "s--")):
        rows = sorted((r for r in results["runs"] if r["method"] == method), key=lambda r: r["num_simulations"])
        n = [r["num_simulations"] for r in rows]
        for ax, (key, title) in zip(axes, panels):
            y = [r["c2st"] if key == "c2st" else r["parameters"][key]["mean_rel_error"] for r in rows]
            ax.plot(n, y, style, label=method)
            ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("forward simulations")
        ax.grid(alpha=0.3, which="both")
    axes[2].axhline(0.5, color="k", lw=0.8, ls=":")
    axes[2].set_ylim(0.45, 1.02)
    axes[0].legend()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_pairs(sets: dict[str, np.ndarray], truth: np.ndarray, path: Path, title: str) -> None:
    """Corner plot of several posterior sample sets with the truth marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = np.concatenate(list(sets.values()) + [truth[None]])
    lo, hi = np.quantile(everything, 0.005, axis=0), np.quantile(everything, 0.995, axis=0)
    lo, hi = np.minimum(lo, truth), np.maximum(hi, truth)
    pad = 0.05 * (hi - lo) + 1e-9
    lo, hi = lo - pad, hi + pad
    d = len(truth)
    colors = dict(zip(sets, ["0.55", "C0", "C1", "C2", "C3"]))
    fig, axes = plt.subplots(d, d, figsize=(8, 8), constrained_layout=True)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            for name, s in sets.items():
                if i == j:
                    ax.hist(s[:, i], bins=40, range=(lo[i], hi[i]), density=True, histtype="step",
                            color=colors[name], label=f"{name} ({len(s)})")
                else:
                    ax.scatter(s[:, j], s[:, i], s=2, alpha=0.3, color=colors[name], rasterized=True)
            if i == j:
                ax.axvline(truth[i], color="k", lw=1)
                ax.set_yticks([])
            else:
                ax.plot(truth[j], truth[i], "k*", ms=10)
                ax.set_ylim(lo[i], hi[i])
            ax.set_xlim(lo[j], hi[j])
            if i == d - 1:
                ax.set_xlabel(PARAMETER_LABELS[j])
            if j == 0 and i > 0:
                ax.set_ylabel(PARAMETER_LABELS[i])
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.1, 1.0), fontsize=9, frameon=False)
    fig.suptitle(title)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def write_outputs(directory: Path, results: dict[str, Any], samples: dict[str, np.ndarray],
                  command: str | None = None) -> None:
    """``results.json``, ``table.md``, ``samples.npz``, ``accuracy.png``, ``pairplot_<budget>.png``."""
    (directory / "results.json").write_text(json.dumps(results, indent=2))
    (directory / "table.md").write_text(markdown_table(results, command))
    np.savez_compressed(directory / "samples.npz", **{k: v.astype(np.float32) for k, v in samples.items()})
    plot_accuracy(results, directory / "accuracy.png")
    truth = np.array(list(results["case"]["truth"].values()))
    for budget in sorted({r["budget"] for r in results["runs"]}):
        sets = {"reference": samples["reference"]}
        sets.update({f"{r['method']} {budget}": samples[f"{r['method']}_{budget}"]
                     for r in results["runs"] if r["budget"] == budget})
        plot_pairs(sets, truth, directory / f"pairplot_{budget}.png",
                   f"{results['case']['name']}: posteriors at a budget of {budget} simulations")


def add_benchmark_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``benchmark npe-vs-mcmc`` on the ``sbi-tumor`` subcommand parsers."""
    parser = subparsers.add_parser("benchmark", help="compare inference methods on synthetic cases")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    defaults = BenchmarkConfig()
    p = sub.add_parser(
        "npe-vs-mcmc", help="sequential NPE against TMCMC on the same case and prior",
        description=__doc__.split("\n\n")[0] + " Writes results.json, table.md, samples.npz and plots.")
    p.add_argument("--case", default="paper", choices=sorted(CASE_SEEDS_MM), help="synthetic case")
    p.add_argument("--budgets", type=int, nargs="+",
                   help=f"forward-simulation budgets of both methods (default {' '.join(map(str, defaults.budgets))})")
    p.add_argument("--tmcmc-factor", type=int,
                   help=f"also run TMCMC at this many times the largest budget; 0: no (default {defaults.tmcmc_factor})")
    p.add_argument("--method", choices=METHODS,
                   help=f"sequential NPE variant (default {defaults.npe_method})")
    p.add_argument("--rounds", type=int, help=f"NPE rounds (default {defaults.npe_rounds})")
    p.add_argument("--log-space", action="store_true", help="train NPE on (log D, log rho, u_T1, u_T2)")
    p.add_argument("--augment", type=int,
                   help="NPE training pairs per forward solve, with redrawn thresholds and masks (TSNPE only)")
    p.add_argument("--embedding", choices=sorted(EMBEDDINGS), help=f"NPE embedding net (default {defaults.embedding})")
    p.add_argument("--embedding-kwargs", type=json.loads, metavar="JSON",
                   help='extra arguments of the embedding net, e.g. \'{"octants": true}\'')
    p.add_argument("--reference-samples", type=int,
                   help=f"population of the reference TMCMC run (default {defaults.reference_samples})")
    p.add_argument("--threads", type=int, help=f"numba and torch threads (default {defaults.threads})")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole benchmark (default 0)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="run once per seed into OUT/seed<SEED> (a rerun skips finished seeds) and write "
                        "summary.json and summary.md across them; replaces --seed")
    p.add_argument("--quick", action="store_true", help="a small version that runs in about a minute")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_npe_vs_mcmc)


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    options = {"case": args.case, "seed": args.seed, "budgets": args.budgets, "tmcmc_factor": args.tmcmc_factor,
               "npe_method": args.method, "npe_rounds": args.rounds, "embedding": args.embedding,
               "embedding_kwargs": args.embedding_kwargs,
               "npe_log_space": args.log_space or None, "npe_augment": args.augment,
               "reference_samples": args.reference_samples, "threads": args.threads}
    options = {k: v for k, v in options.items() if v is not None}
    return BenchmarkConfig.quick(**options) if args.quick else BenchmarkConfig(**options)


def command_line(args: argparse.Namespace) -> str:
    """The ``sbi-tumor`` command that reproduces ``args`` (recorded with the results)."""
    words = ["sbi-tumor benchmark npe-vs-mcmc", f"--case {args.case}"]
    if args.quick:
        words.append("--quick")
    if args.budgets:
        words.append("--budgets " + " ".join(map(str, args.budgets)))
    for flag in ("tmcmc_factor", "method", "rounds", "augment", "embedding", "reference_samples", "threads"):
        if getattr(args, flag) is not None:
            words.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    if args.embedding_kwargs is not None:
        words.append("--embedding-kwargs " + shlex.quote(json.dumps(args.embedding_kwargs)))
    if args.log_space:
        words.append("--log-space")
    seeds = getattr(args, "seeds", None)
    words += [("--seeds " + " ".join(map(str, seeds))) if seeds else f"--seed {args.seed}", f"--out {args.out}"]
    return " ".join(words)


def cmd_npe_vs_mcmc(args: argparse.Namespace) -> int:
    from .io import atomic_output_dir

    if args.seeds:
        return _run_seeds(args)
    config = config_from_args(args)
    command = command_line(args)
    with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
        results, samples = run_npe_vs_mcmc(config, log=lambda m: print(m, file=sys.stderr, flush=True))
        results["command"] = command
        write_outputs(Path(tmp), results, samples, command)
    print(markdown_table(results))
    print(f"wrote results.json, table.md, samples.npz and plots to {args.out} "
          f"({results['total_wall_time_s']:.0f} s)")
    return 0


def _run_seeds(args: argparse.Namespace) -> int:
    """One benchmark per seed in ``OUT/seed<k>`` (finished seeds are kept), then the summary."""
    from .io import atomic_output_dir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in args.seeds:
        seed_args = argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None, "out": str(out / f"seed{seed}")})
        path = Path(seed_args.out) / "results.json"
        if not path.exists():
            print(f"seed {seed}:", file=sys.stderr, flush=True)
            cmd_npe_vs_mcmc(seed_args)
        per_seed.append(json.loads(path.read_text()))
    summary = seeds_summary(per_seed)
    summary["command"] = command_line(args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(seeds_table(summary))
    print(seeds_table(summary))
    return 0


def seeds_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """C2ST of every run across seeds (each seed: a new observation, reference and training)."""
    rows = {}
    for results in per_seed:
        for r in results["runs"]:
            rows.setdefault(f"{r['method']} {r['budget']}", []).append(r["c2st"])
    targets = [results["target"] for results in per_seed if results.get("target")]
    return {
        "seeds": [results["config"]["seed"] for results in per_seed],
        "c2st": {name: {"per_seed": values, "mean": float(np.mean(values)), "std": float(np.std(values))}
                 for name, values in rows.items()},
        "target": {"met_per_seed": [t["met"] for t in targets], "met": sum(t["met"] for t in targets),
                   "of": len(targets), "required": int(np.ceil(0.8 * len(targets)))} if targets else {},
    }


def seeds_table(summary: dict[str, Any]) -> str:
    """The summary of several seeds as markdown: C2ST per seed, mean and spread."""
    seeds = summary["seeds"]
    lines = ["| run | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    for name, row in summary["c2st"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row["per_seed"])
                     + f" | {row['mean']:.3f} ± {row['std']:.3f} |")
    target = summary.get("target")
    if target:
        marks = ", ".join(f"seed {s}: {'met' if m else 'missed'}" for s, m in zip(seeds, target["met_per_seed"]))
        verdict = "met" if target["met"] >= target["required"] else "not met"
        lines += ["", f"C2ST (0.5 = indistinguishable from the reference). Target, NPE at least as close to the "
                      f"reference as TMCMC with ten times the simulations on {target['required']} of {target['of']} "
                      f"seeds: {verdict} ({target['met']} of {target['of']}; {marks})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run ``benchmark npe-vs-mcmc`` without the rest of the ``sbi-tumor`` CLI (``argv`` after it)."""
    parser = argparse.ArgumentParser(prog="sbi-tumor")
    add_benchmark_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["benchmark", "npe-vs-mcmc", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
