"""Which inference configuration should be the default? Human-prior cases and the paper case.

Each case is a synthetic patient on the MNI152 atlas at 2 mm with a known seed: the label map of
the true parameters at the observation day is x_o, the region of interest is sized from its T2
extent as ``sbi-tumor infer`` sizes it, and the model runs on the whole anatomy. Each named
configuration (``CONFIGS``) infers theta = (D, rho, u_T1, u_T2) from x_o with 1,000 forward solves.

Per run: whether the truth lies in the central 90% and 98% interval of each parameter and of the
front speed 2 sqrt(D rho) and infiltration length sqrt(D / rho); the 90% widths relative to the
truth; the contraction 1 - posterior std / prior std; MAP errors; wall time split into simulation
and training. One JSON file per run in ``--out`` (a rerun skips finished runs, so an interrupted
sweep loses nothing), ``results.json`` with all of them and ``table.md``.

    python benchmarks/defaults.py --out benchmarks/results/defaults [--configs default old-default]
                                  [--cases human-100d human-300d] [--seeds 0 1]

Targets (human-100d, defaults): truth inside every 98% interval, front-speed 90% width < 20% of
its value, D's 90% width < 30%, whole inference <= 120 s on the 2-core machine.
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sbi_tumor.anatomy import load_mni152
from sbi_tumor.identifiability import derived
from sbi_tumor.config import SYNTHETIC_SEED_MM, InferenceConfig
from sbi_tumor.inference import run_sequential_npe
from sbi_tumor.config import PARAMETER_NAMES
from sbi_tumor.prior import make_prior
from sbi_tumor.simulator import TumorSimulator
from sbi_tumor.patient.inputs import roi_edge_mm
from _common import emit  # benchmarks/ is on sys.path when run as a script

#: name -> (prior preset, truth (D, rho, u_T1, u_T2), observation day, seed point in mm)
CASES = {
    # the synthetic patient of the defaults issue: human prior, day 100
    "human-100d": ("human", (0.3, 0.08, 0.7, 0.25), 100.0, (-25.0, 20.0, 25.0)),
    # the defaults of Lipkova et al.'s solver: a slow tumour at day 300
    "human-300d": ("human", (0.13, 0.025, 0.7, 0.25), 300.0, (-25.0, 20.0, 25.0)),
    # fast and diffuse, early: day 60
    "human-60d": ("human", (0.6, 0.12, 0.65, 0.3), 60.0, SYNTHETIC_SEED_MM),
    # small and compact, another lobe: day 150
    "human-150d": ("human", (0.1, 0.05, 0.75, 0.2), 150.0, (20.0, -10.0, 30.0)),
    # the paper's rat case made dimensionless on the atlas
    "paper": ("paper", (2.0, 0.6, 0.7, 0.25), 9.0, SYNTHETIC_SEED_MM),
}

#: name -> InferenceConfig overrides; "default" is InferenceConfig() itself.
CONFIGS = {
    "default": {},
    # the defaults before this benchmark: NPE_B with the 3D CNN, sbi's training settings
    "old-default": dict(method="NPE_B", embedding="cnn", augment=1,
                        training_batch_size=50, learning_rate=5e-4, stop_after_epochs=20),
    # the best configuration of the paper benchmarks before this one, with its training settings
    "tsnpe-radial-aug10-slow": dict(method="TSNPE", embedding="radial", augment=10, training_batch_size=50, learning_rate=5e-4,
                                    stop_after_epochs=20),
    # the default with variations
    "default-patience10": dict(stop_after_epochs=10),
    "default-batch500": dict(training_batch_size=500, learning_rate=2e-3),
    "default-no-octants": dict(embedding_kwargs={"octants": False}),
    "default-aug1": dict(augment=1),
    "default-nsf": dict(density_estimator="nsf"),
    "default-aug30": dict(augment=30),
    "default-conformal50": dict(calibration_solves=50),
    "default-unconstrained": dict(unconstrained=True),
}


def interval(values: np.ndarray, mass: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - mass) / 2, (1 + mass) / 2])
    return float(lo), float(hi)


def case_simulator(case: str, anatomy) -> TumorSimulator:
    """The simulator of a case, its observation window sized as the patient workflow sizes it,
    from the T2 extent of the truth's tumour (the model itself runs on the whole anatomy)."""
    _, truth, day, seed_mm = CASES[case]
    whole = TumorSimulator(anatomy, seed_mm=seed_mm, day=day, roi_size_mm=1e4)
    t2 = whole.to_full_grid(whole(torch.tensor([truth]))[0, 0].numpy()) >= 1
    return TumorSimulator(anatomy, seed_mm=seed_mm, day=day, roi_size_mm=roi_edge_mm(anatomy, t2, np.asarray(seed_mm)))


