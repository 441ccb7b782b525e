import numpy as np
import pytest
import torch

from sbi_tumor.anatomy import AnatomyError
from sbi_tumor.solver import FKSolver, SolverConfig, seed_density
from sbi_tumor.torch_solver import TorchFKSolver
from conftest import phantom, random_anatomy

# Very different D (and rho) so that the members need different numbers of steps; not sorted.
D = [0.4, 0.02, 3.0, 1.0]
RHO = [0.0, 0.5, 1.2, 0.2]
TIMES = [0.5, 2.0, 2.0, 4.0]  # includes an empty interval


@pytest.fixture(scope="module")
def anatomy():
    return random_anatomy((22, 18, 14), seed=3, spacing=1.5)


@pytest.fixture(scope="module")
def u0(anatomy):
    return seed_density(anatomy, anatomy.voxel_to_world(np.array([11, 9, 7])), sigma_mm=3.0)


def numba_batch(anatomy, u0, config, d=D, rho=RHO, times=TIMES):
    solver = FKSolver(anatomy, config)
    u0s = np.broadcast_to(u0, (len(d),) + u0.shape)
    return np.stack([solver.solve(di, ri, u, times) for di, ri, u in zip(d, rho, u0s)])


@pytest.mark.parametrize("active_tol", [1e-6, 0.0])
def test_batch_matches_numba_solver(anatomy, u0, active_tol):
    config = SolverConfig(active_tol=active_tol)
    solver = TorchFKSolver(anatomy, config, device="cpu")
    counts = [sum(solver.n_steps(d, r, TIMES)) for d, r in zip(D, RHO)]
    assert len(set(counts)) == len(D)  # every member steps differently
    u = solver.solve(D, RHO, u0, TIMES)
    assert u.shape == (len(D), len(TIMES)) + anatomy.shape and u.dtype == np.float32
    np.testing.assert_allclose(u, numba_batch(anatomy, u0, config), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(u[:, 1], u[:, 2])  # nothing happens in an empty interval


def test_active_box_matches_full_grid(anatomy, u0):
    boxed = TorchFKSolver(anatomy, SolverConfig(active_tol=1e-6, shrink_every=2), "cpu").solve(D, RHO, u0, TIMES)
    exact = numba_batch(anatomy, u0, SolverConfig(active_tol=0.0))
    np.testing.assert_allclose(boxed, exact, rtol=0, atol=1e-5)


def test_per_member_initial_densities(anatomy, u0):
    rng = np.random.default_rng(0)
    u0s = np.stack([u0, np.roll(u0, 3, axis=0), rng.uniform(0, 1, u0.shape).astype(np.float32)])
    d, rho = [2.0, 0.1, 0.7], [0.3, 0.9, 0.0]
    u = TorchFKSolver(anatomy, device="cpu").solve(torch.tensor(d, dtype=torch.float64), np.array(rho), u0s, [1.0])
    for b in range(3):
        ref = FKSolver(anatomy).solve(d[b], rho[b], u0s[b], [1.0])
        np.testing.assert_allclose(u[b], ref, rtol=0, atol=1e-4)


def test_pure_diffusion_conserves_mass_around_csf():
    csf = np.zeros((20, 16, 12), bool)
    csf[8:12, 4:12, 3:9] = True
    anatomy = phantom(csf.shape, spacing=1.5, wm=0.7, gm=0.3, csf_mask=csf)
    u0 = seed_density(anatomy, [5 * 1.5, 8 * 1.5, 6 * 1.5], sigma_mm=3.0)
    d, times = [0.3, 1.0, 3.0], [2.0, 10.0]
    config = SolverConfig(active_tol=0.0)
    u = TorchFKSolver(anatomy, config, device="cpu").solve(d, [0.0] * 3, u0, times)
    mass0 = u0.astype(np.float64).sum()
    np.testing.assert_allclose(u.astype(np.float64).sum(axis=(2, 3, 4)), mass0, rtol=1e-5)
    np.testing.assert_allclose(u, numba_batch(anatomy, u0, config, d, [0.0] * 3, times), rtol=0, atol=1e-4)


def test_density_stays_in_unit_interval(anatomy):
    rng = np.random.default_rng(1)
    u0 = rng.uniform(0, 1, anatomy.shape).astype(np.float32)
    u0[::3] = 1.0
    u = TorchFKSolver(anatomy, SolverConfig(max_reaction_step=2.0), device="cpu").solve(
        [0.0, 5.0, 1.0], [20.0, 3.0, 0.0], u0, [0.1, 1.0, 3.0])
    assert u.min() >= 0 and u.max() <= 1
    assert np.all(u[:, :, ~anatomy.tissue] == 0)  # nothing lives outside tissue


def test_empty_batch(anatomy, u0):
    assert TorchFKSolver(anatomy, device="cpu").solve([], [], u0, [1.0, 2.0]).shape == (0, 2) + anatomy.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(anatomy, u0):
    cpu = TorchFKSolver(anatomy, device="cpu").solve(D, RHO, u0, TIMES)
    cuda_solver = TorchFKSolver(anatomy, device="cuda")
    assert cuda_solver.cx.is_cuda
    np.testing.assert_allclose(cuda_solver.solve(D, RHO, u0, TIMES), cpu, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, error", [
    (dict(d_white=[-1.0], rho=[0.1]), ValueError),
    (dict(d_white=[1.0], rho=[np.nan]), ValueError),
    (dict(d_white=[1.0, 2.0], rho=[0.1]), ValueError),
    (dict(d_white=[[1.0]], rho=[[0.1]]), ValueError),
    (dict(times=[2.0, 1.0]), ValueError),
    (dict(times=[-1.0]), ValueError),
    (dict(u0=np.zeros((3, 3, 3), np.float32)), AnatomyError),
    (dict(u0=np.zeros((2, 22, 18, 14), np.float32)), AnatomyError),
    (dict(u0=np.full((22, 18, 14), 1.5, np.float32)), ValueError),
])
def test_bad_input_raises(anatomy, u0, kwargs, error):
    args = dict(d_white=[1.0], rho=[0.1], u0=u0, times=[1.0]) | kwargs
    with pytest.raises(error):
        TorchFKSolver(anatomy, device="cpu").solve(**args)
