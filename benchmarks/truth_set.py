"""Are a sequential sweep's truths harder than a typical prior draw?

A sequential calibration sweep (``calibration.py --level sequential --seed S``) checks 30 truths,
drawn by ``calibration.sweep_truths``; with so few, a miss may say as much about the
truths as about the method. This script trains the first-round (amortised) network of the
configuration with each of ``--seeds`` and counts, per parameter, how often its 90% central
interval covers (a) its own ``--pairs`` held-out prior draws and (b) the sweep's ``--truths``
truths. If the same networks cover (b) much less often than (a), the sweep's truths are hard ones:
``fewer_covered_p`` is Fisher's exact one-sided p of (b) covered less often than (a). (With ``--truth-seed 0`` the truths are the first 30 of network seed 0's own held-out
draws: both come from ``calibration.held_out_draws``.) Each network's numbers are kept in ``--out`` as they finish, so an interrupted run
loses nothing.

    python benchmarks/truth_set.py --truth-seed 0 --out benchmarks/results/calibration/truth_set_seed0
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from scipy import stats
from torch.distributions import Distribution

from calibration import first_round, held_out_draws, sweep_truths
from defaults import CASES, case_simulator
from sbi_tumor.anatomy import load_mni152
from sbi_tumor.config import PARAMETER_NAMES
from sbi_tumor.diagnostics import calibrate
from sbi_tumor.prior import make_prior
from _common import emit  # benchmarks/ is on sys.path when run as a script


def network_coverage(args: argparse.Namespace, simulator: Callable, prior: Distribution, truths: torch.Tensor,
                     seed: int) -> dict:
    """One first-round network's 90% coverage on its held-out draws and at the sweep's truths."""
    posterior, _ = first_round(simulator, prior, args.case, seed, args.simulations, args.settings,
                               progress=not args.quiet)
    theta, x = held_out_draws(simulator, prior, args.pairs, seed)
    held_out = calibrate(posterior, theta, x, num_posterior_samples=args.posterior_samples)
    # The truths' observations as the sweep makes them: one simulation each.
    at_truths = calibrate(posterior, truths, simulator(truths), num_posterior_samples=args.posterior_samples)
    return {"seed": seed, "coverage_90_held_out": held_out.coverage_90,
            "coverage_90_sweep_truths": at_truths.coverage_90}


def fewer_covered_p(network: dict, num_pairs: int, num_truths: int) -> list[float]:
    """Per parameter, Fisher's exact one-sided p that the sweep's truths are covered less often than
    the network's held-out draws. Both rates are estimates (of ``num_truths`` and ``num_pairs``), so
    neither is taken as exact; with ``--truth-seed 0`` network 0's truths are among its own held-out
    draws, which only makes the test more conservative."""
    p = []
    for held, truth in zip(network["coverage_90_held_out"], network["coverage_90_sweep_truths"]):
        held_in, truth_in = round(held * num_pairs), round(truth * num_truths)  # exact counts
        table = [[held_in, num_pairs - held_in], [truth_in, num_truths - truth_in]]
        p.append(float(stats.fisher_exact(table, alternative="greater").pvalue))
    return p


def table(networks: list[dict], num_truths: int) -> str:
    """Markdown: per network and parameter, 90% coverage on its held-out draws, at the truths, and p."""
    lines = ["| network seed | " + " | ".join(PARAMETER_NAMES) + " |", "|---" * (len(PARAMETER_NAMES) + 1) + "|"]
    for n in networks:
        cells = [f"{h:.2f} / {t:.2f} (p {p:.2g})" for h, t, p in
                 zip(n["coverage_90_held_out"], n["coverage_90_sweep_truths"], n["fewer_covered_p"])]
        lines.append(f"| {n['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\nEach cell: 90% coverage on the network's own held-out prior draws / at the "
                               f"sweep's {num_truths} truths (p: Fisher's exact one-sided test that the truths are "
                               "covered less often than the held-out draws).\n")


def main(argv: list[str] | None = None) -> dict:
    """Train or resume each network, then write the table and the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--truth-seed", type=int, required=True, help="the sweep's --seed")
    parser.add_argument("--truths", type=int, default=30, help="the sweep's --truths (default 30)")
    parser.add_argument("--case", choices=list(CASES), default="paper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="networks' seeds (default 0 1 2)")
    parser.add_argument("--simulations", type=int, default=250, help="solves of the first round (default 250)")
    parser.add_argument("--pairs", type=int, default=200, help="held-out pairs per network (default 200)")
    parser.add_argument("--posterior-samples", type=int, default=1000)
    parser.add_argument("--settings", type=json.loads, default={}, metavar="JSON",
                        help="further InferenceConfig settings, e.g. '{\"unconstrained\": true}'")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prior = make_prior(CASES[args.case][0])
    simulator = case_simulator(args.case, load_mni152(2.0))
    truths = sweep_truths(prior, args.truths, args.truth_seed)
    networks = []
    for seed in args.seeds:
        path = out / f"network_seed{seed}.json"
        setup = {"settings": args.settings, "simulations": args.simulations, "pairs": args.pairs, "case": args.case,
                 "truth_seed": args.truth_seed, "truths": args.truths, "posterior_samples": args.posterior_samples}
        if path.exists() and json.loads(path.read_text())["setup"] != setup:
            raise SystemExit(f"{path} was run with another setup than {setup}; give a new --out.")
        if not path.exists():
            path.write_text(json.dumps(network_coverage(args, simulator, prior, truths, seed) | {"setup": setup}))
            print(f"network seed {seed}: {path.read_text()}", file=sys.stderr, flush=True)
        network = json.loads(path.read_text())
        networks.append(network | {"fewer_covered_p": fewer_covered_p(network, args.pairs, args.truths)})
    (out / "table.md").write_text(table(networks, args.truths))
    results = {"benchmark": "truth_set", "case": args.case, "truth_seed": args.truth_seed, "names": PARAMETER_NAMES,
               "command": shlex.join(["python", "benchmarks/truth_set.py", *(argv or sys.argv[1:])]),
               "settings": args.settings, "networks": networks}
    return emit(results, str(out / "results.json"))


if __name__ == "__main__":
    main()
