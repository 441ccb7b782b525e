"""Likelihood-based reference samplers: Transitional MCMC (Ching & Chen, 2007).

TMCMC is the sampler Lipkova et al. (2019) used with the explicit likelihood of
[`sbi_tumor.likelihood`][sbi_tumor.likelihood]; it gives the reference posteriors and simulation counts that the
simulation-based estimators are compared against.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import logsumexp
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

__all__ = ["TMCMCResult", "tmcmc"]

LogLikelihood = Callable[[np.ndarray], Union[np.ndarray, Tensor]]


@dataclass
class TMCMCResult:
    """Output of [`tmcmc`][sbi_tumor.tmcmc.tmcmc].

    Attributes:
        samples: Equally weighted posterior samples, ``(N, d)`` float64.
        log_likelihoods: ``log L`` of ``samples``, ``(N,)``.
        log_evidence: Estimate of ``log p(x) = log E_prior[L]``.
        betas: Tempering exponents, ``(num_stages + 1,)``, from 0 (prior) to 1 (posterior).
        acceptance_rates: Metropolis acceptance rate of each stage, ``(num_stages,)``, counting
            proposals outside the prior support as rejected.
        num_simulations: Number of likelihood evaluations, i.e. forward-model runs.
        num_stages: Number of tempering stages after the prior stage.
        wall_time: Seconds spent in [`tmcmc`][sbi_tumor.tmcmc.tmcmc].
    """

    samples: np.ndarray
    log_likelihoods: np.ndarray
    log_evidence: float
    betas: np.ndarray
    acceptance_rates: np.ndarray
    num_simulations: int
    num_stages: int
    wall_time: float

    def samples_tensor(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Samples as a torch tensor ``(N, d)`` (float32 by default, like sbi posteriors)."""
        return torch.as_tensor(self.samples, dtype=dtype)


def tmcmc(
    log_likelihood: LogLikelihood,
    prior: Distribution,
    num_samples: int = 1000,
    *,
    beta2: float = 0.04,
    target_cov: float = 1.0,
    max_stages: int = 100,
    extra_steps: int = 0,
    seed: Union[None, int, np.random.Generator] = None,
    progress: bool = False,
) -> TMCMCResult:
    """Sample ``p(theta | x) ~ prior(theta) L(theta)`` with Transitional MCMC.

    The target is tempered as ``prior * L**beta``. Each stage picks the increment of ``beta`` at
    which the importance weights ``L**dbeta`` have coefficient of variation ``target_cov``,
    accumulates ``log mean(weights)`` into the evidence, resamples the population
    multinomially, and moves every sample by ``1 + extra_steps`` Metropolis steps with Gaussian
    proposals of covariance ``beta2 * Cov_weights(theta)``.

    Args:
        log_likelihood: Batched ``log L``: ``(n, d)`` float64 array -> ``(n,)``. It receives all
            proposals of a step in one call (chunk inside it if the forward model needs to).
            ``NaN`` is treated as ``-inf`` (a failed simulation is rejected), with a warning.
        prior: Distribution with ``.sample`` and ``.log_prob`` (e.g. ``sbi.utils.BoxUniform``).
            Proposals outside ``prior.support`` are rejected without calling ``log_likelihood``.
        num_samples: Population size ``N``.
        beta2: Scale of the proposal covariance (Ching & Chen's ``beta**2``).
        target_cov: Target coefficient of variation of the weights; smaller means more stages.
        max_stages: Stop (with a warning) if ``beta`` has not reached 1 after this many stages.
        extra_steps: Metropolis steps per stage in addition to the first.
        seed: Seed or ``numpy.random.Generator``; fixes the whole run, including the prior
            draw (the global torch RNG is left untouched).
        progress: Show a tqdm bar of ``beta``.

    Returns:
        [`TMCMCResult`][sbi_tumor.tmcmc.TMCMCResult].
    """
    start = time.perf_counter()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    counter = _CountingLikelihood(log_likelihood)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**63)))
        theta = prior.sample((num_samples,)).detach().cpu().numpy().astype(np.float64)
    theta = theta.reshape(num_samples, -1)
    log_prior = prior_log_prob(prior, theta)
    log_like = counter(theta)

    betas, acceptance_rates = [0.0], []
    log_evidence = 0.0
    beta = 0.0
    bar = tqdm(total=1.0, desc="TMCMC", disable=not progress,
               bar_format="{l_bar}{bar}| beta={n:.3g} [{elapsed}{postfix}]")
    while beta < 1.0 and len(acceptance_rates) < max_stages:
        dbeta = tempering_increment(log_like, 1.0 - beta, target_cov)
        # Jump exactly to 1 when within rounding, so the last stage targets the posterior.
        beta = 1.0 if beta + dbeta >= 1.0 - 1e-12 else beta + dbeta
        log_w = dbeta * log_like
        log_w_sum = logsumexp(log_w)
        log_evidence += float(log_w_sum - math.log(num_samples))
        weights = np.exp(log_w - log_w_sum)

        mean = weights @ theta
        centred = theta - mean
        chol = _cholesky(beta2 * (centred.T * weights) @ centred)

        idx = rng.choice(num_samples, size=num_samples, p=weights)
        theta, log_prior, log_like = theta[idx], log_prior[idx], log_like[idx]

        accepted = 0
        for _ in range(1 + extra_steps):
            proposal = theta + rng.standard_normal(theta.shape) @ chol.T
            prop_log_prior = prior_log_prob(prior, proposal)
            inside = np.isfinite(prop_log_prior)
            prop_log_like = np.full(num_samples, -np.inf)
            if inside.any():
                prop_log_like[inside] = counter(proposal[inside])
            log_ratio = np.full(num_samples, -np.inf)
            log_ratio[inside] = (
                prop_log_prior[inside] - log_prior[inside]
                + beta * (prop_log_like[inside] - log_like[inside])
            )
            # log(u) < log_ratio; a NaN ratio (-inf - -inf) compares False, i.e. rejects.
            accept = np.log(rng.random(num_samples)) < log_ratio
            theta[accept] = proposal[accept]
            log_prior[accept] = prop_log_prior[accept]
            log_like[accept] = prop_log_like[accept]
            accepted += int(accept.sum())

        acceptance_rates.append(accepted / (num_samples * (1 + extra_steps)))
        betas.append(beta)
        bar.update(dbeta)
        bar.set_postfix(stage=len(acceptance_rates), acc=f"{acceptance_rates[-1]:.2f}")
    bar.close()

    if beta < 1.0:
        warnings.warn(
            f"TMCMC stopped at beta={beta:.3g} after max_stages={max_stages}; the samples are "
            "from a tempered posterior and log_evidence is incomplete.",
            stacklevel=2,
        )
    if counter.num_nan:
        warnings.warn(f"{counter.num_nan} likelihood evaluations returned NaN (rejected).", stacklevel=2)

    return TMCMCResult(
        samples=theta,
        log_likelihoods=log_like,
        log_evidence=log_evidence,
        betas=np.asarray(betas),
        acceptance_rates=np.asarray(acceptance_rates),
        num_simulations=counter.num_calls,
        num_stages=len(acceptance_rates),
        wall_time=time.perf_counter() - start,
    )


