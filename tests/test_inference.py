import math
import warnings

import pytest
import torch

from sbi.neural_nets.estimators import MoG
from sbi.utils import BoxUniform
from scipy.stats import chi2

from sbi_tumor.config import InferenceConfig

from sbi_tumor.posteriors import FeaturePosterior
from sbi_tumor.inference import _redrawn_thresholds, _truncated_prior, load_posterior, run_sequential_npe, save_result
from sbi_tumor.sbi_compat import explained_failures, sample_truncated
from sbi_tumor.prior import make_prior
from sbi_tumor.simulator import TumorSimulator
from conftest import phantom

TRUTH = torch.tensor([[1.0, 0.6, 0.7, 0.25]])


@pytest.fixture(scope="module")
def problem():
    # 34 mm of tissue: large enough that most of this prior's tumours (3 mm seed) stay inside it
    anatomy = phantom((17, 17, 17), spacing=2.0, wm=0.8, gm=0.2)
    sim = TumorSimulator(anatomy, seed_mm=(16.0, 16.0, 16.0), day=6.0, roi_size_mm=34.0)
    prior = make_prior(bounds=([0.2, 0.2, 0.5, 0.05], [2.0, 1.2, 0.85, 0.45]))
    return sim, prior, sim(TRUTH)


def count_regions(monkeypatch) -> list[int]:
    """A list that grows by one each time a run estimates a truncated region."""
    import sbi_tumor.inference as inference

    calls, truncated_prior = [], inference._truncated_prior
    monkeypatch.setattr(inference, "_truncated_prior",
                        lambda *a, **kw: calls.append(1) or truncated_prior(*a, **kw))
    return calls


def quick(method, **kw):
    base = dict(method=method, num_rounds=2, num_simulations=120, embedding="mlp",
                embedding_kwargs={"hidden": 32}, num_components=1 if method == "NPE_A" else 3,
                max_num_epochs=40, stop_after_epochs=10, num_posterior_samples=1000, seed=1,
                # the training settings these tiny runs were measured with (the defaults are for 1,000 solves)
                training_batch_size=50, learning_rate=5e-4, augment=1)
    base.update(kw)
    return InferenceConfig(**base)


@pytest.mark.parametrize("method", ["NPE_A", "NPE_B", "NPE_C", "TSNPE"])
def test_two_rounds_contract_around_the_truth(problem, method, monkeypatch):
    import sbi_tumor.inference as inference

    sim, prior, x_o = problem
    checked, check = [], inference._check_inside_prior  # every round's posterior, before any rejection
    monkeypatch.setattr(inference, "_check_inside_prior", lambda *a: checked.append(a[4]) or check(*a))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        posterior, result = run_sequential_npe(sim, prior, x_o, quick(method), progress=False)
    assert checked == [1, 2]
    assert not [w for w in caught if "outside the prior support" in str(w.message)]  # the check's own draws
    assert result.num_simulations == 240 and len(result.theta_per_round) == 2
    assert result.samples.shape == (1000, 4)
    prior_std = prior.sample((4000,)).std(0)
    post_std = result.samples.std(0)
    # the front speed 2 sqrt(D rho) is what a single snapshot pins down best
    speed = 2 * (result.samples[:, 0] * result.samples[:, 1]).sqrt()
    prior_speed = 2 * (prior.sample((4000,))[:, :2].prod(1)).sqrt()
    true_speed = 2 * (TRUTH[0, 0] * TRUTH[0, 1]).sqrt()
    assert speed.std() < 0.7 * prior_speed.std()  # measured 0.49-0.59 for the three methods
    assert abs(speed.mean() - true_speed) < 2 * speed.std() + 0.05
    assert (post_std[:2] < prior_std[:2]).all()
    # round 2 was drawn from the round-1 posterior, not the prior: it is concentrated
    assert result.theta_per_round[1][:, 0].std() < result.theta_per_round[0][:, 0].std()
    assert len(result.training) == 2 and result.training[0]["epochs_trained"]


class GaussianPosterior:
    """A stand-in posterior with sbi's ``sample(..., show_progress_bars=)`` signature."""

    def __init__(self, mean, std):
        self.dist = torch.distributions.MultivariateNormal(mean, torch.diag(std**2))

    def sample(self, shape, show_progress_bars=True):
        return self.dist.sample(shape)

    def log_prob(self, theta):
        return self.dist.log_prob(theta)


