"""NPE variants on the recorded NPE-vs-TMCMC seeds, scored against each seed's recorded reference.

``sbi-tumor benchmark npe-vs-mcmc --random-seeds ...`` writes, per seed, the reference TMCMC
samples (``samples.npz``) and the C2ST of TMCMC with ten times NPE's budget. A variant of NPE
(another density estimator, more rounds, more threshold pairs per solve, ...) is then measured on
the same observations without rerunning the references (8-13 minutes per seed): this script
rebuilds each seed's observation (it is a function of the seed), runs NPE with the variant's
settings and the seed the benchmark gives NPE, and scores it with the benchmark's C2ST.

Besides C2ST it records, per parameter, the ratio of the NPE posterior's standard deviation to the
reference's and the offset of its mean in reference standard deviations: a ratio well above 1 is
information the network did not extract, an offset a bias along the posterior ridge.

Usage::

    python benchmarks/npe_variants.py --reference benchmarks/results/npe_vs_mcmc_seeds \\
        --name nsf --settings '{"density_estimator": "nsf"}' --out benchmarks/results/npe_variants

Each (variant, seed) is written to ``OUT/<name>/seed<k>.json`` as it finishes and skipped by a
rerun; ``OUT/summary.json`` and ``OUT/table.md`` then cover every variant in ``OUT``, after the
recorded default runs scored the same way. ``--table`` only rewrites those two.
"""

from __future__ import annotations

import _common  # noqa: F401  (OpenMP settings before numba loads)

import argparse
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sbi_tumor.benchmark.config import BenchmarkConfig
from sbi_tumor.benchmark.runners import NPE, REFINED, run_npe
from sbi_tumor.benchmark.task import MatchedProblem
from sbi_tumor.config import PARAMETER_NAMES
from sbi_tumor.metrics import c2st_score
from sbi_tumor.runtime import set_threads
from sbi_tumor.sbi_compat import CONSTANT_DATA_WARNING


def run_seed(reference_dir: Path, seed: int, variant: dict) -> dict:
    recorded = json.loads((reference_dir / f"seed{seed}" / "results.json").read_text())
    reference = np.load(reference_dir / f"seed{seed}" / "samples.npz")["reference"]
    settings = {k: v for k, v in recorded["config"].items() if k in BenchmarkConfig.__dataclass_fields__}
    settings.update(variant, seed=seed)
    config = BenchmarkConfig(**settings)
    set_threads(config.threads)
    budget = config.budgets[-1]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The tumour density reaches")
        warnings.filterwarnings("ignore", message=CONSTANT_DATA_WARNING)
        problem = MatchedProblem.create(config)
        # the seed the benchmark gives NPE at its largest budget
        run = run_npe(problem, budget, config, seed=config.seed + len(config.budgets))
    samples = run["samples"]
    # TMCMC with the recorded factor times the recorded NPE budget (a variant may change the budget)
    recorded_budget = recorded["config"]["budgets"][-1]
    factor = recorded["config"]["tmcmc_factor"]
    tmcmc = next(r for r in recorded["runs"] if r["method"] == "TMCMC" and r["budget"] == factor * recorded_budget)
    ref_mean, ref_std = reference.mean(0), reference.std(0)
    return {"seed": seed, "budget": budget, "config": asdict(config),
            "c2st": c2st_score(samples, reference, config.c2st_samples, config.seed),
            "recorded_npe_c2st": _npe_row(recorded, recorded_budget)["c2st"],
            "tmcmc_10x_c2st": tmcmc["c2st"],
            "std_ratio": dict(zip(PARAMETER_NAMES, (samples.std(0) / ref_std).tolist())),
            "mean_offset_sd": dict(zip(PARAMETER_NAMES, ((samples.mean(0) - ref_mean) / ref_std).tolist())),
            "wall_time_s": run["wall_time_s"], "num_simulations": run["num_simulations"],
            "epochs_per_round": run["extra"]["epochs_per_round"],
            **({"npe_c2st_before_refinement": c2st_score(run["npe_samples"], reference, config.c2st_samples, config.seed),
                "effective_sample_sizes": run["extra"]["effective_sample_sizes"]} if config.refine_solves else {})}


def recorded_default(reference_dir: Path) -> dict:
    """The recorded NPE runs of the benchmark (the package default), scored as the variants are."""
    rows = []
    for path in sorted(reference_dir.glob("seed*/results.json")):
        recorded = json.loads(path.read_text())
        samples = np.load(path.parent / "samples.npz")
        budget = recorded["config"]["budgets"][-1]
        run = _npe_row(recorded, budget)
        npe, reference = samples[f"{run['method']}_{budget}"], samples["reference"]
        tmcmc = next(r for r in recorded["runs"] if r["method"] == "TMCMC"
                     and r["budget"] == recorded["config"]["tmcmc_factor"] * budget)
        rows.append({"seed": recorded["config"]["seed"], "c2st": run["c2st"], "tmcmc_10x_c2st": tmcmc["c2st"],
                     "std_ratio": dict(zip(PARAMETER_NAMES, (npe.std(0) / reference.std(0)).tolist())),
                     "mean_offset_sd": dict(zip(PARAMETER_NAMES, ((npe.mean(0) - reference.mean(0))
                                                                  / reference.std(0)).tolist())),
                     "wall_time_s": run["wall_time_s"], "config": recorded["config"]})
    return _summary(rows, {"recorded": str(reference_dir)})


