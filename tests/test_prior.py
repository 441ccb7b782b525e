import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sbi.utils import BoxUniform
from sbi.utils.user_input_checks import process_prior

from sbi_tumor.config import PARAMETER_LABELS, PARAMETER_NAMES, PRESETS, PriorPreset

from sbi_tumor.prior import LogUniformBox, box_of, log_rates, log_rates_prior, make_prior, rates, support_box


def test_presets():
    human, paper = PRESETS["human"], PRESETS["paper"]
    assert human.low == (0.02, 0.002, 0.5, 0.05)
    assert human.high == (1.5, 0.2, 0.85, 0.5)
    assert human.truth is None and human.day is None
    assert paper.low == (0.2, 0.1, 0.5, 0.05)
    assert paper.high == (4.0, 1.2, 0.85, 0.5)
    assert paper.truth == (2.0, 0.6, 0.7, 0.25)
    assert (paper.day, paper.validation_day) == (9.0, 11.0)
    assert PARAMETER_NAMES == ("D", "rho", "u_T1", "u_T2")
    assert len(PARAMETER_LABELS) == 4 and "mm" in PARAMETER_LABELS[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        paper.day = 3.0  # frozen
    assert isinstance(paper, PriorPreset)


@pytest.mark.parametrize("preset", ["human", "paper"])
@pytest.mark.parametrize("log_uniform", [False, True])
def test_samples_in_bounds_and_ordered(preset, log_uniform):
    torch.manual_seed(0)
    prior = make_prior(preset, log_uniform=log_uniform)
    theta = prior.sample((5000,))
    low, high = torch.tensor(PRESETS[preset].low), torch.tensor(PRESETS[preset].high)
    assert theta.shape == (5000, 4)
    assert torch.all(theta >= low) and torch.all(theta <= high)
    assert torch.all(theta[:, 2] >= theta[:, 3])
    assert torch.isfinite(prior.log_prob(theta)).all()
    if PRESETS[preset].truth is not None:
        assert torch.isfinite(prior.log_prob(torch.tensor(PRESETS[preset].truth)))


def test_uniform_log_prob_is_minus_log_volume():
    prior = make_prior("paper")
    assert isinstance(prior, BoxUniform)
    volume = 3.8 * 1.1 * 0.35 * 0.45
    theta = torch.tensor([[2.0, 0.6, 0.7, 0.25], [0.3, 1.1, 0.84, 0.06]])
    torch.testing.assert_close(prior.log_prob(theta), torch.full((2,), -math.log(volume)))
    assert prior.log_prob(torch.tensor([5.0, 0.6, 0.7, 0.25])) == -math.inf


def test_log_uniform_marginal_of_log_d_is_uniform():
    torch.manual_seed(1)
    prior = make_prior("human", log_uniform=True)
    theta = prior.sample((4000,)).double().numpy()
    a, b = np.log(0.02), np.log(1.5)
    assert stats.kstest(np.log(theta[:, 0]), stats.uniform(a, b - a).cdf).pvalue > 0.01
    # The thresholds stay uniform on the linear scale.
    assert stats.kstest(theta[:, 2], stats.uniform(0.5, 0.35).cdf).pvalue > 0.01
    # On the linear scale D is far from uniform: median = sqrt(0.02 * 1.5) ~ 0.173.
    assert abs(np.median(theta[:, 0]) - math.sqrt(0.03)) < 0.02


def test_log_uniform_log_prob_matches_analytic_density():
    prior = make_prior("paper", log_uniform=True)
    theta = torch.tensor([[2.0, 0.6, 0.7, 0.25], [0.2, 1.2, 0.5, 0.5]])
    log_d, log_rho = math.log(4.0 / 0.2), math.log(1.2 / 0.1)
    expected = [
        -math.log(d * log_d) - math.log(r * log_rho) - math.log(0.35 * 0.45)
        for d, r in [(2.0, 0.6), (0.2, 1.2)]
    ]
    torch.testing.assert_close(prior.log_prob(theta), torch.tensor(expected))
    assert prior.log_prob(torch.tensor([0.19, 0.6, 0.7, 0.25])) == -math.inf

    # The (D, rho) marginal integrates to one: midpoint rule in log coordinates.
    n = 400
    u = (torch.arange(n) + 0.5) / n
    d = torch.exp(math.log(0.2) + u * log_d)
    r = torch.exp(math.log(0.1) + u * log_rho)
    grid = torch.stack(torch.meshgrid(d, r, indexing="ij"), -1).reshape(-1, 2)
    theta = torch.cat([grid, torch.tensor([0.7, 0.25]).expand(len(grid), 2)], -1)
    # dx = x d(log x), so weight each point by D * rho * cell size in log space.
    weights = grid.prod(-1) * (log_d / n) * (log_rho / n) * (0.35 * 0.45)
    total = (prior.log_prob(theta).exp() * weights).sum()
    assert abs(total.item() - 1.0) < 1e-4


def test_log_uniform_moments_match_samples():
    torch.manual_seed(2)
    prior = make_prior("paper", log_uniform=True)
    theta = prior.sample((200_000,))
    torch.testing.assert_close(theta.mean(0), prior.mean, rtol=1e-2, atol=0)
    torch.testing.assert_close(theta.std(0), prior.stddev, rtol=1e-2, atol=0)


def test_process_prior_accepts_both():
    for log_uniform in (False, True):
        prior, dim, numpy_prior = process_prior(make_prior("human", log_uniform=log_uniform))
        assert dim == 4 and not numpy_prior
    log_prior = make_prior("human", log_uniform=True)
    assert isinstance(log_prior, LogUniformBox)
    assert log_prior.support.check(torch.tensor([0.1, 0.01, 0.6, 0.2]))
    assert not log_prior.support.check(torch.tensor([0.01, 0.01, 0.6, 0.2]))


def test_bounds_override():
    prior = make_prior("human", bounds=([0.1, 0.01, 0.6, 0.1], [1.0, 0.1, 0.9, 0.6]))
    torch.testing.assert_close(prior.log_prob(torch.tensor([0.5, 0.05, 0.7, 0.3])),
                               torch.tensor(-math.log(0.9 * 0.09 * 0.3 * 0.5)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "rat"}, r"Unknown prior preset 'rat'.*\['human', 'paper'\]"),
        ({"bounds": ([1.0, 0.01, 0.6, 0.1], [0.5, 0.1, 0.9, 0.5])}, "D .*must be below"),
        ({"bounds": ([-0.1, 0.01, 0.6, 0.1], [1.0, 0.1, 0.9, 0.5])}, "D must be >= 0"),
        ({"bounds": ([0.1, -0.01, 0.6, 0.1], [1.0, 0.1, 0.9, 0.5])}, "rho must be >= 0"),
        (
            {"bounds": ([0.0, 0.01, 0.6, 0.1], [1.0, 0.1, 0.9, 0.5]), "log_uniform": True},
            "> 0 for a log-uniform",
        ),
        ({"bounds": ([0.1, 0.01, 0.4, 0.1], [1.0, 0.1, 0.9, 0.5])}, "allows u_T2 > u_T1"),
        ({"bounds": ([0.1, 0.01, 0.6, 0.1], [1.0, 0.1, 1.2, 0.5])}, r"in \[0, 1\]"),
        ({"bounds": ([0.1, 0.01, 0.6], [1.0, 0.1, 0.9])}, "4 entries"),
    ],
)
def test_invalid_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_prior(**kwargs)


