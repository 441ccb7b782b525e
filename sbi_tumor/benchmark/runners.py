"""Both methods on the matched problem, at each simulation budget, scored against a reference run.

One forward simulation is one solve of the growth model at one parameter set: NPE uses
``budget`` of them (split evenly over its rounds), TMCMC one per likelihood evaluation. TMCMC's
count depends on its number of stages, so its population is sized from a stage guess (corrected
by the reference run's stage count) and the actual count is reported.
"""

from __future__ import annotations

import platform
import time
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..config import PARAMETER_NAMES, PRESETS, InferenceConfig
from ..importance import refine
from ..inference import run_sequential_npe
from ..metrics import c2st_score, posterior_metrics
from ..runtime import set_threads
from ..sbi_compat import CONSTANT_DATA_WARNING
from ..tmcmc import prior_log_prob, tmcmc
from .config import CASE_SEEDS_MM, BenchmarkConfig
from .task import MatchedProblem

__all__ = ["C2ST_DISTINGUISHABLE", "NPE", "REFINED", "run_npe", "run_npe_vs_mcmc", "run_tmcmc"]

#: The method names of NPE's runs, as benchmark rows and ``samples.npz`` keys label them: NPE alone,
#: and NPE refined with the likelihood (``BenchmarkConfig.refine_solves``).
NPE, REFINED = "NPE", "NPE+IS"


def run_tmcmc(problem: MatchedProblem, num_samples: int, extra_steps: int, seed: int) -> dict[str, Any]:
    """One TMCMC run on the matched problem: samples, MAP (best sample), count and time."""
    result = tmcmc(problem.log_likelihood, problem.prior, num_samples, extra_steps=extra_steps, seed=seed)
    log_post = result.log_likelihoods + prior_log_prob(problem.prior, result.samples)
    return {"samples": result.samples, "map": result.samples[int(np.argmax(log_post))],
            "num_simulations": result.num_simulations, "wall_time_s": result.wall_time,
            "extra": {"population": num_samples, "extra_steps": extra_steps, "stages": result.num_stages,
                      "mean_acceptance": float(result.acceptance_rates.mean()),
                      "log_evidence": result.log_evidence}}


def run_npe(problem: MatchedProblem, budget: int, config: BenchmarkConfig, seed: int) -> dict[str, Any]:
    """Sequential NPE on the matched problem with ``budget`` simulations in all, its posterior
    refined with the likelihood when ``config.refine_solves`` asks for it (those solves included)."""
    # The mask code T2 + 2 T1 has four values.
    embedding_kwargs = config.embedding_kwargs if config.embedding == "mlp" else \
        {"num_classes": 4} | config.embedding_kwargs
    npe_config = InferenceConfig(**config.npe_settings, method=config.npe_method,
        num_rounds=config.npe_rounds, log_space=config.npe_log_space, augment=config.npe_augment,
        num_simulations=(budget - sum(config.refine_solves)) // config.npe_rounds,
        embedding=config.embedding, embedding_kwargs=embedding_kwargs,
        max_num_epochs=config.max_num_epochs, stop_after_epochs=config.stop_after_epochs,
        num_posterior_samples=config.num_posterior_samples, seed=seed)
    _, result = run_sequential_npe(problem.npe_simulator(seed), problem.prior, problem.x_o, npe_config,
                                   progress=False)
    npe_samples = result.samples.double().numpy()
    samples, map_ = npe_samples, result.map.double().numpy()
    num_simulations, wall_time, refined = result.num_simulations, result.wall_time, {}
    if config.refine_solves:  # NPE's own samples are kept beside the refined ones
        start = time.perf_counter()
        refinement = refine(samples, problem.log_likelihood, problem.prior, solves=config.refine_solves,
                            num_samples=config.num_posterior_samples, seed=seed)
        samples, map_ = refinement.samples, refinement.map(problem.prior)
        num_simulations += refinement.num_simulations
        wall_time += time.perf_counter() - start
        refined = {"refine_solves": list(config.refine_solves),
                   "effective_sample_sizes": list(refinement.effective_sample_sizes)}
    return {"samples": samples, "map": map_, "num_simulations": num_simulations, "wall_time_s": wall_time,
            "npe_samples": npe_samples,
            "extra": {**refined, "npe_method": config.npe_method, "rounds": config.npe_rounds,
                      "log_space": config.npe_log_space, "augment": config.npe_augment,
                      "embedding": config.embedding,
                      "embedding_kwargs": config.embedding_kwargs, "npe_settings": config.npe_settings,
                      "simulation_time_s": result.simulation_time, "training_time_s": result.training_time,
                      "epochs_per_round": [t.get("epochs_trained") for t in result.training]}}


