"""Calibration of the default pipeline with sbi's diagnostics (SBC, expected coverage, TARP).

Two levels, one command each; the cases are those of ``benchmarks/defaults.py`` (a known seed,
the region of interest sized from the case's truth, the model on the whole anatomy):

* ``--level amortised``: the first-round estimator of the default configuration (prior draws
  only, ``--simulations`` solves) checked on ``--pairs`` held-out prior draws with
  `sbi_tumor.diagnostics.calibrate`;
* ``--level sequential``: the whole default pipeline run on ``--truths`` truths drawn from the
  prior, each its own sequential inference (``--rounds`` x ``--simulations``); each truth is ranked
  in its own posterior with sbi's ``run_sbc`` (SBC stays valid for sequential methods when every
  truth gets its own, independent run: truth i runs with ``--seed`` + i), and the ranks are checked with sbi's ``check_sbc``. Each finished run
  is kept in ``--out``, so an interrupted sweep loses nothing.

Writes ``results.json``, ``table.md`` and the rank plot (``ranks.png``; amortised also
``tarp.png``) to ``--out``; prints the JSON.

    python benchmarks/calibration.py --level amortised --case paper --out benchmarks/results/calibration/amortised_paper
    python benchmarks/calibration.py --level sequential --case human-100d --truths 30 --rounds 2 \\
        --out benchmarks/results/calibration/sequential_human-100d
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path

import torch
from torch.distributions import Distribution

from defaults import CASES, case_simulator
from sbi_tumor.anatomy import load_mni152
from sbi_tumor.diagnostics import (COVERAGE_90_RANGE, KS_MIN_PVALUE, Calibration, calibrate, held_out_pairs,
                                   rank_plot, sbc_calibration)
from sbi_tumor.config import InferenceConfig
from sbi_tumor.conformal import ConformalPosterior
from sbi_tumor.inference import run_sequential_npe
from sbi_tumor.plots import save_figure
from sbi_tumor.prior import make_prior
from _common import emit  # benchmarks/ is on sys.path when run as a script


def amortised(args, simulator, prior, out: Path) -> dict:
    from sbi_tumor.diagnostics import rank_plot, tarp_plot

    t0 = time.perf_counter()
    posterior, result = first_round(simulator, prior, args.case, args.seed, args.simulations, args.settings,
                                    augment=args.augment, progress=not args.quiet)
    theta, x = held_out_draws(simulator, prior, args.pairs, args.seed)
    calibration = calibrate(posterior, theta, x, num_posterior_samples=args.posterior_samples)
    save_figure(rank_plot(calibration), out / "ranks.png")
    save_figure(tarp_plot(calibration), out / "tarp.png")
    table, extra = calibration.table(), {}
    if isinstance(posterior, ConformalPosterior):  # the network's own posterior too, before the widening
        unwidened = calibrate(posterior.posterior, theta, x, num_posterior_samples=args.posterior_samples)
        table += "\nThe same posterior before the conformal widening:\n\n" + unwidened.table()
        extra = {"calibration_unwidened": unwidened.to_dict(), "conformal_scales": result.conformal_scales}
    (out / "table.md").write_text(table)
    return {"calibration": calibration.to_dict(), **extra, "training_time_s": result.training_time,
            "simulation_time_s": result.simulation_time, "wall_time_s": time.perf_counter() - t0,
            "config": result.config}


def first_round(simulator: Callable, prior: Distribution, case: str, seed: int, simulations: int, settings: dict,
                augment: int | None = None, progress: bool = False):
    """The first-round (amortised) posterior of the configuration ``settings``, and its run's result:
    ``simulations`` prior solves, the case's truth as x_o (round 1 does not depend on it)."""
    x_o = simulator(torch.tensor([CASES[case][1]]))
    config = InferenceConfig(**{"num_simulations": simulations, "augment": augment, "seed": seed, **settings,
                                "num_rounds": 1})
    return run_sequential_npe(simulator, prior, x_o, config, progress=progress)


