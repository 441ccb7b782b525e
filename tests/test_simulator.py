import pickle
import warnings

import numpy as np
import pytest
import torch

from sbi_tumor.simulator import InitialCondition, TumorSimulator
from sbi_tumor.solver import FKSolver, seed_density
from conftest import phantom, random_anatomy


@pytest.fixture(scope="module")
def sim():
    anatomy = random_anatomy((30, 28, 26), seed=4)
    anatomy.wm[13:18, 12:17, 11:16] = 0.9  # make sure the seed sits in tissue
    anatomy.gm[13:18, 12:17, 11:16] = 0.1
    anatomy.csf[13:18, 12:17, 11:16] = 0.0
    return TumorSimulator(anatomy, seed_mm=(15.0, 14.0, 13.0), day=6.0, roi_size_mm=16.0)


def test_shapes_dtype_and_batching(sim):
    theta = torch.tensor([[0.3, 1.0, 0.7, 0.25], [0.3, 0.8, 0.6, 0.1], [2.0, 0.2, 0.8, 0.3]])
    x = sim(theta)
    assert x.shape == (3,) + sim.x_shape and sim.x_shape == (1, 17, 17, 17)
    assert x.dtype == torch.float32
    assert set(torch.unique(x).tolist()) <= {0.0, 1.0, 2.0}
    # a batch is the same as one call per row
    rows = torch.cat([sim(t[None]) for t in theta])
    assert torch.equal(x, rows)
    # and the labels are the thresholded forward model on the ROI
    full = FKSolver(sim.domain).solve(0.3, 1.0, seed_density(sim.domain, (15.0, 14.0, 13.0)), [6.0])[0]
    u = full[sim.domain.crop_slices(sim.roi)]
    expected = (u >= 0.7).astype(np.float32) + (u >= 0.25)
    np.testing.assert_array_equal(x[0, 0].numpy(), expected)
    assert (x[0] == 2).sum() > 0 and (x[0] == 1).sum() > 0


def test_larger_growth_gives_larger_tumours(sim):
    x = sim(torch.tensor([[0.5, 0.3, 0.7, 0.25], [0.5, 0.9, 0.7, 0.25]]))
    assert (x[1] >= 1).sum() > (x[0] >= 1).sum()


@pytest.mark.parametrize("theta, match", [
    ([[1.0, 0.5, 0.3, 0.5]], "u_T2 < u_T1"),
    ([[-1.0, 0.5, 0.7, 0.25]], "D and rho must be >= 0"),
    ([[1.0, float("nan"), 0.7, 0.25]], "NaN"),
    ([[1.0, 0.5]], r"\(B, 4\)"),
])
def test_invalid_theta_raises(sim, theta, match):
    with pytest.raises(ValueError, match=match):
        sim(torch.tensor(theta))


def test_picklable_for_workers(sim):
    clone = pickle.loads(pickle.dumps(sim))
    theta = torch.tensor([[1.0, 0.5, 0.7, 0.25]])
    assert torch.equal(clone(theta), sim(theta))


def test_density_initial_condition_and_full_grid():
    anatomy = phantom((20, 20, 20))
    u0 = np.zeros(anatomy.shape, np.float32)
    u0[9:12, 9:12, 9:12] = 0.9
    sim = TumorSimulator(anatomy, InitialCondition(density=u0), day=2.0, roi_size_mm=12.0)
    np.testing.assert_allclose(sim.u0, u0)  # the domain is the whole anatomy
    x = sim(torch.tensor([[0.1, 1.0, 0.7, 0.25]]))
    assert (x == 2).sum() >= 27
    with pytest.raises(ValueError, match="exactly one"):
        InitialCondition()


def test_tumours_larger_than_the_roi_keep_their_physics():
    """The ROI is only a window: the model runs on the whole anatomy, so a tumour that outgrows the
    ROI is the tumour of the whole brain, cut to the ROI, with no wall at the ROI's faces."""
    anatomy = phantom((20, 20, 20))
    theta = torch.tensor([[2.0, 1.0, 0.7, 0.25]])
    windowed = TumorSimulator(anatomy, seed_mm=(10, 10, 10), day=4.0, roi_size_mm=8.0)
    whole = TumorSimulator(anatomy, seed_mm=(10, 10, 10), day=4.0, roi_size_mm=40.0)
    assert whole.roi.shape == anatomy.shape and windowed.roi.shape == (9, 9, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no wall, no warning
        x = windowed(theta)
    assert (x[0, 0] >= 1).all()  # the tumour fills the window ...
    np.testing.assert_array_equal(x[0, 0].numpy(), whole(theta)[0, 0][windowed.roi_slices].numpy())


def test_wall_warning_on_a_cropped_domain():
    anatomy = phantom((20, 20, 20))
    sim = TumorSimulator(anatomy, seed_mm=(10, 10, 10), day=20.0, roi_size_mm=8.0, domain_mm=8.0)
    assert sim.domain.shape == (9, 9, 9)
    with pytest.warns(UserWarning, match="cuts brain tissue"):
        sim(torch.tensor([[2.0, 1.0, 0.7, 0.25]]))


def test_works_with_sbi_simulate_for_sbi_in_worker_processes(sim):
    from sbi.inference import simulate_for_sbi
    from sbi.utils import BoxUniform

    prior = BoxUniform(torch.tensor([0.3, 0.3, 0.6, 0.1]), torch.tensor([1.0, 1.0, 0.8, 0.3]))
    theta, x = simulate_for_sbi(sim, prior, num_simulations=6, num_workers=2, seed=3,
                                simulation_batch_size=3, show_progress_bar=False)
    assert x.shape == (6,) + sim.x_shape
    assert torch.equal(x, sim(theta))  # the worker processes computed the same maps


def test_one_backend_setting_chooses_the_numpy_reference_too():
    from conftest import phantom

    from sbi_tumor.solver import SolverConfig

    anatomy = phantom((12, 12, 12), spacing=2.0)
    theta = torch.tensor([[0.5, 0.5, 0.7, 0.25]])
    numba = TumorSimulator(anatomy, seed_mm=(12.0, 12.0, 12.0), day=3.0, roi_size_mm=24.0, backend="numba")
    numpy = TumorSimulator(anatomy, seed_mm=(12.0, 12.0, 12.0), day=3.0, roi_size_mm=24.0, backend="numpy")
    assert numpy.resolved_backend == "numpy" and numpy.solver.config.backend == "numpy"
    np.testing.assert_allclose(numpy.density(theta[:, :2], [3.0]), numba.density(theta[:, :2], [3.0]), atol=1e-5)
    with pytest.raises(ValueError, match="give the solver once"):
        TumorSimulator(anatomy, seed_mm=(12.0, 12.0, 12.0), day=3.0, backend="torch",
                       solver_config=SolverConfig(backend="numpy"))
