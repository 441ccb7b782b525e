"""Predict tumour growth from a fitted posterior: MAP and posterior-sample forward runs.

Days count from the initial condition, as in [`sbi_tumor.patient.workflow`][sbi_tumor.patient.workflow] (days since the ADC scan,
or since the seed). Volumes are in mm^3 on the model (anatomy) grid; Dice scores compare the
predicted and observed masks on that grid, observed segmentations being resampled onto it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .. import plots
from ..observation import dice
from ..config import INFILTRATION_LEVELS, parameter_names
from ..io import atomic_output_dir, save_nifti
from .inputs import InputError, check_day, load_mask, to_anatomy_grid
from .run import InferenceRun, load_run

__all__ = ["Prediction", "infiltration_figure", "predict", "save_prediction", "volume_plot"]

_REGIONS = ("T1", "T2")


@dataclass
class Prediction:
    """Forward runs of a posterior.

    Attributes:
        days: the requested days, ``(n_days,)``.
        map: the MAP parameters, ``(4,)``.
        samples: the posterior samples simulated, ``(n_samples, 4)``.
        map_density: MAP density on the anatomy grid, float32 ``(n_days, nx, ny, nz)``.
        map_labels: MAP label maps (0 healthy, 1 T2 only, 2 T1 core), uint8, same shape.
        volumes: ``{"T1", "T2"}`` -> sample volumes (mm^3), ``(n_samples, n_days)``.
        map_volumes: ``{"T1", "T2"}`` -> MAP volumes (mm^3), ``(n_days,)``.
        curve_days: dense days from 0 for plotting, ``(n_curve,)``; ``curves`` and
            ``map_curves`` hold the volumes there (same layout as ``volumes``/``map_volumes``).
        observed: per observed day, the observed volumes and Dice of MAP and samples.
        observed_labels: per observed day, the observed label map on the anatomy grid (uint8).
        levels: the cell-density levels c of ``infiltration``, ``(n_levels,)``.
        infiltration: P(u > c) over the posterior samples, per level and day, on the anatomy
            grid, float32 ``(n_levels, n_days, nx, ny, nz)``: where tumour cells are likely,
            also below the visible margin.
        mean_density: posterior mean density per day, float32 ``(n_days, nx, ny, nz)``.
        seconds: wall time of the prediction.
    """

    days: np.ndarray
    map: np.ndarray
    samples: np.ndarray
    map_density: np.ndarray
    map_labels: np.ndarray
    volumes: dict[str, np.ndarray]
    map_volumes: dict[str, np.ndarray]
    curve_days: np.ndarray
    curves: dict[str, np.ndarray]
    map_curves: dict[str, np.ndarray]
    observed: dict[float, dict[str, float]] = field(default_factory=dict)
    observed_labels: dict[float, np.ndarray] = field(default_factory=dict)
    levels: tuple[float, ...] = ()
    infiltration: np.ndarray | None = None
    mean_density: np.ndarray | None = None
    seconds: float = 0.0

    def table(self) -> list[dict[str, float]]:
        """One row per day: volume mean/std over samples, MAP volume, observed volume and Dice."""
        rows = []
        for j, day in enumerate(self.days):
            row = {"day": float(day)}
            for region in _REGIONS:
                row[f"{region}_mean_mm3"] = float(self.volumes[region][:, j].mean())
                row[f"{region}_std_mm3"] = float(self.volumes[region][:, j].std())
                row[f"{region}_map_mm3"] = float(self.map_volumes[region][j])
            rows.append(row | self.observed.get(float(day), {}))
        return rows


def predict(run: InferenceRun | str | Path, days: Sequence[float] | None, *, num_samples: int = 100,
            observed_t2: Mapping[float, str | Path] | None = None,
            observed_t1: Mapping[float, str | Path] | None = None, seed: int = 0,
            curve_points: int = 25, levels: Sequence[float] = INFILTRATION_LEVELS,
            progress: bool = True) -> Prediction:
    """Simulate the MAP and ``num_samples`` posterior samples forward to ``days``.

    Args:
        run: a fitted run or its directory (see [`sbi_tumor.patient.run.load_run`][sbi_tumor.patient.run.load_run]).
        days: days after the initial condition to predict (> 0); None: the fitted scan only. With
            one scan whose age is unknown (``sbi_tumor.one_scan``), only the scan can be predicted:
            growth in days needs D and rho, which need the age.
        num_samples: posterior samples to simulate for the uncertainty.
        observed_t2: ``{day: segmentation file}`` of later scans to compare with;
            their days are added to ``days``.
        observed_t1: ``{day: segmentation file}`` of later scans to compare with;
            their days are added to ``days``.
        seed: torch seed of the posterior sampling.
        curve_points: number of days from 0 to the last day at which volumes are plotted.
        levels: cell-density levels c of the infiltration maps P(u > c), each in (0, 1).
        progress: progress bar over the sample runs.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    run = load_run(run) if isinstance(run, (str, Path)) else run
    patient = run.patient
    observed = {region: {check_day(d, 0.0): Path(p) for d, p in (files or {}).items()}
                for region, files in (("T1", observed_t1), ("T2", observed_t2))}
    simulator = patient.simulator()
    if patient.one_scan and patient.day is None and (days is not None or any(observed.values())):
        raise InputError("This posterior is from one scan of a tumour whose age is unknown: it says where the "
                         "tumour is now (and how far it has invisibly spread), but not how fast it grows in days. "
                         "Predict at the scan only (no --days), or re-run infer with the age (--day) or a second "
                         "scan (--adc and --t2-initial).")
    days = [simulator.day] if days is None else days
    days = np.unique([check_day(d, 0.0) for d in days] + [d for f in observed.values() for d in f])
    if days.size == 0 or days[0] <= 0:
        raise ValueError(f"Give days > 0 (after the initial condition) to predict, got {days.tolist()}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    levels = tuple(float(c) for c in levels)
    if not all(0 < c < 1 for c in levels):
        raise ValueError(f"levels must lie in (0, 1) (cell densities), got {list(levels)}.")
    masks = {region: {d: _observed_mask(p, f"observed {region} segmentation (day {d:g})", run)
                      for d, p in files.items()} for region, files in observed.items()}

    torch.manual_seed(seed)
    samples = run.posterior.sample((num_samples,), show_progress_bars=False).numpy()
    theta = np.concatenate([run.result.map.numpy()[None], samples]).astype(np.float64)
    curve_days = np.unique(np.concatenate([np.linspace(0, days[-1], curve_points), days]))
    at_days = np.searchsorted(curve_days, days)
    simulator = patient.simulator(_roi_for(run, simulator, theta, days[-1]), day=days[-1])
    voxel = patient.anatomy.voxel_volume

    curves = {region: np.empty((len(theta), len(curve_days))) for region in _REGIONS}
    scores = {(region, d): np.empty(len(theta)) for region in _REGIONS for d in masks[region]}
    exceed = np.zeros((len(levels), len(days), *simulator.roi.shape), np.float32)  # counts, ROI grid
    total = np.zeros((len(days), *simulator.roi.shape), np.float32)
    for i, t in enumerate(tqdm(theta, desc="prediction runs (MAP + samples)", unit="run",
                               disable=not progress)):
        density = simulator.density(t[None, :-2], curve_days)[0]  # thresholds are theta's last two
        t1, t2 = density >= t[-2], density >= t[-1]
        curves["T1"][i], curves["T2"][i] = t1.sum((1, 2, 3)) * voxel, t2.sum((1, 2, 3)) * voxel
        for (region, d), score in scores.items():
            predicted = simulator.to_full_grid((t1 if region == "T1" else t2)[np.searchsorted(curve_days, d)])
            score[i] = dice(predicted, masks[region][d])
        if i == 0:  # the MAP: keep its maps
            map_density = simulator.to_full_grid(density[at_days])
            map_labels = (map_density >= t[-2]).astype(np.uint8) + (map_density >= t[-1])
        else:  # a posterior sample: count where it exceeds each level
            for k, c in enumerate(levels):
                exceed[k] += density[at_days] > c
            total += density[at_days]

    comparison: dict[float, dict[str, float]] = {}
    observed_labels: dict[float, np.ndarray] = {}
    for (region, d), score in scores.items():
        mask_in, affine = load_mask(observed[region][d], f"observed {region} segmentation (day {d:g})")
        comparison.setdefault(d, {}).update({
            f"{region}_observed_mm3": float(mask_in.sum() * abs(np.linalg.det(affine[:3, :3]))),
            f"{region}_dice_map": float(score[0]), f"{region}_dice_mean": float(score[1:].mean()),
            f"{region}_dice_std": float(score[1:].std())})
        observed_labels[d] = observed_labels.get(d, 0) + masks[region][d].astype(np.uint8)
    return Prediction(
        days=days, map=theta[0], samples=samples, map_density=map_density, map_labels=map_labels,
        volumes={r: c[1:, at_days] for r, c in curves.items()},
        map_volumes={r: c[0, at_days] for r, c in curves.items()}, curve_days=curve_days,
        curves={r: c[1:] for r, c in curves.items()}, map_curves={r: c[0] for r, c in curves.items()},
        observed=comparison, observed_labels=observed_labels, levels=levels,
        infiltration=np.stack([simulator.to_full_grid(e / num_samples) for e in exceed]),
        mean_density=simulator.to_full_grid(total / num_samples), seconds=time.perf_counter() - started)


def _observed_mask(path: Path, name: str, run: InferenceRun) -> np.ndarray:
    mask, affine = load_mask(path, name)
    return to_anatomy_grid(mask, affine, run.patient.anatomy, "mask", name=name)


def _roi_for(run: InferenceRun, simulator, theta: np.ndarray, last_day: float) -> float:
    """ROI edge (mm) that also holds the growth after the fitted scan.

    The Fisher-Kolmogorov front moves at ``2 sqrt(D rho)`` mm/day in white matter; the fitted
    ROI is widened by that distance on each side for the fastest simulated parameters.
    """
    speed = float(simulator.front_speed(theta).max())
    return run.patient.roi_size_mm + 2 * speed * max(0.0, last_day - simulator.day)


def save_prediction(prediction: Prediction, run: InferenceRun | str | Path, out_dir: str | Path,
                    overwrite: bool = False) -> dict[str, str]:
    """Write a prediction to ``out_dir`` atomically; returns {description: file name}.

    Files: ``map_density_day<d>.nii.gz``, ``map_labels_day<d>.nii.gz``, ``mean_density_day<d>.nii.gz``
    (posterior mean) and ``infiltration_c<c>_day<d>.nii.gz`` (P(u > c)) on the grid of the input
    segmentations (``_scan`` instead of ``_day<d>`` for one scan of unknown age), ``infiltration.png``, ``volumes.csv`` (per day: volume mean/std over samples, MAP volume, observed
    volume and Dice), ``prediction.json``, ``volumes.png``, ``slices.png`` and ``report.md``.
    """

    run = load_run(run) if isinstance(run, (str, Path)) else run
    patient = run.patient
    rows = prediction.table()
    files: dict[str, str] = {}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        for j, day in enumerate(prediction.days):
            for kind, data in (("density", prediction.map_density[j]), ("labels", prediction.map_labels[j])):
                name = f"map_{kind}_{_tag(day, patient)}.nii.gz"
                save_nifti(tmp / name, to_input_grid(data, run, kind == "labels"), patient.input_affine,
                           dtype=np.uint8 if kind == "labels" else np.float32)
                files[f"MAP {kind}, {_when(day, patient)} (input grid)"] = name
            name = f"mean_density_{_tag(day, patient)}.nii.gz"
            save_nifti(tmp / name, to_input_grid(prediction.mean_density[j], run, False), patient.input_affine,
                       dtype=np.float32)
            files[f"posterior mean density, {_when(day, patient)} (input grid)"] = name
            for k, c in enumerate(prediction.levels):
                name = f"infiltration_c{c:g}_{_tag(day, patient)}.nii.gz"
                save_nifti(tmp / name, to_input_grid(prediction.infiltration[k, j], run, False),
                           patient.input_affine, dtype=np.float32)
                files[f"P(u > {c:g}), {_when(day, patient)} (input grid)"] = name
        columns = list(dict.fromkeys(k for row in rows for k in row))  # first-seen order
        lines = [",".join(columns)] + [",".join(_fmt(row.get(c)) for c in columns) for row in rows]
        (tmp / "volumes.csv").write_text("\n".join(lines) + "\n")
        (tmp / "prediction.json").write_text(json.dumps({
            "posterior": str(run.directory), "map": prediction.map.tolist(),
            "num_samples": len(prediction.samples), "days": rows, "seconds": prediction.seconds,
            "units": "volumes in mm^3 on the model grid; " + _time_unit(patient)}, indent=2))
        voxel = patient.anatomy.voxel_volume
        fitted = (patient.scan_day, patient.t1.sum() * voxel, patient.t2.sum() * voxel)
        plots.save_figure(volume_plot(prediction, fitted, _time_unit(patient)), tmp / "volumes.png")
        plots.save_figure(plots.slice_figure(patient.anatomy, _slice_panels(prediction, run)),
                          tmp / "slices.png")
        plots.save_figure(infiltration_figure(prediction, run), tmp / "infiltration.png")
        files |= {"volumes per day (CSV)": "volumes.csv", "everything as JSON": "prediction.json",
                  "volume dynamics": "volumes.png", "predicted label maps": "slices.png",
                  "infiltration beyond the visible margin, P(u > c)": "infiltration.png",
                  "this report": "report.md"}
        (tmp / "report.md").write_text(_report(prediction, run, files))
    return files


def _slice_panels(prediction: Prediction, run: InferenceRun) -> list:
    """MAP label maps per day, with the observed (or fitted) segmentation as contours."""
    observed = {run.patient.scan_day: run.patient.labels} | prediction.observed_labels
    return [(f"MAP, {_when(d, run.patient)}" + (" (contours: observed)" if float(d) in observed else ""),
             prediction.map_labels[j], observed.get(float(d))) for j, d in enumerate(prediction.days)]


def to_input_grid(data: np.ndarray, run: InferenceRun, labels: bool) -> np.ndarray:
    """An anatomy-grid array resampled onto the input segmentations' grid (nearest for labels)."""
    patient = run.patient
    anatomy = patient.anatomy
    if (tuple(data.shape) == tuple(patient.input_shape)
            and np.allclose(anatomy.affine, patient.input_affine, atol=1e-3)):
        return data
    import nibabel as nib
    from nilearn.image import resample_img

    out = resample_img(nib.Nifti1Image(data, anatomy.affine), target_affine=patient.input_affine,
                       target_shape=patient.input_shape, interpolation="nearest" if labels else "linear",
                       fill_value=0, force_resample=True, copy_header=True)
    return np.asarray(out.dataobj)


def _tag(day: float, patient) -> str:
    """File-name part of a predicted time: ``day12``, or ``scan`` for one scan of unknown age."""
    return "scan" if patient.day is None else f"day{day:g}"


def _when(day: float, patient) -> str:
    """A predicted time in words: "day 12", or "the scan" for one scan of unknown age."""
    return patient.scan_name if patient.day is None else f"day {day:g}"


def _time_unit(patient) -> str:
    return ("time in units of the tumour's (unknown) age: 1 is the scan" if patient.day is None
            else "days after the initial condition")


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _report(prediction: Prediction, run: InferenceRun, files: dict[str, str]) -> str:
    lines = ["# sbi-tumor prediction report", "",
             f"- Posterior: `{run.directory}`; MAP ({', '.join(parameter_names(len(prediction.map)))}) = "
             f"({', '.join(f'{v:.3g}' for v in prediction.map)})",
             f"- {len(prediction.samples)} posterior samples simulated in {prediction.seconds:.0f} s",
             f"- Time: {_time_unit(run.patient)}; volumes in mL (1 mL = 1000 mm^3)", "",
             "| day | T1 mean ± std | T2 mean ± std | T1 MAP | T2 MAP | observed T2 | Dice T2 (MAP) | "
             "observed T1 | Dice T1 (MAP) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in prediction.table():
        obs, obs1 = row.get("T2_observed_mm3"), row.get("T1_observed_mm3")
        lines.append(
            f"| {row['day']:g} | {row['T1_mean_mm3'] / 1e3:.2f} ± {row['T1_std_mm3'] / 1e3:.2f} | "
            f"{row['T2_mean_mm3'] / 1e3:.2f} ± {row['T2_std_mm3'] / 1e3:.2f} | "
            f"{row['T1_map_mm3'] / 1e3:.2f} | {row['T2_map_mm3'] / 1e3:.2f} | "
            f"{'' if obs is None else format(obs / 1e3, '.2f')} | "
            f"{'' if obs is None else format(row['T2_dice_map'], '.3f')} | "
            f"{'' if obs1 is None else format(obs1 / 1e3, '.2f')} | "
            f"{'' if obs1 is None else format(row['T1_dice_map'], '.3f')} |")
    lines += ["", "## Files", ""] + [f"- `{name}`: {what}" for what, name in files.items()] + [""]
    return "\n".join(lines)


def volume_plot(prediction: Prediction, fitted: tuple[float, float, float] | None = None,
                time_unit: str = "days after the initial condition") -> Figure:
    """Tumour volumes (mL) over days: posterior mean with 1 and 2 std bands, the MAP, the fitted
    segmentation's volumes ``fitted = (day, T1 mm^3, T2 mm^3)`` and any later observed volumes;
    ``time_unit`` labels the x axis."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for region, colour in plots.REGION_COLOURS.items():
        curves = prediction.curves[region] / 1e3
        mean, std = curves.mean(0), curves.std(0)
        days = prediction.curve_days
        ax.fill_between(days, mean - 2 * std, mean + 2 * std, color=colour, alpha=0.15, lw=0)
        ax.fill_between(days, mean - std, mean + std, color=colour, alpha=0.3, lw=0,
                        label=f"{region}: posterior mean ± 1, 2 std")
        ax.plot(days, prediction.map_curves[region] / 1e3, color=colour, lw=2, label=f"{region}: MAP")
        observed = [(d, v[f"{region}_observed_mm3"] / 1e3) for d, v in prediction.observed.items()
                    if f"{region}_observed_mm3" in v]
        if observed:
            ax.plot(*zip(*observed), "s", color=colour, mec="k", ms=8, label=f"{region}: observed later")
        if fitted is not None:
            ax.plot(fitted[0], fitted[1 if region == "T1" else 2] / 1e3, "o", color=colour, mec="k",
                    ms=8, label=f"{region}: fitted segmentation")
    ax.set_xlabel(time_unit)
    ax.set_ylabel("volume [mL]")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(f"Tumour volume: MAP and {len(prediction.samples)} posterior samples")
    fig.tight_layout()
    return fig


def infiltration_figure(prediction: Prediction, run: InferenceRun) -> Figure:
    """P(u > c) at the last predicted day for each level (rows), three orthogonal slices through
    the fitted tumour, with the fitted T2 region as a yellow contour and a colour key."""
    anatomy, patient = run.patient.anatomy, run.patient
    centre = np.rint(np.argwhere(patient.t2).mean(0)).astype(int)
    background = anatomy.wm + 0.5 * anatomy.gm
    day = prediction.days[-1]
    fig, axes = plt.subplots(len(prediction.levels), 3, figsize=(9.5, 3.1 * len(prediction.levels)),
                             squeeze=False)
    image = None
    for row, c in enumerate(prediction.levels):
        for col, (view, axis) in enumerate((("axial", 2), ("coronal", 1), ("sagittal", 0))):
            ax = axes[row, col]
            index = [slice(None)] * 3
            index[axis] = int(centre[axis])
            index = tuple(index)
            ax.imshow(background[index].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            p = np.ma.masked_less(prediction.infiltration[row, -1][index].T, 0.005)
            image = ax.imshow(p, cmap="magma", origin="lower", vmin=0, vmax=1, alpha=0.85)
            ax.contour(patient.t2[index].T.astype(float), levels=[0.5], colors="yellow", linewidths=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"P(u > {c:g}), {_when(day, patient)}\n{view}" if col == 0 else view, fontsize=9,
                         loc="left")
    fig.colorbar(image, ax=axes, shrink=0.8, label=f"posterior probability (yellow: fitted T2, {patient.scan_name})")
    return fig