MEAN, STD = torch.tensor([0.5, 0.4, 0.6, 0.5]), torch.tensor([0.05, 0.1, 0.02, 0.08])


def ball_proposal():
    """The unit-box prior truncated to the 90% region of a Gaussian posterior: a 4-ball in z-scores."""
    torch.manual_seed(0)
    prior = BoxUniform(torch.zeros(4), torch.ones(4))
    return (prior, *_truncated_prior(prior, GaussianPosterior(MEAN, STD), quantile=0.1))


def assert_uniform_on_the_ball(theta):
    r2 = (((theta - MEAN) / STD) ** 2).sum(1)
    edge = chi2.ppf(0.9, df=4)  # squared Mahalanobis radius holding 90% of a 4D Gaussian: 7.78
    assert r2.max() <= edge * 1.02  # inside the region (the threshold is estimated from samples)
    # uniform on the 4-ball of radius R: P(r < a R) = a^4, unlike the Gaussian's mass near the centre
    assert abs(float((r2 < edge / 2).float().mean()) - 0.25) < 0.03


def test_truncated_prior_is_the_prior_on_the_highest_density_region():
    _, proposal, _ = ball_proposal()
    theta = proposal.sample((4000,), show_progress_bars=False, print_rejected_frac=False)
    assert_uniform_on_the_ball(theta)
    assert torch.allclose(theta.mean(0), MEAN, atol=0.01)


def test_a_small_truncated_region_is_sampled_without_sbi_notes(capsys, caplog):
    torch.manual_seed(0)
    prior = BoxUniform(torch.zeros(4), torch.ones(4))
    narrow = GaussianPosterior(torch.full((4,), 0.5), torch.full((4,), 0.01))  # ~1e-6 of the prior
    theta = sample_truncated(_truncated_prior(prior, narrow, quantile=1e-4)[0], 20)
    assert theta.shape == (20, 4) and ((theta - 0.5).abs() < 0.1).all()
    assert capsys.readouterr().out == "" and not caplog.records


def test_redrawn_thresholds_keep_the_pairs_distributed_as_the_truncated_prior():
    prior, proposal, inside = ball_proposal()
    theta = proposal.sample((1000,), show_progress_bars=False, print_rejected_frac=False)
    more = _redrawn_thresholds(inside, prior, theta, k=4)
    assert more.shape == (1000, 4, 2)
    pairs = torch.cat([theta[:, None, :2].expand(1000, 4, 2), more], dim=2).reshape(-1, 4)
    # still uniform on the 4-ball, as the proposal's own draws are (see the test above); thresholds
    # drawn from the prior would leave it, and ones drawn near the centre would give more than 1/4
    assert_uniform_on_the_ball(pairs)
    # from the prior itself (round 1), the extra pairs are the prior's thresholds
    flat = _redrawn_thresholds(None, prior, theta[:500], k=4).reshape(-1, 2)
    assert torch.allclose(flat.mean(0), torch.tensor([0.5, 0.5]), atol=0.02)


def test_augmented_tsnpe_observes_each_solve_several_times(problem, monkeypatch):
    from sbi.inference import NPE_C

    sim, prior, x_o = problem
    solved, appended = [], []
    solve, append = sim.solve, NPE_C.append_simulations
    monkeypatch.setattr(sim, "solve", lambda theta: solved.append(len(theta)) or solve(theta))
    monkeypatch.setattr(NPE_C, "append_simulations",
                        lambda self, theta, x, **kw: appended.append(len(theta)) or append(self, theta, x, **kw))
    regions = count_regions(monkeypatch)
    config = quick("TSNPE", augment=4, embedding="radial", embedding_kwargs={})
    posterior, result = run_sequential_npe(sim, prior, x_o, config, progress=False)
    assert sum(solved) == result.num_simulations == 240 and len(result.theta_per_round[1]) == 120
    assert len(regions) == 1  # round 2's; nothing draws from a region after the last round
    assert appended == [480, 480]  # 4 pairs per solve
    speed = 2 * (result.samples[:, 0] * result.samples[:, 1]).sqrt()
    true_speed = 2 * (TRUTH[0, 0] * TRUTH[0, 1]).sqrt()
    prior_speed = 2 * (prior.sample((4000,))[:, :2].prod(1)).sqrt()
    assert speed.std() < 0.7 * prior_speed.std()  # measured 0.65
    assert abs(speed.mean() - true_speed) < 2 * speed.std() + 0.05
    with pytest.raises(ValueError, match="augment > 1 needs a simulator with solve"):
        run_sequential_npe(lambda theta: sim(theta), prior, x_o, config, progress=False)


