"""Adaptive importance sampling against a Gaussian posterior known in closed form."""

import numpy as np
import pytest
import torch
from sbi.utils import BoxUniform

from gaussian_target import gaussian_log_likelihood

from sbi_tumor.importance import MIN_EFFECTIVE_SAMPLES, refine

PRIOR = BoxUniform(torch.full((2,), -10.0), torch.full((2,), 10.0))  # wide: the posterior is the likelihood
MEAN = np.array([1.0, 2.0])
COV = np.array([[0.04, 0.03], [0.03, 0.09]])  # correlated, as D and rho along the ridge
SD = np.sqrt(np.diag(COV))

log_likelihood = gaussian_log_likelihood(MEAN, COV)


def npe_like(seed: int, offset=(0.3, -0.3), widen: float = 2.0, n: int = 1000) -> np.ndarray:
    """Samples as NPE leaves them: twice as wide and 1-1.5 standard deviations off."""
    return np.random.default_rng(seed).multivariate_normal(MEAN + offset, widen ** 2 * COV, n)


def test_refine_recovers_the_likelihoods_posterior_from_wide_shifted_samples():
    start = npe_like(0)
    assert np.abs((start.mean(0) - MEAN) / SD).max() > 1.0  # the refinement has work to do
    result = refine(start, log_likelihood, PRIOR, solves=(125, 125), seed=0)
    assert result.num_simulations == 250 and result.draws.shape == (250, 2)
    assert np.abs((result.mean - MEAN) / SD).max() < 0.3
    assert np.diag(result.covariance) / np.diag(COV) == pytest.approx([1.0, 1.0], abs=0.3)
    correlation = result.covariance[0, 1] / np.sqrt(result.covariance[0, 0] * result.covariance[1, 1])
    assert correlation == pytest.approx(0.5, abs=0.15)
    # the second proposal, from the first's weights, is closer: the ESS grows by more than its draws
    first, final = result.effective_sample_sizes
    assert final > 2 * first and final > 50
    assert np.exp(result.log_weights).sum() == pytest.approx(1.0)
    assert result.samples.shape == (1000, 2)
    assert np.abs((result.samples.mean(0) - MEAN) / SD).max() < 0.35


def test_map_is_the_solved_draw_of_highest_posterior_density_and_skips_failed_solves():
    def failing_at_the_best(theta):
        values = log_likelihood(theta)
        values[np.argmax(values)] = np.nan  # a failed solve must not become the MAP
        return values

    result = refine(npe_like(6), failing_at_the_best, PRIOR, solves=(200,), seed=0)
    best = result.map(PRIOR)
    index = int(np.flatnonzero((result.draws == best).all(1))[0])
    finite = np.isfinite(result.log_likelihoods)
    assert not finite.all() and finite[index]
    assert result.log_likelihoods[index] == np.max(result.log_likelihoods[finite])


def test_refine_is_reproducible_for_a_seed():
    a = refine(npe_like(1), log_likelihood, PRIOR, seed=3)
    b = refine(npe_like(1), log_likelihood, PRIOR, seed=3)
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.log_weights, b.log_weights)
    assert not np.array_equal(a.samples, refine(npe_like(1), log_likelihood, PRIOR, seed=4).samples)


def test_refine_keeps_draws_inside_the_prior():
    prior = BoxUniform(torch.tensor([0.9, 1.7]), torch.tensor([1.5, 2.5]))  # cuts into the posterior
    result = refine(npe_like(2), log_likelihood, prior, seed=0)
    for theta in (result.draws, result.samples):
        assert torch.isfinite(prior.log_prob(torch.as_tensor(theta, dtype=torch.float32))).all()


def test_refine_warns_when_the_weights_rest_on_few_draws():
    far = npe_like(3, offset=(1.2, -1.5), widen=0.5)  # narrow and 6 standard deviations off
    with pytest.warns(UserWarning, match="worth"):
        result = refine(far, log_likelihood, PRIOR, solves=(20,), seed=0)
    assert result.effective_sample_sizes[-1] < MIN_EFFECTIVE_SAMPLES


def test_refine_refuses_samples_outside_the_prior():
    with pytest.raises(ValueError, match="inside the prior"):
        refine(npe_like(4) + 50.0, log_likelihood, PRIOR, seed=0)
    with pytest.raises(ValueError, match="solves"):
        refine(npe_like(4), log_likelihood, PRIOR, solves=(0,))


def test_refine_refuses_degenerate_samples_before_any_solve():
    calls = []

    def counted(theta):
        calls.append(len(theta))
        return log_likelihood(theta)

    constant = npe_like(5)
    constant[:, 1] = 2.0  # one parameter fixed: the covariance is singular
    collinear = npe_like(5)
    collinear[:, 1] = 3 * collinear[:, 0]
    for samples in (constant, collinear):
        with pytest.raises(ValueError, match="do not span"):
            refine(samples, counted, PRIOR)
    assert calls == []


# A 4-D ridge as NPE's posteriors after 500 solves leave it: three times as wide and two standard
# deviations off, so that the first 100 draws are worth one or two.
RIDGE_MEAN = np.array([1.0, 2.0, 0.5, -1.0])
RIDGE_SD = np.array([0.2, 0.3, 0.1, 0.2])
_corr = np.eye(4)
_corr[0, 1] = _corr[1, 0] = 0.9
_corr[0, 2] = _corr[2, 0] = -0.8
_corr[1, 2] = _corr[2, 1] = -0.7
RIDGE_COV = _corr * np.outer(RIDGE_SD, RIDGE_SD)
WIDE_PRIOR = BoxUniform(torch.full((4,), -20.0), torch.full((4,), 20.0))
ridge_log_likelihood = gaussian_log_likelihood(RIDGE_MEAN, RIDGE_COV)


def refine_far_starts() -> list:
    results = []
    for seed in range(6):
        start = np.random.default_rng(seed).multivariate_normal(
            RIDGE_MEAN + 2 * RIDGE_SD * np.array([1, -1, 1, 0]), 9 * RIDGE_COV, 1000)
        results.append(refine(start, ridge_log_likelihood, WIDE_PRIOR, solves=(100,) * 5, seed=seed))
    return results


@pytest.mark.filterwarnings("ignore:The importance weights")
def test_refine_converges_from_far_starts_on_every_seed():
    # Over seeds 0-39 the worst mean offset was 0.32 sd, variance error 0.36 and final ESS 27; the
    # limits leave room for another random stream. Without the tempered update, every 6 seeds of
    # the 40 had one with a variance off by more than 8 times (next test).
    for result in refine_far_starts():
        assert result.effective_sample_sizes[0] < 3  # the first proposal is as far as NPE's
        assert np.abs((result.mean - RIDGE_MEAN) / RIDGE_SD).max() < 0.45
        assert np.all(np.abs(np.diag(result.covariance) / np.diag(RIDGE_COV) - 1) < 0.5)
        assert result.effective_sample_sizes[-1] > 20


@pytest.mark.filterwarnings("ignore:The importance weights")
def test_without_the_tempered_update_far_starts_stall(monkeypatch):
    """The covariance of a few heavy draws is kept wide or collapses: some seeds never converge."""
    import sbi_tumor.importance as importance

    monkeypatch.setattr(importance, "MIN_EFFECTIVE_SAMPLES", 0)
    worst = max(np.abs(np.diag(r.covariance) / np.diag(RIDGE_COV) - 1).max() for r in refine_far_starts())
    assert worst > 2
