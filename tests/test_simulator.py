import pickle

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
    u = FKSolver(sim.roi).solve(0.3, 1.0, seed_density(sim.roi, (15.0, 14.0, 13.0)), [6.0])[0]
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
    np.testing.assert_allclose(sim.to_full_grid(sim.u0), u0)
    x = sim(torch.tensor([[0.1, 1.0, 0.7, 0.25]]))
    assert (x == 2).sum() >= 27
    with pytest.raises(ValueError, match="exactly one"):
        InitialCondition()


def test_roi_border_warning():
    anatomy = phantom((20, 20, 20))
    sim = TumorSimulator(anatomy, seed_mm=(10, 10, 10), day=20.0, roi_size_mm=8.0)
    with pytest.warns(UserWarning, match="border"):
        sim(torch.tensor([[2.0, 1.0, 0.7, 0.25]]))


def test_works_with_sbi_simulate_for_sbi_in_worker_processes(sim):
    from sbi.inference import simulate_for_sbi
    from sbi.utils import BoxUniform

    prior = BoxUniform(torch.tensor([0.3, 0.3, 0.6, 0.1]), torch.tensor([1.0, 1.0, 0.8, 0.3]))
    theta, x = simulate_for_sbi(sim, prior, num_simulations=6, num_workers=2, seed=3,
                                simulation_batch_size=3, show_progress_bar=False)
    assert x.shape == (6,) + sim.x_shape
    assert torch.equal(x, sim(theta))  # the worker processes computed the same maps