@pytest.mark.parametrize("method", ["NPE_A", "NPE_C"])
def test_radial_features_are_z_scored_on_the_first_round(problem, method):
    sim, prior, x_o = problem
    config = quick(method, num_rounds=1, num_simulations=60, max_num_epochs=2, embedding="radial",
                   embedding_kwargs={})
    posterior, _ = run_sequential_npe(sim, prior, x_o, config, progress=False)
    while not hasattr(posterior, "posterior_estimator"):  # the sbi posterior inside the views
        posterior = posterior.posterior
    embedding = posterior.posterior_estimator.embedding_net
    features = embedding.features(sim(prior.sample((60,))))
    # fitted to the first round's maps: the profile's boundary shells move, empty shells do not
    assert 1e-3 < float(embedding.feature_std.max()) < 1.0 and float(embedding.feature_std.min()) == pytest.approx(1e-3)
    assert abs(float(((features - embedding.feature_mean) / embedding.feature_std)[:, embedding.feature_std > 1e-3]
                     .mean())) < 0.5


def test_radial_nets_train_on_features_computed_once_and_the_posterior_takes_label_maps(problem, tmp_path,
                                                                                      monkeypatch):
    from sbi_tumor.embedding import RadialProfileEmbedding

    sim, prior, x_o = problem
    featurized = []
    original = RadialProfileEmbedding.features
    monkeypatch.setattr(RadialProfileEmbedding, "features",
                        lambda self, x: featurized.append(len(x)) or original(self, x))
    config = quick("NPE_C", num_rounds=2, num_simulations=60, max_num_epochs=5, stop_after_epochs=5,
                   embedding="radial", embedding_kwargs={})
    posterior, result = run_sequential_npe(sim, prior, x_o, config, progress=False)
    # each simulation once (training 5+ epochs on label maps would pass 600+ maps in batches of 50);
    # single maps are x_o, embedded by sbi at every sample/log_prob/MAP step
    assert sum(n for n in featurized if n > 1) == 120, featurized
    # sbi's posterior keeps taking features; the package's view of it takes label maps
    embedding = posterior.posterior.posterior_estimator.embedding_net
    assert isinstance(posterior, FeaturePosterior) and embedding.takes_features
    theta = result.samples[:20]
    log_p = posterior.log_prob(theta, x=x_o)
    assert torch.isfinite(log_p).all()
    save_result(tmp_path, posterior, result)
    assert torch.allclose(load_posterior(tmp_path)[0].log_prob(theta, x=x_o), log_p)


def test_fixed_seed_is_reproducible_and_posterior_reloads(problem, tmp_path, capsys):
    sim, prior, x_o = problem
    config = quick("NPE_B", num_rounds=1, num_simulations=100, max_num_epochs=10)
    post1, res1 = run_sequential_npe(sim, prior, x_o, config, progress=False)
    assert capsys.readouterr().out == ""  # sbi's unconditional prints are swallowed without progress
    post2, res2 = run_sequential_npe(sim, prior, x_o, config, progress=False)
    assert torch.equal(res1.samples, res2.samples)
    save_result(tmp_path, post1, res1)
    loaded, res = load_posterior(tmp_path)
    torch.manual_seed(0)
    a = loaded.sample((50,), x=x_o, show_progress_bars=False)
    torch.manual_seed(0)
    b = post1.sample((50,), x=x_o, show_progress_bars=False)
    assert torch.equal(a, b)
    assert (tmp_path / "samples.csv").read_text().startswith("D_mm2_per_day,rho_per_day,u_T1,u_T2")
    assert res.summary()["num_simulations"] == 100


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match=r"one of \['NPE_A', 'NPE_B', 'NPE_C', 'TSNPE'\], got 'SNLE'"):
        InferenceConfig(method="SNLE")
    with pytest.raises(ValueError, match=r"density_estimator must be one of \['mdn', 'nsf', 'maf', 'fmpe'\], got 'flow'"):
        InferenceConfig(density_estimator="flow")
    with pytest.raises(ValueError, match="NPE_A corrects a Gaussian mixture analytically: density_estimator must be 'mdn'"):
        InferenceConfig(method="NPE_A", density_estimator="nsf")
    with pytest.raises(ValueError, match="proposal_widening must be >= 1"):
        InferenceConfig(method="NPE_A", proposal_widening=0.5)
    with pytest.raises(ValueError, match="truncation_quantile must be in"):
        InferenceConfig(method="TSNPE", truncation_quantile=0.0)
    with pytest.raises(ValueError, match="augment must be 1, or > 1 with method='TSNPE'.*'NPE_C'"):
        InferenceConfig(method="NPE_C", augment=4)


