"""How well does one noise-free label map determine the front speed and the infiltration length?

For each truth of ``benchmarks/paper.py`` (same anatomy, seed, ROI, day 9): simulate the true label
map, then scan a log-spaced grid of (D, rho) over the ``paper`` prior and, for every grid point,
choose the thresholds u_T1 and u_T2 (within their prior ranges, u_T2 < u_T1) that reproduce the
observed T1 core and T2 whole tumour with the fewest wrong voxels. Grid points with zero wrong
voxels produce *exactly* the observed label map: no method can tell them from the truth with this
observation, so their spread of front speed 2 sqrt(D rho) and infiltration length sqrt(D / rho) is a
floor under any estimator's error (finer than the grid: more such points lie between the nodes).

With ``--human CASE ...`` (cases of ``benchmarks/defaults.py``: human prior, known seed, whole-brain
model, ROI from the T2 extent) it also asks how well the *thresholds* are determined: at every
grid point that reproduces the observation (exactly, or within 1% of the tumour's voxels), the
interval of u_T1 and of u_T2 that does so (`sbi_tumor.observation.threshold_interval`);
their union over those points is the range of thresholds this observation cannot tell apart.

Writes ``results.json`` and ``identifiability.png`` (wrong voxels over the grid, truth marked) to
``--out``; prints the JSON.

    python benchmarks/identifiability.py --out benchmarks/results/identifiability [--grid 48]
                                         [--truths 0 1 2 3] [--human human-100d]
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from defaults import CASES, case_simulator
from paper import SEED_MM, TRUTHS
from sbi_tumor.anatomy import load_mni152
from sbi_tumor.observation import best_threshold, label_map, threshold_interval
from sbi_tumor.config import PRESETS
from sbi_tumor.runtime import set_threads
from sbi_tumor.simulator import TumorSimulator


def scan(simulator: TumorSimulator, truth, d_grid, rho_grid) -> dict:
    preset = PRESETS["paper"]
    observed = simulator.labels(np.asarray([truth]), [preset.day])[0, 0]
    t1, t2 = observed == 2, observed >= 1
    wrong = np.zeros((len(d_grid), len(rho_grid)), dtype=int)
    thresholds = np.zeros((len(d_grid), len(rho_grid), 2))
    for i, d in enumerate(d_grid):
        theta = np.stack([np.full_like(rho_grid, d), rho_grid], axis=1)
        density = simulator.density(theta, [preset.day])[:, 0]
        for j, u in enumerate(density):
            c1, w1 = best_threshold(u, t1, preset.low[2], preset.high[2])
            c2, w2 = best_threshold(u, t2, preset.low[3], min(preset.high[3], c1))
            wrong[i, j], thresholds[i, j] = w1 + w2, (c1, c2)
    # The optimised thresholds must give back the same map as counted (ties at voxel values).
    i, j = np.unravel_index(np.argmin(wrong), wrong.shape)
    check = label_map(simulator.density(np.asarray([[d_grid[i], rho_grid[j]]]), [preset.day])[0, 0],
                      *thresholds[i, j])
    assert int((check != observed).sum()) <= wrong[i, j]
    return {"observed": observed, "wrong": wrong, "thresholds": thresholds}


def scan_thresholds(case: str, grid: int, anatomy) -> dict:
    """Thresholds that reproduce a human case's label map, over a (D, rho) grid of its prior."""
    preset_name, truth, day, _ = CASES[case]
    preset = PRESETS[preset_name]
    simulator = case_simulator(case, anatomy)
    observed = simulator.labels(np.asarray([truth]), [day])[0, 0]
    t1, t2 = observed == 2, observed >= 1
    d_grid = np.geomspace(preset.low[0], preset.high[0], grid)
    rho_grid = np.geomspace(preset.low[1], preset.high[1], grid)
    wrong = np.zeros((grid, grid), dtype=int)
    intervals = np.zeros((grid, grid, 4))  # u_T1 low, high, u_T2 low, high
    for i, d in enumerate(d_grid):
        density = simulator.density(np.stack([np.full_like(rho_grid, d), rho_grid], axis=1), [day])[:, 0]
        for j, u in enumerate(density):
            a1, b1, w1 = threshold_interval(u, t1, preset.low[2], preset.high[2])
            a2, b2, w2 = threshold_interval(u, t2, preset.low[3], min(preset.high[3], a1))
            wrong[i, j], intervals[i, j] = w1 + w2, (a1, b1, a2, b2)
    # at the true rates
    u_true = simulator.density(np.asarray([truth]), [day])[0, 0]
    at_truth = threshold_interval(u_true, t1, preset.low[2], preset.high[2])[:2] + \
        threshold_interval(u_true, t2, preset.low[3], preset.high[3])[:2]
    out = summarise(truth, d_grid, rho_grid, wrong, int(t2.sum())) | {"case": case, "day": day}
    out["thresholds_at_true_rates"] = {"u_T1": list(at_truth[:2]), "u_T2": list(at_truth[2:])}
    for name, limit in (("exact", 0), ("within_1pct_of_tumour", max(1, int(t2.sum()) // 100))):
        match = wrong <= limit
        if match.any():
            out[name]["u_T1_range"] = [float(intervals[match, 0].min()), float(intervals[match, 1].max())]
            out[name]["u_T2_range"] = [float(intervals[match, 2].min()), float(intervals[match, 3].max())]
    out["prior_ranges"] = {"u_T1": [preset.low[2], preset.high[2]], "u_T2": [preset.low[3], preset.high[3]]}
    return out


def summarise(truth, d_grid, rho_grid, wrong: np.ndarray, num_voxels: int) -> dict:
    d, rho = np.meshgrid(d_grid, rho_grid, indexing="ij")
    speed, length = 2 * np.sqrt(d * rho), np.sqrt(d / rho)
    true_speed, true_length = 2 * np.sqrt(truth[0] * truth[1]), np.sqrt(truth[0] / truth[1])
    out = {"truth": list(truth), "front_speed": true_speed, "infiltration_length": true_length,
           "observed_tumour_voxels": num_voxels}
    for name, limit in (("exact", 0), ("within_1pct_of_tumour", max(1, num_voxels // 100))):
        match = wrong <= limit
        out[name] = {
            "max_wrong_voxels": limit, "grid_points": int(match.sum()),
            "D_range": [float(d[match].min()), float(d[match].max())],
            "rho_range": [float(rho[match].min()), float(rho[match].max())],
            "front_speed_range": [float(speed[match].min()), float(speed[match].max())],
            "infiltration_length_range": [float(length[match].min()), float(length[match].max())],
            "front_speed_max_rel_deviation": float(np.abs(speed[match] / true_speed - 1).max()),
            "infiltration_length_max_rel_deviation": float(np.abs(length[match] / true_length - 1).max()),
        } if match.any() else {"max_wrong_voxels": limit, "grid_points": 0}
    return out


def plot(panels: list[tuple], d_grid, rho_grid, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False,
                             constrained_layout=True)
    d, rho = np.meshgrid(d_grid, rho_grid, indexing="ij")
    for ax, (truth, wrong) in zip(axes[0], panels):
        image = ax.pcolormesh(d, rho, np.log10(1 + wrong), shading="auto", cmap="viridis_r")
        ax.plot(d[wrong == 0], rho[wrong == 0], "s", mfc="none", mec="red", ms=6)
        for value, style in ((2 * np.sqrt(truth[0] * truth[1]), "--"), (np.sqrt(truth[0] / truth[1]), ":")):
            ax.contour(d, rho, 2 * np.sqrt(d * rho) if style == "--" else np.sqrt(d / rho),
                       levels=[value * 0.9, value * 1.1], colors="white", linestyles=style, linewidths=0.8)
        ax.plot(truth[0], truth[1], "r*", ms=10)
        ax.set(xscale="log", yscale="log", xlabel="D (mm²/day)", title=f"truth D={truth[0]:g}, ρ={truth[1]:g}")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    axes[0, 0].set_ylabel("ρ (1/day)")
    fig.colorbar(image, ax=axes[0].tolist(), label="log10(1 + wrong voxels)")
    fig.suptitle("Red squares: grid points that reproduce the day-9 label map exactly; red star: truth; "
                 "white: ±10% front speed (--) / infiltration length (:)", fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/identifiability")
    parser.add_argument("--truths", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--grid", type=int, default=48, help="grid points per axis (default 48)")
    parser.add_argument("--human", nargs="*", default=[], choices=list(CASES),
                        help="human cases of benchmarks/defaults.py to scan for threshold ranges too")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = PRESETS["paper"]
    simulator_anatomy = load_mni152(2.0)
    simulator = TumorSimulator(simulator_anatomy, seed_mm=SEED_MM, day=preset.day, roi_size_mm=64.0)
    d_grid = np.geomspace(preset.low[0], preset.high[0], args.grid)
    rho_grid = np.geomspace(preset.low[1], preset.high[1], args.grid)
    results = {"benchmark": "identifiability",
               "command": "python benchmarks/identifiability.py " + " ".join(
                   argv if argv is not None else sys.argv[1:]),
               "grid": args.grid, "D_grid": [float(d_grid[0]), float(d_grid[-1])],
               "rho_grid": [float(rho_grid[0]), float(rho_grid[-1])], "truths": []}
    # Large (D, rho) grow past the ROI; those tumours are far from any observation here.
    warnings.filterwarnings("ignore", message="The tumour density reaches")
    panels = []
    start = time.perf_counter()
    for t in args.truths:
        truth = TRUTHS[t]
        s = scan(simulator, truth, d_grid, rho_grid)
        results["truths"].append(summarise(truth, d_grid, rho_grid, s["wrong"], int((s["observed"] > 0).sum())))
        panels.append((truth, s["wrong"]))
    results["human_cases"] = [scan_thresholds(case, args.grid, simulator_anatomy) for case in args.human]
    results["wall_time_s"] = time.perf_counter() - start
    if panels:
        plot(panels, d_grid, rho_grid, out / "identifiability.png")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