class _CountingLikelihood:
    """Calls the user likelihood on a batch, counts rows, returns float64 with NaN -> -inf."""

    def __init__(self, fn: LogLikelihood):
        self.fn = fn
        self.num_calls = 0
        self.num_nan = 0

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        out = self.fn(theta)
        if isinstance(out, Tensor):
            out = out.detach().cpu().numpy()
        out = np.asarray(out, dtype=np.float64).reshape(len(theta))
        self.num_calls += len(theta)
        nan = np.isnan(out)
        self.num_nan += int(nan.sum())
        return np.where(nan, -np.inf, out)


def prior_log_prob(prior: Distribution, theta: np.ndarray) -> np.ndarray:
    """``log prior(theta)``, ``(n,)`` float64, ``-inf`` outside the support."""
    t = torch.as_tensor(theta)
    try:
        inside = prior.support.check(t)
    except NotImplementedError:  # distributions without a declared support
        inside = torch.ones(len(t), dtype=torch.bool)
    inside = inside.reshape(len(t), -1).all(-1).cpu().numpy()
    out = np.full(len(theta), -np.inf)
    if inside.any():
        # log_prob is only asked about points in the support: many priors raise outside it.
        values = prior.log_prob(t[torch.from_numpy(inside)].to(_prior_dtype(prior)))
        out[inside] = values.detach().cpu().numpy().astype(np.float64)
    return out


def _prior_dtype(prior: Distribution) -> torch.dtype:
    mean = getattr(prior, "mean", None)
    return mean.dtype if isinstance(mean, Tensor) and mean.is_floating_point() else torch.float64


def tempering_increment(log_like: np.ndarray, max_increment: float, target_cov: float) -> float:
    """Largest ``dbeta <= max_increment`` with CoV of ``exp(dbeta * log_like)`` at most ``target_cov``.

    The CoV grows monotonically with ``dbeta`` (``d/dt log E[e^{2tX}] / E[e^{tX}]^2 =
    2 (E_{2t}[X] - E_t[X]) >= 0``), so a bracketing root finder is safe.
    """
    finite = np.isfinite(log_like)
    if not finite.any():
        raise RuntimeError("All log-likelihoods are -inf: no sample is compatible with the data.")
    # Shift by the maximum so exp never overflows; CoV is invariant to the shift. Samples with
    # L = 0 keep weight 0 (their count still enters the CoV through the zeros).
    shifted = log_like[finite] - log_like[finite].max()
    zeros = np.zeros(int((~finite).sum()))

    def excess(dbeta: float) -> float:
        w = np.concatenate([np.exp(dbeta * shifted), zeros])
        return w.std() / w.mean() - target_cov

    if excess(max_increment) <= 0:
        return max_increment
    return brentq(excess, 0.0, max_increment, xtol=1e-14, rtol=1e-10)


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor, adding diagonal jitter if the weighted covariance is degenerate."""
    jitter = 0.0
    scale = max(float(np.mean(np.diag(cov))), 1e-300)
    for _ in range(10):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter = scale * 1e-10 if jitter == 0 else jitter * 100
    raise np.linalg.LinAlgError("Proposal covariance is not positive definite, even with jitter.")