def test_npe_a_with_a_mixture_completes_four_rounds_inside_the_prior(problem):
    """Two components over four rounds on a small case (on the paper truths too: docs, Benchmarks,
    NPE_A); NPE_A learns the unit cube and is seen in theta."""
    from sbi.neural_nets.estimators import MixtureDensityEstimator

    from sbi_tumor.inference import PrunedMixture

    sim, prior, x_o = problem
    config = quick("NPE_A", num_components=2, num_rounds=4, num_simulations=60, max_num_epochs=20)
    posterior, result = run_sequential_npe(sim, prior, x_o, config, progress=False)
    inner = posterior
    while not hasattr(inner, "posterior_estimator"):  # the sbi posterior inside the views
        inner = inner.posterior
    # the posterior reads the trained network through the view without weak components
    assert isinstance(inner.posterior_estimator, PrunedMixture)
    assert type(inner.posterior_estimator.net).__name__ == "MultivariateGaussianMDN"
    assert isinstance(inner.posterior_estimator, MixtureDensityEstimator)
    low, high = prior.support.base_constraint.lower_bound, prior.support.base_constraint.upper_bound
    assert result.num_simulations == 240
    for theta in result.theta_per_round + [result.samples, result.map[None]]:
        assert ((theta >= low) & (theta <= high)).all()
    theta = result.samples[:5]
    expected = posterior.posterior.log_prob((theta - low) / (high - low), x=x_o) - (high - low).log().sum()
    torch.testing.assert_close(posterior.log_prob(theta, x=x_o), expected)
    # the posterior's map() is the corrected density's: better than most of its samples
    mode = posterior.map(num_init_samples=300)
    assert ((mode >= low) & (mode <= high)).all()
    assert posterior.log_prob(mode[None], x=x_o) > posterior.log_prob(result.samples[:300], x=x_o).quantile(0.9)
    # batched sampling (sbi's diagnostics) goes through the corrected sample(), in theta
    batched = posterior.sample_batched((5,), x=torch.cat([x_o, x_o]), show_progress_bars=False)
    assert batched.shape == (5, 2, 4) and ((batched >= low) & (batched <= high)).all()


def test_a_flow_takes_the_mixtures_place(problem):
    sim, prior, x_o = problem
    posterior, result = run_sequential_npe(sim, prior, x_o, quick("TSNPE", density_estimator="nsf"), progress=False)
    assert "Flow" in type(posterior.posterior_estimator).__name__
    # the front speed, which one label map pins, contracts about the truth's (1.55 mm/day): its
    # std 0.68-0.77 of the prior's, its mean 1.53-1.61, over seeds 1-4 (80 solves: 0.80-0.83)
    speed, truth = 2 * result.samples[:, :2].prod(1).sqrt(), 2 * TRUTH[0, :2].prod().sqrt()
    assert speed.std() < 0.8 * (2 * prior.sample((4000,))[:, :2].prod(1).sqrt()).std()
    assert abs(speed.mean() - truth) < 0.1


