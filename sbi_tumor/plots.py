"""Figures of the core: posterior pair plots and label-map slices over the anatomy.

Each function returns a ``matplotlib.figure.Figure``; [`save_figure`][sbi_tumor.plots.save_figure] writes and closes it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .anatomy import Anatomy
from .config import parameter_labels, parameter_names

__all__ = ["LABEL_CMAP", "POINT_COLOURS", "REGION_COLOURS", "pair_plot", "slice_figure", "save_figure"]

#: One colour per meaning in every figure: marked points (truth, MAP) and the two regions, the T2
#: colour matching the label maps' yellow (T2 only) and the T1 colour their red (core).
POINT_COLOURS = {"truth": "tab:green", "MAP": "tab:red"}
REGION_COLOURS = {"T2": "goldenrod", "T1": "tab:red"}
_OTHER_POINT_COLOURS = ("tab:blue", "tab:purple", "tab:brown")
#: Resolution of saved figures (dots per inch): text stays legible on high-density screens.
FIGURE_DPI = 130
#: Length of the scale bar of slice figures (mm).
SCALE_BAR_MM = 20.0
#: Colours of label maps drawn over the anatomy: transparent healthy, yellow T2 only, red T1 core.
LABEL_CMAP = ListedColormap([(0, 0, 0, 0), (1.0, 0.85, 0.0, 0.55), (0.9, 0.1, 0.1, 0.7)])


def pair_plot(samples: np.ndarray, limits: tuple[Sequence[float], Sequence[float]] | None,
              points: Mapping[str, np.ndarray] | None = None, weak: Sequence[str] = ()) -> Figure:
    """sbi's pair plot of posterior samples ``(N, d)`` (d = 4, or 7 for one scan) over the prior
    box, with ``points`` (e.g. ``{"MAP": theta, "truth": theta}``, each ``(d,)``) marked and named
    in a legend; the parameters named in ``weak`` (``config.parameter_names``) are marked as
    weakly determined."""
    from sbi.analysis import pairplot

    dim = np.shape(samples)[1]
    names = parameter_names(dim)
    points = dict(points or {})
    others = iter(_OTHER_POINT_COLOURS)
    colours = [POINT_COLOURS.get(name) or next(others) for name in points]
    fig, axes = pairplot(
        samples, points=[np.asarray(p)[None] for p in points.values()] or None,
        limits=None if limits is None else list(zip(*limits)), labels=list(parameter_labels(dim)),
        figsize=(8, 8) if dim == 4 else (11, 11), diag="kde", upper="kde",
        fig_kwargs={"points_colors": list(colours), "points_offdiag": {"marker": "*", "markersize": 12}})
    for (name, _), colour in zip(points.items(), colours):
        axes[0, -1].plot([], [], "*", color=colour, markersize=12, label=name)
    if points:
        axes[0, -1].legend(loc="upper right", frameon=False)
    for i, name in enumerate(names):
        if name in weak:
            axes[i, i].set_title("weakly determined:\nmostly the prior", fontsize=8, color="tab:gray")
    fig.suptitle(f"Posterior of ({', '.join(names)})" + ("" if dim == 4 else
                 ": origin, infiltration length sqrt(D/rho), age rho T, thresholds"))
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

            def cut(a: np.ndarray, index: tuple = tuple(index)) -> np.ndarray:
                return a[index].T  # rows: the second remaining axis, shown bottom-up

            ax.imshow(cut(background), cmap="gray", origin="lower", vmin=0, vmax=1)
            ax.imshow(cut(labels), cmap=LABEL_CMAP, origin="lower", vmin=0, vmax=2,
                      interpolation="nearest")
            if contours is not None:
                for level, colour in ((0.5, "yellow"), (1.5, "red")):
                    if (cut(contours) > level).any():
                        ax.contour(cut(contours), levels=[level], colors=colour, linewidths=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}\n{view}" if col == 0 else view, fontsize=9, loc="left")
            if row == 0 and col == 0:  # a scale bar: the voxels of a view are anatomy.spacing apart
                length = SCALE_BAR_MM / float(anatomy.spacing[0])
                ax.plot([4, 4 + length], [3, 3], color="white", linewidth=2)
                ax.text(4 + length / 2, 4, f"{SCALE_BAR_MM:g} mm", color="white", fontsize=7, ha="center",
                        va="bottom")
    key = [Patch(color=LABEL_CMAP(1), label="T2/FLAIR only"), Patch(color=LABEL_CMAP(2), label="T1-Gd core")]
    if any(contours is not None for _, _, contours in panels):
        key += [Line2D([], [], color="yellow", label="T2 contour"), Line2D([], [], color="red", label="T1 contour")]
    fig.legend(handles=key, loc="lower center", ncol=len(key), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def save_figure(fig: Figure, path) -> None:
    """Write ``fig`` (format from the suffix) and free it: pyplot keeps open figures alive."""
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