def _npe_row(recorded: dict, budget: int) -> dict:
    """The recorded run of NPE at ``budget``, alone or refined with the likelihood."""
    return next(r for r in recorded["runs"] if r["method"] in (NPE, REFINED) and r["budget"] == budget)


def _summary(rows: list[dict], note: dict) -> dict:
    c2st = np.array([r["c2st"] for r in rows])
    return {
        "seeds": [r["seed"] for r in rows], "c2st": c2st.tolist(),
        "c2st_mean": float(c2st.mean()), "c2st_std": float(c2st.std()) if len(rows) > 1 else None,  # as the benchmark
        "beats_tmcmc_10x": int(sum(r["c2st"] <= r["tmcmc_10x_c2st"] for r in rows)),
        "std_ratio_mean": {n: float(np.mean([r["std_ratio"][n] for r in rows])) for n in PARAMETER_NAMES},
        "abs_offset_sd_mean": {n: float(np.mean([abs(r["mean_offset_sd"][n]) for r in rows]))
                               for n in PARAMETER_NAMES},
        "wall_time_s_mean": float(np.mean([r["wall_time_s"] for r in rows])),
        "settings": rows[0]["config"] | {"note": note},
        "tmcmc_10x_c2st": [r["tmcmc_10x_c2st"] for r in rows]}


def summarise(out: Path, reference_dir: Path) -> dict:
    variants = {"default (recorded)": recorded_default(reference_dir)}
    for directory in sorted(p for p in out.iterdir() if p.is_dir()):
        rows = [json.loads(f.read_text()) for f in sorted(directory.glob("seed*.json"))]
        if rows:
            variants[directory.name] = _summary(rows, json.loads((directory / "variant.json").read_text()))
    return variants


def table(variants: dict) -> str:
    lines = ["| variant | C2ST per seed | mean ± std | <= TMCMC 10x | std ratio D / rho / u_T1 / u_T2 | "
             "\\|offset\\| (ref. sd) D / rho | s per run |",
             "|---|---|---:|---:|---|---|---:|"]
    for name, v in variants.items():
        std = f" ± {v['c2st_std']:.3f}" if v["c2st_std"] is not None else ""
        ratios = " / ".join(f"{v['std_ratio_mean'][n]:.2f}" for n in PARAMETER_NAMES)
        lines.append(
            f"| {name} | {' '.join(f'{c:.3f}' for c in v['c2st'])} | {v['c2st_mean']:.3f}{std} | "
            f"{v['beats_tmcmc_10x']} of {len(v['c2st'])} | "
            f"{ratios} | "
            f"{v['abs_offset_sd_mean']['D']:.2f} / {v['abs_offset_sd_mean']['rho']:.2f} | "
            f"{v['wall_time_s_mean']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="output directory of npe-vs-mcmc --random-seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--name", help="name of the variant (a folder of OUT)")
    parser.add_argument("--benchmark", type=json.loads, default={},
                        help="BenchmarkConfig settings of the variant, JSON (e.g. '{\"npe_rounds\": 8}')")
    parser.add_argument("--settings", type=json.loads, default={},
                        help="InferenceConfig settings of the variant, JSON (npe_settings)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--table", action="store_true", help="only rewrite summary.json and table.md")
    args = parser.parse_args()
    if args.table:
        variants = summarise(Path(args.out), Path(args.reference))
        (Path(args.out) / "summary.json").write_text(json.dumps(variants, indent=2) + "\n")
        (Path(args.out) / "table.md").write_text(table(variants))
        print(table(variants))
        return
    variant = dict(args.benchmark)
    if args.settings:
        variant["npe_settings"] = args.settings
    out = Path(args.out) / args.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "variant.json").write_text(json.dumps(variant) + "\n")
    for seed in args.seeds:
        path = out / f"seed{seed}.json"
        if path.exists():
            continue
        start = time.perf_counter()
        row = run_seed(Path(args.reference), seed, variant)
        row["command"] = ("python benchmarks/npe_variants.py --reference " + args.reference + f" --seeds {seed} "
                          f"--name {args.name} --benchmark '{json.dumps(args.benchmark)}' "
                          f"--settings '{json.dumps(args.settings)}' --out {args.out}")
        path.write_text(json.dumps(row, indent=2) + "\n")
        print(f"{args.name} seed {seed}: C2ST {row['c2st']:.3f} (recorded NPE {row['recorded_npe_c2st']:.3f}, "
              f"TMCMC 10x {row['tmcmc_10x_c2st']:.3f}), {time.perf_counter() - start:.0f} s", flush=True)
    variants = summarise(Path(args.out), Path(args.reference))
    (Path(args.out) / "summary.json").write_text(json.dumps(variants, indent=2) + "\n")
    (Path(args.out) / "table.md").write_text(table(variants))
    print(table(variants))


if __name__ == "__main__":
    main()
