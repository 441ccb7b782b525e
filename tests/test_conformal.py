import math

import pytest
import torch
from sbi.utils import BoxUniform

from sbi_tumor.conformal import ConformalPosterior, conformal_scales, interval_scores, unbounded_transform

#: A box so wide that its logit is linear to 1e-3 over the toy's range: scales in theta and z agree.
WIDE = BoxUniform(torch.full((2,), -200.0), torch.full((2,), 200.0))


class ToyPosterior:
    """``N(x / 2, (width / 2) I)``: the exact posterior of theta ~ N(0, I), x ~ N(theta, I) at
    ``width = 1``, over-confident below it; sbi's sampling signatures."""

    def __init__(self, width: float, box: BoxUniform | None = None):
        self.sd, self.box = math.sqrt(width / 2), box
        self.default_x = torch.zeros(1, 2)

    def set_default_x(self, x):
        self.default_x = x
        return self

    def sample(self, shape, x=None, show_progress_bars=True, reject_outside_prior=True):
        x = self.default_x if x is None else x
        n = torch.Size(shape).numel()
        draws = x.reshape(2) / 2 + self.sd * torch.randn(n * 200 if self.box else n, 2)
        if self.box is None or not reject_outside_prior:
            return draws[:n].reshape(*shape, 2)
        inside = draws[self.box.support.check(draws)]
        assert len(inside) >= n, "rejection sampling would not end"  # as sbi's, at an acceptance near 0
        return inside[:n].reshape(*shape, 2)

    def sample_batched(self, shape, x, show_progress_bars=True):
        return x / 2 + self.sd * torch.randn(*shape, *x.shape)

    def log_prob(self, theta, x=None):
        x = self.default_x if x is None else x
        return torch.distributions.Normal(x.reshape(2) / 2, self.sd).log_prob(theta).sum(-1)


def pairs(n, seed):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, 2, generator=g)
    return theta, theta + torch.randn(n, 2, generator=g)


def inside_90(posterior, theta, x):
    draws = posterior.sample_batched((2000,), x=x)
    lo, hi = torch.quantile(draws, torch.tensor([0.05, 0.95]), dim=0)
    return ((theta >= lo) & (theta <= hi)).float().mean(0)


def test_scores_measure_how_far_the_interval_must_stretch():
    samples = torch.linspace(-1, 1, 2001)[:, None, None].expand(2001, 3, 1)  # median 0, 90% ends -0.9, 0.9
    truth = torch.tensor([[0.45], [-1.8], [0.0]])
    assert interval_scores(samples, truth)[:, 0].tolist() == pytest.approx([0.5, 2.0, 0.0], abs=1e-3)


def test_an_over_confident_posterior_is_widened_until_its_intervals_cover():
    torch.manual_seed(0)
    narrow = ToyPosterior(width=0.25)  # half the true posterior's standard deviation
    theta, x = pairs(400, seed=1)
    scales = conformal_scales(narrow, theta, x, unbounded_transform(WIDE))
    assert scales.tolist() == pytest.approx([2.0, 2.0], abs=0.25)  # measured 1.94, 2.05
    test_theta, test_x = pairs(2000, seed=2)
    before = inside_90(narrow, test_theta, test_x)
    after = inside_90(ConformalPosterior(narrow, scales, unbounded_transform(WIDE)), test_theta, test_x)
    assert (before < 0.65).all()  # 2 * Phi(1.645 / 2) - 1 = 0.59
    assert ((after > 0.86) & (after < 0.95)).all()


def test_a_calibrated_posterior_keeps_its_width():
    torch.manual_seed(0)
    scales = conformal_scales(ToyPosterior(width=1.0), *pairs(400, seed=1), unbounded_transform(WIDE))
    assert scales.tolist() == pytest.approx([1.0, 1.0], abs=0.12)


class BetaPosterior:
    """Beta(2, 5) on [0, 1] in both coordinates: far from linear in the logit."""

    dist = torch.distributions.Independent(torch.distributions.Beta(torch.tensor([2.0, 2.0]),
                                                                    torch.tensor([5.0, 5.0])), 1)
    default_x = torch.zeros(1)

    def sample(self, shape, x=None, show_progress_bars=True):
        return self.dist.sample(shape)

    def log_prob(self, theta, x=None):
        return self.dist.log_prob(theta)


def test_the_widened_density_is_normalised_and_is_the_density_of_its_samples():
    torch.manual_seed(0)
    box = BoxUniform(torch.zeros(2), torch.ones(2))
    widened = ConformalPosterior(BetaPosterior(), torch.tensor([1.8, 0.6]), unbounded_transform(box))
    grid = (torch.arange(400) + 0.5) / 400
    theta = torch.cartesian_prod(grid, grid)
    density = widened.log_prob(theta).double().exp()
    assert float(density.sum() / 400**2) == pytest.approx(1.0, abs=2e-3)
    draws = widened.sample((50_000,))
    assert ((draws > 0) & (draws < 1)).all()  # scaled in the logit: inside the box
    mean = (theta.double() * density[:, None]).sum(0) / density.sum()
    assert draws.double().mean(0).tolist() == pytest.approx(mean.tolist(), abs=3e-3)
    assert draws[:, 0].std() > 1.4 * BetaPosterior.dist.sample((50_000,))[:, 0].std()  # wider
    assert draws[:, 1].std() < 0.75 * BetaPosterior.dist.sample((50_000,))[:, 1].std()  # narrower


def test_pairs_whose_posterior_lies_outside_the_prior_count_as_not_covered():
    torch.manual_seed(0)
    box = BoxUniform(torch.full((2,), -3.0), torch.full((2,), 3.0))
    theta, x = pairs(200, seed=1)
    x[:10] = 40.0  # the posterior N(20, .) of these lies outside the box: sbi's rejection would not end
    exact = conformal_scales(ToyPosterior(width=1.0, box=box), theta, x, unbounded_transform(box))
    assert torch.isfinite(exact).all()
    x[:30] = 40.0  # more than 10%: no scale covers 90%
    with pytest.raises(RuntimeError, match="less than 1% of its mass inside the prior"):
        conformal_scales(ToyPosterior(width=1.0, box=box), theta, x, unbounded_transform(box))


def test_the_widened_posterior_follows_its_observation_and_has_no_mass_outside_the_box():
    torch.manual_seed(0)
    box = BoxUniform(torch.full((2,), -3.0), torch.full((2,), 3.0))
    widened = ConformalPosterior(ToyPosterior(width=0.25), torch.tensor([2.0, 2.0]), unbounded_transform(box))
    for x in ([[0.0, 0.0]], [[2.0, -2.0]], [[0.0, 0.0]]):  # the centre moves with the default x, and back
        widened.set_default_x(torch.tensor(x))
        assert widened.sample((4000,)).median(0).values.tolist() == pytest.approx([v / 2 for v in x[0]], abs=0.05)
    assert widened.log_prob(torch.tensor([[3.5, 0.0], [0.0, 0.0]]))[0] == -math.inf
    few = widened.sample_batched((3,), x=torch.tensor([[2.0, -2.0]]))  # too few draws for their own median
    assert few.shape == (3, 1, 2) and (few[:, 0] - torch.tensor([1.0, -1.0])).abs().max() < 2.5


def test_a_prior_without_a_box_is_refused():
    with pytest.raises(ValueError, match="needs a prior on a box.*calibration_solves=0"):
        unbounded_transform(torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)))