def test_flow_matching_learns_in_one_round_and_refuses_more(problem):
    sim, prior, x_o = problem
    with pytest.raises(ValueError, match="density_estimator='fmpe' needs num_rounds=1 .*ODE solve.*got num_rounds=2"):
        quick("TSNPE", density_estimator="fmpe")
    with pytest.raises(ValueError, match="needs num_rounds=1 and method='TSNPE'.*got num_rounds=1 with 'NPE_C'"):
        quick("NPE_C", density_estimator="fmpe", num_rounds=1)  # sbi's FMPE would fail after the simulations
    config = quick("TSNPE", density_estimator="fmpe", num_rounds=1, num_simulations=150, max_num_epochs=30,
                   num_posterior_samples=500)
    posterior, result = run_sequential_npe(sim, prior, x_o, config, progress=False)
    assert type(posterior).__name__ == "VectorFieldPosterior"  # sbi's, as FMPE builds it
    # the front speed contracts about the truth's: std 0.59-0.74 of the prior's, mean 1.49-1.59
    # (truth 1.55 mm/day) over seeds 1-4
    speed, truth = 2 * result.samples[:, :2].prod(1).sqrt(), 2 * TRUTH[0, :2].prod().sqrt()
    assert speed.std() < 0.8 * (2 * prior.sample((4000,))[:, :2].prod(1).sqrt()).std()
    assert abs(speed.mean() - truth) < 0.1


def test_an_ensemble_averages_members_trained_on_the_same_simulations(problem):
    from sbi.inference import EnsemblePosterior

    sim, prior, x_o = problem
    config = quick("TSNPE", ensemble_size=2, num_simulations=60, max_num_epochs=15)
    posterior, result = run_sequential_npe(sim, prior, x_o, config, progress=False)
    assert isinstance(posterior, EnsemblePosterior) and len(posterior.posteriors) == 2
    theta = result.samples[:20]
    members = torch.stack([p.log_prob(theta, x=x_o) for p in posterior.posteriors])
    assert (members[0] - members[1]).abs().max() > 0.01  # two different networks
    torch.testing.assert_close(posterior.log_prob(theta, x=x_o), members.logsumexp(0) - math.log(2))
    # the samples are mixed: the first half is not one member's (the members' log densities differ)
    first = (members[0] > members[1]).float().mean()
    assert 0.15 < first < 0.85
    with pytest.raises(ValueError, match="ensemble_size must be 1 with 'NPE_C' .an ensemble needs method='TSNPE'"):
        InferenceConfig(method="NPE_C", ensemble_size=3)
    assert InferenceConfig(method="NPE_A").num_components == 1 and InferenceConfig().num_components == 5


class MixturePosterior:
    """A stand-in NPE_A posterior: two Gaussians in 2D, one near the cube's edge."""

    default_x = torch.zeros(1, 1)

    def get_mog_params(self, x):
        from sbi.neural_nets.estimators import MoG

        precision = torch.eye(2) / 0.05**2
        return MoG(torch.zeros(1, 2), torch.tensor([[[0.3, 0.5], [0.7, 0.02]]]), precision.expand(1, 2, 2, 2))


def test_widened_gaussian_has_the_mixtures_moments_widened_and_stays_inside_the_cube():
    from sbi_tumor.inference import WidenedGaussian

    posterior = MixturePosterior()
    proposal = WidenedGaussian(posterior, widening=2.0)
    assert proposal.event_shape == (2,)
    mog = proposal.get_mog_params(posterior.default_x)
    assert mog.num_components == 1
    # equal weights of N((0.3, 0.5), 0.05^2 I) and N((0.7, 0.02), 0.05^2 I): mean (0.5, 0.26); the
    # means' offsets (-0.2, 0.24) and (0.2, -0.24) add their outer product; then times 2^2
    covariance = 4 * torch.tensor([[0.0025 + 0.04, -0.048], [-0.048, 0.0025 + 0.0576]])
    torch.testing.assert_close(mog.means[0, 0], torch.tensor([0.5, 0.26]))
    torch.testing.assert_close(torch.linalg.inv(mog.precisions[0, 0]), covariance, rtol=1e-4, atol=1e-6)
    torch.manual_seed(0)
    draws = proposal.sample((20_000,))
    assert draws.shape == (20_000, 2) and ((draws >= 0) & (draws <= 1)).all()
    # dim 0 (sd 0.41 around 0.5) is cut at 0 and 1: restricted to the cube, its sd is smaller
    assert draws[:, 0].std() < 0.8 * covariance[0, 0].sqrt()