def run(case: str, config_name: str, seed: int, anatomy, quiet: bool) -> dict:
    preset, truth, day, seed_mm = CASES[case]
    prior = make_prior(preset)
    simulator = case_simulator(case, anatomy)
    x_o = simulator(torch.tensor([truth]))
    config = InferenceConfig(**CONFIGS[config_name], seed=seed)
    _, result = run_sequential_npe(simulator, prior, x_o, config, progress=not quiet)
    samples = result.samples.numpy().astype(float)
    map_ = result.map.numpy().astype(float)
    prior_samples = prior.sample((20_000,)).numpy().astype(float)
    columns = dict(zip(PARAMETER_NAMES, samples.T)) | derived(samples)
    prior_columns = dict(zip(PARAMETER_NAMES, prior_samples.T)) | derived(prior_samples)
    true = dict(zip(PARAMETER_NAMES, truth)) | {k: float(v[0]) for k, v in derived(np.array(truth)).items()}
    maps = dict(zip(PARAMETER_NAMES, map_)) | {k: float(v[0]) for k, v in derived(map_).items()}
    metrics = {}
    for name, values in columns.items():
        lo90, hi90 = interval(values, 0.9)
        lo98, hi98 = interval(values, 0.98)
        t = true[name]
        metrics[name] = {
            "truth": t, "map": float(maps[name]), "median": float(np.median(values)), "q05": lo90, "q95": hi90,
            "in_90": bool(lo90 <= t <= hi90), "in_98": bool(lo98 <= t <= hi98),
            "width90_rel": (hi90 - lo90) / abs(t), "map_rel_error": abs(float(maps[name]) - t) / abs(t),
            "contraction": float(1 - values.std() / prior_columns[name].std())}
    return {"case": case, "config": config_name, "seed": seed, "settings": result.config,
            "prior": preset, "truth": list(truth), "day": day, "seed_mm": list(seed_mm),
            "roi_shape": list(simulator.roi.shape), "metrics": metrics,
            "all_in_98": all(m["in_98"] for m in metrics.values()),
            "num_simulations": result.num_simulations, "wall_time_s": result.wall_time,
            "simulation_time_s": result.simulation_time, "training_time_s": result.training_time,
            "epochs_per_round": [t.get("epochs_trained") for t in result.training]}


def markdown_table(runs: list[dict]) -> str:
    """One row per run: the truth inside all 98% intervals; 90% widths relative to the truth and MAP
    errors of D, the front speed and the infiltration length; contraction; time."""
    head = ("| case | config | seed | truth in 98% | D width | speed width / MAP error "
            "| length width / MAP error | contraction D / rho / u_T1 / u_T2 | sim / train / wall [s] |")
    lines = [head, "|" + "---|" * 9]
    for r in runs:
        m = r["metrics"]
        contraction = " / ".join(f"{m[n]['contraction']:.2f}" for n in ("D", "rho", "u_T1", "u_T2"))
        lines.append(
            f"| {r['case']} | {r['config']} | {r['seed']} | {'yes' if r['all_in_98'] else 'no'} "
            f"| {m['D']['width90_rel']:.0%} "
            f"| {m['front_speed']['width90_rel']:.0%} / {m['front_speed']['map_rel_error']:.1%} "
            f"| {m['infiltration_length']['width90_rel']:.0%} / {m['infiltration_length']['map_rel_error']:.1%} "
            f"| {contraction} "
            f"| {r['simulation_time_s']:.0f} / {r['training_time_s']:.0f} / {r['wall_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="results folder (finished runs in it are kept)")
    parser.add_argument("--configs", nargs="+", default=["default"], choices=list(CONFIGS))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    anatomy = load_mni152(2.0)
    for case in args.cases:
        for config in args.configs:
            for seed in args.seeds:
                path = out / f"{case}_{config}_seed{seed}.json"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                result = run(case, config, seed, anatomy, args.quiet)
                result["command"] = shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
                path.write_text(json.dumps(result, indent=2))
                print(f"{case} {config} seed {seed}: all in 98% {result['all_in_98']}, "
                      f"D width {result['metrics']['D']['width90_rel']:.0%}, "
                      f"speed width {result['metrics']['front_speed']['width90_rel']:.0%}, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    order = {name: i for i, name in enumerate([*CASES, *CONFIGS])}
    runs = sorted((json.loads(p.read_text()) for p in out.glob("*_seed*.json")),
                  key=lambda r: (order[r["case"]], order[r["config"]], r["seed"]))
    (out / "table.md").write_text(markdown_table(runs))
    return emit({"benchmark": "defaults", "runs": runs}, str(out / "results.json"))


if __name__ == "__main__":
    main()
