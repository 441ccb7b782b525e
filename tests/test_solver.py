import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbi_tumor.solver import FKSolver, SolverConfig, Stencil, reference_step, seed_density
from conftest import phantom, random_anatomy


def front_position(u_line: np.ndarray, spacing: float, level: float = 0.5) -> float:
    """Position (mm, from voxel 0's centre) where a decreasing profile crosses ``level``."""
    i = int(np.argmax(u_line < level))
    a, b = u_line[i - 1], u_line[i]
    return (i - 1 + (a - level) / (a - b)) * spacing


def run_1d(spacing: float, d: float, rho: float, times, length=100.0, config=None):
    """A 1D front in a homogeneous (n, 1, 1) domain started from u=1 on the first 5 mm."""
    n = int(round(length / spacing))
    anatomy = phantom((n, 1, 1), spacing=spacing)
    x = np.arange(n) * spacing
    u0 = (x < 5.0).astype(np.float32)[:, None, None]
    u = FKSolver(anatomy, config or SolverConfig()).solve(d, rho, u0, times)
    return [front_position(ut[:, 0, 0], spacing) for ut in u]


def test_pure_diffusion_conserves_mass_around_csf_holes():
    csf = np.zeros((24, 20, 16), bool)
    csf[8:12, 5:15, 4:12] = True  # a ventricle-like hole
    csf[16:20, 2:6, :] = True
    anatomy = phantom(csf.shape, spacing=1.5, wm=0.7, gm=0.3, csf_mask=csf)
    u0 = seed_density(anatomy, [6 * 1.5, 10 * 1.5, 8 * 1.5], sigma_mm=3.0)
    for backend in ("numba", "numpy"):
        solver = FKSolver(anatomy, SolverConfig(active_tol=0.0, backend=backend))
        u = solver.solve(d_white=1.0, rho=0.0, u0=u0, times=[5, 50, 200])
        mass0 = u0.astype(np.float64).sum()
        for ut in u:
            assert abs(ut.astype(np.float64).sum() - mass0) / mass0 < 1e-5
        assert u[-1].std() < u[0].std()  # it did diffuse


def test_front_speed_matches_travelling_wave():
    d, rho = 1.0, 1.0  # wave speed 2 mm/day, front width sqrt(D/rho) = 1 mm
    x20, x40 = run_1d(0.25, d, rho, [20.0, 40.0], length=110.0)
    speed = (x40 - x20) / 20.0
    # The speed approaches 2 sqrt(D rho) from below (Bramson's log delay: -3/(2t) per day).
    assert speed == pytest.approx(2 * math.sqrt(d * rho), rel=0.05)
    assert speed < 2 * math.sqrt(d * rho)


def test_front_speed_scales_with_sqrt_d_rho():
    speeds = []
    for d, rho in [(0.5, 0.5), (2.0, 0.5)]:
        a, b = run_1d(0.25, d, rho, [30.0, 60.0], length=150.0)
        speeds.append((b - a) / 30.0)
    assert speeds[1] / speeds[0] == pytest.approx(2.0, rel=0.05)


def test_grid_refinement_converges():
    # No reaction cap, so dt = 0.45 h^2 is refined together with the grid.
    config = SolverConfig(max_reaction_step=10.0)
    hs = (1.0, 0.5, 0.25, 0.125, 0.0625)
    fronts = {h: run_1d(h, 1.0, 1.0, [15.0], length=50.0, config=config)[0] for h in hs}
    errors = [abs(fronts[h] - fronts[hs[-1]]) for h in hs[:-1]]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[0] / errors[2] > 5  # at least first order
    assert errors[3] < 0.1  # mm


def test_no_density_enters_csf_or_leaves_the_brain():
    shape = (30, 12, 12)
    csf = np.zeros(shape, bool)
    csf[14:16] = True  # a wall of CSF splits the domain in two halves
    csf[:, 0, :] = True  # and a CSF layer along one side
    anatomy = phantom(shape, csf_mask=csf)
    u0 = seed_density(anatomy, [5, 6, 6], sigma_mm=1.5)
    u = FKSolver(anatomy).solve(2.0, 0.5, u0, [10, 60])
    assert u[-1][:14, 1:].min() > 0.99  # the near side is filled
    assert np.all(u[:, csf] == 0)
    assert np.all(u[:, 16:] == 0)  # nothing crossed the wall


def test_mirror_symmetric_setup_gives_mirror_symmetric_solution():
    half = random_anatomy((9, 14, 12), seed=3)
    sym = lambda m: np.concatenate([m, m[::-1]], axis=0)  # noqa: E731
    anatomy = type(half)(wm=sym(half.wm), gm=sym(half.gm), csf=sym(half.csf), affine=half.affine)
    u0 = np.zeros(anatomy.shape, np.float32)
    u0[8:10, 6:8, 5:7] = 0.8
    u = FKSolver(anatomy).solve(1.0, 0.3, u0, [3, 12])
    np.testing.assert_allclose(u, u[:, ::-1], atol=1e-6)
    assert u[-1].sum() > 10 * u0.sum()


def test_numba_kernel_matches_numpy_reference():
    anatomy = random_anatomy((18, 15, 13), seed=1)
    u0 = seed_density(anatomy, [9, 7, 6], sigma_mm=2.0)
    times = [0.5, 4.0, 10.0]
    fast = FKSolver(anatomy).solve(0.8, 0.4, u0, times)
    ref = FKSolver(anatomy, SolverConfig(backend="numpy")).solve(0.8, 0.4, u0, times)
    assert np.abs(fast - ref).max() < 1e-5
    assert ref[-1].max() > 0.5  # a non-trivial comparison


