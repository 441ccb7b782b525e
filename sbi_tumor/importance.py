"""A posterior refined with an explicit likelihood: adaptive importance sampling from NPE's samples.

After about 1,000 solves NPE's posterior is wider than the likelihood's and shifted along the
ridge of constant front speed (docs, Benchmarks, "Sequential NPE against TMCMC"). Where the
likelihood is known, as the voxelwise Bernoulli likelihood of Lipkova et al. (2019) that TMCMC
samples ([`sbi_tumor.likelihood`][sbi_tumor.likelihood]), a few hundred more solves correct it:
NPE's samples set a first proposal, and each further iteration proposes from the importance-weighted
estimate of the last (population Monte Carlo, Cappé et al. 2004). Every iteration's draws are
weighted against the mixture of all proposals so far (deterministic-mixture weights, Owen and Zhou
2000), so no solve is wasted; the likelihood's posterior is then summarised by the Gaussian with
the weighted mean and covariance. The weights are the check of NPE's posterior: the
effective sample size (ESS) is the number of equally weighted draws they are worth, and an ESS
near the number of solves means NPE's posterior was already the likelihood's.

The Gaussian summary assumes a unimodal posterior. It is what makes a few hundred solves enough:
resampling the weighted draws themselves gives as many distinct parameter sets as the ESS (106-155
of 500 in the benchmark's 500 + 5 x 100 solves), and a classifier tells such a set apart from a
posterior at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats
from torch.distributions import Distribution

from .tmcmc import prior_log_prob, tempering_increment

__all__ = ["Refinement", "refine"]

#: Below this ESS the weighted covariance rests on too few draws: the next proposal's is taken from
#: the weights tempered up to it, and a final ESS below it is warned about.
MIN_EFFECTIVE_SAMPLES = 10
#: A proposal or the Gaussian summary that puts less than this share of its draws inside the
#: prior's support is refused rather than drawn from for ever.
MIN_INSIDE_FRACTION = 1e-3


@dataclass(frozen=True)
class Refinement:
    """Result of [`refine`][sbi_tumor.importance.refine].

    Attributes:
        samples: ``(num_samples, d)`` draws from the Gaussian with the weighted mean and
            covariance, restricted to the prior's support.
        draws: ``(m, d)`` every parameter set solved, all iterations in order.
        log_likelihoods: ``(m,)`` the likelihood's log at ``draws``.
        log_weights: ``(m,)`` normalised log importance weights of ``draws`` (they sum to one in
            probability space).
        mean: ``(d,)`` weighted mean.
        covariance: ``(d, d)`` weighted covariance.
        effective_sample_sizes: ESS of all draws so far, after each iteration.
        num_simulations: solves (likelihood evaluations), ``m``.
    """

    samples: np.ndarray
    draws: np.ndarray
    log_likelihoods: np.ndarray
    log_weights: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    effective_sample_sizes: tuple[float, ...]
    num_simulations: int

    def map(self, prior: Distribution) -> np.ndarray:
        """The solved parameter set of highest posterior density, ``(d,)``."""
        log_posterior = self.log_likelihoods + prior_log_prob(prior, self.draws)
        return self.draws[int(np.argmax(np.where(np.isfinite(log_posterior), log_posterior, -np.inf)))]


def refine(samples, log_likelihood: Callable[[np.ndarray], np.ndarray], prior: Distribution,
           solves: Sequence[int] = (100,) * 5, inflation: float = 1.5, df: float = 5.0,
           num_samples: int = 1000, seed: int = 0) -> Refinement:
    """Refine posterior ``samples`` with ``log_likelihood`` by adaptive importance sampling.

    Args:
        samples: ``(n, d)`` draws of the posterior to refine (NPE's), which set the first proposal.
        log_likelihood: ``theta (k, d) -> (k,)`` float64, one forward solve per row (for the
            benchmark: [`MatchedProblem.log_likelihood`][sbi_tumor.benchmark.task.MatchedProblem.log_likelihood]).
        prior: the prior; its ``log_prob`` is ``-inf`` outside its support.
        solves: likelihood evaluations per iteration; their sum is the cost.
        inflation: each proposal is a multivariate Student t whose scale matrix is
            ``inflation**2`` times the current covariance estimate, so that its tails cover the
            target where that estimate is too narrow.
        df: degrees of freedom of the t proposals (heavier tails than a Gaussian's keep the
            weights bounded).
        num_samples: draws of the Gaussian summary returned in ``samples``.
        seed: seed of the proposals' and the summary's draws.

    Returns:
        A [`Refinement`][sbi_tumor.importance.Refinement]; a warning when its final ESS is below
        ``MIN_EFFECTIVE_SAMPLES``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or len(samples) <= samples.shape[1]:
        raise ValueError(f"samples must be (n, d) with n > d, got shape {samples.shape}.")
    if not solves or min(solves) < 1:
        raise ValueError(f"solves must be positive counts per iteration, got {list(solves)}.")
    if not (inflation > 0 and df > 2):
        raise ValueError(f"inflation must be positive and df above 2, got {inflation} and {df}.")
    mean, covariance = samples.mean(0), np.atleast_2d(np.cov(samples.T))
    eigenvalues = np.linalg.eigvalsh(covariance) if np.isfinite(covariance).all() else np.array([np.nan])
    if not eigenvalues[0] > 1e-12 * eigenvalues[-1]:
        raise ValueError("The samples to refine do not span their d dimensions (a parameter is constant, or "
                         "two are collinear, or a value is not finite): no proposal can be built from them. "
                         "Pass posterior draws, not repeated or projected ones.")
    rng = np.random.default_rng(seed)
    proposals: list[tuple[Any, float, int]] = []  # (frozen scipy t, share inside the support, draws)
    draws, log_likelihoods, ess = [], [], []
    for n in solves:
        proposal = stats.multivariate_t(mean, inflation ** 2 * covariance, df=df, seed=rng)
        theta, inside = _draw_inside(proposal.rvs, prior, n, "proposal")
        proposals.append((proposal, inside, n))
        draws.append(theta)
        log_likelihoods.append(np.asarray(log_likelihood(theta), dtype=np.float64))
        theta_all, log_weights = _mixture_weights(draws, log_likelihoods, proposals, prior)
        ess.append(_ess(log_weights))
        # The next proposal: with a few draws carrying all the weight, their own covariance would
        # shrink it onto them, and the previous one would never shrink at all.
        mean, covariance = _moments(theta_all, log_weights, covariance, min_ess=MIN_EFFECTIVE_SAMPLES)
    mean, covariance = _moments(theta_all, log_weights, covariance)
    if ess[-1] < MIN_EFFECTIVE_SAMPLES:
        warnings.warn(f"The importance weights are worth {ess[-1]:.1f} draws of {sum(solves)}: the refined "
                      "mean and covariance rest on few parameter sets. Give refine() more solves, or a "
                      "posterior closer to the likelihood's.", stacklevel=2)
    gaussian = stats.multivariate_normal(mean, covariance, seed=rng)
    summary, _ = _draw_inside(gaussian.rvs, prior, num_samples, "Gaussian summary")
    return Refinement(samples=summary, draws=theta_all, log_likelihoods=np.concatenate(log_likelihoods),
                      log_weights=log_weights, mean=mean,
                      covariance=covariance, effective_sample_sizes=tuple(ess), num_simulations=len(theta_all))


def _ess(log_weights: np.ndarray) -> float:
    """Effective sample size of normalised log weights."""
    return float(1.0 / np.sum(np.exp(2 * log_weights)))


def _moments(theta: np.ndarray, log_weights: np.ndarray, previous: np.ndarray,
             min_ess: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and covariance, from the weights tempered just enough (raised to the largest
    power ``beta <= 1``) that they are worth at least ``min_ess`` draws; the ``previous`` covariance
    where they rest on fewer than ``d + 1``, too few to span the ``d`` dimensions."""
    n = len(log_weights)
    if _ess(log_weights) < min_ess:
        # ESS = n / (1 + CoV^2): the weights' CoV at most sqrt(n / min_ess - 1), found as TMCMC
        # finds its next temperature; with too few finite weights, all of them count alike.
        finite = np.isfinite(log_weights)
        beta = (tempering_increment(log_weights, 1.0, np.sqrt(n / min_ess - 1))
                if finite.sum() > min_ess else 0.0)
        log_weights = _normalised(np.where(finite, beta * log_weights, -np.inf))
    weights = np.exp(log_weights)
    mean = weights @ theta
    centred = theta - mean
    covariance = (centred.T * weights) @ centred
    eigenvalues = np.linalg.eigvalsh(covariance)
    spans = _ess(log_weights) >= theta.shape[1] + 1 and eigenvalues[0] > 1e-10 * eigenvalues[-1]
    return mean, (covariance if spans else previous)


def _normalised(log_weights: np.ndarray) -> np.ndarray:
    return log_weights - np.logaddexp.reduce(log_weights)


def _draw_inside(draw: Callable, prior: Distribution, n: int, what: str) -> tuple[np.ndarray, float]:
    """``n`` draws of ``draw(size)`` inside the prior's support, and the share of draws inside
    (the normalising constant of the proposal restricted to the support)."""
    kept, total, accepted = [], 0, 0
    while accepted < n:
        batch = np.atleast_2d(draw(size=4 * n))
        ok = np.isfinite(prior_log_prob(prior, batch))
        total, accepted = total + len(batch), accepted + int(ok.sum())
        kept.append(batch[ok])
        if accepted < n and accepted < MIN_INSIDE_FRACTION * total:
            raise ValueError(f"The {what} puts {accepted / total:.1e} of its draws inside the prior's support: "
                             "the samples to refine do not lie in the prior.")
    return np.concatenate(kept)[:n], accepted / total


def _mixture_weights(draws, log_likelihoods, proposals, prior) -> tuple[np.ndarray, np.ndarray]:
    """All draws so far and their normalised log weights against the mixture of all proposals
    (each restricted to the prior's support), in proportion to the draws each contributed."""
    theta = np.concatenate(draws)
    total = sum(n for _, _, n in proposals)
    log_mixture = np.logaddexp.reduce(
        [np.log(n / total) + p.logpdf(theta) - np.log(inside) for p, inside, n in proposals], axis=0)
    log_weights = np.concatenate(log_likelihoods) + prior_log_prob(prior, theta) - log_mixture
    if not np.isfinite(log_weights).any():
        raise ValueError("No proposed parameter set has a finite likelihood.")
    log_weights = np.where(np.isfinite(log_weights), log_weights, -np.inf)
    return theta, _normalised(log_weights)
