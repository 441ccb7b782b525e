"""Personalise the tumour model to one patient: segmentations in, posterior out, resumably.

Time origin
-----------
All days count from the *initial condition*:

* with a seed point (``seed_mm``), days since the tumour was a point at the seed;
* with an ADC map (``adc``), days since the ADC scan (the first time point). The initial cell
  density is inversely proportional to ADC inside the T2 segmentation *of that scan*
  (``t2_initial``), scaled so that its maximum is 1, and 0 elsewhere
  ([`sbi_tumor.io.adc_to_density`][sbi_tumor.io.adc_to_density]); ``day`` is the number of days between the ADC scan and
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

import hashlib
import json
import pickle
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.distributions import Distribution

from .anatomy import Anatomy, load_mni152
from .identifiability import WEAK_CONTRACTION, derived, weakly_determined
from .inference import (InferenceConfig, InferenceResult, ObservedManyTimes, parameter_pairs, run_sequential_npe,
                        save_result, simulate_round)
from .io import (InputError, SimulationStore, StoreError, adc_to_density, atomic_output_dir, check_day,
                 load_adc, load_mask, load_segmentations, package_version, save_nifti, to_anatomy_grid)
from .observation import dice, label_map, masks_to_labels
from .prior import PARAMETER_LABELS, PARAMETER_NAMES, PRESETS, make_prior
from .simulator import InitialCondition, TumorSimulator
from .solver import SolverConfig

__all__ = ["Patient", "InferenceRun", "load_patient", "infer_patient", "roi_edge_mm", "posterior_predictive_check", "load_run",
           "SyntheticPatient", "make_synthetic_patient", "POSTERIOR_FORMAT_VERSION"]

#: Version of the layout of a posterior directory; [`load_run`][sbi_tumor.workflow.load_run] refuses other versions.
POSTERIOR_FORMAT_VERSION = 1
_POSTERIOR_FORMAT = "sbi-tumor.posterior"
# A T2 region mostly outside brain tissue means images not registered to the anatomy.
_MAX_T2_OUTSIDE_TISSUE = 0.2


@dataclass
class Patient:
    """One patient's inputs, on the anatomy (simulation) grid.

    Attributes:
        anatomy: tissue maps, shape ``(nx, ny, nz)``.
        t1, t2: bool masks of the segmentations being fitted, anatomy grid.
        day: days from the initial condition to the segmentations.
        initial: the initial condition (seed point or density map on the anatomy grid).
        input_shape, input_affine: grid of the input segmentations (results are written on it).
        roi_size_mm: edge of the cubic region of interest the model runs on (mm).
        ratio: white/grey-matter diffusivity ratio of the model.
    """

    anatomy: Anatomy
    t1: np.ndarray
    t2: np.ndarray
    day: float
    initial: InitialCondition
    input_shape: tuple[int, int, int]
    input_affine: np.ndarray
    roi_size_mm: float
    ratio: float = 10.0

    def simulator(self, roi_size_mm: float | None = None, day: float | None = None) -> TumorSimulator:
        """The batched simulator of this patient (at ``day``, by default the fitted day)."""
        return TumorSimulator(self.anatomy, self.initial, day=self.day if day is None else day,
                              roi_size_mm=roi_size_mm or self.roi_size_mm,
                              solver_config=SolverConfig(ratio=self.ratio))

    def observation(self, simulator: TumorSimulator) -> torch.Tensor:
        """The observed label map x_o on the simulator's ROI, float32 ``(1, nx, ny, nz)``."""
        return torch.from_numpy(self.labels[simulator.roi_slices][None].astype(np.float32))

    @property
    def labels(self) -> np.ndarray:
        """Observed label map (0 healthy, 1 T2 only, 2 T1 core), uint8, anatomy grid."""
        return masks_to_labels(self.t1, self.t2)

    def fingerprint(self) -> str:
        """Hash of everything that determines the simulations and x_o (to match a resumed run)."""
        h = hashlib.sha256()
        for a in (self.anatomy.wm, self.anatomy.gm, self.anatomy.csf, self.anatomy.affine, self.labels,
                  np.asarray(self.initial.seed_mm if self.initial.density is None else self.initial.density),
                  np.array([self.day, self.roi_size_mm, self.ratio, self.anatomy.tissue_threshold])):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write everything ``load`` needs to rebuild the simulator, compressed ``.npz``."""
        initial = self.initial
        np.savez_compressed(
            path, wm=self.anatomy.wm, gm=self.anatomy.gm, csf=self.anatomy.csf,
            affine=self.anatomy.affine, tissue_threshold=self.anatomy.tissue_threshold,
            t1=self.t1, t2=self.t2, day=self.day, input_shape=np.array(self.input_shape),
            input_affine=self.input_affine, roi_size_mm=self.roi_size_mm, ratio=self.ratio,
            seed_mm=np.array(initial.seed_mm if initial.seed_mm is not None else []),
            density=initial.density if initial.density is not None else np.zeros(0, np.float32))

    @classmethod
    def load(cls, path: str | Path) -> "Patient":
        with np.load(path) as f:
            anatomy = Anatomy(wm=f["wm"], gm=f["gm"], csf=f["csf"], affine=f["affine"],
                              tissue_threshold=float(f["tissue_threshold"]))
            initial = (InitialCondition(seed_mm=tuple(f["seed_mm"].tolist())) if f["seed_mm"].size
                       else InitialCondition(density=f["density"]))
            return cls(anatomy=anatomy, t1=f["t1"], t2=f["t2"], day=float(f["day"]), initial=initial,
                       input_shape=tuple(int(n) for n in f["input_shape"]), input_affine=f["input_affine"],
                       roi_size_mm=float(f["roi_size_mm"]), ratio=float(f["ratio"]))


def load_patient(t1: str | Path, t2: str | Path, day: float, *, adc: str | Path | None = None,
                 t2_initial: str | Path | None = None, seed_mm: Sequence[float] | None = None,
                 anatomy: Anatomy | None = None, ratio: float = 10.0, roi_margin_mm: float = 16.0,
                 min_roi_mm: float = 64.0) -> Patient:
    """Read and check one patient's images; every problem raises an ``InputError`` saying what to fix.

    Args:
        t1, t2: binary NIfTI segmentations (T1-gadolinium core, T2/FLAIR region) to fit.
        day: days from the initial condition to ``t1``/``t2`` (see the module docstring).
        adc: ADC map of the first scan: the initial density (give this or ``seed_mm``).
        t2_initial: T2 segmentation of the ADC scan, inside which ADC defines the density;
            defaults to ``t2`` (with a warning: that overstates the initial tumour).
        seed_mm: seed point in world mm: the initial condition is a point tumour there.
        anatomy: the anatomy (simulation grid); default the MNI152 atlas at 2 mm.
        ratio: white/grey-matter diffusivity ratio.
        roi_margin_mm, min_roi_mm: the ROI is the T2 extent around the tumour centre plus this
            margin on each side, and at least ``min_roi_mm`` wide.
    """
    if (adc is None) == (seed_mm is None):
        raise InputError("Give the initial condition: either an ADC map (--adc) or a seed point "
                         "(--seed-mm X Y Z), not both.")
    if t2_initial is not None and adc is None:
        raise InputError("t2_initial (--t2-initial) masks the ADC map; it needs an ADC map (--adc).")
    day = check_day(day, 0.0)
    if day == 0:
        raise InputError("The observation day is 0, the time of the initial condition itself; give "
                         "the days between the initial condition and the segmentations (> 0).")
    anatomy = anatomy if anatomy is not None else load_mni152(2.0)
    t1_mask, t2_mask, affine = load_segmentations(t1, t2)
    t1a = to_anatomy_grid(t1_mask, affine, anatomy, "mask", name="T1 segmentation")
    t2a = to_anatomy_grid(t2_mask, affine, anatomy, "mask", name="T2 segmentation")
    outside = float((t2a & ~anatomy.tissue).sum() / t2a.sum())
    if outside > _MAX_T2_OUTSIDE_TISSUE:
        raise InputError(
            f"{outside:.0%} of the T2 segmentation lies outside brain tissue of the anatomy; the "
            "segmentations must be registered to the anatomy's space (e.g. MNI for the default "
            "atlas) before inference.")

    if seed_mm is not None:
        seed = tuple(float(v) for v in seed_mm)
        i, j, k = anatomy.check_seed(np.asarray(seed))
        if not t2a[i, j, k]:
            warnings.warn(f"The seed {seed} mm is not inside the T2 segmentation; a tumour grows "
                          "from its seed, so check the coordinates (world mm, not voxels).",
                          UserWarning, stacklevel=2)
        initial = InitialCondition(seed_mm=seed)
    else:
        adc_map, adc_affine = load_adc(adc)
        if t2_initial is None:
            warnings.warn("No T2 segmentation of the ADC scan (t2_initial / --t2-initial): the ADC "
                          "is used inside the fitted T2 region, which overstates the initial "
                          "tumour if it grew between the scans.", UserWarning, stacklevel=2)
            mask0 = t2a
        else:
            mask0_in, affine0 = load_mask(t2_initial, "Initial T2 segmentation")
            mask0 = to_anatomy_grid(mask0_in, affine0, anatomy, "mask", name="initial T2 segmentation")
        adc_a = to_anatomy_grid(adc_map, adc_affine, anatomy, "continuous", name="ADC map")
        initial = InitialCondition(density=adc_to_density(adc_a, mask0))

    roi = roi_edge_mm(anatomy, t2a, initial.centre_mm(anatomy), roi_margin_mm, min_roi_mm)
    return Patient(anatomy=anatomy, t1=t1a, t2=t2a, day=day, initial=initial,
                   input_shape=tuple(t1_mask.shape), input_affine=affine, roi_size_mm=roi, ratio=ratio)


def roi_edge_mm(anatomy: Anatomy, t2: np.ndarray, centre_mm: np.ndarray, margin_mm: float = 16.0,
                min_mm: float = 64.0) -> float:
    """Edge (mm) of the cube around ``centre_mm`` that holds the T2 region (bool, anatomy grid) plus
    ``margin_mm`` on each side, at least ``min_mm``: the observation window of a patient.

    The window only cuts the label maps: the model itself runs on the whole anatomy, so prior
    draws that outgrow it keep their physics (see [`TumorSimulator`][sbi_tumor.simulator.TumorSimulator]).
    """
    points = anatomy.voxel_to_world(np.argwhere(t2))
    half = np.abs(points - centre_mm).max() + anatomy.spacing.max() + margin_mm
    return float(max(min_mm, 2 * half))


# -- inference --------------------------------------------------------------------------------
@dataclass
class InferenceRun:
    """A fitted patient: the posterior and what produced it (see [`load_run`][sbi_tumor.workflow.load_run]).

    Attributes:
        posterior: sbi ``DirectPosterior`` with ``default_x`` set to the observation.
        result: samples, MAP, training curves and timings.
        patient: the checked inputs (rebuild the simulator with ``patient.simulator()``).
        directory: where it was written, if it was.
        prior_bounds: ``(low, high)`` of the prior box, each ``(4,)``.
    """

    posterior: Any
    result: InferenceResult
    patient: Patient
    directory: Path | None = None
    prior_bounds: tuple[list[float], list[float]] | None = None
    truth: list[float] | None = None
    files: dict[str, str] = field(default_factory=dict)


def infer_patient(t1: str | Path, t2: str | Path, day: float, *, out_dir: str | Path,
                  adc: str | Path | None = None, t2_initial: str | Path | None = None,
                  seed_mm: Sequence[float] | None = None, anatomy: Anatomy | None = None,
                  prior: str | Distribution = "human", config: InferenceConfig | None = None,
                  ratio: float = 10.0, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, truth: Sequence[float] | None = None) -> InferenceRun:
    """Posterior over (D, rho, u_T1, u_T2) for one patient, written to ``out_dir``.

    Writes ``samples.csv`` (posterior samples), ``map.csv`` (MAP), ``posterior.pt`` (reload with
    [`load_run`][sbi_tumor.workflow.load_run]), ``summary.json``, ``pairplot.png``, ``slices.png``, ``report.md``,
    ``patient.npz`` and ``manifest.json``.

    Args:
        t1, t2, day, adc, t2_initial, seed_mm, anatomy, ratio: the patient, see [`load_patient`][sbi_tumor.workflow.load_patient].
        out_dir: output directory (must not exist unless ``overwrite``).
        prior: name of a preset of ``sbi_tumor.prior.PRESETS`` or a prior distribution.
        config: inference settings (rounds, simulations per round, method, seed, ...).
        resume: continue an interrupted run from ``<out_dir>.partial``.
        overwrite: replace an existing ``out_dir``.
        progress: progress bars and messages.
        truth: known parameters (synthetic data), marked in the pair plot.

    Example:
        >>> run = infer_patient("t1.nii.gz", "t2.nii.gz", day=3, adc="adc.nii.gz",
        ...                     t2_initial="t2_first.nii.gz", prior="paper", out_dir="fit")
        >>> run.result.map, run.posterior.sample((1000,))
    """
    out = Path(out_dir)
    work = out.with_name(out.name + ".partial")
    if out.exists() and not overwrite:
        raise FileExistsError(f"Output directory {out} already exists; choose another one or "
                              "overwrite it (--overwrite).")
    config = config or InferenceConfig()
    patient = load_patient(t1, t2, day, adc=adc, t2_initial=t2_initial, seed_mm=seed_mm,
                           anatomy=anatomy, ratio=ratio)
    prior_name = prior if isinstance(prior, str) else type(prior).__name__
    prior = make_prior(prior) if isinstance(prior, str) else prior
    bounds = prior_bounds(prior)
    simulator = patient.simulator()
    x_o = patient.observation(simulator)
    _say(progress, f"Model grid: ROI {simulator.roi.shape} voxels of "
                   f"{simulator.roi.spacing[0]:g} mm around the tumour; fitting day {patient.day:g}.")

    settings = {"patient": patient.fingerprint(), "prior": prior_name, "prior_bounds": bounds,
                # where simulations run does not change the result: a run may resume elsewhere
                "inference": {k: v for k, v in config.to_dict().items() if k not in ("client", "num_workers")}}
    store = _open_store(work / "simulations.zarr", simulator.roi.shape, settings, resume, progress)
    started = time.perf_counter()
    posterior, result = run_sequential_npe(
        simulator, prior, x_o, config, progress=progress,
        simulate=_stored_simulate(store, simulator, config, progress))
    run = InferenceRun(posterior=posterior, result=result, patient=patient, directory=out,
                       prior_bounds=bounds, truth=None if truth is None else [float(v) for v in truth])
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        run.files = _write_run(tmp, run, prior_name, time.perf_counter() - started)
    shutil.rmtree(work, ignore_errors=True)
    return run


def prior_bounds(prior: Distribution) -> tuple[list[float], list[float]]:
    """``(low, high)`` of a box prior (``BoxUniform``, ``LogUniformBox``), else 0.1/99.9% quantiles."""
    support = prior.support
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    if hasattr(support, "lower_bound"):
        low, high = (torch.as_tensor(b).expand(4) for b in (support.lower_bound, support.upper_bound))
    else:
        low, high = torch.quantile(prior.sample((10_000,)), torch.tensor([0.001, 0.999]), dim=0)
    return low.tolist(), high.tolist()


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, flush=True)


def _open_store(path: Path, grid_shape: Sequence[int], settings: dict, resume: bool,
                progress: bool) -> SimulationStore:
    """The run's simulation store: created, or reopened and checked to belong to this run."""
    if path.exists():
        if not resume:
            raise FileExistsError(
                f"An interrupted run left simulations in {path.parent}; continue it with "
                f"resume=True (--resume), or delete {path.parent} to start afresh.")
        store = SimulationStore.open(path)
        stored = store.config
        differ = [k for k in settings if json.dumps(stored.get(k), sort_keys=True)
                  != json.dumps(settings[k], sort_keys=True)]
        if differ:
            raise StoreError(
                f"The interrupted run in {path.parent} was started with different "
                f"{' and '.join(differ)} settings; resume with the same inputs and options, or "
                f"delete {path.parent} to start afresh.")
        done = sum(store.completed(r) for r in store.rounds())
        _say(progress, f"Resuming: {done} finished simulations found in {path}.")
        return store
    if resume:
        _say(progress, f"Nothing to resume in {path.parent}; starting afresh.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return SimulationStore.create(path, grid_shape, theta_dim=4, config=settings)


def _stored_simulate(store: SimulationStore, simulator: TumorSimulator, config: InferenceConfig,
                     progress: bool) -> Callable[[int, torch.Tensor], np.ndarray]:
    """``simulate(round, theta)`` for [`run_sequential_npe`][sbi_tumor.inference.run_sequential_npe] that stores each finished batch
    and, on resume, reuses the stored rows (after checking they are the same draws).

    With ``config.augment = K > 1`` each solve's K label maps are K rows of the store, row
    ``n K + k`` holding the k-th parameter pair of solve n (``parameter_pairs``).
    """
    k = config.augment
    observed = simulator if k == 1 else ObservedManyTimes(simulator)

    def simulate(r: int, theta: torch.Tensor) -> np.ndarray:
        pairs = parameter_pairs(theta)
        missing = store.pending(r, len(pairs))
        pending = np.unique(missing // k)  # solves with a map still missing
        done = np.setdiff1d(np.arange(len(pairs)), missing)
        if done.size:
            stored, _ = store.load(r)
            if not torch.equal(stored, pairs[done]):
                raise StoreError(
                    f"The parameters redrawn for round {r + 1} differ from those stored in "
                    f"{store.path}: this machine does not reproduce the interrupted run (another "
                    "torch version or thread count?). Delete the work directory and start afresh.")
        if pending.size:
            desc = f"round {r + 1}/{config.num_rounds} simulations"
            stored_solves = len(theta) - pending.size

            def write(start: int, tb: torch.Tensor, xb: np.ndarray) -> None:
                rows = (pending[start:start + len(tb), None] * k + np.arange(k)).ravel()
                store.write(r, rows, parameter_pairs(tb), xb.reshape(-1, *xb.shape[2:]))

            simulate_round(observed, theta[pending], config.simulation_batch_size, progress,
                           desc=desc + (f" ({stored_solves} stored)" if stored_solves else ""),
                           num_workers=config.num_workers, client=config.client, on_batch=write)
        _, x = store.load(r)
        return x.reshape(len(theta), k, *x.shape[1:]).numpy()

    return simulate


def _write_run(directory: Path, run: InferenceRun, prior_name: str, seconds: float) -> dict[str, str]:
    """Write a run's files into ``directory``; returns {description: file name}."""
    from . import plots

    result, patient = run.result, run.patient
    save_result(directory, run.posterior, result)
    np.savetxt(directory / "map.csv", result.map.numpy()[None], delimiter=",",
               header="D_mm2_per_day,rho_per_day,u_T1,u_T2", comments="")
    patient.save(directory / "patient.npz")
    points = {"MAP": result.map.numpy()} | ({} if run.truth is None else {"truth": np.array(run.truth)})
    weak = weakly_determined(PARAMETER_NAMES, result.contraction or ())
    plots.save_figure(plots.pair_plot(result.samples.numpy(), run.prior_bounds, points, weak=weak),
                      directory / "pairplot.png")
    simulator = patient.simulator()
    map_labels = simulator.to_full_grid(simulator.labels(result.map[None], [patient.day])[0, 0])
    check = posterior_predictive_check(run, simulator=simulator)
    (directory / "ppc.json").write_text(json.dumps(check, indent=2))
    plots.save_figure(plots.ppc_figure(check), directory / "ppc.png")
    panels = [(f"observed, day {patient.day:g}", patient.labels, None),
              (f"MAP fit, day {patient.day:g} (contours: observed)", map_labels, patient.labels)]
    plots.save_figure(plots.slice_figure(patient.anatomy, panels), directory / "slices.png")
    files = {"posterior samples (D, rho, u_T1, u_T2)": "samples.csv", "MAP estimate": "map.csv",
             "posterior, reload with sbi_tumor.workflow.load_run": "posterior.pt",
             "summary (JSON)": "summary.json", "pair plot": "pairplot.png",
             "observation and MAP fit": "slices.png",
             "posterior predictive check (Dice and volumes of posterior draws)": "ppc.png",
             "posterior predictive check (JSON)": "ppc.json", "patient inputs on the model grid": "patient.npz",
             "this report": "report.md"}
    (directory / "report.md").write_text(_report(run, prior_name, seconds, files, check))
    manifest = {"format": _POSTERIOR_FORMAT, "format_version": POSTERIOR_FORMAT_VERSION,
                "package_version": package_version(), "prior": prior_name,
                "prior_bounds": run.prior_bounds, "truth": run.truth, "files": files}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return files


#: Posterior draws simulated for the posterior predictive check of a run's report.
PPC_DRAWS = 50


def posterior_predictive_check(run: InferenceRun, num_draws: int = PPC_DRAWS,
                               simulator: TumorSimulator | None = None) -> dict[str, Any]:
    """Does the fit reproduce the data? The label maps of ``num_draws`` posterior samples at the
    fitted day against the observed segmentations.

    Returns per draw the Dice of T2 (whole tumour) and T1 (core) against the observation and the
    T1/T2 volumes (mL), the observed volumes, and where each observed volume falls among the
    draws' (its quantile: near 0 or 1 means the posterior does not reproduce it).
    """
    patient = run.patient
    simulator = simulator or patient.simulator()  # the run's own, when the caller has built it
    theta = run.result.samples[:num_draws]  # independent draws: the first ones are as good as any
    labels = simulator.labels(theta, [patient.day])[:, 0]
    observed = patient.labels[simulator.roi_slices]
    ml = patient.anatomy.voxel_volume / 1e3
    out: dict[str, Any] = {"num_draws": len(theta), "day": patient.day}
    for region, level in (("T2", 1), ("T1", 2)):
        volumes = (labels >= level).sum(axis=(1, 2, 3)) * ml
        observed_volume = float((observed >= level).sum() * ml)
        out[region] = {"dice": [dice(m >= level, observed >= level) for m in labels],
                       "volume_ml": volumes.tolist(), "observed_volume_ml": observed_volume,
                       "observed_volume_quantile": float((volumes < observed_volume).mean()
                                                         + 0.5 * (volumes == observed_volume).mean())}
    return out


def _report(run: InferenceRun, prior_name: str, seconds: float, files: dict[str, str],
            check: dict[str, Any]) -> str:
    result, patient = run.result, run.patient
    s = result.samples.double()
    q = torch.quantile(s, torch.tensor([0.05, 0.5, 0.95], dtype=s.dtype), dim=0)
    initial = (f"seed point {patient.initial.seed_mm} mm" if patient.initial.seed_mm is not None
               else "cell density from the ADC map (inversely proportional to ADC inside T2)")
    lines = [
        "# sbi-tumor inference report", "",
        f"- Initial condition: {initial}",
        f"- Fitted segmentations: day {patient.day:g} after the initial condition; "
        f"T2 volume {patient.t2.sum() * patient.anatomy.voxel_volume / 1000:.1f} mL, "
        f"T1 core {patient.t1.sum() * patient.anatomy.voxel_volume / 1000:.1f} mL",
        f"- Model grid: {patient.anatomy.spacing[0]:g} mm, ROI edge {patient.roi_size_mm:.0f} mm",
        f"- Prior: {prior_name}, " + ", ".join(
            f"{n} in [{lo:.3g}, {hi:.3g}]" for n, lo, hi in zip(PARAMETER_NAMES, *run.prior_bounds)),
        f"- Method: {result.method}, {len(result.training)} rounds, {result.num_simulations} simulations "
        f"(embedding {result.config['embedding']}, seed {result.config['seed']})",
        f"- Time: {seconds:.0f} s ({result.simulation_time:.0f} s simulating, "
        f"{result.training_time:.0f} s training)", "",
        "| parameter | MAP | median | 90% interval | contraction |" + (" truth |" if run.truth else ""),
        "|---|---|---|---|---|" + ("---|" if run.truth else ""),
    ]
    contractions = result.contraction or [float("nan")] * 4
    for i, name in enumerate(PARAMETER_NAMES):
        row = (f"| {name} | {result.map[i]:.3g} | {q[1, i]:.3g} | [{q[0, i]:.3g}, {q[2, i]:.3g}] "
               f"| {contractions[i]:.2f} |" + (f" {run.truth[i]:.3g} |" if run.truth else ""))
        lines.append(row)
    samples = result.samples.numpy()
    for name, values in derived(samples).items():
        lo, mid, hi = np.quantile(values, [0.05, 0.5, 0.95])
        unit = "mm/day" if name == "front_speed" else "mm"
        lines.append(f"| {name.replace('_', ' ')} [{unit}] | {derived(result.map.numpy())[name][0]:.3g} "
                     f"| {mid:.3g} | [{lo:.3g}, {hi:.3g}] | |" + (
                         f" {derived(np.asarray(run.truth))[name][0]:.3g} |" if run.truth else ""))
    lines += ["", "Units: D in mm^2/day, rho in 1/day, thresholds on the normalised density. Contraction: "
              "1 - posterior std / prior std (0: the data taught nothing, 1: pinned down).", ""]
    weak = weakly_determined(PARAMETER_NAMES, result.contraction or ())
    if weak:
        why = ("A label map shows where two density levels lie; a threshold moves its contour by a fraction "
               "of the infiltration length sqrt(D / rho), often less than a voxel, and a slightly different "
               "(D, rho) moves it back, so one scan pins the thresholds down only loosely "
               "(`benchmarks/identifiability.py --human`). " if {"u_T1", "u_T2"} & set(weak) else "")
        if {"D", "rho"} & set(weak):
            why += ("D or rho barely moved from the prior: the scan (or this number of simulations) does not "
                    "separate them, though the front speed and infiltration length in the table may still be narrow. ")
        lines += [f"**Weakly determined by this observation: {', '.join(weak)}** (contraction below "
                  f"{WEAK_CONTRACTION}). {why}Their intervals above are mostly the prior's.", ""]
    lines += ["## Posterior predictive check", "",
              f"The label maps of {check['num_draws']} posterior draws at day {check['day']:g} against the "
              "observed segmentations (`ppc.png`): median and 90% range over the draws.", "",
              "| region | Dice | volume [mL] | observed volume [mL] | its quantile among the draws |",
              "|---|---|---|---|---|"]
    for region in ("T2", "T1"):
        c = check[region]
        d_lo, d_mid, d_hi = np.quantile(c["dice"], [0.05, 0.5, 0.95])
        v_lo, v_mid, v_hi = np.quantile(c["volume_ml"], [0.05, 0.5, 0.95])
        lines.append(f"| {region} | {d_mid:.3f} [{d_lo:.3f}, {d_hi:.3f}] | {v_mid:.2f} [{v_lo:.2f}, {v_hi:.2f}] "
                     f"| {c['observed_volume_ml']:.2f} | {c['observed_volume_quantile']:.2f} |")
    lines += ["", "A quantile near 0 or 1, or a low Dice, means the posterior does not reproduce the data: "
              "check the inputs (registration, the day, the seed) or run more simulations.", "",
              "## Files", ""] + [f"- `{name}`: {what}" for what, name in files.items()]
    lines += ["", "Reload from Python:", "", "```python",
              "from sbi_tumor.workflow import load_run",
              f"run = load_run({str(run.directory)!r})",
              "samples = run.posterior.sample((1000,))  # at the observed segmentations", "```", ""]
    return "\n".join(lines)


def load_run(directory: str | Path) -> InferenceRun:
    """A posterior directory written by [`infer_patient`][sbi_tumor.workflow.infer_patient] (``sbi-tumor infer``).

    Raises:
        InputError: not such a directory, or written by an incompatible version.
    """
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{directory} is not a posterior directory of sbi-tumor infer (no "
                         "manifest.json); give the --out directory of a finished infer run.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{manifest_path} is not valid JSON ({err}); re-run infer.") from err
    found = manifest.get("format_version")
    if manifest.get("format") != _POSTERIOR_FORMAT or found != POSTERIOR_FORMAT_VERSION:
        raise InputError(
            f"The posterior in {directory} has format version {found} (written by sbi-tumor "
            f"{manifest.get('package_version')}), but this sbi-tumor ({package_version()}) reads "
            f"version {POSTERIOR_FORMAT_VERSION}; re-run infer with this version, or use the one "
            "that wrote it.")
    try:
        blob = torch.load(directory / "posterior.pt", weights_only=False)
        patient = Patient.load(directory / "patient.npz")
    except (OSError, EOFError, KeyError, ValueError, RuntimeError, ImportError, AttributeError,
            pickle.UnpicklingError) as err:
        raise InputError(f"Cannot read the posterior in {directory} ({err}); the directory is "
                         "damaged, incomplete or from another sbi-tumor version: re-run infer.") from err
    return InferenceRun(posterior=blob["posterior"], result=blob["result"], patient=patient,
                        directory=directory, prior_bounds=tuple(manifest.get("prior_bounds") or ()) or None,
                        truth=manifest.get("truth"), files=manifest.get("files", {}))


# -- synthetic patient ------------------------------------------------------------------------
@dataclass
class SyntheticPatient:
    """Paths and ground truth of [`make_synthetic_patient`][sbi_tumor.workflow.make_synthetic_patient]; days count from the ADC scan.

    Attributes:
        directory: where the NIfTI inputs and ``truth.json`` are.
        adc, t2_initial: ADC-like map and T2 segmentation of the first scan.
        t1, t2: segmentations to fit, ``day`` days after the first scan.
        t1_later, t2_later: validation segmentations, ``later_day`` days after the first scan.
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
                           seed_mm: Sequence[float] = (-30.0, 20.0, 30.0),
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