def test_reference_step_is_a_convex_combination_plus_exact_logistic():
    anatomy = random_anatomy((6, 5, 4), seed=2)
    stencil = Stencil(anatomy)
    u = np.pad(np.random.default_rng(0).random(anatomy.shape, dtype=np.float32), 1)
    # rho = 0: one step keeps the sum (conservative) and stays within [min, max] (monotone).
    dt = 0.9 / stencil.max_coupling
    v = reference_step(u, stencil, dt, 1.0, 0.0)
    assert v.sum() == pytest.approx(u.sum(), rel=1e-6)
    assert v.min() >= u.min() - 1e-7 and v.max() <= u.max() + 1e-7
    # D = 0: each voxel follows the exact logistic curve.
    w = reference_step(u, stencil, 2.0, 0.0, 0.3)
    exact = u * math.exp(0.6) / (1 - u + u * math.exp(0.6))
    np.testing.assert_allclose(w, exact, rtol=1e-5, atol=1e-7)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.floats(0.02, 1.5), rho=st.floats(0.002, 0.2), days=st.floats(1.0, 1500.0),
       seed=st.integers(0, 3))
def test_density_stays_in_unit_interval(d, rho, days, seed):
    anatomy = random_anatomy((10, 9, 8), seed=seed, spacing=2.0)
    u0 = np.where(anatomy.tissue, 0.0, 0.0).astype(np.float32)
    u0[4:6, 4:6, 3:5] = 1.0
    u = FKSolver(anatomy).solve(d, rho, u0, [days / 3, days])
    assert u.min() >= 0.0 and u.max() <= 1.0
    assert np.isfinite(u).all()


def test_output_times_are_hit_exactly_and_validated():
    anatomy = phantom((8, 8, 8))
    solver = FKSolver(anatomy)
    u0 = seed_density(anatomy, [4, 4, 4])
    u = solver.solve(0.5, 0.2, u0, [0.0, 1.0, 1.0, 2.5])
    np.testing.assert_array_equal(u[0], u0)
    np.testing.assert_array_equal(u[1], u[2])
    both = solver.solve(0.5, 0.2, u0, [2.5])
    np.testing.assert_allclose(u[3], both[0], atol=1e-3)  # other step sizes: O(dt) apart
    with pytest.raises(ValueError, match="non-decreasing"):
        solver.solve(0.5, 0.2, u0, [2.0, 1.0])
    with pytest.raises(ValueError, match="D >= 0"):
        solver.solve(-1.0, 0.2, u0, [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        solver.solve(0.5, 0.2, u0 * 3, [1.0])


def test_stable_step_uses_stencil_and_reaction_cap():
    solver = FKSolver(phantom((6, 6, 6), spacing=2.0))
    assert solver.stencil.max_coupling == pytest.approx(6 / 4)
    assert solver.n_steps(1.0, 0.01, [10.0]) == [math.ceil(10 / (0.9 / 1.5))]
    assert solver.n_steps(0.001, 1.0, [10.0]) == [100]  # rho dt <= 0.1


@pytest.mark.parametrize("spacing, seed_mm", [(0.5, (10.0, 10.0, 10.0)), (1.0, (10.3, 9.6, 10.45)),
                                              (2.0, (10.0, 11.0, 9.2)), (2.0, (9.1, 10.0, 10.0))])
def test_seed_mass_is_the_same_on_every_grid(spacing, seed_mm):
    """The seed is defined in mm: its mass (2 pi)^{3/2} sigma^3 and its centre of mass do not depend
    on the grid, nor on where the seed lies within its voxel."""
    n = int(round(20 / spacing))
    anatomy = phantom((n, n, n), spacing=spacing)
    u0 = seed_density(anatomy, seed_mm, sigma_mm=2.0)
    mass = u0.astype(np.float64).sum() * spacing**3
    assert mass == pytest.approx((2 * math.pi) ** 1.5 * 8.0, rel=1e-4)
    centre = (np.argwhere(u0 >= 0) * spacing * u0.reshape(-1, 1)).sum(0) / u0.sum()
    np.testing.assert_allclose(centre, seed_mm, atol=1e-3)


def test_seed_coarser_than_its_width_warns():
    anatomy = phantom((8, 8, 8), spacing=4.0)
    with pytest.warns(UserWarning, match="not resolved"):
        seed_density(anatomy, (16.0, 16.0, 16.0))
    with pytest.raises(ValueError, match="sigma_mm"):
        seed_density(anatomy, (16.0, 16.0, 16.0), sigma_mm=0.0)


def test_whole_model_converges_with_the_grid(mni2):
    """The same command on the 1 mm and the 2 mm atlas gives the same tumour (issue: the default seed
    of one voxel gave 20.3 against 46.7 cm^3). Case: seed (-25, 20, 25) mm, D 0.13, rho 0.025, day 300."""
    from sbi_tumor.anatomy import load_mni152

    volumes = []
    for anatomy in (load_mni152(1.0), mni2):
        u = FKSolver(anatomy).solve(0.13, 0.025, seed_density(anatomy, (-25.0, 20.0, 25.0)), [300.0])[0]
        volumes.append([(u >= level).sum() * anatomy.voxel_volume / 1e3 for level in (0.7, 0.25)])
    (t1_fine, t2_fine), (t1_coarse, t2_coarse) = volumes
    assert t2_fine > 30 and t1_fine > 10  # a tumour with a core, well inside the brain
    assert t1_coarse == pytest.approx(t1_fine, rel=0.03)
    assert t2_coarse == pytest.approx(t2_fine, rel=0.03)
