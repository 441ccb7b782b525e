"""Tests of the Transitional MCMC baseline against analytic Gaussians and emcee."""

from __future__ import annotations

import emcee
import numpy as np
import pytest
import torch
from sbi.utils import BoxUniform

from gaussian_target import gaussian_log_likelihood

from sbi_tumor.tmcmc import TMCMCResult, tmcmc

MEAN_2D = np.array([1.0, -2.0])
COV_2D = np.array([[1.0, 0.5], [0.5, 2.0]])
# Box of mean +- 7 (>= 4.9 sd): the prior truncates < 1e-6 of the mass.
LOW_2D, HIGH_2D = MEAN_2D - 7.0, MEAN_2D + 7.0


def test_gaussian_moments_and_evidence():
    prior = BoxUniform(torch.tensor(LOW_2D), torch.tensor(HIGH_2D))
    result = tmcmc(gaussian_log_likelihood(MEAN_2D, COV_2D), prior, 2000, extra_steps=4, seed=0)
    assert isinstance(result, TMCMCResult)
    assert result.samples.shape == (2000, 2) and result.samples.dtype == np.float64
    np.testing.assert_allclose(result.samples.mean(0), MEAN_2D, atol=0.2)
    np.testing.assert_allclose(np.cov(result.samples.T), COV_2D, atol=0.3)
    # log Z = log of the Gaussian integral - log prior volume = log(2 pi sqrt(det C)) - log(14^2).
    log_z = np.log(2 * np.pi * np.sqrt(np.linalg.det(COV_2D))) - np.log(np.prod(HIGH_2D - LOW_2D))
    assert abs(result.log_evidence - log_z) < 0.15
    assert result.betas[0] == 0.0 and result.betas[-1] == 1.0
    assert np.all(np.diff(result.betas) > 0)
    assert len(result.acceptance_rates) == result.num_stages == len(result.betas) - 1
    assert np.all((result.acceptance_rates > 0.2) & (result.acceptance_rates <= 1))
    np.testing.assert_allclose(result.log_likelihoods, gaussian_log_likelihood(MEAN_2D, COV_2D)(result.samples))
    tensor = result.samples_tensor()
    assert tensor.dtype == torch.float32 and tensor.shape == (2000, 2)


def test_agrees_with_emcee_on_correlated_3d_gaussian():
    mean = np.array([0.5, -1.0, 2.0])
    std = np.array([0.3, 1.0, 0.6])
    corr = np.array([[1.0, 0.8, -0.3], [0.8, 1.0, -0.5], [-0.3, -0.5, 1.0]])
    cov = corr * np.outer(std, std)
    log_likelihood = gaussian_log_likelihood(mean, cov)
    low, high = mean - 6 * std, mean + 6 * std
    prior = BoxUniform(torch.tensor(low), torch.tensor(high))

    result = tmcmc(log_likelihood, prior, 2000, extra_steps=4, seed=1)

    def log_posterior(theta: np.ndarray) -> np.ndarray:
        inside = np.all((theta >= low) & (theta < high), axis=1)
        return np.where(inside, log_likelihood(theta), -np.inf)

    rng = np.random.default_rng(2)
    sampler = emcee.EnsembleSampler(32, 3, log_posterior, vectorize=True)
    sampler.random_state = np.random.RandomState(3).get_state()
    sampler.run_mcmc(mean + 0.1 * std * rng.standard_normal((32, 3)), 3000)
    reference = sampler.get_chain(discard=1000, flat=True)

    for samples in (result.samples, reference):
        np.testing.assert_allclose(samples.mean(0), mean, atol=0.15 * std.max())
    # Means agree to 0.15 posterior sd in every coordinate.
    np.testing.assert_array_less(np.abs(result.samples.mean(0) - reference.mean(0)) / std, 0.15)
    np.testing.assert_allclose(result.samples.std(0), reference.std(0), rtol=0.1)
    np.testing.assert_allclose(np.corrcoef(result.samples.T), np.corrcoef(reference.T), atol=0.1)


def test_bimodal_weights():
    # Equal mixture of N(-2, 0.3^2) and N(2, 0.3^2): TMCMC must populate both modes equally.
    def log_likelihood(theta: np.ndarray) -> np.ndarray:
        x = theta[:, 0]
        return np.logaddexp(-0.5 * ((x + 2) / 0.3) ** 2, -0.5 * ((x - 2) / 0.3) ** 2)

    prior = BoxUniform(torch.tensor([-5.0]), torch.tensor([5.0]))
    result = tmcmc(log_likelihood, prior, 2000, extra_steps=2, seed=0)
    right = (result.samples[:, 0] > 0).mean()
    assert 0.4 < right < 0.6
    np.testing.assert_allclose(np.abs(result.samples[:, 0]).mean(), 2.0, atol=0.05)
    # Z = 2 * sqrt(2 pi) 0.3 / 10.
    assert abs(result.log_evidence - np.log(2 * np.sqrt(2 * np.pi) * 0.3 / 10)) < 0.15


def test_reproducible_and_leaves_torch_rng_alone():
    prior = BoxUniform(torch.tensor(LOW_2D), torch.tensor(HIGH_2D))
    log_likelihood = gaussian_log_likelihood(MEAN_2D, COV_2D)
    torch.manual_seed(123)
    a = tmcmc(log_likelihood, prior, 300, seed=7)
    after = torch.rand(1)
    torch.manual_seed(123)
    b = tmcmc(log_likelihood, prior, 300, seed=7)
    assert torch.equal(after, torch.rand(1))
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.betas, b.betas)
    assert a.log_evidence == b.log_evidence and a.num_simulations == b.num_simulations
    c = tmcmc(log_likelihood, prior, 300, seed=8)
    assert not np.array_equal(a.samples, c.samples)


def test_counts_simulations_and_batches_calls():
    # A narrow box makes many proposals leave the support; those must not be simulated.
    calls: list[int] = []

    def log_likelihood(theta: np.ndarray) -> np.ndarray:
        calls.append(len(theta))
        assert np.all((theta >= 0) & (theta <= 1)), "called outside the prior support"
        return gaussian_log_likelihood(np.array([0.9, 0.1]), 0.2**2 * np.eye(2))(theta)

    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    result = tmcmc(log_likelihood, prior, 500, extra_steps=2, seed=0)
    assert result.num_simulations == sum(calls)
    # One batched call for the prior draw plus one per Metropolis step.
    assert len(calls) == 1 + 3 * result.num_stages and calls[0] == 500
    assert result.num_simulations < 500 * (1 + 3 * result.num_stages)
    assert np.all((result.samples >= 0) & (result.samples <= 1))


def test_torch_likelihood_nan_and_max_stages():
    # A torch-returning likelihood is accepted; NaN is rejected with a warning.
    def log_likelihood(theta: np.ndarray) -> torch.Tensor:
        out = torch.as_tensor(-0.5 * ((theta - 0.3) / 0.01) ** 2).sum(1)
        out[torch.as_tensor(theta[:, 0] > 0.9)] = float("nan")
        return out

    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    with pytest.warns(UserWarning, match="NaN"):
        result = tmcmc(log_likelihood, prior, 500, seed=0)
    np.testing.assert_allclose(result.samples.mean(0), [0.3, 0.3], atol=0.005)
    with pytest.warns(UserWarning) as record:
        short = tmcmc(log_likelihood, prior, 200, seed=0, max_stages=2)
    assert any("max_stages=2" in str(w.message) for w in record)
    assert short.num_stages == 2 and short.betas[-1] < 1