def test_weak_mixture_components_move_onto_the_heaviest():
    from sbi_tumor.inference import WEAK_COMPONENT_WEIGHT, _without_weak_components

    # a live pair and a weak, broad component far outside the cube (weight 1e-5)
    weights = torch.tensor([[0.6, 0.4 - 1e-5, 1e-5]])
    means = torch.tensor([[[0.3, 0.5], [0.6, 0.4], [1.6, 1.3]]])
    precisions = torch.stack([torch.eye(2) / 0.05**2, torch.eye(2) / 0.1**2, torch.eye(2) / 0.5**2])[None]
    mog = MoG(weights.log(), means, precisions)
    pruned = _without_weak_components(mog)
    assert WEAK_COMPONENT_WEIGHT == 0.01
    torch.testing.assert_close(pruned.logits, mog.logits)
    torch.testing.assert_close(pruned.means[0, :2], means[0, :2])
    torch.testing.assert_close(pruned.means[0, 2], means[0, 0])
    torch.testing.assert_close(pruned.precisions[0, 2], precisions[0, 0])
    # the density moves by at most the weak weight times the heaviest component's peak density
    theta = torch.rand(1000, 2)
    change = (pruned.log_prob(theta[:, None]).exp() - mog.log_prob(theta[:, None]).exp()).abs().max()
    assert 1e-5 < change <= 1e-5 / (2 * math.pi * 0.05**2)
    assert _without_weak_components(MoG(torch.tensor([[0.5, 0.5]]).log(), means[:, :2], precisions[:, :2])) \
        .means.equal(means[:, :2])


class FixedMixtureNet(torch.nn.Module):
    """A stand-in mixture network: the same mixture for every x; 2D theta, 1D x."""

    context_features = 1

    def __init__(self, mog):
        super().__init__()
        self.mog = mog

    def get_mixture_components(self, context):
        return self.mog


