"""The files of a finished inference run: posterior, figures, the predictive check and ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .. import plots
from ..identifiability import WEAK_CONTRACTION, front_speed, infiltration_length, weakly_determined
from ..inference import save_result
from ..io import package_version, save_nifti
from ..observation import dice
from ..config import CSV_COLUMNS, FRONT_RADIUS_MM, INFILTRATION_LEVELS, SUMMARY_QUANTILES, parameter_names
from ..one_scan import rates
from .inputs import Patient
from .run import POSTERIOR_FORMAT, POSTERIOR_FORMAT_VERSION, InferenceRun
from .prediction import predict, save_prediction, to_input_grid
from .target import CTV_MARGIN_MM, clinical_target, model_target

if TYPE_CHECKING:
    from ..one_scan import OneScanSimulator
    from ..simulator import TumorSimulator

__all__ = ["derived_quantities", "write_infiltration", "model_grid", "posterior_predictive_check", "ppc_figure", "run_report", "write_run"]

#: What an ADC initial condition does to a fit, measured on five synthetic patients
#: (``benchmarks/adc_initial_condition.py``).
ADC_CAVEAT = (
    "The initial condition is the ADC map's density, which shows cells only inside its T2 segmentation: "
    "the tumour's tail below u_T2 is missing, so at the true parameters the model grows 22-70% too little "
    "T2 volume. A fit that reproduces the scan makes up for it: on five synthetic patients the prior draws "
    "that matched the scan best had a front speed 2 sqrt(D rho) 1.2-1.8 times the true one (four patients) "
    "or u_T2 at the prior's lower edge (the fifth). Read D, rho and u_T2 as the model's effective values, "
    "not the tissue's; the posterior predictive check and a later scan's forecast say how well they "
    "serve (`benchmarks/adc_initial_condition.py`).")


def write_run(directory: Path, run: InferenceRun, prior_name: str, seconds: float) -> dict[str, str]:
    """Write a run's files into ``directory``; returns {description: file name}."""

    result, patient = run.result, run.patient
    dim = result.samples.shape[1]
    save_result(directory, run.posterior, result)
    np.savetxt(directory / "map.csv", result.map.numpy()[None], delimiter=",", header=CSV_COLUMNS[dim],
               comments="")
    patient.save(directory / "patient.npz")
    points = {"MAP": result.map.numpy()} | ({} if run.truth is None else {"truth": np.array(run.truth)})
    weak = weakly_determined(parameter_names(dim), result.contraction or ())
    # one scan: the origin's prior box is the core's, far wider than its posterior; zoom in
    limits = None if patient.one_scan else run.prior_bounds
    plots.save_figure(plots.pair_plot(result.samples.numpy(), limits, points, weak=weak),
                      directory / "pairplot.png")
    simulator = patient.simulator()
    map_labels = simulator.to_full_grid(simulator.labels(result.map[None], [simulator.day])[0, 0])
    check = posterior_predictive_check(run, simulator=simulator)
    (directory / "ppc.json").write_text(json.dumps(check, indent=2))
    plots.save_figure(ppc_figure(check), directory / "ppc.png")
    when = patient.scan_name
    panels = [(f"observed, {when}", patient.labels, None),
              (f"MAP fit, {when} (contours: observed)", map_labels, patient.labels)]
    plots.save_figure(plots.slice_figure(patient.anatomy, panels), directory / "slices.png")
    files = {f"posterior samples ({', '.join(parameter_names(dim))})": "samples.csv", "MAP estimate": "map.csv",
             "posterior, reload with sbi_tumor.patient.run.load_run": "posterior.pt",
             "summary (JSON)": "summary.json", "pair plot": "pairplot.png",
             "observation and MAP fit": "slices.png",
             "posterior predictive check (Dice and volumes of posterior draws)": "ppc.png",
             "posterior predictive check (JSON)": "ppc.json", "patient inputs on the model grid": "patient.npz",
             "this report": "report.md"}
    target = None
    if patient.one_scan:  # what one scan is for: where the tumour is, also invisibly, and a target
        target = write_infiltration(directory / "infiltration", run)
        files["infiltration P(u > c), posterior mean density and radiotherapy targets at the scan"] = "infiltration/"
    (directory / "report.md").write_text(run_report(run, prior_name, seconds, files, check, simulator, target))
    manifest = {"format": POSTERIOR_FORMAT, "format_version": POSTERIOR_FORMAT_VERSION,
                "package_version": package_version(), "prior": prior_name,
                "prior_bounds": run.prior_bounds, "truth": run.truth, "files": files}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return files