def held_out_draws(simulator: Callable, prior: Distribution, num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``num`` held-out prior draws and their simulations of a run with ``--seed seed``, from a
    stream apart from training's (``seed + 1000``)."""
    return held_out_pairs(simulator, prior, num, seed=seed + 1000)


def sweep_truths(prior: Distribution, num_truths: int, seed: int) -> torch.Tensor:
    """The ``(num_truths, 4)`` truths of a sequential sweep run with ``--seed seed``: the first
    ``num_truths`` held-out draws of an amortised run with the same seed."""
    return held_out_draws(lambda t: t, prior, num_truths, seed)[0]


def sweep_calibration(runs: list[dict], key: str, num_posterior_samples: int) -> Calibration:
    """sbi's ``check_sbc`` on a sequential sweep's recorded runs (``truthI.json`` records: ``truth``,
    ``ranks{key}``, ``dap{key}``; ``key`` is ``""`` or ``"_unwidened"``), with a fixed seed for its C2ST."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ranks = torch.tensor([r[f"ranks{key}"] for r in runs], dtype=torch.float64)  # as the records were checked
        return sbc_calibration(ranks, torch.tensor([r["truth"] for r in runs]),
                               torch.tensor([r[f"dap{key}"] for r in runs]), num_posterior_samples)


#: Why a sweep's record has no TARP: it needs one posterior for every x, not one run per truth.
NO_TARP = "not applicable to per-truth sequential runs"


def sweep_report(runs: list[dict], num_posterior_samples: int, out: Path) -> tuple[dict[str, Calibration], str]:
    """A sweep's checks by `sweep_calibration` (key ``""``; and ``"_unwidened"``, the networks' own
    posteriors, where the runs recorded them), its rank plot (``out/ranks.png``) and its markdown table."""
    checked = {key: sweep_calibration(runs, key, num_posterior_samples) for key in ("", "_unwidened")
               if all(f"ranks{key}" in r for r in runs)}
    save_figure(rank_plot(checked[""]), out / "ranks.png")
    return checked, "\nThe same runs' posteriors before the conformal widening:\n\n".join(c.table() for c in checked.values())


def sequential(args, simulator, prior, out: Path) -> dict:
    from sbi.diagnostics import run_sbc

    truths = sweep_truths(prior, args.truths, args.seed)
    config = InferenceConfig(**{"num_rounds": args.rounds, "num_simulations": args.simulations,
                                "augment": args.augment, "seed": args.seed, **args.settings})
    runs = []
    for i, truth in enumerate(truths):
        # Truth i runs with seed + i, so the runs are independent and SBC's uniformity test applies.
        # --shared-seed gives every run the same seed (one round-1 network for all, as in the sweeps
        # recorded before this option).
        seed = args.seed if args.shared_seed else args.seed + i
        path = out / f"truth{i}.json"
        if path.exists() and json.loads(path.read_text()).get("seed", args.seed) != seed:
            raise SystemExit(f"{path} was run with another seed than this sweep's {seed} (the sweeps recorded "
                             "before per-truth seeds ran every truth with --seed); pass --shared-seed to "
                             "resume it, or a new --out.")
        if not path.exists():
            x_o = simulator(truth[None])
            posterior, result = run_sequential_npe(simulator, prior, x_o, replace(config, seed=seed),
                                                   progress=not args.quiet)
            record = {"truth": truth.tolist(), "seed": seed}
            # With calibration_solves, the network's own posterior is ranked too: the same run without the widening.
            for key, post in [("", posterior)] + ([("_unwidened", posterior.posterior)]
                                                  if isinstance(posterior, ConformalPosterior) else []):
                with torch.random.fork_rng():
                    torch.manual_seed(i)
                    ranks, dap = run_sbc(truth[None], x_o, post, num_posterior_samples=args.posterior_samples,
                                         show_progress_bar=False)
                record |= {f"ranks{key}": ranks[0].tolist(), f"dap{key}": dap[0].tolist()}
            ranks = torch.tensor([record["ranks"]])
            path.write_text(json.dumps(record | {"wall_time_s": result.wall_time, "contraction": result.contraction,
                                                 "conformal_scales": result.conformal_scales}))
            print(f"truth {i + 1}/{len(truths)}: ranks {ranks[0].tolist()}, {result.wall_time:.0f} s",
                  file=sys.stderr, flush=True)
        runs.append(json.loads(path.read_text()))

    checked, table = sweep_report(runs, args.posterior_samples, out)
    (out / "table.md").write_text(table)
    return {**{f"calibration{key}": c.to_dict() | {"tarp": NO_TARP} for key, c in checked.items()},
            "runs": runs, "config": config.to_dict(),
            "seeds": [r.get("seed", args.seed) for r in runs],
            "wall_time_s_per_truth": [r["wall_time_s"] for r in runs]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", choices=["amortised", "sequential"], required=True)
    parser.add_argument("--case", choices=list(CASES), default="paper")
    parser.add_argument("--simulations", type=int, default=250, help="solves per round (default 250)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each sequential run (default 4)")
    parser.add_argument("--pairs", type=int, default=200, help="held-out pairs, amortised (default 200)")
    parser.add_argument("--truths", type=int, default=30, help="truths, sequential (default 30)")
    parser.add_argument("--augment", type=int, help="threshold pairs per solve (default: the default, 10)")
    parser.add_argument("--posterior-samples", type=int, default=1000)
    parser.add_argument("--settings", type=json.loads, default={}, metavar="JSON",
                        help="further InferenceConfig settings, e.g. '{\"density_estimator\": \"nsf\"}'")
    parser.add_argument("--seed", type=int, default=0, help="seed (sequential: truth i runs with seed + i)")
    parser.add_argument("--shared-seed", action="store_true",
                        help="sequential: every truth runs with --seed, as the sweeps recorded before per-truth seeds did")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = CASES[args.case][0]
    prior = make_prior(preset)
    simulator = case_simulator(args.case, load_mni152(2.0))
    results = {"benchmark": "calibration", "level": args.level, "case": args.case,
               "command": shlex.join(["python", "benchmarks/calibration.py", *(argv or sys.argv[1:])]),
               "targets": {"sbc_ks_pvalue_above": KS_MIN_PVALUE, "coverage_90_in": list(COVERAGE_90_RANGE),
                           "tarp_ks_pvalue_above": KS_MIN_PVALUE}}
    results |= (amortised if args.level == "amortised" else sequential)(args, simulator, prior, out)
    return emit(results, str(out / "results.json"))


if __name__ == "__main__":
    main()