def run_npe_vs_mcmc(config: BenchmarkConfig, log=print) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the benchmark; returns ``(results, samples)`` (JSON-able dict, samples per run)."""
    set_threads(config.threads)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Parameter sets far from the posterior grow tumours that reach the ROI walls.
        warnings.filterwarnings("ignore", message="The tumour density reaches")
        # Label voxels far from the tumour are constant; x is deliberately not z-scored.
        warnings.filterwarnings("ignore", message=CONSTANT_DATA_WARNING)
        problem = MatchedProblem.create(config)
        log(f"case {config.case}: ROI {problem.simulator.roi.shape}, observed T1 {int(problem.t1_mask.sum())} "
            f"and T2 {int(problem.t2_mask.sum())} voxels")

        log(f"reference TMCMC: {config.reference_samples} samples, {config.reference_extra_steps} extra steps")
        reference = run_tmcmc(problem, config.reference_samples, config.reference_extra_steps,
                              seed=config.seed + 1000)
        log(f"  {reference['num_simulations']} simulations, {reference['wall_time_s']:.0f} s")
        stages = reference["extra"]["stages"] or config.tmcmc_stage_guess

        plan = [(NPE, b) for b in config.budgets] + [("TMCMC", b) for b in config.budgets]
        if config.tmcmc_factor:
            plan.append(("TMCMC", config.tmcmc_factor * config.budgets[-1]))
        runs, samples = [], {"reference": reference["samples"]}
        for i, (method, budget) in enumerate(plan):
            seed = config.seed + 1 + i
            if method == NPE:
                run = run_npe(problem, budget, config, seed)
            else:
                population = max(config.tmcmc_min_samples,
                                 round(budget / (1 + stages * (1 + config.tmcmc_extra_steps))))
                run = run_tmcmc(problem, population, config.tmcmc_extra_steps, seed)
            label = REFINED if method == NPE and config.refine_solves else method
            row = {"method": label, "budget": budget, "num_simulations": run["num_simulations"],
                   "wall_time_s": run["wall_time_s"],
                   "c2st": c2st_score(run["samples"], reference["samples"], config.c2st_samples, config.seed),
                   "parameters": posterior_metrics(run["samples"], run["map"], problem.truth),
                   "map_dice": problem.map_dice(run["map"]), **run["extra"]}
            runs.append(row)
            samples[f"{label}_{budget}"] = run["samples"]
            if label != method:
                samples[f"{method}_{budget}"] = run["npe_samples"]
            log(f"{label} budget {budget}: {row['num_simulations']} simulations, "
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
    npe = next(r for r in runs if r["method"] in (NPE, REFINED) and r["budget"] == config.budgets[-1])
    mcmc = next(r for r in runs if r["method"] == "TMCMC" and r["budget"] == config.tmcmc_factor * config.budgets[-1])
    both_fail = min(npe["c2st"], mcmc["c2st"]) >= C2ST_DISTINGUISHABLE
    return {"method": npe["method"], "npe_budget": npe["budget"], "tmcmc_budget": mcmc["budget"], "npe_c2st": npe["c2st"],
            "tmcmc_c2st": mcmc["c2st"], "met": npe["c2st"] <= mcmc["c2st"] and not both_fail,
            "both_distinguishable": both_fail}
