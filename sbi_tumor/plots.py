"""Figures of an inference run and a prediction (matplotlib, Agg backend: no display needed).

Each function returns a ``matplotlib.figure.Figure``; [`save_figure`][sbi_tumor.plots.save_figure] writes and closes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: works on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .anatomy import Anatomy  # noqa: E402
from .prior import PARAMETER_LABELS, PARAMETER_NAMES  # noqa: E402

if TYPE_CHECKING:
    from .prediction import Prediction

__all__ = ["pair_plot", "ppc_figure", "volume_plot", "slice_figure", "save_figure"]

_POINT_COLOURS = ("tab:red", "tab:green", "tab:orange")
# Label-map overlay: transparent healthy, yellow T2 only, red T1 core.
_LABEL_CMAP = ListedColormap([(0, 0, 0, 0), (1.0, 0.85, 0.0, 0.55), (0.9, 0.1, 0.1, 0.7)])


def pair_plot(samples: np.ndarray, limits: tuple[Sequence[float], Sequence[float]] | None,
              points: Mapping[str, np.ndarray] | None = None, weak: Sequence[str] = ()) -> Figure:
    """sbi's pair plot of posterior samples ``(N, 4)`` over the prior box, with ``points``
    (e.g. ``{"MAP": theta, "truth": theta}``, each ``(4,)``) marked and named in a legend; the
    parameters named in ``weak`` (``PARAMETER_NAMES``) are marked as weakly determined."""
    from sbi.analysis import pairplot

    points = dict(points or {})
    colours = _POINT_COLOURS[:len(points)]
    fig, axes = pairplot(
        samples, points=[np.asarray(p)[None] for p in points.values()] or None,
        limits=None if limits is None else list(zip(*limits)), labels=list(PARAMETER_LABELS),
        figsize=(8, 8), diag="kde", upper="kde",
        fig_kwargs={"points_colors": list(colours), "points_offdiag": {"marker": "*", "markersize": 12}})
    for (name, _), colour in zip(points.items(), colours):
        axes[0, -1].plot([], [], "*", color=colour, markersize=12, label=name)
    if points:
        axes[0, -1].legend(loc="upper right", frameon=False)
    for i, name in enumerate(PARAMETER_NAMES):
        if name in weak:
            axes[i, i].set_title("weakly determined:\nmostly the prior", fontsize=8, color="tab:gray")
    fig.suptitle("Posterior of (D, rho, u_T1, u_T2)")
    return fig


def volume_plot(prediction: "Prediction", fitted: tuple[float, float, float] | None = None) -> Figure:
    """Tumour volumes (mL) over days: posterior mean with 1 and 2 std bands, the MAP, the fitted
    segmentation's volumes ``fitted = (day, T1 mm^3, T2 mm^3)`` and any later observed volumes."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for region, colour in (("T2", "tab:orange"), ("T1", "tab:red")):
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
    ax.set_xlabel("days after the initial condition")
    ax.set_ylabel("volume [mL]")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(f"Tumour volume: MAP and {len(prediction.samples)} posterior samples")
    fig.tight_layout()
    return fig


def slice_figure(anatomy: Anatomy, panels: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
                 centre: Sequence[int] | None = None) -> Figure:
    """Label maps over the atlas: one row per panel, axial/coronal/sagittal slices.

    Args:
        anatomy: the background (white + half grey matter as grey levels).
        panels: ``(title, labels, contour_labels)`` per row; ``labels`` (0/1/2, anatomy grid) are
            filled in colour, ``contour_labels`` (or None) drawn as T2 (yellow) and T1 (red)
            contours, e.g. an observed segmentation over a prediction.
        centre: voxel the slices pass through; default the centre of mass of the first labels.
    """
    if centre is None:
        centre = np.rint(np.argwhere(panels[0][1] > 0).mean(0)).astype(int) if panels[0][1].any() \
            else np.array(anatomy.shape) // 2
    background = anatomy.wm + 0.5 * anatomy.gm
    views = [("axial", 2), ("coronal", 1), ("sagittal", 0)]
    fig, axes = plt.subplots(len(panels), 3, figsize=(9, 3 * len(panels)), squeeze=False)
    for row, (title, labels, contours) in enumerate(panels):
        for col, (view, axis) in enumerate(views):
            ax = axes[row, col]
            index = [slice(None)] * 3
            index[axis] = int(centre[axis])

            def cut(a: np.ndarray) -> np.ndarray:
                return a[tuple(index)].T  # rows: the second remaining axis, shown bottom-up

            ax.imshow(cut(background), cmap="gray", origin="lower", vmin=0, vmax=1)
            ax.imshow(cut(labels), cmap=_LABEL_CMAP, origin="lower", vmin=0, vmax=2,
                      interpolation="nearest")
            if contours is not None:
                for level, colour in ((0.5, "yellow"), (1.5, "red")):
                    if (cut(contours) > level).any():
                        ax.contour(cut(contours), levels=[level], colors=colour, linewidths=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}\n{view}" if col == 0 else view, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def ppc_figure(check: Mapping) -> Figure:
    """The posterior predictive check of a run (``workflow.posterior_predictive_check``): per
    region, the Dice of the draws against the observation and their volumes against the observed."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for region, colour in (("T2", "tab:orange"), ("T1", "tab:red")):
        c = check[region]
        axes[0].hist(c["dice"], bins=20, range=(0, 1), color=colour, alpha=0.6, label=region)
        axes[1].hist(c["volume_ml"], bins=20, color=colour, alpha=0.6, label=f"{region}: posterior draws")
        axes[1].axvline(c["observed_volume_ml"], color=colour, lw=2, ls="--", label=f"{region}: observed")
    axes[0].set(xlabel="Dice against the observed segmentation", ylabel="posterior draws")
    axes[1].set(xlabel="volume [mL]", ylabel="posterior draws")
    for ax in axes:
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(f"Posterior predictive check: {check['num_draws']} draws at day {check['day']:g}")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path) -> None:
    """Write ``fig`` (format from the suffix) and free it: pyplot keeps open figures alive."""
    fig.savefig(path, dpi=110)
    plt.close(fig)
