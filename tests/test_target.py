import numpy as np
import pytest

from conftest import phantom
from sbi_tumor.patient.target import clinical_target, coverage, model_target


def test_clinical_target_is_the_t2_region_grown_by_the_margin_in_mm():
    anatomy = phantom((41, 41, 41), spacing=2.0)
    t2 = np.zeros(anatomy.shape, bool)
    t2[20, 20, 20] = True
    ctv = clinical_target(t2, anatomy, margin_mm=10.0)
    # a ball of radius 10 mm = 5 voxels: 515 voxels of the 2 mm grid
    assert ctv.sum() == int((((np.indices(anatomy.shape) - 20) ** 2).sum(0) <= 25).sum())
    assert ctv[25, 20, 20] and not ctv[26, 20, 20]


def test_clinical_target_stays_in_tissue():
    csf = np.zeros((21, 21, 21), bool)
    csf[12:] = True
    anatomy = phantom(csf.shape, spacing=2.0, csf_mask=csf)
    t2 = np.zeros(anatomy.shape, bool)
    t2[9:11, 9:11, 9:11] = True
    ctv = clinical_target(t2, anatomy, margin_mm=15.0)
    assert not ctv[12:].any() and ctv[:12].sum() > t2.sum()


def test_model_target_adds_the_most_likely_voxels_to_the_visible_region():
    anatomy = phantom((10, 10, 10))
    t2 = np.zeros(anatomy.shape, bool)
    t2[0, 0, :3] = True
    score = np.zeros(anatomy.shape)
    score[5, 5, :4] = [0.9, 0.8, 0.8, 0.1]
    tie = np.zeros(anatomy.shape)
    tie[5, 5, 2] = 1.0  # breaks the tie between the two 0.8 voxels
    target = model_target(score, t2, anatomy, num_voxels=5, tie_break=tie)
    assert target.sum() == 5 and target[t2].all()
    assert target[5, 5, 0] and target[5, 5, 2] and not target[5, 5, 1]
    assert model_target(score, t2, anatomy, num_voxels=2).sum() == 3  # never smaller than T2


def test_coverage_is_the_covered_fraction_of_the_later_region():
    later = np.zeros((4, 4, 4), bool)
    later[:2] = True
    target = np.zeros_like(later)
    target[0] = True
    assert coverage(target, later) == 0.5 and coverage(later, later) == 1.0
    with pytest.raises(ValueError, match="nothing to cover"):
        coverage(target, np.zeros_like(later))
