"""Forward-model speed benchmark; prints JSON (and writes it with --out).

Cases (MNI152 atlas, seed in frontal white matter at (-30, 20, 30) mm):
  human-1mm  D = 0.13 mm^2/day, rho = 0.025/day, 300 days (defaults of Lipkova et al.'s C++ solver)
  paper-1mm  D = 2.0 mm^2/day, rho = 0.6/day, 9 days (the rat case made dimensionless on the atlas)
  paper-2mm  the same at 2 mm
Each case reports the median wall time of ``--repeats`` runs of the numba solver, the number of
steps and voxel updates, throughput, peak resident memory of the solve, and the in-run baseline:
the plain numpy implementation of the same scheme (whole grid, every step), timed on
``--baseline-steps`` steps and extrapolated to the full run.

``grid_convergence`` checks the whole model, initial condition included, across grids: the case
of the grid-independence issue (seed (-25, 20, 25) mm, D 0.13, rho 0.025, day 300) on the 1 mm and
2 mm atlas, T1 (u >= 0.7) and T2 (u >= 0.25) volumes; target: within 3%. For comparison it also
runs the seed of one voxel's width that sbi-tumor used before 0.2 (the same tumour only by luck).

    python benchmarks/solver.py [--cases human-1mm paper-2mm] [--repeats 5] [--out results.json]
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import math
import platform
import statistics
import time

import numpy as np

from sbi_tumor.anatomy import load_mni152
from sbi_tumor.config import SEED_SIGMA_MM
from sbi_tumor.solver import FKSolver, SolverConfig, reference_step, seed_density
from _common import emit  # benchmarks/ is on sys.path when run as a script

SEED_MM = (-30.0, 20.0, 30.0)
CASES = {
    "human-1mm": dict(resolution=1.0, d=0.13, rho=0.025, days=300.0),
    "paper-1mm": dict(resolution=1.0, d=2.0, rho=0.6, days=9.0),
    "paper-2mm": dict(resolution=2.0, d=2.0, rho=0.6, days=9.0),
}


def peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(name: str, repeats: int, baseline_steps: int, anatomies: dict) -> dict:
    c = CASES[name]
    anatomy = anatomies.setdefault(c["resolution"], load_mni152(c["resolution"]))
    solver = FKSolver(anatomy)
    u0 = seed_density(anatomy, SEED_MM)
    solver.solve(c["d"], c["rho"], u0, [min(1.0, c["days"])])  # JIT warm-up
    times, rss = [], []
    for _ in range(repeats):
        solver.updates = 0
        peak_rss_reset()
        rss0 = peak_rss_mb()
        t0 = time.perf_counter()
        u = solver.solve(c["d"], c["rho"], u0, [c["days"]])
        times.append(time.perf_counter() - t0)
        rss.append(peak_rss_mb() - rss0)
    steps = sum(solver.n_steps(c["d"], c["rho"], [c["days"]]))
    median = statistics.median(times)
    updates = solver.updates

    # Baseline: the numpy reference of the same scheme, on the whole padded grid.
    st = solver.stencil
    dt = c["days"] / steps
    v = np.pad(u0, 1)
    t0 = time.perf_counter()
    for _ in range(baseline_steps):
        v = reference_step(v, st, dt, c["d"], c["rho"])
    numpy_step = (time.perf_counter() - t0) / baseline_steps
    numpy_total = numpy_step * steps
    grid_voxels = math.prod(anatomy.shape)
    return {
        "case": name, "grid": list(anatomy.shape), "spacing_mm": c["resolution"],
        "D_mm2_per_day": c["d"], "rho_per_day": c["rho"], "days": c["days"], "steps": steps,
        "seconds_per_simulation": median, "seconds_all_repeats": times,
        "voxel_updates": updates, "voxel_updates_per_second": updates / median,
        "full_grid_updates_equivalent_per_second": grid_voxels * steps / median,
        "peak_memory_mb_during_solve": max(rss),
        "tumour_volume_ml_u_above_0.25": float((u[0] >= 0.25).sum() * anatomy.voxel_volume / 1e3),
        "numpy_baseline_seconds_per_step": numpy_step,
        "numpy_baseline_seconds_extrapolated": numpy_total,
        "numpy_baseline_steps_timed": baseline_steps,
        "speedup_vs_numpy": numpy_total / median,
        "kernel_speedup_per_voxel_update": (grid_voxels / numpy_step) / (updates / median),
    }


def grid_convergence(anatomies: dict) -> dict:
    """T1/T2 volumes (mL) of one tumour on the 1 mm and the 2 mm atlas, with the default seed (in mm)
    and with a seed one voxel wide."""
    seed, d, rho, day = (-25.0, 20.0, 25.0), 0.13, 0.025, 300.0
    rows = {}
    for seed_name in ("default", "one voxel"):
        for res in (1.0, 2.0):
            anatomy = anatomies.setdefault(res, load_mni152(res))
            sigma = {"default": SEED_SIGMA_MM, "one voxel": res}[seed_name]
            u = FKSolver(anatomy).solve(d, rho, seed_density(anatomy, seed, sigma_mm=sigma), [day])[0]
            rows[f"{seed_name}, {res:g} mm"] = {
                "sigma_mm": sigma, "T1_ml": float((u >= 0.7).sum() * anatomy.voxel_volume / 1e3),
                "T2_ml": float((u >= 0.25).sum() * anatomy.voxel_volume / 1e3)}
    fine, coarse = rows["default, 1 mm"], rows["default, 2 mm"]
    diff = {k: coarse[k] / fine[k] - 1 for k in ("T1_ml", "T2_ml")}
    return {"case": {"seed_mm": seed, "D_mm2_per_day": d, "rho_per_day": rho, "day": day},
            "volumes": rows, "relative_difference_2mm_vs_1mm": diff, "target": "within 3%",
            "target_met": bool(max(abs(v) for v in diff.values()) <= 0.03)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-steps", type=int, default=5)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    import numba

    anatomies: dict = {}
    results = {
        "benchmark": "solver", "machine": {"cpu_count_numba_threads": numba.get_num_threads(),
                                           "python": platform.python_version()},
        "target": "human-1mm <= 1 s per simulation and >= 30x faster than the numpy baseline",
        "config": SolverConfig().__dict__,
        "cases": [run_case(n, args.repeats, args.baseline_steps, anatomies) for n in args.cases],
        "grid_convergence": grid_convergence(anatomies),
    }
    return emit(results, args.out)


if __name__ == "__main__":
    main()
