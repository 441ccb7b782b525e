"""The paper's synthetic experiment, end to end, on several true parameter sets.

For each truth: simulate the label map at day 9 (calibration), infer theta = (D, rho, u_T1, u_T2)
with sequential NPE (4 rounds x 250 simulations by default), then predict day 11 from the MAP and
compare with the true day-11 label map. Writes ``results.json`` and one pair plot per run (truth
and MAP marked) to ``--out``; prints the JSON.

Per run: posterior mean and MAP against the truth (also for the identifiable combinations front
speed 2 sqrt(D rho) and infiltration length sqrt(D / rho)), whether the truth lies in the central
90% interval of each marginal, the contraction of each marginal (1 - posterior std / prior std),
Dice of the MAP's day-9 T2 map against the observed one and of its day-11 prediction (whole tumour
T2 and core T1) against the true one, simulations and wall time.

    python benchmarks/paper.py --out benchmarks/results/paper [--methods NPE_B NPE_A NPE_C]
                               [--truths 0 1 2 3] [--rounds 4 --simulations 250]
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sbi_tumor.anatomy import load_mni152
from sbi_tumor.metrics import posterior_metrics
from sbi_tumor.config import SYNTHETIC_SEED_MM, EMBEDDING_NAMES
from sbi_tumor.config import InferenceConfig
from sbi_tumor.inference import run_sequential_npe
from sbi_tumor.plots import pair_plot, save_figure
from sbi_tumor.observation import dice
from sbi_tumor.config import PRESETS
from sbi_tumor.prior import make_prior
from sbi_tumor.runtime import set_threads
from sbi_tumor.simulator import TumorSimulator

SEED_MM = SYNTHETIC_SEED_MM
NAMES = ("D", "rho", "u_T1", "u_T2")
# Truth 2 shows no T1 core at day 9 (peak density 0.23 < u_T1): a single iso-contour is observed.
TRUTHS = [PRESETS["paper"].truth, (1.0, 0.9, 0.75, 0.3), (3.0, 0.3, 0.6, 0.15), (0.5, 1.0, 0.8, 0.2)]


def run(truth, method: str, args, simulator: TumorSimulator, out: Path) -> dict:
    prior = make_prior("paper")
    preset = PRESETS["paper"]
    theta_true = torch.tensor([truth], dtype=torch.float32)
    x_o = simulator(theta_true)
    config = InferenceConfig(method=method, num_rounds=args.rounds, num_simulations=args.simulations,
                             embedding=args.embedding, embedding_kwargs=json.loads(args.embedding_kwargs),
                             num_components=args.components,
                             log_space=args.log_space, unconstrained=args.unconstrained,
                             stop_after_epochs=args.stop_after_epochs, max_num_epochs=args.max_epochs,
                             training_batch_size=args.batch_size, augment=args.augment,
                             proposal_widening=args.proposal_widening,
                             calibration_solves=args.calibration_solves, seed=args.seed)
    t0 = time.perf_counter()
    _, result = run_sequential_npe(simulator, prior, x_o, config, progress=not args.quiet)
    wall = time.perf_counter() - t0
    samples, map_ = result.samples.numpy().astype(float), result.map.numpy().astype(float)
    metrics = posterior_metrics(samples, map_, np.asarray(truth, float))
    prior_std = prior.sample((20000,)).std(0).numpy()
    for i, name in enumerate(("D", "rho", "u_T1", "u_T2")):
        metrics[name]["contraction"] = float(1 - samples[:, i].std() / prior_std[i])
    day9, day11 = simulator.labels(np.stack([truth, map_]), [preset.day, preset.validation_day]).swapaxes(0, 1)
    tag = f"{method}_truth{TRUTHS.index(truth)}"
    fig = pair_plot(samples, (prior.low.tolist(), prior.high.tolist()), {"truth": np.asarray(truth), "MAP": map_})
    save_figure(fig, out / f"pairplot_{tag}.png")
    return {
        "method": method, "truth": list(truth), "metrics": metrics,
        # How well the MAP reproduces the observation: near 1 with a large MAP error means a ridge.
        "dice_day9_T2": dice(day9[0] >= 1, day9[1] >= 1),
        "dice_day11_T2": dice(day11[0] >= 1, day11[1] >= 1),
        "dice_day11_T1": dice(day11[0] == 2, day11[1] == 2),
        "augment": config.augment, "num_components": config.num_components,
        **({"calibration_solves": config.calibration_solves} if config.calibration_solves else {}),
        **({"proposal_widening": config.proposal_widening} if method == "NPE_A" else {}),
        "num_simulations": result.num_simulations, "wall_time_s": wall,
        "simulation_time_s": result.simulation_time, "training_time_s": result.training_time,
        "epochs_per_round": [t.get("epochs_trained") for t in result.training],
        "pair_plot": f"pairplot_{tag}.png",
    }


def targets(r: dict) -> dict:
    m = r["metrics"]
    return {"truth_in_every_90_interval": all(m[n]["truth_in_90"] for n in ("D", "rho", "u_T1", "u_T2")),
            "front_speed_map_within_10pct": m["front_speed"]["map_rel_error"] < 0.10,
            "infiltration_length_map_within_10pct": m["infiltration_length"]["map_rel_error"] < 0.10,
            "dice_day11_above_0.9": r["dice_day11_T2"] > 0.9,
            "under_15_minutes": r["wall_time_s"] < 900}


def _seed(results: dict) -> int:
    """The run's seed (older results record it only in their command)."""
    if "seed" in results:
        return results["seed"]
    found = re.search(r"--seed (\d+)", results.get("command", ""))
    return int(found.group(1)) if found else 0


