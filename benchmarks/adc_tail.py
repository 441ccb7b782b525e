"""Does the ADC initial condition grow into the next scan at the true parameters?

An ADC map shows cells only inside its T2 segmentation, where the density is above u_T2, so the
density it gives is cut there. Grown with the true (D, rho), that cut tumour falls behind the
real one, and a fit can only make up for it with wrong parameters. ``InitialCondition(tail=True)``
(the default of ``load_patient`` with an ADC map) adds the leading edge of each simulation's own
front beyond the cut, ``u_edge exp(-s / sqrt(D / rho))``.

For synthetic patients (``make_synthetic_patient``: grown from a seed, the first scan's ADC-like
map follows the model the inference assumes), this script loads the patient as a user would,
with and without the tail, solves at the true parameters to the second and third scans, and
compares with them: T2 and T1 volume (ratio to the observed) and Dice. Patients differ in where
the tumour starts, (D, rho, u_T1, u_T2) and the days of the scans, on the MNI152 atlas at 2 mm
and 1 mm (the tail is defined in mm, so it should not depend on the grid).

With ``--infer``, the default inference also runs on the named cases, with and without the
tail, and the JSON says whether each 90% interval holds the truth.

    python benchmarks/adc_tail.py --infer demo "slow, low u_T2" "fast, high u_T2" human \
        --out benchmarks/results/adc_tail.json
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import dataclasses
import tempfile
import time

import nibabel as nib
import numpy as np

from sbi_tumor.anatomy import load_mni152
from sbi_tumor.patient.inputs import load_patient
from sbi_tumor.patient.synthetic import make_synthetic_patient
from sbi_tumor.patient.workflow import infer_patient
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


def synthetic(case: tuple, anatomy, directory: str):
    name, seed_mm, truth, scan_days, _ = case
    return make_synthetic_patient(f"{directory}/{name}-{anatomy.spacing.min():g}", anatomy=anatomy,
                                  seed_mm=seed_mm, truth=truth, scan_days=scan_days)


def compare(case: tuple, resolution_mm: float, directory: str) -> dict:
    """Volume ratios and Dice at the truth, with and without the tail, for one patient."""
    name, seed_mm, truth, scan_days, _ = case
    anatomy = load_mni152(resolution_mm)
    patient = synthetic(case, anatomy, directory)
    loaded = load_patient(patient.t1, patient.t2, patient.day, adc=patient.adc,
                          t2_initial=patient.t2_initial, anatomy=anatomy)
    days = [patient.day, patient.later_day]
    observed = {day: {"T2": np.asarray(nib.load(t2).dataobj) > 0, "T1": np.asarray(nib.load(t1).dataobj) > 0}
                for day, t2, t1 in ((patient.day, patient.t2, patient.t1),
                                    (patient.later_day, patient.t2_later, patient.t1_later))}
    result = {"case": name, "resolution_mm": resolution_mm, "seed_mm": list(seed_mm), "truth": list(truth),
              "scan_days_since_seed": list(scan_days), "fitted_day": patient.day,
              "initial_T2_voxels": int((np.asarray(nib.load(patient.t2_initial).dataobj) > 0).sum())}
    for tail in (False, True):
        variant = dataclasses.replace(loaded, initial=dataclasses.replace(loaded.initial, tail=tail))
        simulator = variant.simulator()
        t0 = time.perf_counter()
        labels = simulator.to_full_grid(simulator.labels(np.array([truth]), days)[0])
        rows = {}
        for k, day in enumerate(days):
            for region, mask in (("T2", labels[k] >= 1), ("T1", labels[k] == 2)):
                seen = observed[day][region]
                rows[f"day {day:g} {region}"] = {
                    "volume_ratio": float(mask.sum() / max(seen.sum(), 1)),
                    "dice": float(2 * (mask & seen).sum() / max(mask.sum() + seen.sum(), 1))}
        result["with_tail" if tail else "without_tail"] = rows | {"solve_s": time.perf_counter() - t0}
    return result


def infer(case: tuple, directory: str) -> dict:
    """The default inference (``infer_patient``, 2 mm) with and without the tail: 90% intervals
    against the truth, and the MAP."""
    name, _, truth, _, prior = case
    patient = synthetic(case, load_mni152(2.0), directory)
    result = {"case": name, "truth": list(truth), "prior": prior}
    for tail in (False, True):
        t0 = time.perf_counter()
        run = infer_patient(patient.t1, patient.t2, patient.day, adc=patient.adc, t2_initial=patient.t2_initial,
                            prior=prior, out_dir=f"{directory}/{name}-fit-{tail}", progress=False, adc_tail=tail)
        summary = run.result.summary()["parameters"]
        result["with_tail" if tail else "without_tail"] = {
            "parameters": {key: {"q05": row["q05"], "q95": row["q95"], "map": row["map"],
                                 "truth_in_90": bool(row["q05"] <= value <= row["q95"])}
                           for (key, row), value in zip(summary.items(), truth)},
            "seconds": time.perf_counter() - t0}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=float, nargs="+", default=[2.0, 1.0], help="grid spacings (mm)")
    parser.add_argument("--infer", nargs="*", default=[], metavar="CASE", choices=[c[0] for c in CASES],
                        help="also run the default inference on these cases, with and without the tail "
                             "(two runs of a few minutes each)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        cases = [compare(case, h, directory) for h in args.resolutions for case in CASES]
        fits = [infer(case, directory) for case in CASES if case[0] in args.infer]
    ratios = {key: [row[key][f"day {row['fitted_day']:g} T2"]["volume_ratio"] for row in cases]
              for key in ("without_tail", "with_tail")}
    command = " ".join(["python benchmarks/adc_tail.py", "--resolutions", *map("{:g}".format, args.resolutions)]
                       + (["--infer", *(repr(c) for c in args.infer)] if args.infer else [])
                       + (["--out", args.out] if args.out else []))
    emit({"command": command,
          "summary": {f"{key}: T2 volume ratio at the fitted day, min-max": [min(v), max(v)]
                      for key, v in ratios.items()},
          "cases": cases, "inference": fits, "seconds": time.perf_counter() - t0}, args.out)


if __name__ == "__main__":
    main()
