import numpy as np
import pytest

from sbi_tumor.anatomy import Anatomy, AnatomyError
from conftest import phantom, random_anatomy


def test_mni152_default_is_embedded_and_consistent(mni2):
    assert mni2.shape == (98, 116, 94)
    np.testing.assert_allclose(mni2.spacing, [2, 2, 2])
    total = mni2.wm + mni2.gm + mni2.csf
    assert total.max() <= 1 + 1e-5
    # grey + white matter of the (enlarged, averaged) MNI template: about 1.7 litres
    tissue_litres = (mni2.wm + mni2.gm).sum() * mni2.voxel_volume / 1e6
    assert 1.5 < tissue_litres < 1.8
    # the ventricles (deep, near the midline) are CSF, not tissue: several ml of pure CSF
    pure_csf = mni2.voxel_to_world(np.argwhere(mni2.csf > 0.9))
    deep = (np.abs(pure_csf[:, 0]) < 25) & (np.abs(pure_csf[:, 1] + 10) < 30) & (
        np.abs(pure_csf[:, 2] - 17) < 18)
    assert deep.sum() * mni2.voxel_volume > 5000  # mm^3
    assert not mni2.tissue[mni2.csf > 0.9].any()


def test_diffusivity_white_grey_csf():
    wm = np.array([1.0, 0.0, 0.0, 0.5, 0.05], np.float32).reshape(5, 1, 1)
    gm = np.array([0.0, 1.0, 0.0, 0.5, 0.0], np.float32).reshape(5, 1, 1)
    csf = 1 - wm - gm
    anatomy = Anatomy(wm=wm, gm=gm, csf=csf, affine=np.eye(4))
    d = anatomy.diffusivity(0.2, ratio=10).ravel()
    # partial volume: tissue-weighted mean; below the tissue threshold (0.1): none
    np.testing.assert_allclose(d, [0.2, 0.02, 0.0, 0.11, 0.0], rtol=1e-6)
    with pytest.raises(AnatomyError, match="ratio"):
        anatomy.diffusivity(0.2, ratio=0.5)


@pytest.mark.parametrize("bad, match", [
    (dict(gm=np.zeros((3, 3, 4))), "different shapes"),
    (dict(wm=np.full((3, 3, 3), np.nan)), "NaN"),
    (dict(csf=np.full((3, 3, 3), -0.1)), r"\[0, 1\]"),
    (dict(wm=np.full((3, 3, 3), 0.7), gm=np.full((3, 3, 3), 0.7)), "sum to at most 1"),
    (dict(affine=np.zeros((4, 4))), "affine"),
])
def test_bad_maps_raise_clear_errors(bad, match):
    args = dict(wm=np.full((3, 3, 3), 0.5), gm=np.full((3, 3, 3), 0.2), csf=np.zeros((3, 3, 3)),
                affine=np.eye(4))
    args.update(bad)
    with pytest.raises(AnatomyError, match=match):
        Anatomy(**args)


def test_seed_checks():
    csf = np.zeros((6, 6, 6), bool)
    csf[0] = True
    anatomy = phantom((6, 6, 6), spacing=2.0, csf_mask=csf)
    assert anatomy.check_seed([4.0, 4.0, 4.0]) == (2, 2, 2)
    with pytest.raises(AnatomyError, match="outside the image"):
        anatomy.check_seed([40.0, 0, 0])
    with pytest.raises(AnatomyError, match="not in brain tissue"):
        anatomy.check_seed([0.0, 4.0, 4.0])


def test_resample_averages_blocks_and_keeps_world_coordinates():
    anatomy = random_anatomy((8, 6, 4), seed=0)
    coarse = anatomy.resample(2.0)
    assert coarse.shape == (4, 3, 2)
    np.testing.assert_allclose(coarse.spacing, 2.0)
    np.testing.assert_allclose(coarse.wm[1, 2, 0], anatomy.wm[2:4, 4:6, 0:2].mean(), rtol=1e-6)
    # the centre of coarse voxel 0 is the centre of fine voxels 0..1
    np.testing.assert_allclose(coarse.voxel_to_world([0, 0, 0]), [0.5, 0.5, 0.5])
    with pytest.raises(AnatomyError, match="integer multiple"):
        anatomy.resample(1.5)


def test_crop_keeps_world_coordinates():
    anatomy = random_anatomy((20, 20, 20), seed=0, spacing=2.0)
    roi = anatomy.crop([20.0, 20.0, 20.0], 10.0)
    assert roi.shape == (7, 7, 7)
    np.testing.assert_allclose(roi.voxel_to_world([3, 3, 3]), [20, 20, 20])
    sl = anatomy.crop_slices(roi)
    np.testing.assert_array_equal(anatomy.wm[sl], roi.wm)