def test_sbi_corrects_a_mixture_with_a_weak_broad_component_only_once_it_is_pruned():
    from sbi.inference.posteriors import NPE_A_Posterior
    from sbi.neural_nets.estimators import MixtureDensityEstimator

    from sbi_tumor.inference import PrunedMixture

    # a live component (sd 0.05) and a weak one (weight 0.004) twice as wide as the proposal (sd 0.25)
    fit = MoG(torch.tensor([[0.996, 0.004]]).log(), torch.tensor([[[0.4, 0.5], [1.6, 1.3]]]),
              torch.stack([torch.eye(2) / 0.05**2, torch.eye(2) / 0.5**2])[None])
    proposal = MoG(torch.zeros(1, 1), torch.tensor([[[0.45, 0.5]]]), (torch.eye(2) / 0.25**2)[None, None])
    estimator = MixtureDensityEstimator(FixedMixtureNet(fit), torch.Size([2]), torch.Size([1]))
    box = BoxUniform(torch.zeros(2), torch.ones(2))
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="not positive definite"):
        NPE_A_Posterior(estimator, box, proposal_mog=proposal).get_mog_params(x)
    corrected = NPE_A_Posterior(PrunedMixture.of(estimator), box, proposal_mog=proposal).get_mog_params(x)
    # both components now the live one corrected: precision 1/0.05^2 - 1/0.25^2 = 384 per axis
    torch.testing.assert_close(corrected.precisions[0, 0], torch.eye(2) * 384.0, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(corrected.precisions[0, 1], corrected.precisions[0, 0])
    assert torch.softmax(corrected.logits, -1)[0, 1] == pytest.approx(0.004, rel=1e-3)


def test_a_posterior_outside_the_prior_fails_at_once_for_every_method():
    from types import SimpleNamespace

    from sbi_tumor.inference import MIN_MASS_INSIDE, InferenceError, _check_inside_prior

    class Unbounded(GaussianPosterior):
        def sample(self, shape, x=None, show_progress_bars=True, reject_outside_prior=True):
            assert reject_outside_prior is False and x is not None  # rejection is what would not end
            return super().sample(shape)

    def near(mean):  # N(mean, 0.05^2 I) in 2D
        return Unbounded(torch.tensor(mean), torch.full((2,), 0.05))

    box, x = BoxUniform(torch.zeros(2), torch.ones(2)), torch.zeros(1, 1)
    assert MIN_MASS_INSIDE == 1e-3
    # at 0.12 from the edge, 0.8% of the draws are outside (2.4 standard deviations, per axis): passes
    _check_inside_prior(near([0.5, 0.88]), box, x, "TSNPE", 3)
    with pytest.raises(InferenceError, match=r"NPE_A failed in round 3: .* puts \S+ of its mass inside the prior "
                                           r".*Use num_components=1 or 2"):
        _check_inside_prior(near([0.5, 1.5]), box, x, "NPE_A", 3)
    # 0.3 beyond the edge: 6 standard deviations, none of 4,000 draws inside
    with pytest.raises(InferenceError, match=r"TSNPE failed in round 2: its posterior puts 0.0e\+00 .* does not reproduce"):
        _check_inside_prior(near([0.5, 1.3]), box, x, "TSNPE", 2)
    # an ensemble (sbi's EnsemblePosterior holds its members in .posteriors) fails when one member does
    ensemble = SimpleNamespace(posteriors=[near([0.5, 0.5]), near([0.5, 1.3])])
    with pytest.raises(InferenceError, match="TSNPE failed in round 4"):
        _check_inside_prior(ensemble, box, x, "TSNPE", 4)


def test_npe_a_correction_failure_becomes_an_actionable_error():
    with pytest.raises(RuntimeError, match="NPE_A failed in round 3.*Use num_components=1 or 2"):
        with explained_failures("NPE_A", 3):
            raise ValueError("Posterior precision matrix is not positive definite.")
    with pytest.raises(ValueError, match="unrelated"):  # other errors pass through unchanged
        with explained_failures("NPE_A", 1):
            raise ValueError("unrelated")


def test_log_space_trains_on_log_rates_and_returns_theta(problem, tmp_path):
    sim, prior, x_o = problem
    seen = []

    def simulate(r, theta):
        seen.append(theta)
        return sim(theta).numpy().astype("uint8")

    config = quick("NPE_C", log_space=True, num_simulations=80, max_num_epochs=20)
    posterior, result = run_sequential_npe(sim, prior, x_o, config, progress=False, simulate=simulate)
    # The simulator and the result see theta, inside the prior's box, not log D / log rho.
    low, high = prior.support.base_constraint.lower_bound, prior.support.base_constraint.upper_bound
    for theta in seen + result.theta_per_round + [result.samples, result.map[None]]:
        assert ((theta >= low) & (theta <= high)).all()
    assert torch.equal(seen[1], result.theta_per_round[1])
    # log p(theta | x) is the phi-space density minus log D + log rho (change of variables).
    theta = result.samples[:5]
    phi = torch.cat([theta[:, :2].log(), theta[:, 2:]], 1)
    expected = posterior.posterior.log_prob(phi, x=x_o) - theta[:, :2].log().sum(1)
    torch.testing.assert_close(posterior.log_prob(theta, x=x_o), expected)
    assert posterior.sample((7,), x=x_o, show_progress_bars=False).shape == (7, 4)
    save_result(tmp_path, posterior, result)
    loaded, _ = load_posterior(tmp_path)
    assert loaded.set_default_x(x_o).sample((3,), show_progress_bars=False).shape == (3, 4)
    with pytest.raises(ValueError, match="log_uniform=True"):
        run_sequential_npe(sim, prior, x_o, quick("NPE_A", log_space=True), progress=False)


def test_defaults_are_defined_once_and_resolve_augment_by_method():
    """The CLI's inference options default to InferenceConfig()'s, the benchmarked configuration."""
    from sbi_tumor.cli import build_parser
    from sbi_tumor.config import DEFAULT_AUGMENT

    config = InferenceConfig()
    assert (config.method, config.embedding, config.augment) == ("TSNPE", "radial", DEFAULT_AUGMENT)
    assert InferenceConfig(method="NPE_B").augment == 1  # augmentation needs TSNPE's proposals
    args = build_parser().parse_args(["infer", "--t1", "a", "--t2", "b", "--day", "1", "--seed-mm", "0", "0", "0",
                                      "--out", "o"])
    assert (args.method, args.rounds, args.simulations, args.embedding, args.max_epochs) == (
        config.method, config.num_rounds, config.num_simulations, config.embedding, config.max_num_epochs)
    assert args.augment is None  # resolved by InferenceConfig for the chosen method
    demo = build_parser().parse_args(["demo", "--out", "o"])
    assert (demo.method, demo.rounds, demo.simulations, demo.embedding) == (
        config.method, config.num_rounds, config.num_simulations, config.embedding)


def test_quiet_run_prints_nothing_and_names_the_option_when_training_is_capped(problem, capsys):
    sim, prior, x_o = problem
    config = quick("TSNPE", num_rounds=2, num_simulations=60, max_num_epochs=2, augment=1)
    with pytest.warns(UserWarning) as caught:
        run_sequential_npe(sim, prior, x_o, config, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # no epoch notes, no map() sampling bar
    capped = [str(w.message) for w in caught if "max_num_epochs" in str(w.message)]
    assert capped == ["Training stopped at max_num_epochs=2 before the validation loss stopped improving, "
                      "in round(s) 1, 2; raise it (CLI: --max-epochs) for a closer fit."]
    assert all(w.filename == __file__ for w in caught if "max_num_epochs" in str(w.message))


def test_calibration_solves_widen_the_posterior_and_are_counted(problem, monkeypatch):
    from sbi_tumor.conformal import ConformalPosterior

    sim, prior, x_o = problem
    rounds = []
    solve = sim.solve
    monkeypatch.setattr(sim, "solve", lambda theta: rounds.append(len(theta)) or solve(theta))
    regions = count_regions(monkeypatch)
    config = quick("TSNPE", augment=4, embedding="radial", embedding_kwargs={}, calibration_solves=30)
    posterior, result = run_sequential_npe(sim, prior, x_o, config, progress=False)
    assert isinstance(posterior, ConformalPosterior) and sum(rounds) == result.num_simulations == 270
    assert len(regions) == 2  # the calibration solves come from the last round's region too
    scales = torch.tensor(result.conformal_scales)
    assert scales.shape == (4,) and ((scales > 0.3) & (scales < 5)).all()
    summary = result.summary()["parameters"]
    assert [summary[n]["conformal_scale"] for n in ("D", "rho", "u_T1", "u_T2")] == result.conformal_scales
    # the samples are the widened posterior's: their spread relative to the network's is the scale (in the logit)
    inner = posterior.posterior.sample((4000,), x=x_o, show_progress_bars=False)
    transform = posterior.transform
    ratio = transform(result.samples.double()).std(0) / transform(inner.double()).std(0)
    assert ratio.tolist() == pytest.approx(scales.tolist(), rel=0.15)
    with pytest.raises(ValueError, match="calibration_solves needs method='TSNPE' or num_rounds=1"):
        InferenceConfig(method="NPE_C", num_rounds=2, calibration_solves=10)


def test_unconstrained_mdn_keeps_all_its_mass_inside_the_prior_box(problem, tmp_path):
    sim, prior, x_o = problem
    posterior, result = run_sequential_npe(sim, prior, x_o, quick("TSNPE", unconstrained=True, num_rounds=1),
                                           progress=False)
    # The network's own draws, before sbi rejects those outside the prior: all inside the box
    # (the z-scored MDN put 15-19% of its draws outside on this case, two rounds, seeds 1-3).
    raw = posterior.posterior_estimator.sample((2000,), condition=x_o.reshape(1, 1, *x_o.shape[-3:])).reshape(-1, 4)
    assert prior.support.check(raw).all()
    assert torch.isfinite(posterior.log_prob(result.samples[:20], x=x_o)).all()
    save_result(tmp_path, posterior, result)
    loaded, _ = load_posterior(tmp_path)
    assert prior.support.check(loaded.set_default_x(x_o).sample((50,), show_progress_bars=False)).all()
    for bad in (dict(density_estimator="nsf"), dict(method="NPE_A"), dict(method="NPE_C", num_rounds=2)):
        with pytest.raises(ValueError, match="unconstrained=True needs density_estimator='mdn'"):
            InferenceConfig(unconstrained=True, **bad)
    normal = torch.distributions.Independent(torch.distributions.Normal(torch.ones(4), torch.ones(4)), 1)
    with pytest.raises(ValueError, match="needs a prior on a box .*set unconstrained=False"):
        run_sequential_npe(sim, normal, x_o, quick("TSNPE", unconstrained=True), progress=False,
                           simulate=lambda r, theta: pytest.fail("simulated before the check"))