def markdown_table(paths: list[str]) -> str:
    """One table row per run of the given ``results.json`` files."""
    rows = ["| method | embedding, training | truth (D, rho, u_T1, u_T2) | MAP | truth in all 90% intervals "
            "| front speed error MAP / median | infiltration length error MAP / median | Dice day 9 (MAP) "
            "| Dice day 11 T2 / T1 | wall [s] | all targets |", "|" + " --- |" * 11]
    for path in paths:
        results = json.loads(Path(path).read_text())
        for r in results["runs"]:
            augment = r.get("augment", results.get("augment") or 1)  # older results: per file
            settings = " ".join([results.get("embedding", "mlp"), *results.get("embedding_kwargs", {})] +
                                ["log space"] * results.get("log_space", False) +
                                ["unconstrained"] * results.get("unconstrained", False) +
                                [f"augment {augment}"] * (augment > 1) +
                                ([f"{r['num_components']} components"] if "num_components" in r else []) +
                                ([f"proposal x{r['proposal_widening']:g}"] if "proposal_widening" in r else []) +
                                ([f"conformal {r['calibration_solves']}"] if "calibration_solves" in r else []) +
                                [f"patience {results.get('stop_after_epochs', 20)}, "
                                 f"batch {results.get('batch_size', 50)}, seed {_seed(results)}"])
            truth = ", ".join(f"{v:g}" for v in r["truth"])
            if "failed" in r:
                rows.append(f"| {r['method']} | {settings} | {truth} | failed: {r['failed'][:60]}… |" + " |" * 7)
                continue
            m, t = r["metrics"], r["targets"]

            def pct(name: str, key: str) -> str:
                return f"{100 * m[name][key]:.0f}%" if key in m[name] else "–"  # older results lack medians  # noqa: B023

            map_ = ", ".join(f"{m[n]['map']:.2f}" for n in NAMES)
            day9 = f"{r['dice_day9_T2']:.2f}" if "dice_day9_T2" in r else "–"
            rows.append(
                f"| {r['method']} | {settings} | {truth} | {map_} "
                f"| {'yes' if t['truth_in_every_90_interval'] else 'no'} "
                f"| {pct('front_speed', 'map_rel_error')} / {pct('front_speed', 'median_rel_error')} "
                f"| {pct('infiltration_length', 'map_rel_error')} / {pct('infiltration_length', 'median_rel_error')} "
                f"| {day9} | {r['dice_day11_T2']:.2f} / {r['dice_day11_T1']:.2f} "
                f"| {r['wall_time_s']:.0f} | {'yes' if all(t.values()) else 'no'} |")
    return "\n".join(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/paper")
    parser.add_argument("--methods", nargs="+", default=[InferenceConfig.method],
                        help="sequential NPE variants (default: the package's, %(default)s)")
    parser.add_argument("--truths", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--components", type=int, default=None,
                        help="mixture components of the MDN (default: the package's, 1 with NPE_A)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--simulations", type=int, default=250)
    parser.add_argument("--embedding", default=InferenceConfig.embedding, choices=sorted(EMBEDDING_NAMES))
    parser.add_argument("--embedding-kwargs", default="{}", metavar="JSON",
                        help='arguments of the embedding net, e.g. \'{"octants": true}\'')
    parser.add_argument("--log-space", action="store_true", help="train on (log D, log rho, u_T1, u_T2)")
    parser.add_argument("--unconstrained", action="store_true", help="the MDN learns theta in the prior box's logit")
    parser.add_argument("--stop-after-epochs", type=int, default=InferenceConfig.stop_after_epochs,
                        help="early-stopping patience per round (default %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=InferenceConfig.max_num_epochs,
                        help="most epochs per round (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=InferenceConfig.training_batch_size,
                        help="training batch size (default %(default)s)")
    parser.add_argument("--augment", type=int, default=None,
                        help="training pairs per solve, thresholds redrawn (TSNPE only; default: the package's)")
    parser.add_argument("--proposal-widening", type=float, default=InferenceConfig.proposal_widening,
                        help="NPE_A: standard deviations of the Gaussian proposal over the posterior's (default %(default)s)")
    parser.add_argument("--calibration-solves", type=int, default=InferenceConfig.calibration_solves,
                        help="solves that widen the posterior by split conformal (sbi_tumor.conformal)")
    parser.add_argument("--roi-mm", type=float, default=64.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="numba and torch threads (1: fastest for a small ROI on a busy machine)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--table", nargs="+", metavar="RESULTS_JSON",
                        help="only print the markdown table of earlier results and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(args.table))
        return {}

    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    simulator = TumorSimulator(load_mni152(2.0), seed_mm=SEED_MM, day=PRESETS["paper"].day,
                               roi_size_mm=args.roi_mm)
    results = {"benchmark": "paper", "anatomy": "MNI152 2 mm", "seed_mm": SEED_MM, "seed": args.seed,
               "threads": args.threads,
               "embedding": args.embedding, "embedding_kwargs": json.loads(args.embedding_kwargs),
               "log_space": args.log_space, "unconstrained": args.unconstrained,
               "stop_after_epochs": args.stop_after_epochs,
               "max_epochs": args.max_epochs, "batch_size": args.batch_size, "augment": args.augment,
               "command": "python benchmarks/paper.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
               "roi_shape": list(simulator.roi.shape), "observation_day": PRESETS["paper"].day,
               "validation_day": PRESETS["paper"].validation_day, "runs": []}
    for t in args.truths:
        for method in args.methods:
            try:
                r = run(TRUTHS[t], method, args, simulator, out)
                r["targets"] = targets(r)
            except RuntimeError as err:  # e.g. NPE_A's proposal correction: a result, not a crash
                r = {"method": method, "truth": list(TRUTHS[t]), "failed": str(err),
                     **{k: getattr(InferenceConfig(method=method, num_components=args.components,
                                                   augment=args.augment), k)
                        for k in ("augment", "num_components")},
                     **({"proposal_widening": args.proposal_widening} if method == "NPE_A" else {})}
            results["runs"].append(r)
            # Written after every run so that an interrupted benchmark keeps what it finished.
            (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
