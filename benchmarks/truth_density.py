"""Where a truth of the sequential calibration sits in its own posterior's density.

For each ``--truths`` index of ``benchmarks/calibration.py --level sequential --case paper
--shared-seed`` (the same truths, observation window and seed), reruns the default pipeline and reports the posterior
mass whose density is below the truth's (``mass_below_truth``, from ``--samples`` draws): near 0
the truth lies in the far tail of the joint posterior, where TSNPE's truncated region (the
``1 - truncation_quantile`` highest-density region) may have cut it off; well above 0 it lies
inside, and a marginal miss comes from the posterior's shape, not the truncation.

    python benchmarks/truth_density.py --truths 4 5 8 10 0 2 --out benchmarks/results/calibration/sequential_paper_truth_density.json
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import shlex
import sys

from defaults import case_simulator
from sbi_tumor.anatomy import load_mni152
from sbi_tumor.config import InferenceConfig
from calibration import sweep_truths
from sbi_tumor.inference import run_sequential_npe
from sbi_tumor.prior import make_prior
from _common import emit


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--truths", type=int, nargs="+", required=True, help="indices among the sweep's 30 truths")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0, help="the sweep's --seed")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    prior = make_prior("paper")
    simulator = case_simulator("paper", load_mni152(2.0))
    truths = sweep_truths(prior, 30, args.seed)
    rows = []
    for i in args.truths:
        truth = truths[i]
        x_o = simulator(truth[None])
        posterior, result = run_sequential_npe(simulator, prior, x_o, InferenceConfig(seed=args.seed), progress=False)
        draws = posterior.sample((args.samples,), x=x_o, show_progress_bars=False)
        below = (posterior.log_prob(draws, x=x_o) < posterior.log_prob(truth[None], x=x_o)).float().mean()
        rows.append({"truth": i, "theta": truth.tolist(), "mass_below_truth": float(below),
                     "wall_time_s": result.wall_time})
        print(f"truth {i}: mass below its density {float(below):.4f}", file=sys.stderr, flush=True)
    return emit({"benchmark": "truth_density", "case": "paper", "config": InferenceConfig(seed=args.seed).to_dict(),
                 "command": shlex.join(["python", "benchmarks/truth_density.py", *(argv or sys.argv[1:])]),
                 "runs": rows}, args.out)


if __name__ == "__main__":
    main()
