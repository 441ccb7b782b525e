"""Personalise the tumour model to one patient: segmentations in, posterior out, resumably.

Time origin
-----------
All days count from the *initial condition*:

* with a seed point (``seed_mm``), days since the tumour was a point at the seed;
* with an ADC map (``adc``), days since the ADC scan (the first time point). The initial cell
  density is inversely proportional to ADC inside the T2 segmentation *of that scan*
  (``t2_initial``), scaled so that its maximum is 1, and 0 elsewhere
  ([`sbi_tumor.patient.inputs.adc_to_density`][sbi_tumor.patient.inputs.adc_to_density]); ``day`` is the number of days between the ADC scan and
  the segmentations being fitted.

Grids
-----
The model runs on the anatomy grid (by default the MNI152 atlas at 2 mm). Segmentations and ADC
given on another grid are resampled onto it with a warning (they must already be registered to
the anatomy's space); results are written back on the grid of the input segmentations.

Nothing lost, nothing half-written
----------------------------------
Every finished simulation is stored in ``<out>.partial/simulations.zarr`` (label maps as uint8)
as it completes. An interrupted run continues with ``resume=True`` (``--resume``): the rounds'
parameters are redrawn from the same seed, checked against the stored ones, and only the
missing simulations are run, so the result equals that of an uninterrupted run. The output
directory appears complete, or not at all; the work area is removed on success.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.distributions import Distribution

from ..anatomy import Anatomy
from ..config import GREY_MATTER_RATIO, InferenceConfig, parameter_names
from ..inference import run_sequential_npe
from ..io import atomic_output_dir
from ..one_scan import one_scan_prior
from ..prior import make_prior, support_box
from .inputs import load_patient
from .report import model_grid, write_run
from .run import InferenceRun
from .store import open_store, stored_simulate

__all__ = ["infer_patient", "prior_bounds"]

def infer_patient(t1: str | Path, t2: str | Path | None, day: float | None = None, *, out_dir: str | Path,
                  adc: str | Path | None = None, t2_initial: str | Path | None = None,
                  seed_mm: Sequence[float] | None = None, anatomy: Anatomy | None = None,
                  prior: str | Distribution = "human", config: InferenceConfig | None = None,
                  ratio: float = GREY_MATTER_RATIO, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, truth: Sequence[float] | None = None) -> InferenceRun:
    """Posterior over (D, rho, u_T1, u_T2) for one patient, written to ``out_dir``; with neither
    ``seed_mm`` nor ``adc`` (one scan, the origin unknown), over the quantities one scan
    determines: (x, y, z, ell = sqrt(D/rho), tau = rho T, u_T1, u_T2) (``sbi_tumor.one_scan``),
    and ``day``, if given, is the tumour's age, which turns (ell, tau) into (D, rho). A one-scan
    run also writes the infiltration maps P(u > c) at the scan and two radiotherapy targets of
    equal volume, the 15 mm margin and the model's (``infiltration/``).

    Writes ``samples.csv`` (posterior samples), ``map.csv`` (MAP), ``posterior.pt`` (reload with
    [`load_run`][sbi_tumor.patient.run.load_run]), ``summary.json``, ``pairplot.png``, ``slices.png``, ``report.md``,
    ``patient.npz`` and ``manifest.json``.

    Args:
        t1: the patient, see [`load_patient`][sbi_tumor.patient.inputs.load_patient].
        t2: the patient, see [`load_patient`][sbi_tumor.patient.inputs.load_patient].
        day: the patient, see [`load_patient`][sbi_tumor.patient.inputs.load_patient].
        adc: the patient, see [`load_patient`][sbi_tumor.patient.inputs.load_patient].
        t2_initial: the patient, see [`load_patient`][sbi_tumor.patient.inputs.load_patient].
        seed_mm: the patient, see [`load_patient`][sbi_tumor.patient.inputs.load_patient].
        anatomy: the patient, see [`load_patient`][sbi_tumor.patient.inputs.load_patient].
        ratio: the patient, see [`load_patient`][sbi_tumor.patient.inputs.load_patient].
        out_dir: output directory (must not exist unless ``overwrite``).
        prior: name of a preset of ``sbi_tumor.config.PRESETS`` or a prior distribution.
        config: inference settings (rounds, simulations per round, method, seed, ...).
        resume: continue an interrupted run from ``<out_dir>.partial``.
        overwrite: replace an existing ``out_dir``.
        progress: progress bars and messages.
        truth: known parameters (synthetic data), marked in the pair plot.

    Examples:
        >>> run = infer_patient("t1.nii.gz", "t2.nii.gz", day=3, adc="adc.nii.gz",
        ...                     t2_initial="t2_first.nii.gz", prior="paper", out_dir="fit")
        >>> run.result.map, run.posterior.sample((1000,))
    """
    out = Path(out_dir)
    work = out.with_name(out.name + ".partial")
    if out.exists() and not overwrite:
        raise FileExistsError(f"Output directory {out} already exists; choose another one or "
                              "overwrite it (--overwrite).")
    if isinstance(config, dict):  # the settings as plain data, as InferenceConfig.to_dict() writes them
        config = InferenceConfig(**config)
    config = config or InferenceConfig()
    if not isinstance(config, InferenceConfig):
        raise TypeError(f"config must be an InferenceConfig (or a dict of its fields), got {type(config).__name__}.")
    if anatomy is not None and not isinstance(anatomy, Anatomy):
        raise TypeError(f"anatomy must be an sbi_tumor.Anatomy (e.g. load_nifti_anatomy(wm, gm, csf) or "
                        f"load_mni152(2.0)), got {type(anatomy).__name__}.")
    patient = load_patient(t1, t2, day, adc=adc, t2_initial=t2_initial, seed_mm=seed_mm,
                           anatomy=anatomy, ratio=ratio)
    prior_name = prior if isinstance(prior, str) else type(prior).__name__
    if isinstance(prior, str):
        prior = (one_scan_prior(patient.anatomy, patient.t1, patient.t2, prior) if patient.one_scan
                 else make_prior(prior))
    bounds = prior_bounds(prior)
    if truth is not None and len(truth) != prior.event_shape[0]:
        raise ValueError(f"truth has {len(truth)} values; this prior has {prior.event_shape[0]} parameters "
                         f"({', '.join(parameter_names(prior.event_shape[0]))}).")
    simulator = patient.simulator()
    names = simulator.parameter_names
    if prior.event_shape[0] != len(names):
        raise ValueError(f"The prior has {prior.event_shape[0]} parameters, this patient's model {len(names)} "
                         f"({', '.join(names)}); build it with " + ("one_scan_prior" if patient.one_scan else "make_prior")
                         + ", or pass a preset name.")
    if patient.one_scan and (config.method == "NPE_A" or config.log_space or config.unconstrained
                             or config.calibration_solves):
        raise ValueError("With one scan (no seed point or ADC map) use method 'TSNPE', 'NPE_B' or 'NPE_C' without "
                         "log_space, unconstrained or calibration_solves (CLI: --method, --log-space, --unconstrained, "
                         "--calibration-solves): NPE_A's correction, the logit and the widening need a Gaussian or "
                         "box prior, and the origin's prior lives on the tumour's voxels; log_space acts on (D, rho), "
                         "which one scan does not have.")
    x_o = patient.observation(simulator)
    _say(progress, f"Model grid: {model_grid(simulator)} around the tumour; " + (
        f"fitting day {patient.day:g}." if not patient.one_scan else "origin and age unknown: inferring "
        f"the origin, sqrt(D/rho) and rho T{'' if patient.day is None else f' (age {patient.day:g} days)'}."))

    settings = {"patient": patient.fingerprint(), "prior": prior_name, "prior_bounds": bounds,
                # where simulations run does not change the result: a run may resume elsewhere
                "inference": {k: v for k, v in config.to_dict().items() if k not in ("client", "num_workers")}}
    store = open_store(work / "simulations.zarr", simulator.roi.shape, settings, resume, progress,
                       theta_dim=prior.event_shape[0])
    started = time.perf_counter()
    posterior, result = run_sequential_npe(
        simulator, prior, x_o, config, progress=progress,
        simulate=stored_simulate(store, simulator, config, progress))
    run = InferenceRun(posterior=posterior, result=result, patient=patient, directory=out,
                       prior_bounds=bounds, truth=None if truth is None else [float(v) for v in truth])
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        run.files = write_run(tmp, run, prior_name, time.perf_counter() - started)
    shutil.rmtree(work, ignore_errors=True)
    return run


def prior_bounds(prior: Distribution) -> tuple[list[float], list[float]]:
    """``(low, high)`` of a box prior (``BoxUniform``, ``LogUniformBox``) or of the bounding box of a
    ``OneScanPrior``, else 0.1/99.9% quantiles."""
    box = support_box(getattr(prior, "bounding_box", prior.support))
    if box is not None:
        low, high = (torch.as_tensor(b).expand(prior.event_shape) for b in (box.lower_bound, box.upper_bound))
    else:
        low, high = torch.quantile(prior.sample((10_000,)), torch.tensor([0.001, 0.999]), dim=0)
    return low.tolist(), high.tolist()


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, flush=True)
