"""How close a posterior is to the truth and to a reference posterior (C2ST)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .identifiability import derived
from .config import PARAMETER_NAMES, SUMMARY_QUANTILES

__all__ = ["c2st_score", "posterior_metrics"]


def posterior_metrics(samples: np.ndarray, map_: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Per parameter (and derived quantity): mean, median, MAP, 90% interval, relative errors, coverage."""
    out: dict[str, Any] = {}
    columns = dict(zip(PARAMETER_NAMES, samples.T))
    columns.update(derived(samples))
    map_values = dict(zip(PARAMETER_NAMES, map_))
    map_values.update({k: float(v[0]) for k, v in derived(map_).items()})
    true_values = dict(zip(PARAMETER_NAMES, truth))
    true_values.update({k: float(v[0]) for k, v in derived(truth).items()})
    for name, values in columns.items():
        lo, median, hi = np.quantile(values, SUMMARY_QUANTILES)
        mean, true = float(values.mean()), float(true_values[name])
        out[name] = {"truth": true, "mean": mean, "std": float(values.std()), "map": float(map_values[name]),
                     "q05": float(lo), "median": float(median), "q95": float(hi),
                     "mean_rel_error": abs(mean - true) / abs(true),
                     "median_rel_error": abs(float(median) - true) / abs(true),
                     "map_rel_error": abs(float(map_values[name]) - true) / abs(true),
                     "truth_in_90": bool(lo <= true <= hi)}
    return out


def c2st_score(samples: np.ndarray, reference: np.ndarray, max_samples: int, seed: int) -> float:
    """C2ST accuracy (0.5: indistinguishable) on equally many samples of each set."""
    from sbi.utils.metrics import c2st

    rng = np.random.default_rng(seed)
    n = min(len(samples), len(reference), max_samples)
    x = reference[rng.choice(len(reference), n, replace=False)]
    y = samples[rng.choice(len(samples), n, replace=False)]
    return float(c2st(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32),
                      seed=seed))
