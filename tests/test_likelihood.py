"""Tests of the voxelwise Bernoulli segmentation likelihood."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sbi_tumor.likelihood import DEFAULT_SLOPES, BernoulliLikelihood

FORMS = ["logistic", "reference", "symmetric"]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# Five voxels along x; u = 0.6 sits exactly on the T1 threshold.
U = np.array([0.0, 0.5, 0.6, 0.7, 1.0]).reshape(1, 5, 1, 1)
T1 = np.array([0, 1, 0, 0, 1], dtype=bool).reshape(5, 1, 1)
T2 = np.array([0, 1, 1, 1, 1], dtype=bool).reshape(5, 1, 1)


def test_logistic_hand_computed():
    lik = BernoulliLikelihood("logistic", slope=0.1, eps=0.0)
    # T1 (u_c = 0.6): z = (u - 0.6)/0.1 = -6, -1, 0, 1, 4 with labels 0, 1, 0, 0, 1.
    t1 = log_sigmoid(6) + log_sigmoid(-1) + math.log(0.5) + log_sigmoid(-1) + log_sigmoid(4)
    # T2 (u_c = 0.3): z = -3, 2, 3, 4, 7 with labels 0, 1, 1, 1, 1.
    t2 = log_sigmoid(3) + log_sigmoid(2) + log_sigmoid(3) + log_sigmoid(4) + log_sigmoid(7)
    out = lik.log_likelihood(U, T1, T2, np.array([0.6]), np.array([0.3]))
    assert out.shape == (1,) and out.dtype == np.float64
    np.testing.assert_allclose(out, [t1 + t2], rtol=1e-12)
    np.testing.assert_allclose(t1 + t2, -3.583460, atol=1e-6)


def test_reference_hand_computed():
    lik = BernoulliLikelihood("reference", slope=0.01, eps=0.0)
    s = 0.01
    # T1 (u_c = 0.6), d = -0.6, -0.1, 0, 0.1, 0.4; above the threshold p = 1 - exp(-1/s)/2.
    t1 = (
        math.log1p(-0.5 * math.exp(-0.36 / s))  # label 0, d < 0
        + math.log(0.5) - 0.01 / s  # label 1 below the threshold: p = exp(-d^2/s)/2
        + math.log(0.5)  # exactly on the threshold p = 1/2
        + math.log(0.5) - 1 / s  # label 0 above the threshold: 1 - p = exp(-1/s)/2
        + math.log1p(-0.5 * math.exp(-1 / s))
    )
    # T2 (u_c = 0.3), d = -0.3, 0.2, 0.3, 0.4, 0.7 with labels 0, 1, 1, 1, 1.
    t2 = math.log1p(-0.5 * math.exp(-0.09 / s)) + 4 * math.log1p(-0.5 * math.exp(-1 / s))
    out = lik.log_likelihood(U, T1, T2, 0.6, 0.3)
    np.testing.assert_allclose(out, [t1 + t2], rtol=1e-12)
    np.testing.assert_allclose(t1 + t2, -103.079503, atol=1e-6)

    # The symmetric (old) version differs only above the threshold, where it uses d^2 too.
    sym = BernoulliLikelihood("symmetric", slope=0.01, eps=0.0).log_likelihood(U, T1, T2, 0.6, 0.3)
    t1_sym = t1 - (math.log(0.5) - 1 / s) + (math.log(0.5) - 0.01 / s)
    t1_sym += math.log1p(-0.5 * math.exp(-0.16 / s)) - math.log1p(-0.5 * math.exp(-1 / s))
    t2_sym = (
        math.log1p(-0.5 * math.exp(-0.09 / s))
        + sum(math.log1p(-0.5 * math.exp(-d * d / s)) for d in (0.2, 0.3, 0.4, 0.7))
    )
    np.testing.assert_allclose(sym, [t1_sym + t2_sym], rtol=1e-12)


def test_clipping_bounds_each_voxel():
    # Label 0 far above the threshold costs log(1e-6) per voxel at most.
    lik = BernoulliLikelihood("reference", slope=1e-3, eps=1e-6)
    u = np.ones((1, 2, 1, 1))
    none = np.zeros((2, 1, 1), dtype=bool)
    out = lik.log_likelihood(u, none, none, 0.5, 0.2)
    np.testing.assert_allclose(out, [4 * math.log(1e-6)], rtol=1e-12)
    p = lik.tumour_probability(np.array([0.0, 1.0]), 0.5)
    np.testing.assert_allclose(p, [1e-6, 1 - 1e-6], rtol=1e-12)


def test_default_slopes():
    assert BernoulliLikelihood().slope == 0.05 == DEFAULT_SLOPES["logistic"]
    assert BernoulliLikelihood("reference").slope == 0.01
    with pytest.raises(ValueError):
        BernoulliLikelihood("gaussian")
    with pytest.raises(ValueError):
        BernoulliLikelihood(slope=-1.0)


@pytest.mark.parametrize("form", FORMS)
def test_numpy_torch_agree_batched_and_roi(form):
    rng = np.random.default_rng(0)
    u = rng.random((3, 6, 5, 4))
    t1, t2 = u[0] > 0.7, u[0] > 0.3
    roi = rng.random((6, 5, 4)) < 0.5
    u_t1, u_t2 = np.array([0.7, 0.6, 0.8]), np.array([0.3, 0.25, 0.2])
    lik = BernoulliLikelihood(form)
    ref = lik.log_likelihood(u, t1, t2, u_t1, u_t2)
    assert ref.shape == (3,) and isinstance(ref, np.ndarray)
    # The batch is independent: each row equals its own unbatched evaluation.
    for b in range(3):
        np.testing.assert_allclose(lik.log_likelihood(u[b], t1, t2, u_t1[b], u_t2[b]), ref[b], rtol=1e-12)

    out64 = lik.log_likelihood(torch.tensor(u), torch.tensor(t1), torch.tensor(t2), torch.tensor(u_t1), torch.tensor(u_t2))
    assert isinstance(out64, torch.Tensor) and out64.dtype == torch.float64
    np.testing.assert_allclose(out64.numpy(), ref, rtol=1e-12)
    out32 = lik.log_likelihood(torch.tensor(u, dtype=torch.float32), t1, t2, u_t1, u_t2)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=1e-4)

    # The ROI sum equals the full sum over a masked array.
    in_roi = lik.log_likelihood(u, t1, t2, u_t1, u_t2, roi=roi)
    tensor_roi = lik.log_likelihood(torch.tensor(u), t1, t2, torch.tensor(u_t1), torch.tensor(u_t2), roi=torch.tensor(roi))
    np.testing.assert_allclose(tensor_roi.numpy(), in_roi, rtol=1e-12)
    per_voxel = [
        lik.log_likelihood(u[:, i, j, k][:, None, None, None], t1[i, j, k, None, None, None],
                           t2[i, j, k, None, None, None], u_t1, u_t2)
        for i, j, k in zip(*np.nonzero(roi))
    ]
    np.testing.assert_allclose(np.sum(per_voxel, axis=0), in_roi, rtol=1e-10)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("slope", [1e-8, 1e-3, 1e3])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_finite_at_extremes(form, slope, eps):
    u = np.array([0.0, 1.0, 0.3, 0.7]).reshape(1, 4, 1, 1)
    mask_all, mask_none = np.ones((4, 1, 1), bool), np.zeros((4, 1, 1), bool)
    lik = BernoulliLikelihood(form, slope=slope, eps=eps)
    for t1, t2 in [(mask_all, mask_all), (mask_none, mask_none), (mask_none, mask_all)]:
        for uu in (u, torch.tensor(u, dtype=torch.float32)):
            out = lik.log_likelihood(uu, t1, t2, 0.7, 0.3)
            assert np.all(np.isfinite(np.asarray(out))), (t1.any(), t2.any(), out)
            assert np.all(np.asarray(out) <= 0)


@pytest.mark.parametrize("form", FORMS)
def test_maximised_near_true_thresholds(form):
    # A density ramp over 401 voxels: thresholding it pins the thresholds to +-0.0025.
    u = np.broadcast_to(np.linspace(0, 1, 401)[:, None, None], (401, 2, 2))
    t1, t2 = u >= 0.6, u >= 0.25
    grid = np.linspace(0.4, 0.8, 81)
    lik = BernoulliLikelihood(form)
    # Profile each threshold with the other held at its true value.
    batch = np.broadcast_to(u, (len(grid), *u.shape))
    ll_t1 = lik.log_likelihood(batch, t1, t2, grid, np.full(len(grid), 0.25))
    ll_t2 = lik.log_likelihood(batch, t1, t2, np.full(len(grid), 0.6), grid - 0.3)
    assert abs(grid[np.argmax(ll_t1)] - 0.6) <= 0.006
    assert abs(grid[np.argmax(ll_t2)] - 0.3 - 0.25) <= 0.006
    # ... and clearly: 0.1 away from the truth costs many nats.
    assert ll_t1.max() - ll_t1[0] > 10 and ll_t2.max() - ll_t2[-1] > 10


@pytest.mark.parametrize("form", FORMS)
def test_sample_masks_frequencies(form):
    values = np.array([0.0, 0.2, 0.28, 0.32, 0.55, 0.62, 0.7, 1.0])
    u = np.broadcast_to(values[:, None, None], (8, 40, 40)).copy()
    lik = BernoulliLikelihood(form)
    p1, p2 = lik.tumour_probability(values, 0.6), lik.tumour_probability(values, 0.3)
    # 1600 voxels per value: binomial sd <= 0.0125, test at ~4 sd.
    t1, t2 = lik.sample_masks(u, 0.6, 0.3, generator=np.random.default_rng(1))
    assert t1.dtype == bool and t1.shape == u.shape
    np.testing.assert_allclose(t1.mean((1, 2)), p1, atol=0.05)
    np.testing.assert_allclose(t2.mean((1, 2)), p2, atol=0.05)
    # Batched torch draw with per-row thresholds.
    ut = torch.tensor(np.stack([u, u]))
    g = torch.Generator().manual_seed(0)
    s1, s2 = lik.sample_masks(ut, torch.tensor([0.6, 0.3]), torch.tensor([0.3, 0.3]), generator=g)
    assert s1.dtype == torch.bool and s1.shape == ut.shape
    np.testing.assert_allclose(s1[0].double().mean((1, 2)).numpy(), p1, atol=0.05)
    np.testing.assert_allclose(s1[1].double().mean((1, 2)).numpy(), p2, atol=0.05)
    np.testing.assert_allclose(s2[1].double().mean((1, 2)).numpy(), p2, atol=0.05)
    # Same seed, same masks.
    again = lik.sample_masks(u, 0.6, 0.3, generator=np.random.default_rng(1))
    assert np.array_equal(again[0], t1) and np.array_equal(again[1], t2)
