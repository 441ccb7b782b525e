import numpy as np
import pytest
import torch

from sbi_tumor.observation import best_threshold, label_map, labels_to_masks, masks_to_labels, threshold_interval


def test_label_map_thresholds():
    u = np.array([0.0, 0.2, 0.25, 0.5, 0.7, 0.9])
    np.testing.assert_array_equal(label_map(u, 0.7, 0.25), [0, 0, 1, 1, 2, 2])
    assert label_map(u, 0.7, 0.25).dtype == np.uint8
    t = label_map(torch.tensor(u, dtype=torch.float32), 0.7, 0.25)
    assert t.dtype == torch.float32 and t.tolist() == [0, 0, 1, 1, 2, 2]


def test_batched_thresholds_broadcast():
    u = torch.tensor([[0.3, 0.6], [0.3, 0.6]])
    out = label_map(u, torch.tensor([[0.5], [0.7]]), torch.tensor([[0.2], [0.4]]))
    assert out.tolist() == [[1, 2], [0, 1]]


@pytest.mark.parametrize("t1, t2", [(0.3, 0.5), (0.5, 0.5), (1.2, 0.2), (0.7, 0.0)])
def test_invalid_thresholds_raise(t1, t2):
    with pytest.raises(ValueError, match="0 < u_T2 < u_T1 < 1"):
        label_map(np.zeros(3), t1, t2)


def test_masks_round_trip():
    t2 = np.array([0, 1, 1, 1])
    t1 = np.array([0, 0, 1, 1])
    labels = masks_to_labels(t1, t2)
    np.testing.assert_array_equal(labels, [0, 1, 2, 2])
    m1, m2 = labels_to_masks(labels)
    np.testing.assert_array_equal(m1, t1 > 0)
    np.testing.assert_array_equal(m2, t2 > 0)


def test_best_threshold_is_exact_and_respects_the_range():
    u = np.array([0.1, 0.3, 0.4, 0.6, 0.8])
    # Mask {0.4, 0.6, 0.8}: any c in (0.3, 0.4] reproduces it; 0.4 is the candidate found.
    assert best_threshold(u, u >= 0.35) == (0.4, 0)
    # Not reachable from [0.5, 0.9]: any c in [0.5, 0.6] misses the 0.4 voxel only.
    c, wrong = best_threshold(u, u >= 0.35, low=0.5, high=0.9)
    assert wrong == 1 and 0.5 <= c <= 0.6
    # A mask no threshold gives: best is one wrong voxel, agreeing with a brute-force scan.
    mask = np.array([False, True, False, True, True])
    c, wrong = best_threshold(u, mask)
    brute = min(int(((u >= t) != mask).sum()) for t in np.linspace(0, 1, 1001))
    assert wrong == brute == 1 and int(((u >= c) != mask).sum()) == 1


def test_threshold_interval_spans_every_threshold_that_fits():
    u = np.array([0.1, 0.3, 0.4, 0.6, 0.8], dtype=np.float32)
    lo, hi, wrong = threshold_interval(u, u >= 0.35)
    # Any c in (0.3, 0.4] reproduces {0.4, 0.6, 0.8}: the interval is that, to float rounding.
    assert wrong == 0 and 0.3 < lo < 0.3 + 1e-6 and hi == pytest.approx(0.4)
    assert int(((u >= lo) != (u >= 0.35)).sum()) == int(((u >= hi) != (u >= 0.35)).sum()) == 0
    lo, hi, wrong = threshold_interval(u, u >= 0.35, low=0.5, high=0.9)  # c in [0.5, 0.6]
    assert wrong == 1 and lo == 0.5 and hi == pytest.approx(0.6)