def test_log_rates_prior_of_a_box_uniform():
    prior = make_prior("paper")
    phi_prior = log_rates_prior(prior)
    torch.manual_seed(0)
    phi = phi_prior.sample((200_000,))
    # Exact moments of log x for uniform x match the samples' (sbi z-scores theta with them).
    torch.testing.assert_close(phi_prior.mean, phi.mean(0), atol=5e-3, rtol=0)
    torch.testing.assert_close(phi_prior.stddev, phi.std(0), atol=5e-3, rtol=0)
    # Change of variables, and -inf outside the box.
    theta = torch.tensor([[2.0, 0.6, 0.7, 0.25]])
    torch.testing.assert_close(phi_prior.log_prob(log_rates(theta)),
                               prior.log_prob(theta) + math.log(2.0) + math.log(0.6))
    assert phi_prior.log_prob(torch.tensor([[5.0, 0.0, 0.7, 0.25]])).item() == -math.inf
    torch.testing.assert_close(rates(log_rates(theta)), theta)
    # The lower corner keeps the theta prior's density there, though exp(log a) rounds below a.
    a = torch.tensor([[0.2, 0.1, 0.5, 0.05]])
    torch.testing.assert_close(phi_prior.log_prob(phi_prior.low[None]),
                               prior.log_prob(a) + math.log(0.2) + math.log(0.1))
    # Its density integrates to one over the box.
    box = phi_prior.support.base_constraint
    u = box.lower_bound + torch.rand(400_000, 4) * (box.upper_bound - box.lower_bound)
    volume = (box.upper_bound - box.lower_bound).prod()
    assert (phi_prior.log_prob(u).exp().mean() * volume).item() == pytest.approx(1.0, abs=0.01)


def test_log_rates_prior_of_a_log_uniform_box_is_box_uniform():
    phi_prior = log_rates_prior(make_prior("paper", log_uniform=True))
    assert isinstance(phi_prior, BoxUniform)
    torch.testing.assert_close(phi_prior.support.base_constraint.lower_bound,
                               torch.tensor([math.log(0.2), math.log(0.1), 0.5, 0.05]))
    with pytest.raises(ValueError, match="needs a make_prior"):
        log_rates_prior(torch.distributions.Normal(torch.zeros(4), 1.0))


def test_box_of():
    box = box_of(make_prior("paper"), off="x=0")
    assert box.lower_bound.tolist() == pytest.approx([0.2, 0.1, 0.5, 0.05])
    assert box.upper_bound.tolist() == pytest.approx([4.0, 1.2, 0.85, 0.5])
    gaussian = torch.distributions.MultivariateNormal(torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="needs a prior on a box.*set x=0"):
        box_of(gaussian, off="x=0")


def test_support_box_reads_every_box_prior_and_nothing_else():
    for prior in (make_prior("human"), make_prior("human", log_uniform=True), log_rates_prior(make_prior("paper"))):
        box = support_box(prior.support)
        assert box.lower_bound.shape == box.upper_bound.shape == (4,)
        assert torch.all(prior.sample((200,)) >= box.lower_bound) and torch.all(prior.sample((200,)) <= box.upper_bound)
    assert support_box(make_prior("human", log_uniform=True).support).upper_bound.tolist() == pytest.approx(
        [1.5, 0.2, 0.85, 0.5])
    assert support_box(torch.distributions.MultivariateNormal(torch.zeros(4), torch.eye(4)).support) is None
