"""Local simulation: one process (numba over all cores) against worker processes; prints JSON.

Case paper-2mm (MNI152 at 2 mm, seed (-30, 20, 30) mm, day 9, ROI 64 mm), ``--simulations``
parameter sets drawn from the paper prior, simulated with :func:`sbi_tumor.parallel.simulate`:

  in-process   num_workers=1: FKSolver with numba's threads over every core, one set at a time
  processes-K  num_workers=K: K spawned worker processes, cores shared among them; the time
               includes starting the pool, as every round of a run pays it

The configurations take turns (``--repeats``), so that load from other processes hits them alike;
the load average is recorded, since on a shared machine it dominates the spread.

    python benchmarks/parallel.py [--simulations 100] [--workers 2] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from sbi_tumor import TumorSimulator, load_mni152, make_prior
from sbi_tumor.config import SYNTHETIC_SEED_MM
from sbi_tumor.parallel import simulate
from _common import emit  # benchmarks/ is on sys.path when run as a script

SEED_MM, DAY, ROI_MM = SYNTHETIC_SEED_MM, 9.0, 64.0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=100)
    parser.add_argument("--workers", nargs="+", type=int, default=[2])
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    import numba

    simulator = TumorSimulator(load_mni152(2.0), seed_mm=SEED_MM, day=DAY, roi_size_mm=ROI_MM, backend="numba")
    torch.manual_seed(0)
    theta = make_prior("paper").sample((args.simulations,))
    configs = {"in-process": 1} | {f"processes-{k}": k for k in args.workers}
    simulate(simulator, theta[:2], progress=False)  # JIT cache load, allocator
    times: dict[str, list[float]] = {name: [] for name in configs}
    outputs: dict[str, np.ndarray] = {}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name, workers in configs.items():
            t0 = time.perf_counter()
            outputs[name] = simulate(simulator, theta, batch_size=args.batch_size, num_workers=workers,
                                     progress=False)
            times[name].append(time.perf_counter() - t0)
    reference = outputs["in-process"]
    base = statistics.median(times["in-process"])
    results = {
        "benchmark": "parallel",
        "case": {"name": "paper-2mm", "seed_mm": SEED_MM, "day": DAY, "roi_mm": ROI_MM,
                 "roi_shape": list(simulator.roi.shape), "prior": "paper", "simulations": args.simulations,
                 "batch_size": args.batch_size},
        "machine": {"cpu_count": os.cpu_count(), "numba_threads": numba.get_num_threads(),
                    "numba_threading_layer": numba.threading_layer(), "python": platform.python_version(),
                    "load_average_1_5_15_before": load_before, "load_average_1_5_15_after": os.getloadavg()},
        "results": [{"config": name, "num_workers": workers, "seconds": times[name],
                     "seconds_median": statistics.median(times[name]),
                     "simulations_per_second": args.simulations / statistics.median(times[name]),
                     "speedup_vs_in_process": base / statistics.median(times[name]),
                     "identical_to_in_process": bool(np.array_equal(outputs[name], reference))}
                    for name, workers in configs.items()],
    }
    return emit(results, args.out)


if __name__ == "__main__":
    main()