#: Posterior draws of the infiltration maps a one-scan run writes.
INFILTRATION_DRAWS = 100


def write_infiltration(directory: Path, run: InferenceRun) -> dict[str, Any]:
    """The infiltration maps P(u > c) at the scan (``predict``'s files) and two radiotherapy targets
    of equal volume, as NIfTI on the input grid: the visible T2 extent grown by 15 mm
    (``target_margin.nii.gz``) and the T2 extent plus the tissue most likely to hold tumour cells,
    P(u > the lowest level c) (``target_model.nii.gz``). Returns their volumes (mL) and overlap."""
    patient = run.patient
    prediction = predict(run, None, num_samples=INFILTRATION_DRAWS, progress=False)
    save_prediction(prediction, run, directory)
    margin = clinical_target(patient.t2, patient.anatomy)
    model = model_target(prediction.infiltration[0, 0], patient.t2, patient.anatomy, int(margin.sum()),
                         tie_break=prediction.mean_density[0])
    for name, mask in (("target_margin.nii.gz", margin), ("target_model.nii.gz", model)):
        save_nifti(directory / name, to_input_grid(mask.astype(np.uint8), run, True), patient.input_affine,
                   dtype=np.uint8)
    ml = patient.anatomy.voxel_volume / 1e3
    return {"level": prediction.levels[0], "volume_ml": float(margin.sum() * ml),
            "t2_ml": float(patient.t2.sum() * ml), "shared": float((margin & model).sum() / margin.sum())}


def model_grid(simulator: TumorSimulator) -> str:
    """The observation window as the console and the report both describe it."""
    roi = simulator.roi
    edges = " x ".join(f"{n * h:.0f}" for n, h in zip(roi.shape, roi.spacing))
    return f"ROI {' x '.join(map(str, roi.shape))} voxels of {roi.spacing[0]:g} mm ({edges} mm)"


