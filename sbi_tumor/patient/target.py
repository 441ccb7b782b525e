"""A radiotherapy target from the posterior, against the standard margin at equal volume.

The standard clinical target volume (CTV) of a glioma is the visible T2/FLAIR extent grown by a
fixed margin (15 mm here), clipped to the brain. The model's proposal has the same volume: the
visible extent plus the tissue voxels most likely to hold tumour cells, ranked by the posterior
probability P(u > c) (ties by the posterior mean density). At equal volume, the two differ only
in *where* the margin goes: evenly around the tumour, or where the model expects infiltration.
The coverage of a later tumour (a recurrence, or growth) scores them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..anatomy import Anatomy

__all__ = ["CTV_MARGIN_MM", "clinical_target", "coverage", "model_target"]

#: The standard margin around the visible T2/FLAIR extent (mm).
CTV_MARGIN_MM = 15.0


def clinical_target(t2: np.ndarray, anatomy: Anatomy, margin_mm: float = CTV_MARGIN_MM) -> np.ndarray:
    """The T2 region (bool, anatomy grid) grown by ``margin_mm`` (Euclidean, in mm) and clipped to
    brain tissue; the T2 region itself is always inside."""
    t2 = np.asarray(t2, dtype=bool)
    if not t2.any():
        raise ValueError("The T2 region is empty: a target needs a visible tumour.")
    distance = ndimage.distance_transform_edt(~t2, sampling=anatomy.spacing)
    return t2 | ((distance <= margin_mm) & anatomy.tissue)


def model_target(score: np.ndarray, t2: np.ndarray, anatomy: Anatomy, num_voxels: int,
                 tie_break: np.ndarray | None = None) -> np.ndarray:
    """The T2 region plus the ``num_voxels - |T2|`` tissue voxels of highest ``score`` (e.g.
    P(u > c)); ``tie_break`` (e.g. the posterior mean density) orders equal scores. Bool, the
    anatomy grid, exactly ``max(num_voxels, |T2|)`` voxels."""
    t2 = np.asarray(t2, dtype=bool)
    extra = int(num_voxels) - int(t2.sum())
    target = t2.copy()
    if extra <= 0:
        return target
    candidates = np.flatnonzero(anatomy.tissue.ravel() & ~t2.ravel())
    key = np.asarray(score, dtype=np.float64).ravel()[candidates]
    if tie_break is not None:
        span = float(np.ptp(tie_break)) or 1.0
        key = key + 1e-6 * np.asarray(tie_break, dtype=np.float64).ravel()[candidates] / span
    chosen = candidates[np.argsort(-key, kind="stable")[:extra]]
    target.ravel()[chosen] = True
    return target


def coverage(target: np.ndarray, later: np.ndarray) -> float:
    """The fraction of the ``later`` region (bool) inside ``target`` (bool), in [0, 1]."""
    later = np.asarray(later, dtype=bool)
    if not later.any():
        raise ValueError("The later region is empty: there is nothing to cover.")
    return float((np.asarray(target, dtype=bool) & later).sum() / later.sum())
