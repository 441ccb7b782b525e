"""Batched forward-model throughput: simulations per second against batch size; prints JSON.

Case paper-2mm (MNI152 at 2 mm, seed (-30, 20, 30) mm, D = 2.0 mm^2/day, rho = 0.6/day, 9 days;
every member of a batch has these parameters), on two grids: the ROI crop of 80 mm that
:class:`~sbi_tumor.simulator.TumorSimulator` solves on, and the full 2 mm grid. Backends:

  numba-loop  FKSolver called once per member (the in-run baseline; what the simulator does now)
  torch-cpu   TorchFKSolver on the CPU, the whole batch at once
  torch-cuda  TorchFKSolver on the GPU (reported as skipped when CUDA is not available)

Each entry gives the median and best wall time of ``--repeats`` solves of a batch (after one
warm-up solve; the backends take turns), simulations per second (from the median), the ratio to
numba-loop at the same batch size (of medians and of best times), and the largest difference of
the batch's densities from numba's.

    python benchmarks/batch.py [--batch-sizes 1 4 16 64] [--repeats 3] [--out results.json]
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch

from sbi_tumor.anatomy import Anatomy, load_mni152
from sbi_tumor.solver import FKSolver, seed_density
from sbi_tumor.torch_solver import TorchFKSolver
from sbi_tumor.config import SYNTHETIC_SEED_MM
from _common import emit  # benchmarks/ is on sys.path when run as a script

SEED_MM = SYNTHETIC_SEED_MM
D, RHO, DAYS, ROI_MM = 2.0, 0.6, 9.0, 80.0


def time_interleaved(fns: dict[str, Callable[[], np.ndarray]],
                     repeats: int) -> dict[str, tuple[list[float], np.ndarray]]:
    """Wall times of ``repeats`` calls of each function after a warm-up call (JIT, allocator, CUDA
    context). The calls alternate between the functions, so that load from other processes on
    the machine hits every backend alike."""
    outs = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (times[name], outs[name]) for name in fns}


def run_grid(name: str, anatomy: Anatomy, batch_sizes: list[int], repeats: int) -> dict:
    u0 = seed_density(anatomy, SEED_MM)
    numba_solver = FKSolver(anatomy)
    backends: dict[str, Callable[[int], np.ndarray]] = {
        "numba-loop": lambda b: np.stack([numba_solver.solve(D, RHO, u0, [DAYS]) for _ in range(b)]),
    }
    for device in ("cpu", "cuda"):
        if device == "cpu" or torch.cuda.is_available():
            solver = TorchFKSolver(anatomy, device=device)
            backends[f"torch-{device}"] = lambda b, s=solver: s.solve(np.full(b, D), np.full(b, RHO), u0, [DAYS])
    rows = []
    for b in batch_sizes:
        timings = time_interleaved({k: (lambda fn=fn: fn(b)) for k, fn in backends.items()}, repeats)  # noqa: B023 (called at once)
        base_times, ref = timings["numba-loop"]
        for backend, (times, out) in timings.items():
            rows.append({"backend": backend, "batch": b, "seconds_per_batch_median": statistics.median(times),
                         "seconds_per_batch_min": min(times),
                         "simulations_per_second": b / statistics.median(times),
                         "ratio_vs_numba_loop": statistics.median(base_times) / statistics.median(times),
                         "ratio_vs_numba_loop_best_of": min(base_times) / min(times),
                         "max_abs_diff_vs_numba": float(np.abs(out - ref).max())})
    return {"grid": name, "shape": list(anatomy.shape), "voxels": int(np.prod(anatomy.shape)),
            "steps": sum(numba_solver.n_steps(D, RHO, [DAYS])), "results": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    import numba

    torch.set_num_threads(os.cpu_count() or 1)  # numba uses every core by default; so does torch now
    full = load_mni152(2.0)
    grids = {f"roi-{ROI_MM:g}mm": full.crop(np.asarray(SEED_MM), ROI_MM), "full-2mm": full}
    cuda = torch.cuda.is_available()
    results = {
        "benchmark": "batch",
        "case": {"name": "paper-2mm", "seed_mm": SEED_MM, "D_mm2_per_day": D, "rho_per_day": RHO,
                 "days": DAYS, "roi_mm": ROI_MM},
        "machine": {"cpu_count": os.cpu_count(), "numba_threads": numba.get_num_threads(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "cuda": torch.cuda.get_device_name() if cuda else
                    "skipped: torch.cuda.is_available() is False"},
        "repeats": args.repeats,
        "grids": [run_grid(name, a, args.batch_sizes, args.repeats) for name, a in grids.items()],
    }
    return emit(results, args.out)


if __name__ == "__main__":
    main()