def run_report(run: InferenceRun, prior_name: str, seconds: float, files: dict[str, str],
               check: dict[str, Any], simulator: TumorSimulator | OneScanSimulator,
               target: Mapping[str, Any] | None = None) -> str:
    result, patient = run.result, run.patient
    names = parameter_names(result.samples.shape[1])
    s = result.samples.double()
    q = torch.quantile(s, torch.tensor(SUMMARY_QUANTILES, dtype=s.dtype), dim=0)
    if patient.one_scan:
        initial = ("unknown: inferred, with a prior uniform over the " +
                   ("T1 core" if patient.t1.any() else "T2 region (no T1 core)") + " on tissue")
        fitted = ("one scan, the tumour's age unknown: only the origin, sqrt(D/rho) and rho T are identifiable"
                  if patient.day is None else f"one scan, {patient.day:g} days after the origin (a given age)")
    else:
        initial = (f"seed point {patient.initial.seed_mm} mm" if patient.initial.seed_mm is not None
                   else "cell density from the ADC map (inversely proportional to ADC inside T2)")
        fitted = f"day {patient.day:g} after the initial condition"
    lines = [
        "# sbi-tumor inference report", "",
        f"- Initial condition: {initial}",
        f"- Fitted segmentations: {fitted}; "
        f"T2 volume {patient.t2.sum() * patient.anatomy.voxel_volume / 1000:.1f} mL, "
        f"T1 core {patient.t1.sum() * patient.anatomy.voxel_volume / 1000:.1f} mL",
        f"- Model grid: {model_grid(simulator)} (the model runs on the whole anatomy)",
        f"- Prior: {prior_name}, " + ", ".join(
            f"{n} in [{lo:.3g}, {hi:.3g}]" for n, lo, hi in zip(names, *run.prior_bounds))
        + (" (the bounding box; the origin lies in the region above, and 2 ell tau in "
           f"[{FRONT_RADIUS_MM[0]:g}, {FRONT_RADIUS_MM[1]:g}] mm)" if patient.one_scan else ""),
        f"- Method: {result.method}, {len(result.training)} rounds, {result.num_simulations} simulations "
        f"(embedding {result.config['embedding']}, seed {result.config['seed']})",
        f"- Time: {seconds:.0f} s ({result.simulation_time:.0f} s simulating, "
        f"{result.training_time:.0f} s training)",
        *([f"- Calibrated: the network's posterior scaled by {', '.join(f'{n} {c:.2f}' for n, c in zip(names, result.conformal_scales))} "
           f"(> 1 wider) about its median, so that its 90% intervals hold the truth of "
           f"{result.config['calibration_solves']} solves it was not trained on (split conformal)"]
          if result.conformal_scales else []), "",
        "| parameter | MAP | median | 90% interval | contraction |" + (" truth |" if run.truth else ""),
        "|---|---|---|---|---|" + ("---|" if run.truth else ""),
    ]
    contractions = result.contraction or [float("nan")] * len(names)
    for i, name in enumerate(names):
        row = (f"| {name} | {result.map[i]:.3g} | {q[1, i]:.3g} | [{q[0, i]:.3g}, {q[2, i]:.3g}] "
               f"| {contractions[i]:.2f} |" + (f" {run.truth[i]:.3g} |" if run.truth else ""))
        lines.append(row)
    samples = result.samples.numpy()
    quantities = derived_quantities(patient)
    for name, (unit, f) in quantities.items():
        lo, mid, hi = np.quantile(f(samples), SUMMARY_QUANTILES)
        lines.append(f"| {name} [{unit}] | {f(result.map.numpy()[None])[0]:.3g} "
                     f"| {mid:.3g} | [{lo:.3g}, {hi:.3g}] | |" + (
                         f" {f(np.asarray(run.truth)[None])[0]:.3g} |" if run.truth else ""))
    if patient.one_scan:
        lines += ["", "Units: origin (x, y, z) in world mm; ell = sqrt(D / rho) in mm; tau = rho T, the age in "
                  "units of the doubling-like time 1 / rho (dimensionless); thresholds on the normalised density. "
                  + ("D and rho follow from the given age T: rho = tau / T, D = ell^2 tau / T. "
                     if patient.day is not None else
                     "With the age unknown, D and rho are not identifiable from one scan (a tumour grown "
                     "twice as fast for half as long looks the same): give the age (--day) or a second scan "
                     "(--adc with --t2-initial) to separate them. ")
                  + "Contraction: 1 - posterior std / prior std (0: the data taught nothing, 1: pinned down).", ""]
    else:
        lines += ["", "Units: D in mm^2/day, rho in 1/day, thresholds on the normalised density. Contraction: "
                  "1 - posterior std / prior std (0: the data taught nothing, 1: pinned down).", ""]
        if patient.initial.density is not None:
            lines += [ADC_CAVEAT, ""]
    weak = weakly_determined(names, result.contraction or ())
    if weak:
        why = ("A label map shows where two density levels lie; a threshold moves its contour by a fraction "
               "of the infiltration length sqrt(D / rho), often less than a voxel, and a slightly different "
               "(D, rho) moves it back, so one scan pins the thresholds down only loosely "
               "(`benchmarks/identifiability.py --human`). " if {"u_T1", "u_T2"} & set(weak) else "")
        if {"ell", "tau"} & set(weak):
            why += ("ell or tau barely moved from the prior: this scan (or this number of simulations) does not "
                    "fix them; the front radius 2 ell tau in the table may still be narrow. ")
        if {"D", "rho"} & set(weak):
            why += ("D or rho barely moved from the prior: the scan (or this number of simulations) does not "
                    "separate them, though the front speed and infiltration length in the table may still be narrow. ")
        lines += [f"**Weakly determined by this observation: {', '.join(weak)}** (contraction below "
                  f"{WEAK_CONTRACTION}). {why}Their intervals above are mostly the prior's.", ""]
    if target is not None:
        lines += ["## Infiltration and a radiotherapy target", "",
                  f"`infiltration/` holds P(u > c) at the scan for c = {', '.join(f'{c:g}' for c in INFILTRATION_LEVELS)} "
                  "(where tumour cells are likely, also beyond the visible T2 margin), the posterior mean density, "
                  "and two targets of the same volume "
                  f"({target['volume_ml']:.0f} mL; the visible T2 region is {target['t2_ml']:.0f} mL):", "",
                  f"- `target_margin.nii.gz`: the visible T2 extent grown by {CTV_MARGIN_MM:g} mm, clipped to tissue "
                  "(the standard clinical target);",
                  f"- `target_model.nii.gz`: the T2 extent plus the tissue of highest P(u > {target['level']:g}).", "",
                  f"They share {100 * target['shared']:.0f}% of their volume. How much more of a later tumour "
                  "the model's target covers than the margin is measured on synthetic patients in "
                  "`benchmarks/rt_target.py` (docs: Benchmarks, radiotherapy targets). The model knows the "
                  "anatomy only through grey and white matter; it is not a clinical tool.", ""]
    lines += ["## Posterior predictive check", "",
              f"The label maps of {check['num_draws']} posterior draws at {patient.scan_name} against the "
              "observed segmentations (`ppc.png`): median and 90% range over the draws.", "",
              "| region | Dice | volume [mL] | observed volume [mL] | its quantile among the draws |",
              "|---|---|---|---|---|"]
    for region in ("T2", "T1"):
        c = check[region]
        d_lo, d_mid, d_hi = np.quantile(c["dice"], SUMMARY_QUANTILES)
        v_lo, v_mid, v_hi = np.quantile(c["volume_ml"], SUMMARY_QUANTILES)
        lines.append(f"| {region} | {d_mid:.3f} [{d_lo:.3f}, {d_hi:.3f}] | {v_mid:.2f} [{v_lo:.2f}, {v_hi:.2f}] "
                     f"| {c['observed_volume_ml']:.2f} | {c['observed_volume_quantile']:.2f} |")
    lines += ["", "A quantile near 0 or 1, or a low Dice, means the posterior does not reproduce the data: "
              "check the inputs (registration, the day, the seed) or run more simulations.", "",
              "## Files", ""] + [f"- `{name}`: {what}" for what, name in files.items()]
    lines += ["", "Reload from Python:", "", "```python",
              "from sbi_tumor.patient import load_run",
              f"run = load_run({str(run.directory)!r})",
              "samples = run.posterior.sample((1000,))  # at the observed segmentations", "```", ""]
    return "\n".join(lines)


