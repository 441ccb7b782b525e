"""One SBC check over the truths of several sequential sweeps of the same pipeline.

A 30-truth sweep (``benchmarks/calibration.py --level sequential``) measures a 90% coverage to one
standard error of 0.055 (binomial) and its truths add more scatter (``benchmarks/truth_set.py``); sweeps of the same
configuration run with other ``--seed`` values hold independent truths and independent runs, so their
ranks pool into one, tighter check. The sweeps must share their configuration and case, and no two
runs may share a seed (else the runs are not independent, as SBC assumes). (Each sweep draws the
posterior samples that rank truth i with torch seed i: pooled sweeps share those streams, but not
the posteriors they sample, so the ranks stay independent.) Writes ``results.json``,
``table.md`` and ``ranks.png`` to ``--out``; prints the JSON.

    python benchmarks/calibration_pool.py --out benchmarks/results/calibration/sequential_paper_pooled \\
        benchmarks/results/calibration/sequential_paper_seeds benchmarks/results/calibration/sequential_paper_seeds100
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import json
import shlex
import sys
from pathlib import Path

from scipy.stats import binomtest

from calibration import NO_TARP, sweep_report
from sbi_tumor.diagnostics import KS_MIN_PVALUE, COVERAGE_90_RANGE
from _common import emit  # benchmarks/ is on sys.path when run as a script


def pipeline(sweep: dict) -> tuple[str, dict]:
    """What a sweep ran, its seed aside: the case and the configuration."""
    return sweep["case"], {k: v for k, v in sweep["config"].items() if k != "seed"}


def pooled_runs(sweeps: list[dict]) -> list[dict]:
    """The runs of ``sweeps`` (their ``results.json``), refused unless they pool into one valid SBC check."""
    first = sweeps[0]
    for sweep in sweeps:
        if sweep.get("benchmark") != "calibration" or sweep["level"] != "sequential" or "seeds" not in sweep:
            raise SystemExit(f"{sweep['command']!r} is not a sequential sweep of calibration.py with per-truth "
                             "seeds (amortised, recorded before them, or a pool): only those pool.")
        if pipeline(sweep) != pipeline(first):
            raise SystemExit(f"{sweep['command']!r} runs another case or configuration than {first['command']!r}: "
                             "pool only sweeps of the same pipeline.")
    if len({sweep["calibration"]["num_posterior_samples"] for sweep in sweeps}) > 1:
        raise SystemExit("the sweeps ranked their truths among different numbers of posterior samples.")
    seeds = [seed for sweep in sweeps for seed in sweep["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit("two runs share a seed (overlapping --seed ranges or a --shared-seed sweep): their "
                         "runs are not independent; pool sweeps whose seeds are --seed + truth index, apart.")
    return [run for sweep in sweeps for run in sweep["runs"]]


def main(argv: list[str] | None = None) -> dict:
    """Pool the sweeps named on the command line; write and return the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="folders of benchmarks/calibration.py sequential sweeps")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    sweeps = [json.loads((path / "results.json").read_text()) for path in args.sweeps]
    runs = pooled_runs(sweeps)
    num_posterior_samples = sweeps[0]["calibration"]["num_posterior_samples"]
    out.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": "calibration_pool", "level": "sequential", "case": sweeps[0]["case"],
               "command": shlex.join(["python", "benchmarks/calibration_pool.py", *(argv or sys.argv[1:])]),
               "sweeps": [sweep["command"] for sweep in sweeps],
               "targets": {"sbc_ks_pvalue_above": KS_MIN_PVALUE, "coverage_90_in": list(COVERAGE_90_RANGE)}}
    checked, table = sweep_report(runs, num_posterior_samples, out)
    results |= {f"calibration{key}": c.to_dict() | {"tarp": NO_TARP} for key, c in checked.items()}
    # Is a miss of the [0.85, 0.95] target more than the scatter of N truths? The two-sided binomial p
    # of the truths inside the 90% intervals against a calibrated posterior's 0.9.
    calibration = checked[""]
    inside = [round(c * len(runs)) for c in calibration.coverage_90]  # fractions of len(runs): exact
    pvalues = [float(binomtest(k, len(runs), 0.9).pvalue) for k in inside]
    results["coverage_90_binomial_pvalues"] = dict(zip(calibration.names, pvalues))
    table += (f"\n{len(runs)} truths. Binomial p of the 90% coverage against 0.9"
              f"{' (the widened posteriors)' if len(checked) > 1 else ''}: "
              + ", ".join(f"{n} {p:.2f}" for n, p in zip(calibration.names, pvalues)) + ".\n")
    (out / "table.md").write_text(table)
    results |= {"config": pipeline(sweeps[0])[1], "seeds": [run["seed"] for run in runs]}
    return emit(results, str(out / "results.json"))


if __name__ == "__main__":
    main()
