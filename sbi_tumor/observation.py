"""Observation model: tumour density -> the label map a radiologist would segment.

The T1-gadolinium scan shows the active core where ``u >= u_T1``; T2/FLAIR shows the whole tumour
where ``u >= u_T2`` (with ``u_T2 < u_T1``). The two binary masks are summed into a label map:
0 = healthy, 1 = T2 only (oedema / infiltration), 2 = T1 core.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["best_threshold", "threshold_interval", "dice", "check_thresholds", "label_map", "masks_to_labels", "labels_to_masks"]


def check_thresholds(u_t1, u_t2) -> None:
    """Raise a clear error unless ``0 < u_T2 < u_T1 < 1`` (elementwise for arrays)."""
    t1 = np.asarray(u_t1, dtype=float)
    t2 = np.asarray(u_t2, dtype=float)
    bad = ~((t2 > 0) & (t2 < t1) & (t1 < 1))
    if np.any(bad):
        i = int(np.flatnonzero(np.broadcast_to(bad, np.broadcast(t1, t2).shape))[0])
        raise ValueError(
            f"Invalid thresholds u_T1={np.broadcast_to(t1, bad.shape).flat[i]:.4g}, "
            f"u_T2={np.broadcast_to(t2, bad.shape).flat[i]:.4g}: need 0 < u_T2 < u_T1 < 1 "
            "(T2/FLAIR sees more of the tumour than T1-gadolinium)."
        )


def label_map(u, u_t1: float, u_t2: float):
    """Label map ``(u >= u_T1) + (u >= u_T2)`` as uint8 (numpy) or the input dtype (torch).

    ``u`` may have any shape; ``u_t1``/``u_t2`` scalars or arrays broadcastable against it.
    """
    check_thresholds(u_t1, u_t2)
    if isinstance(u, torch.Tensor):
        t1 = torch.as_tensor(u_t1, dtype=u.dtype, device=u.device)
        t2 = torch.as_tensor(u_t2, dtype=u.dtype, device=u.device)
        return (u >= t1).to(u.dtype) + (u >= t2).to(u.dtype)
    u = np.asarray(u)
    return ((u >= u_t1).astype(np.uint8) + (u >= u_t2).astype(np.uint8))


def masks_to_labels(t1_mask: np.ndarray, t2_mask: np.ndarray) -> np.ndarray:
    """Label map from binary T1 and T2 segmentations (uint8, 0/1/2)."""
    return (np.asarray(t1_mask) > 0).astype(np.uint8) + (np.asarray(t2_mask) > 0).astype(np.uint8)


def labels_to_masks(labels) -> tuple:
    """Inverse of [`masks_to_labels`][sbi_tumor.observation.masks_to_labels]: (T1 mask, T2 mask) as booleans."""
    return labels >= 2, labels >= 1


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |a & b| / (|a| + |b|)`` of two boolean masks; 1 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _wrong_voxels(inside: np.ndarray, outside: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``#(u >= c outside the mask) + #(u < c inside)`` for sorted inside/outside values, per ``c``."""
    return (len(outside) - np.searchsorted(outside, c, side="left")) + np.searchsorted(inside, c, side="left")


def best_threshold(u: np.ndarray, mask: np.ndarray, low: float = 0.0, high: float = 1.0) -> tuple[float, int]:
    """The threshold ``c`` in ``[low, high]`` for which ``u >= c`` reproduces ``mask`` best.

    Returns ``(c, wrong)``: ``wrong = #(u >= c outside mask) + #(u < c inside mask)`` voxels, the
    fewest over all ``c`` in range. Exact: the count only changes at voxel values, so those
    (and the bounds) are the only candidates. Used to ask which densities could have produced a
    segmentation whatever the threshold (``benchmarks/identifiability.py``).
    """
    u, mask = np.asarray(u).ravel(), np.asarray(mask, dtype=bool).ravel()
    inside, outside = np.sort(u[mask]), np.sort(u[~mask])
    candidates = np.concatenate([[low, high], inside[(inside >= low) & (inside <= high)]])
    wrong = _wrong_voxels(inside, outside, candidates)
    best = int(np.argmin(wrong))
    return float(candidates[best]), int(wrong[best])


def threshold_interval(u: np.ndarray, mask: np.ndarray, low: float = 0.0,
                       high: float = 1.0) -> tuple[float, float, int]:
    """All the thresholds in ``[low, high]`` that reproduce ``mask`` as well as
    [`best_threshold`][sbi_tumor.observation.best_threshold]'s: ``(c_low, c_high, wrong)``.

    The candidates are the voxel values, the numbers just above them and the bounds, where the
    count of wrong voxels changes. How wide ``[c_low, c_high]`` is says how well one segmentation
    determines its threshold once the density is known (``benchmarks/identifiability.py``).
    """
    u, mask = np.asarray(u).ravel(), np.asarray(mask, dtype=bool).ravel()
    inside, outside = np.sort(u[mask]), np.sort(u[~mask])
    values = np.concatenate([inside, outside])
    candidates = np.concatenate([[low, high], values, np.nextafter(values, np.float32(np.inf))])
    candidates = candidates[(candidates >= low) & (candidates <= high)]
    wrong = _wrong_voxels(inside, outside, candidates)
    best = candidates[wrong == wrong.min()]
    return float(best.min()), float(best.max()), int(wrong.min())


def encode_masks(t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """Lossless voxel code ``T2 + 2 T1`` (uint8, 0-3) of two binary masks."""
    return (np.asarray(t2, dtype=np.uint8) + 2 * np.asarray(t1, dtype=np.uint8)).astype(np.uint8)
