"""The exact posterior of the paper experiment's noise-free label maps, on a grid.

``benchmarks/paper.py`` observes ``simulator(theta_true)`` itself: the simulator is deterministic,
so the exact posterior is the prior restricted to the parameters whose label map equals the
observed one voxel for voxel. For a given (D, rho), the thresholds that do so form a box: u_T2
must lie above the density of every voxel outside the observed T2 mask and at or below that of
every voxel inside it (the same for u_T1 and the core). The posterior weight of (D, rho) is
therefore the area of that box within the prior's threshold ranges (the prior is uniform), times
the (D, rho) cell's area. This script evaluates it on a log grid of (D, rho) around each truth,
one solve per grid point, and reports the marginal quantiles of D, rho and the front speed
2 sqrt(D rho), and the range of each threshold, so that the networks' 90% intervals can be read
against the exact ones. (The grid is about the truth: a first pass at +-20% found exact matches
only within 2% of it, and one at +-5% the same quantiles within 0.3%. u_T1 > u_T2 holds in every
matching box here and is not imposed.)

    python benchmarks/exact_posterior.py --out benchmarks/results/exact_posterior.json
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import time

import numpy as np

from paper import SEED_MM, TRUTHS
from sbi_tumor.anatomy import load_mni152
from sbi_tumor.config import PRESETS
from sbi_tumor.observation import label_map
from sbi_tumor.simulator import TumorSimulator
from _common import emit


def quantiles(values: np.ndarray, weights: np.ndarray, levels=(0.05, 0.5, 0.95)) -> list[float]:
    """Weighted quantiles of a grid's values (each point stands for its cell)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return [float(values[order][np.searchsorted(cumulative, q)]) for q in levels]


def exact_posterior(truth, simulator: TumorSimulator, points: int, span: float) -> dict:
    preset = PRESETS["paper"]
    low, high = np.array(preset.low), np.array(preset.high)
    density = simulator.density(np.array([truth]), [simulator.day])[0, 0]
    observed = label_map(density, truth[2], truth[3])
    t2, t1 = observed >= 1, observed == 2
    d = truth[0] * np.exp(np.linspace(-span, span, points))
    rho = truth[1] * np.exp(np.linspace(-span, span, points))
    weight = np.zeros((points, points))
    boxes = {}
    for i, d_i in enumerate(d):
        u = simulator.density(np.column_stack([np.full(points, d_i), rho]), [simulator.day])[:, 0]
        for j in range(points):
            # thresholds that reproduce the masks: u_T in (max u outside the mask, min u inside]
            t2_box = (max(u[j][~t2].max(), low[3]), min(u[j][t2].min(), high[3]))
            t1_box = (max(u[j][~t1].max(), low[2]), min(u[j][t1].min(), high[2]))
            area = max(t2_box[1] - t2_box[0], 0) * max(t1_box[1] - t1_box[0], 0)
            if area > 0:
                weight[i, j] = area * d_i * rho[j]  # a log grid's cell has area ~ D rho
                boxes[i, j] = (t1_box, t2_box)
    if not boxes:
        return {"truth": list(truth), "matching_points": 0}
    dd, rr = np.meshgrid(d, rho, indexing="ij")
    inside = weight > 0
    w = weight[inside]
    t1_boxes, t2_boxes = zip(*boxes.values())
    return {
        "truth": list(truth), "grid": {"points": points, "span": span,
                                       "D": [float(d[0]), float(d[-1])], "rho": [float(rho[0]), float(rho[-1])]},
        "matching_points": int(inside.sum()),
        "D": {"q05_median_q95": quantiles(dd[inside], w), "range": [float(dd[inside].min()), float(dd[inside].max())]},
        "rho": {"q05_median_q95": quantiles(rr[inside], w),
                "range": [float(rr[inside].min()), float(rr[inside].max())]},
        "front_speed": {"q05_median_q95": quantiles(2 * np.sqrt(dd * rr)[inside], w),
                        "truth": float(2 * np.sqrt(truth[0] * truth[1]))},
        "u_T1_range": [float(min(b[0] for b in t1_boxes)), float(max(b[1] for b in t1_boxes))],
        "u_T2_range": [float(min(b[0] for b in t2_boxes)), float(max(b[1] for b in t2_boxes))],
        "u_T1_above_u_T2_everywhere": bool(min(b[0] for b in t1_boxes) > max(b[1] for b in t2_boxes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truths", type=int, nargs="+", default=[0, 1, 3], help="indices into paper.TRUTHS")
    parser.add_argument("--points", type=int, default=41, help="grid points per axis")
    parser.add_argument("--span", type=float, default=0.025, help="half-width of the log grid (0.025: +-2.5%%)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    simulator = TumorSimulator(load_mni152(2.0), seed_mm=SEED_MM, day=PRESETS["paper"].day, roi_size_mm=64.0)
    t0 = time.perf_counter()
    results = {f"truth {i}": exact_posterior(TRUTHS[i], simulator, args.points, args.span) for i in args.truths}
    emit({"command": f"python benchmarks/exact_posterior.py --truths {' '.join(map(str, args.truths))} "
                     f"--points {args.points} --span {args.span:g}" + (f" --out {args.out}" if args.out else ""),
          "results": results, "seconds": time.perf_counter() - t0}, args.out)


if __name__ == "__main__":
    main()
