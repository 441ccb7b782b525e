"""Calibration checks: a calibrated posterior passes, an over-confident one is flagged."""

import numpy as np
import torch

from sbi_tumor.diagnostics import calibrate, coverage_from_ranks, held_out_pairs


class GaussianPosterior:
    """The exact posterior of theta ~ N(0, I), x = theta + N(0, s^2 I), its std scaled by ``scale``
    (1: calibrated, < 1: over-confident); sbi's sampling signatures."""

    def __init__(self, noise: float, scale: float = 1.0):
        self.shrink = 1 / (1 + noise**2)
        self.std = scale * (noise**2 / (1 + noise**2)) ** 0.5

    def sample_batched(self, shape, x, show_progress_bars=False):
        mean = self.shrink * torch.as_tensor(x)
        return mean + self.std * torch.randn(*shape, *mean.shape)

    def sample(self, shape, x=None, show_progress_bars=False):
        return self.sample_batched(shape, x.reshape(1, -1))[:, 0]


def pairs(n=300, d=2, noise=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, d, generator=g)
    return theta, theta + noise * torch.randn(n, d, generator=g)


def test_a_calibrated_posterior_passes():
    theta, x = pairs()
    result = calibrate(GaussianPosterior(0.5), theta, x, num_posterior_samples=200, names=("a", "b"))
    assert result.passed, result.table()
    assert all(0.85 <= c <= 0.95 for c in result.coverage_90)
    assert all(0.4 <= c <= 0.6 for c in result.coverage_50)
    assert abs(result.tarp_atc) < 0.03


def test_an_over_confident_posterior_is_flagged_with_its_direction():
    theta, x = pairs()
    result = calibrate(GaussianPosterior(0.5, scale=0.4), theta, x, num_posterior_samples=200, names=("a", "b"))
    assert not result.passed
    verdicts = result.verdicts()
    assert all(not v["sbc_passed"] and not v["coverage_90_passed"] for v in verdicts.values())
    assert all(v["direction"].startswith("over-confident") for v in verdicts.values())
    assert max(result.coverage_90) < 0.6  # a 90% interval 0.4 times too narrow covers about 45%
    # TARP's area to curve is negative for over-confidence (-0.09; calibrated: -0.008). Its KS
    # test has little power with the default 30 credibility bins (p = 0.15 here), which is why
    # the per-parameter SBC and coverage checks stand beside it.
    assert result.tarp_atc < -0.05
    assert "miss: over-confident" in result.table()
    wide = calibrate(GaussianPosterior(0.5, scale=2.5), theta, x, num_posterior_samples=200, names=("a", "b"))
    assert all(v["direction"].startswith("under-confident") for v in wide.verdicts().values())
    assert wide.tarp_atc > 0.05


def test_sbc_calibration_checks_ranks_of_separate_posteriors():
    """Ranks of one run per truth (a sequential sweep): SBC and coverage, no TARP."""
    from sbi_tumor.diagnostics import sbc_calibration

    rng = np.random.default_rng(0)
    theta = torch.tensor(rng.normal(size=(200, 2)), dtype=torch.float32)
    uniform = torch.tensor(rng.integers(0, 1001, (200, 2)), dtype=torch.float32)
    # Over-confident: a third of the truths fall in the posterior's outer 2% (ranks 0-10 or 990-1000)
    narrow = uniform.clone()
    narrow[::3] = torch.tensor(rng.choice([5.0, 995.0], (67, 2)), dtype=torch.float32)
    torch.manual_seed(0)
    good = sbc_calibration(uniform, theta, theta, 1000, names=("a", "b"))
    torch.manual_seed(0)
    bad = sbc_calibration(narrow, theta, theta, 1000, names=("a", "b"))
    assert all(v["sbc_passed"] and v["coverage_90_passed"] for v in good.verdicts().values()), good.table()
    assert all(not v["sbc_passed"] and v["direction"].startswith("over-confident") for v in bad.verdicts().values())
    assert max(bad.coverage_90) < 0.65  # about 0.9 of the other two thirds
    assert np.isnan(good.tarp_ks_pvalue) and not good.passed  # TARP does not apply, so not "passed"
    assert "TARP" not in good.table()


def test_coverage_from_ranks():
    ranks = np.array([[0], [50], [100], [3], [97]])  # of 100 samples
    assert coverage_from_ranks(ranks, 100, 0.9) == [0.2]  # only rank 50 lies in [5, 95]
    assert coverage_from_ranks(ranks, 100, 1.0) == [1.0]


def test_held_out_pairs_leave_the_random_stream_alone():
    from sbi.utils import BoxUniform

    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    theta, x = held_out_pairs(lambda t: 2 * t, prior, 7)
    assert theta.shape == (7, 2) and torch.equal(x, 2 * theta)
    assert torch.equal(torch.rand(1), expected)


def test_rank_plot_draws_every_parameter_for_a_few_truths():
    from sbi_tumor.diagnostics import Calibration, rank_plot

    ranks = np.random.default_rng(0).integers(0, 1000, (30, 4)).astype(float)  # 30 sequential runs
    nan = np.full(1, np.nan)
    calibration = Calibration(names=("D", "rho", "u_T1", "u_T2"), ranks=ranks, num_posterior_samples=1000,
                              ks_pvalues=[0.5] * 4, c2st_ranks=[0.5] * 4, c2st_dap=0.5, coverage_50=np.full(4, 0.5),
                              coverage_90=np.full(4, 0.9), tarp_atc=float("nan"), tarp_ks_pvalue=float("nan"),
                              tarp_ecp=nan, tarp_alpha=nan)
    fig = rank_plot(calibration)
    steps = [len(np.unique(line.get_ydata())) for line in fig.axes[0].lines]
    assert steps == [6, 6, 6, 6]  # sbi's default, one bin per 20 ranks, drew 4 flat lines (1 step each)
    # The x axis reads in ranks (0 to 1000 samples), not in sbi's bins (0 to 6)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "0" and labels[-1] == "1000" and "1000 posterior samples" in fig.axes[0].get_xlabel()
