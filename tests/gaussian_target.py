"""A Gaussian likelihood whose posterior under a wide prior is known exactly (TMCMC and refine tests)."""

import numpy as np


def gaussian_log_likelihood(mean: np.ndarray, cov: np.ndarray):
    """Unnormalised ``log N(theta; mean, cov)`` (so the evidence is the Gaussian integral)."""
    precision = np.linalg.inv(cov)

    def log_likelihood(theta: np.ndarray) -> np.ndarray:
        d = theta - mean
        return -0.5 * np.einsum("ni,ij,nj->n", d, precision, d)

    return log_likelihood
