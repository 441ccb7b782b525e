"""One markdown table of recorded ``benchmarks/calibration.py`` runs, a row per run.

Each row reads the run's ``results.json``: the case, the seed, what its command changed from the
default pipeline (``--settings``, ``--augment``, ``--simulations``, ``--rounds``), whether a sequential
sweep gave every truth its own seed (``seed + i``) or one seed for all (``--shared-seed``, and every
sweep recorded before per-truth seeds, whose results have no ``seeds``),
SBC's KS p-value and the 90% coverage per parameter, TARP's p-value (amortised runs) and how many
parameters meet both per-parameter targets (the verdicts `sbi_tumor.diagnostics.Calibration`
recorded). Writes the table to ``--out`` and prints it.

    python benchmarks/calibration_table.py --out benchmarks/results/calibration/amortised_seeds.md \\
        benchmarks/results/calibration/amortised_paper benchmarks/results/calibration/amortised_paper_unconstrained ...
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from pathlib import Path

#: Flags of benchmarks/calibration.py that change the pipeline, as the table names them.
CHANGES = {"--augment": "{} pairs per solve", "--simulations": "{} solves per round", "--rounds": "{} round(s)"}


def changes(command: str) -> str:
    """What ``command`` changed from the default pipeline, e.g. ``unconstrained`` or ``30 pairs per solve``."""
    words = shlex.split(command)
    found = []
    for flag, label in CHANGES.items():
        if flag in words:
            found.append(label.format(words[words.index(flag) + 1]))
    if "--settings" in words:
        for key, value in json.loads(words[words.index("--settings") + 1]).items():
            found.append(key if value is True else f"{key} {value}")
    return ", ".join(found) or "default"


def row(path: Path) -> str:
    results = json.loads((path / "results.json").read_text())
    calibration = results["calibration"]
    verdicts = calibration["verdicts"].values()
    met = sum(v["sbc_passed"] and v["coverage_90_passed"] for v in verdicts)
    tarp = calibration.get("tarp_ks_pvalue")
    tarp = "n/a" if tarp is None or isinstance(tarp, str) or math.isnan(tarp) else f"{tarp:.2f}"
    pairs, seed = calibration["num_pairs"], results["config"]["seed"]
    if results["level"] == "sequential":
        shared = len(set(results.get("seeds", [seed]))) == 1
        seed = f"{seed}, all truths" if shared else f"{seed} + truth index"
    return (f"| {results['case']} | {results['level']} ({pairs} {'pairs' if results['level'] == 'amortised' else 'truths'}) "
            f"| {seed} | {changes(results['command'])} "
            f"| {' / '.join(f'{p:.3f}' for p in calibration['ks_pvalues'])} "
            f"| {' / '.join(f'{c:.2f}' for c in calibration['coverage_90'])} | {tarp} | {met} of {len(verdicts)} |")


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="folders of benchmarks/calibration.py runs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    lines = ["| case | level | seed | changed from the default | SBC KS p D / rho / u_T1 / u_T2 "
             "| 90% coverage D / rho / u_T1 / u_T2 | TARP p | parameters meeting both targets |",
             "|---|---|---|---|---|---|---|---:|"] + [row(p) for p in args.runs]
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table, end="")
    return table


if __name__ == "__main__":
    main()