def derived_quantities(patient: Patient) -> dict[str, tuple[str, Any]]:
    """The combinations a report adds below the parameters: ``{name: (unit, f(theta (N, d)) -> (N,))}``.

    With a known origin and day: the front speed and the infiltration length, which one scan
    pins down best. With one scan: the distance the front has travelled, ``2 ell tau``, and, when
    the age is known, D and rho.
    """
    if not patient.one_scan:
        return {"front speed": ("mm/day", front_speed), "infiltration length": ("mm", infiltration_length)}
    out: dict[str, tuple[str, Any]] = {"front radius 2 ell tau": ("mm", lambda t: 2 * t[:, 3] * t[:, 4])}
    if patient.day is not None:
        out |= {"D": ("mm^2/day", lambda t: rates(t, patient.day)[:, 0]),
                "rho": ("1/day", lambda t: rates(t, patient.day)[:, 1])}
    return out


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
    labels = simulator.labels(theta, [simulator.day])[:, 0]
    observed = patient.labels[simulator.roi_slices]
    ml = patient.anatomy.voxel_volume / 1e3
    out: dict[str, Any] = {"num_draws": len(theta), "day": patient.day, "scan": patient.scan_name}
    for region, level in (("T2", 1), ("T1", 2)):
        volumes = (labels >= level).sum(axis=(1, 2, 3)) * ml
        observed_volume = float((observed >= level).sum() * ml)
        out[region] = {"dice": [dice(m >= level, observed >= level) for m in labels],
                       "volume_ml": volumes.tolist(), "observed_volume_ml": observed_volume,
                       "observed_volume_quantile": float((volumes < observed_volume).mean()
                                                         + 0.5 * (volumes == observed_volume).mean())}
    return out


def ppc_figure(check: Mapping) -> Figure:
    """The posterior predictive check of a run (``workflow.posterior_predictive_check``): per
    region, the Dice of the draws against the observation and their volumes against the observed."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for region, colour in plots.REGION_COLOURS.items():
        c = check[region]
        axes[0].hist(c["dice"], bins=20, range=(0, 1), color=colour, alpha=0.6, label=region)
        axes[1].hist(c["volume_ml"], bins=20, color=colour, alpha=0.6, label=f"{region}: posterior draws")
        axes[1].axvline(c["observed_volume_ml"], color=colour, lw=2, ls="--", label=f"{region}: observed")
    axes[0].set(xlabel="Dice against the observed segmentation", ylabel="posterior draws")
    axes[1].set(xlabel="volume [mL]", ylabel="posterior draws")
    for ax in axes:
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(f"Posterior predictive check: {check['num_draws']} draws at {check['scan']}")
    fig.tight_layout()
    return fig
