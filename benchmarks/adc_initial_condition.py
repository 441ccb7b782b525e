"""How far is the ADC initial condition from the tumour it stands for, and where does that send a fit?

An ADC map shows cells only inside its scan's T2 segmentation, where the density is above u_T2:
the density it gives (``adc_to_density``) is the tumour cut at u_T2, without the tail below it.
For synthetic patients (``make_synthetic_patient``: grown from a seed; the first scan's ADC-like
map follows the model the inference assumes), this script loads the patient as a user would and

1. solves at the true parameters from the ADC initial condition and from the true density of the
   first scan, and compares both with the second and third scans (T2/T1 volume ratio, Dice);
2. simulates ``--draws`` prior draws from the ADC initial condition and lists the ones whose label
   maps differ from the observed one in the fewest voxels, beside the truth's count: where a
   posterior that reproduces the observation has to go.

    python benchmarks/adc_initial_condition.py --out benchmarks/results/adc_initial_condition.json
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import dataclasses
import tempfile
import time

import nibabel as nib
import numpy as np
import torch

from sbi_tumor.anatomy import load_mni152
from sbi_tumor.identifiability import front_speed, infiltration_length
from sbi_tumor.observation import dice
from sbi_tumor.patient.inputs import load_patient
from sbi_tumor.patient.synthetic import make_synthetic_patient
from sbi_tumor.prior import make_prior
from sbi_tumor.simulator import InitialCondition, TumorSimulator
from _common import emit

#: (name, seed (mm), truth (D, rho, u_T1, u_T2), scan days since the seed, prior): the demo's
#: patient, two more on the paper's scale and two on the human prior's, with T2 inside the brain.
CASES = (
    ("demo", (-30.0, 20.0, 30.0), (2.0, 0.6, 0.7, 0.25), (7.0, 10.0, 12.0), "paper"),
    ("slow, low u_T2", (-30.0, 20.0, 30.0), (0.5, 0.3, 0.6, 0.1), (12.0, 18.0, 22.0), "paper"),
    ("fast, high u_T2", (20.0, -40.0, 10.0), (3.0, 0.4, 0.8, 0.4), (10.0, 14.0, 17.0), "paper"),
    ("human", (-30.0, 20.0, 30.0), (0.2, 0.05, 0.7, 0.2), (120.0, 160.0, 200.0), "human"),
    ("human, diffuse", (20.0, -40.0, 10.0), (0.5, 0.02, 0.6, 0.3), (250.0, 350.0, 450.0), "human"),
)


def agreement(labels: np.ndarray, t2: np.ndarray, t1: np.ndarray) -> dict:
    """T2 and T1 volume ratio (simulated / observed) and Dice of a label map against masks."""
    out = {}
    for region, mask, seen in (("T2", labels >= 1, t2), ("T1", labels == 2, t1)):
        out[region] = {"volume_ratio": float(mask.sum() / max(seen.sum(), 1)), "dice": dice(mask, seen)}
    return out


def study(case: tuple, directory: str, draws: int, seed: int) -> dict:
    name, seed_mm, truth, scan_days, prior_name = case
    anatomy = load_mni152(2.0)
    patient = make_synthetic_patient(f"{directory}/{name}", anatomy=anatomy, seed_mm=seed_mm, truth=truth,
                                     scan_days=scan_days)
    loaded = load_patient(patient.t1, patient.t2, patient.day, adc=patient.adc,
                          t2_initial=patient.t2_initial, anatomy=anatomy)
    days = [patient.day, patient.later_day]
    scans = [(np.asarray(nib.load(t2).dataobj) > 0, np.asarray(nib.load(t1).dataobj) > 0)
             for t2, t1 in ((patient.t2, patient.t1), (patient.t2_later, patient.t1_later))]
    # The first scan's true density, as make_synthetic_patient grew it.
    whole = float(2 * (np.array(anatomy.shape) * anatomy.spacing).max())
    seeded = TumorSimulator(anatomy, seed_mm=seed_mm, day=scan_days[0], roi_size_mm=whole)
    true_first = seeded.to_full_grid(seeded.solve([truth[:2]]))[0]
    initial = {"ADC map (the model)": loaded,
               "true density (oracle)": dataclasses.replace(loaded, initial=InitialCondition(density=true_first))}
    at_truth = {}
    for label, variant in initial.items():
        simulator = variant.simulator()
        maps = simulator.to_full_grid(simulator.labels(np.array([truth]), days)[0])
        at_truth[label] = {f"day {day:g}": agreement(maps[k], *scans[k]) for k, day in enumerate(days)}

    simulator = loaded.simulator()
    x_o = loaded.observation(simulator)
    torch.manual_seed(seed)
    theta = torch.cat([make_prior(prior_name).sample((draws,)), torch.tensor([truth], dtype=torch.float32)])
    mismatched = torch.cat([(simulator(theta[i:i + 100])[:, 0] != x_o).flatten(1).sum(1)
                            for i in range(0, len(theta), 100)])
    best = mismatched[:-1].argsort()[:5]
    rows = [{"theta": [round(float(v), 4) for v in theta[j]], "mismatched_voxels": int(mismatched[j]),
             "front_speed_mm_per_day": float(front_speed(theta[j:j + 1].numpy())[0]),
             "infiltration_length_mm": float(infiltration_length(theta[j:j + 1].numpy())[0])} for j in best]
    return {"case": name, "truth": list(truth), "prior": prior_name, "seed_mm": list(seed_mm),
            "scan_days_since_seed": list(scan_days), "observed_T2_voxels": int(scans[0][0].sum()),
            "at_truth": at_truth, "truth_mismatched_voxels": int(mismatched[-1]),
            "truth_front_speed_mm_per_day": float(front_speed([truth])[0]), "best_prior_draws": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=1500, help="prior draws per patient for the best fits")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior draws")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        cases = [study(case, directory, args.draws, args.seed) for case in CASES]
    emit({"command": f"python benchmarks/adc_initial_condition.py --draws {args.draws} --seed {args.seed}"
                     + (f" --out {args.out}" if args.out else ""),
          "cases": cases, "seconds": time.perf_counter() - t0}, args.out)


if __name__ == "__main__":
    main()
