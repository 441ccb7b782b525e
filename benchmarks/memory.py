"""Peak resident memory of sequential NPE runs on the paper case; prints JSON.

Case paper-2mm: MNI152 at 2 mm, seed (-30, 20, 30) mm, observation day 9, prior "paper", x_o the
simulation at the paper's truth, NPE_B with the paper's MLP embedding. Memory, not accuracy, is
measured, so training stops after ``--epochs`` epochs per round.

Every configuration (rounds x simulations per round, ROI edge) runs in a fresh process, whose
peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) is the number reported, next to
the resident size once the libraries, the anatomy and the simulator are loaded (``setup``) and
the sizes of the simulation arrays: per round as uint8 (how ``simulate`` holds them), and all
rounds as float32 (the copies sbi stores and trains on).

    python benchmarks/memory.py [--configs 4x250@64 2x125@64 4x250@48 4x250@80] [--out FILE]
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from sbi_tumor.config import SYNTHETIC_SEED_MM  # light: no torch before the measurement
from _common import emit  # benchmarks/ is on sys.path when run as a script

SEED_MM, DAY, TRUTH = SYNTHETIC_SEED_MM, 9.0, (2.0, 0.6, 0.7, 0.25)
MB = 2.0 ** 20


def rss_mb() -> float:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def run_one(rounds: int, simulations: int, roi_mm: float, epochs: int) -> dict:
    """One run in this process; returns its memory figures."""
    import warnings

    import torch

    from sbi_tumor import InferenceConfig, TumorSimulator, load_mni152, make_prior, run_sequential_npe

    warnings.filterwarnings("ignore")  # sbi lists every constant voxel of the label maps
    simulator = TumorSimulator(load_mni152(2.0), seed_mm=SEED_MM, day=DAY, roi_size_mm=roi_mm)
    x_o = simulator(torch.tensor([TRUTH]))
    setup = rss_mb()
    config = InferenceConfig(num_rounds=rounds, num_simulations=simulations, embedding="mlp",
                             max_num_epochs=epochs, stop_after_epochs=epochs, seed=0)
    t0 = time.perf_counter()
    _, result = run_sequential_npe(simulator, make_prior("paper"), x_o, config, progress=False)
    voxels = x_o[0].numel()
    return {"rounds": rounds, "simulations_per_round": simulations, "roi_mm": roi_mm,
            "roi_shape": list(simulator.roi.shape), "voxels": voxels,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
            "setup_rss_mb": setup, "end_rss_mb": rss_mb(),
            "uint8_round_mb": simulations * voxels / MB,
            "float32_all_rounds_mb": rounds * simulations * voxels * 4 / MB,
            "wall_time_s": time.perf_counter() - t0, "simulation_time_s": result.simulation_time,
            "training_time_s": result.training_time, "epochs_per_round": epochs}


def parse_config(text: str) -> tuple[int, int, float]:
    """``"4x250@64"`` -> (4 rounds, 250 simulations per round, ROI 64 mm)."""
    runs, roi = text.split("@")
    rounds, simulations = runs.split("x")
    return int(rounds), int(simulations), float(roi)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["4x250@64", "2x125@64", "4x250@48", "4x250@80"],
                        help="ROUNDSxSIMULATIONS@ROI_MM")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one configuration, in this process
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(*parse_config(args.child), args.epochs)))
        return {}

    runs = []
    for config in args.configs:
        # A fresh process per configuration: ru_maxrss never goes down within one.
        done = subprocess.run([sys.executable, __file__, "--child", config, "--epochs", str(args.epochs)],
                              capture_output=True, text=True, check=True,
                              env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"})
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{config}: peak {runs[-1]['peak_rss_mb']:.0f} MB", file=sys.stderr)
    results = {
        "benchmark": "memory",
        "case": {"name": "paper-2mm", "seed_mm": SEED_MM, "day": DAY, "truth": TRUTH, "prior": "paper",
                 "method": "NPE_B", "embedding": "mlp"},
        "target": "peak RSS of a 4 x 250-simulation run at 2 mm under 3 GB",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
    }
    return emit(results, args.out)


if __name__ == "__main__":
    main()
