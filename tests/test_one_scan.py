"""One scan, origin and age unknown: the reparametrisation, the origin prior and the workflow."""

import numpy as np
import pytest
import torch

from sbi_tumor.io import save_nifti
from sbi_tumor.one_scan import OneScanPrior, OneScanSimulator, one_scan_prior, rates
from sbi_tumor.simulator import TumorSimulator
from tiny_patient import SEED_MM, tiny_anatomy, tiny_config

D, RHO, U_T1, U_T2 = 2.0, 0.6, 0.7, 0.25  # the paper case's rates: a 13 mm front by day 6


@pytest.fixture(scope="module")
def anatomy(mni2):
    return tiny_anatomy(mni2)


@pytest.fixture(scope="module")
def scan(anatomy):
    """Label map (anatomy grid) of the tumour grown from SEED_MM for 6 days."""
    sim = TumorSimulator(anatomy, seed_mm=SEED_MM, day=6.0, roi_size_mm=100.0)
    return sim.to_full_grid(sim(torch.tensor([[D, RHO, U_T1, U_T2]]))[0, 0].numpy().astype(np.uint8))


def one_scan_theta(day: float) -> torch.Tensor:
    return torch.tensor([[*SEED_MM, np.sqrt(D / RHO), RHO * day, U_T1, U_T2]])


@pytest.mark.parametrize("day", [3.0, 6.0])
def test_one_scan_simulator_is_the_rate_model_rescaled_in_time(anatomy, day):
    """(ell, tau) at any time unit gives the label map and density of (D, rho) at day T: the
    model depends on (D, rho, T) only through sqrt(D / rho) and rho T."""
    known = TumorSimulator(anatomy, seed_mm=SEED_MM, day=day, roi_size_mm=40.0)
    theta = one_scan_theta(day)
    unknown_age = OneScanSimulator(anatomy, SEED_MM, roi_size_mm=40.0)  # the same window
    reference = known.density(torch.tensor([[D, RHO]]), [day])[0, 0]
    rescaled = unknown_age.density(theta, [1.0])[0, 0]  # time in units of the age
    assert reference.max() > 0.5  # a grown tumour, not the seed
    np.testing.assert_allclose(rescaled, reference, atol=2e-3)
    # the same tumour, twice as fast for half as long: one scan cannot tell them apart
    faster = known.density(torch.tensor([[2 * D, 2 * RHO]]), [day / 2])[0, 0]
    np.testing.assert_allclose(faster, reference, atol=2e-3)
    with_age = OneScanSimulator(anatomy, SEED_MM, roi_size_mm=40.0, age_days=day)
    # in days: the same up to the time step (float32 theta can change the step count by one)
    np.testing.assert_allclose(with_age.density(theta, [day])[0, 0], reference, atol=2e-3)
    np.testing.assert_allclose(rates(theta.numpy(), day), [[D, RHO, U_T1, U_T2]], rtol=1e-6)


def test_augmented_solve_and_observe_equal_the_call(anatomy):
    sim = OneScanSimulator(anatomy, SEED_MM, roi_size_mm=30.0)
    theta = one_scan_theta(6.0).repeat(2, 1)
    theta[1, 5:] = torch.tensor([0.8, 0.1])
    assert torch.equal(sim.observe(sim.solve(theta), theta), sim(theta))
    assert sim(theta)[1].sum() != sim(theta)[0].sum()  # the thresholds act


