"""Synthetic patients: NIfTI segmentations simulated from known parameters, to try the workflow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..anatomy import Anatomy, load_mni152
from ..io import atomic_output_dir, save_nifti
from ..observation import label_map
from ..config import PARAMETER_LABELS, PARAMETER_NAMES, PRESETS, SYNTHETIC_SEED_MM
from ..simulator import TumorSimulator

__all__ = ["SyntheticPatient", "make_synthetic_patient"]


@dataclass
class SyntheticPatient:
    """Paths and ground truth of [`make_synthetic_patient`][sbi_tumor.patient.synthetic.make_synthetic_patient]; days count from the ADC scan.

    Attributes:
        directory: where the NIfTI inputs and ``truth.json`` are.
        adc: ADC-like map and T2 segmentation of the first scan.
        t2_initial: ADC-like map and T2 segmentation of the first scan.
        t1: segmentations to fit, ``day`` days after the first scan.
        t2: segmentations to fit, ``day`` days after the first scan.
        t1_later: validation segmentations, ``later_day`` days after the first scan.
        t2_later: validation segmentations, ``later_day`` days after the first scan.
        truth: the parameters (D, rho, u_T1, u_T2) that made the data.
        seed_mm: where the tumour started, ``scan_days[0]`` days before the first scan.
    """

    directory: Path
    adc: Path
    t2_initial: Path
    t1: Path
    t2: Path
    t1_later: Path
    t2_later: Path
    day: float
    later_day: float
    truth: tuple[float, float, float, float]
    seed_mm: tuple[float, float, float]


def make_synthetic_patient(out_dir: str | Path, *, anatomy: Anatomy | None = None,
                           seed_mm: Sequence[float] = SYNTHETIC_SEED_MM,
                           truth: Sequence[float] = PRESETS["paper"].truth,
                           scan_days: Sequence[float] = (7.0, 10.0, 12.0),
                           adc_healthy: float = 0.8e-3, adc_noise: float = 0.02,
                           rng_seed: int = 0, overwrite: bool = False) -> SyntheticPatient:
    """Grow a tumour with known parameters and write three scans as NIfTI on the anatomy grid.

    The tumour starts at ``seed_mm`` on day 0 and is scanned on ``scan_days`` (days since the
    seed): the first scan gives an ADC-like map and its T2 segmentation, the second the T1/T2
    segmentations to fit, the third the T1/T2 segmentations to validate predictions against.
    The ADC-like map follows the model the inference assumes, ADC inversely proportional to cell
    density inside T2: ``adc_healthy * u_T2 / max(u, u_T2)`` in tissue (so ``adc_healthy`` in
    healthy tissue, mm^2/s), 3e-3 in CSF, 0 outside the brain, with ``adc_noise`` relative noise.
    """
    anatomy = anatomy if anatomy is not None else load_mni152(2.0)
    d_white, rho, u_t1, u_t2 = (float(v) for v in truth)
    # A ROI larger than the image is clipped to it: simulate on the whole anatomy.
    whole = float(2 * (np.array(anatomy.shape) * anatomy.spacing).max())
    simulator = TumorSimulator(anatomy, seed_mm=seed_mm, day=max(scan_days), roi_size_mm=whole)
    density = simulator.to_full_grid(simulator.density([[d_white, rho]], scan_days)[0])
    labels = label_map(density, u_t1, u_t2)

    rng = np.random.default_rng(rng_seed)
    adc = np.where(anatomy.tissue, adc_healthy * u_t2 / np.maximum(density[0], u_t2),
                   np.where(anatomy.csf > 0.5, 3e-3, 0.0))
    adc = np.where(adc > 0, adc * (1 + adc_noise * rng.standard_normal(adc.shape)), 0).astype(np.float32)

    files = {"adc": "scan1_adc.nii.gz", "t2_initial": "scan1_t2.nii.gz", "t1": "scan2_t1.nii.gz",
             "t2": "scan2_t2.nii.gz", "t1_later": "scan3_t1.nii.gz", "t2_later": "scan3_t2.nii.gz"}
    images = {"adc": adc, "t2_initial": labels[0] >= 1, "t1": labels[1] >= 2, "t2": labels[1] >= 1,
              "t1_later": labels[2] >= 2, "t2_later": labels[2] >= 1}
    out = Path(out_dir)
    days = [float(d - scan_days[0]) for d in scan_days]
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for key, name in files.items():
            save_nifti(tmp / name, images[key], anatomy.affine)
        (tmp / "truth.json").write_text(json.dumps({
            "parameters": dict(zip(PARAMETER_NAMES, map(float, truth))),
            "units": dict(zip(PARAMETER_NAMES, PARAMETER_LABELS)),
            "seed_mm": list(map(float, seed_mm)), "scan_days_since_seed": list(map(float, scan_days)),
            "scan_days_since_first_scan": days, "files": files}, indent=2))
    return SyntheticPatient(directory=out, **{k: out / v for k, v in files.items()}, day=days[1],
                            later_day=days[2], truth=tuple(map(float, truth)),
                            seed_mm=tuple(map(float, seed_mm)))