def test_origin_prior_lives_on_the_core_and_integrates_to_one(anatomy, scan):
    prior = one_scan_prior(anatomy, scan == 2, scan >= 1)
    assert (scan == 2).sum() > 20
    draws = prior.sample((4000,))
    assert draws.shape == (4000, 7) and bool(prior.inside(draws).all())
    voxels = prior.origin_voxel(draws[:, :3]).numpy()
    assert np.all((scan == 2)[tuple(voxels.T)])  # every origin in the T1 core ...
    assert len(np.unique(voxels, axis=0)) > 0.5 * (scan == 2).sum()  # ... and spread over it
    radius = 2 * draws[:, 3] * draws[:, 4]
    assert radius.min() >= prior.radius_mm[0] and radius.max() <= prior.radius_mm[1]
    # Monte Carlo over the bounding box: the density integrates to 1
    box = prior.bounding_box.base_constraint
    low, high = box.lower_bound.double(), box.upper_bound.double()
    u = low + torch.rand(400_000, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * (high - low)
    integral = prior.log_prob(u.float()).double().exp().mean() * (high - low).prod()
    assert abs(float(integral) - 1) < 0.05
    outside = draws[:3].clone()
    outside[0, :3] = torch.tensor([0.0, 0.0, 0.0]) + torch.tensor(SEED_MM) + 20  # off the core
    outside[1, 4] = prior.radius_mm[1] / outside[1, 3]  # front radius twice the largest
    outside[2, 6] = 0.9  # u_T2 above u_T1
    assert torch.isinf(prior.log_prob(outside)).all() and not prior.inside(outside).any()


def test_prior_drawn_inside_a_box_is_the_prior_restricted_to_it(anatomy, scan):
    prior = one_scan_prior(anatomy, scan >= 1, scan >= 1)
    torch.manual_seed(0)
    reference = prior.sample((400_000,))
    low = torch.tensor([reference[:, 0].quantile(0.3), -1e3, -1e3, 2.0, 1.0, 0.6, 0.1])
    high = torch.tensor([reference[:, 0].quantile(0.8), 1e3, 1e3, 8.0, 5.0, 0.8, 0.3])
    reference = reference[((reference >= low) & (reference <= high)).all(1)]
    drawn = torch.cat([prior.sample_within(low, high, 20_000) for _ in range(10)])
    assert len(reference) > 5000 and bool(((drawn >= low) & (drawn <= high)).all())
    # the same law: every marginal's mean and spread, tau's included (its law given ell is cut)
    np.testing.assert_allclose(drawn.mean(0), reference.mean(0), atol=0.03 * reference.std(0).max().item())
    np.testing.assert_allclose(drawn.std(0), reference.std(0), rtol=0.04)


def test_a_small_truncated_region_is_drawn_inside_its_box_exactly(anatomy, scan, monkeypatch):
    """TSNPE's truncated prior when rejection from the whole prior is hopeless: uniform over the
    highest-density region of a 7-D posterior (for the prior's density), not posterior-shaped."""
    from sbi_tumor import inference

    prior = one_scan_prior(anatomy, scan >= 1, scan >= 1)
    mean = prior.sample((1,))[0]
    std = torch.tensor([3.0, 3.0, 3.0, 0.75, 0.75, 0.075, 0.075])

    class Gaussian:
        dist = torch.distributions.MultivariateNormal(mean, torch.diag(std**2))
        sample = staticmethod(lambda shape, show_progress_bars=False: Gaussian.dist.sample(shape))
        log_prob = staticmethod(lambda theta: Gaussian.dist.log_prob(theta))

    monkeypatch.setattr(inference, "MIN_REJECTION_HITS", 10**9)  # a region rejection could still reach
    torch.manual_seed(1)
    proposal, inside = inference._truncated_prior(prior, Gaussian(), quantile=0.1)
    assert isinstance(proposal, inference.BoxedRegion)
    drawn = proposal.sample((3000,))
    draws = prior.sample((3_000_000,))
    reference = draws[inside(draws)]  # rejection from the whole prior, the definition
    assert len(reference) > 1500 and bool(inside(drawn).all())
    r2 = lambda t: (((t - mean) / std) ** 2).sum(1)  # noqa: E731
    # uniform over the region puts most draws near its edge (r2 up to 12), a Gaussian near the centre
    assert abs(float(r2(drawn).mean() - r2(reference).mean())) < 0.25
    assert abs(float(r2(drawn).mean() - r2(Gaussian.dist.sample((3000,))).mean())) > 1.5


def test_origin_prior_without_a_core_uses_the_t2_region(anatomy, scan):
    prior = one_scan_prior(anatomy, np.zeros_like(scan, bool), scan >= 1)
    assert len(prior.voxels) == int(((scan >= 1) & anatomy.tissue).sum())
    with pytest.raises(ValueError, match="nowhere"):
        one_scan_prior(anatomy, np.zeros_like(scan, bool), np.zeros_like(scan, bool))
    with pytest.raises(ValueError, match="u_T2 high <= u_T1 low"):
        OneScanPrior(anatomy, scan >= 1, thresholds=((0.5, 0.1), (0.8, 0.6)))


@pytest.mark.filterwarnings("ignore:Training stopped at max_num_epochs")
def test_one_scan_inference_runs_with_sbi_and_augmented_thresholds(anatomy, scan):
    from sbi_tumor.inference import run_sequential_npe

    sim = OneScanSimulator(anatomy, anatomy.voxel_to_world(np.argwhere(scan >= 1).mean(0)), roi_size_mm=40.0)
    prior = one_scan_prior(anatomy, scan == 2, scan >= 1)
    x_o = torch.from_numpy(scan[sim.roi_slices][None].astype(np.float32))
    config = tiny_config(method="TSNPE", augment=3, embedding="radial", embedding_kwargs={})
    posterior, result = run_sequential_npe(sim, prior, x_o, config, progress=False)
    assert result.samples.shape == (100, 7) and bool(prior.inside(result.samples).all())
    assert result.theta_per_round[0].shape == (30, 7)
    assert set(result.summary()["parameters"]) == {"x", "y", "z", "ell", "tau", "u_T1", "u_T2"}


def test_patient_without_origin_or_day_is_a_one_scan_patient(anatomy, scan, tmp_path):
    from sbi_tumor.patient.inputs import InputError, Patient, load_patient
    from sbi_tumor.patient.prediction import predict

    seg = save_nifti(tmp_path / "seg.nii.gz", np.array([0, 2, 4], np.uint8)[scan], anatomy.affine)
    patient = load_patient(seg, None, anatomy=anatomy)
    assert patient.one_scan and patient.day is None and patient.scan_name == "the scan"
    np.testing.assert_allclose(patient.centre_mm, anatomy.voxel_to_world(np.argwhere(scan >= 1).mean(0)))
    assert isinstance(patient.simulator(), OneScanSimulator)
    patient.save(tmp_path / "p.npz")
    again = Patient.load(tmp_path / "p.npz")
    assert again.one_scan and again.day is None and again.fingerprint() == patient.fingerprint()
    aged = load_patient(seg, None, 6.0, anatomy=anatomy)
    assert aged.one_scan and aged.simulator().day == 6.0 and aged.fingerprint() != patient.fingerprint()
    with pytest.raises(InputError, match="give the days"):
        load_patient(seg, None, seed_mm=SEED_MM, anatomy=anatomy)
    from sbi_tumor.config import InferenceConfig
    from sbi_tumor.patient.workflow import infer_patient

    for setting in (dict(unconstrained=True), dict(calibration_solves=10)):  # both need a box prior
        with pytest.raises(ValueError, match="without log_space, unconstrained or calibration_solves"):
            infer_patient(seg, None, out_dir=tmp_path / "refused", anatomy=anatomy, progress=False,
                          config=InferenceConfig(**setting))
        assert not (tmp_path / "refused").exists() and not (tmp_path / "refused.partial").exists()

    class Run:  # predict refuses days it cannot know before touching the posterior
        def __init__(self, patient):
            self.patient = patient

    with pytest.raises(InputError, match="age is unknown"):
        predict(Run(patient), [10.0])


@pytest.mark.slow
def test_a_simulated_brats_scan_gives_back_its_origin_and_infiltration_length(tmp_path):
    """The issue's done-when, through the CLI: ``sbi-tumor simulate`` makes a human-scale tumour
    (D 0.2 mm^2/day, rho 0.02/day, 250 days: 32 mL of T2), its BraTS label map goes through
    ``sbi-tumor infer --seg`` with neither the origin nor the day, default pipeline (about 3 min).
    Measured with the boxed truncated regions (run with ``pytest -m slow``, 6 min on 2 shared cores):
    origin error 0.16 mm, the truth at HPD level 0.15, ell's 98% interval [2.06, 4.05] mm around
    the true 3.16 mm, tau's [3.94, 5.86] around 5."""
    from sbi_tumor.cli import main
    from sbi_tumor.patient.run import load_run

    assert main(["simulate", "--seed-mm", *map(str, SEED_MM), "--dw", "0.2", "--rho", "0.02", "--days", "250",
                 "--out", str(tmp_path / "sim"), "--quiet"]) == 0
    assert main(["infer", "--seg", str(tmp_path / "sim" / "brats_day250.nii.gz"), "--out", str(tmp_path / "fit"),
                 "--quiet"]) == 0
    run = load_run(tmp_path / "fit")
    truth = torch.tensor([[*SEED_MM, np.sqrt(0.2 / 0.02), 0.02 * 250, 0.7, 0.25]], dtype=torch.float32)
    samples = run.result.samples
    assert float((samples[:, :3].double().mean(0) - truth[0, :3]).norm()) < 5.0
    level = (run.posterior.log_prob(samples[:1000]) > run.posterior.log_prob(truth)).float().mean()
    assert float(level) < 0.98  # the truth inside the 98% highest-density region
    lo, hi = np.quantile(samples[:, 3].numpy(), [0.01, 0.99])
    assert lo <= truth[0, 3] <= hi
    assert (tmp_path / "fit" / "infiltration" / "target_model.nii.gz").is_file()
