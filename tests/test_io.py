"""Tests of sbi_tumor.io: input checks, resampling, ADC density, atomic writes, simulation store."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sbi_tumor.anatomy import Anatomy
from sbi_tumor.io import OUTPUT_MARKER, atomic_output_dir, check_replaceable, save_nifti
from sbi_tumor.patient.inputs import InputError, adc_to_density, check_day, load_adc, load_label_map, load_mask, load_segmentations, to_anatomy_grid
from sbi_tumor.patient.store import SimulationStore, StoreError

SHAPE = (8, 9, 10)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def write(path: Path, data, affine=AFFINE) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def ball(radius: float, shape=SHAPE, centre=(4, 4, 5)) -> np.ndarray:
    grid = np.indices(shape)
    return ((grid - np.array(centre)[:, None, None, None]) ** 2).sum(0) <= radius**2


def anatomy(shape=SHAPE, affine=AFFINE) -> Anatomy:
    wm = np.full(shape, 0.6, np.float32)
    return Anatomy(wm=wm, gm=np.full(shape, 0.3, np.float32), csf=np.full(shape, 0.1, np.float32),
                   affine=affine)


def no_hidden_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


# -- masks ----------------------------------------------------------------------------------
def test_load_mask_accepts_binary_float_and_trailing_singleton(tmp_path):
    data = ball(2).astype(np.float32)[..., None]
    mask, affine = load_mask(write(tmp_path / "m.nii.gz", data))
    assert mask.dtype == bool and mask.shape == SHAPE
    np.testing.assert_array_equal(mask, ball(2))
    np.testing.assert_allclose(affine, AFFINE)


def test_load_mask_missing_file(tmp_path):
    with pytest.raises(InputError, match="T1 segmentation: file not found"):
        load_mask(tmp_path / "nope.nii.gz")


def test_load_mask_unreadable(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="cannot read .* as a NIfTI"):
        load_mask(path)


def test_load_mask_not_3d(tmp_path):
    path = write(tmp_path / "m.nii", np.zeros((*SHAPE, 3), np.uint8))
    with pytest.raises(InputError, match=r"expected a 3D image: it holds 3 volumes"):
        load_mask(path)
    with pytest.raises(InputError, match="expected a 3D image"):
        load_mask(write(tmp_path / "m2.nii", np.zeros((8, 9), np.uint8)))


def test_load_mask_label_map_refused(tmp_path):
    data = ball(3).astype(np.uint8) * 2
    data[ball(1)] = 4
    expected = r"not binary: found 3 distinct values \(0, 2, 4\).*load_label_map"
    with pytest.raises(InputError, match=expected):
        load_mask(write(tmp_path / "m.nii.gz", data), name="T2 segmentation")


def test_load_mask_probability_map_refused(tmp_path):
    data = ball(2) * np.float32(0.7)
    with pytest.raises(InputError, match=r"not binary.*0\.7.*threshold"):
        load_mask(write(tmp_path / "m.nii.gz", data))


def test_load_mask_empty(tmp_path):
    with pytest.raises(InputError, match="is empty"):
        load_mask(write(tmp_path / "m.nii.gz", np.zeros(SHAPE, np.uint8)))


def test_load_label_map(tmp_path):
    data = ball(3).astype(np.uint8) * 2
    data[ball(1)] = 4
    path = write(tmp_path / "labels.nii.gz", data)
    core, _ = load_label_map(path, labels=[1, 4])
    np.testing.assert_array_equal(core, ball(1))
    with pytest.raises(InputError, match=r"no voxel with label \[3\]; labels found: 0, 2, 4"):
        load_label_map(path, labels=[3])
    with pytest.raises(InputError, match="non-integer"):
        load_label_map(write(tmp_path / "f.nii.gz", ball(2) * np.float32(0.5)), labels=[1])


# -- segmentations --------------------------------------------------------------------------
def test_load_segmentations(tmp_path):
    t1, t2, affine = load_segmentations(write(tmp_path / "t1.nii.gz", ball(1).astype(np.uint8)),
                                        write(tmp_path / "t2.nii.gz", ball(3).astype(np.uint8)))
    np.testing.assert_array_equal(t1, ball(1))
    np.testing.assert_array_equal(t2, ball(3))
    np.testing.assert_allclose(affine, AFFINE)


def test_load_segmentations_shape_mismatch(tmp_path):
    t1 = write(tmp_path / "t1.nii.gz", ball(1).astype(np.uint8))
    t2 = write(tmp_path / "t2.nii.gz", ball(3, shape=(8, 9, 11)).astype(np.uint8))
    with pytest.raises(InputError, match=r"shape \(8, 9, 10\) but the T2 segmentation \(8, 9, 11\)"):
        load_segmentations(t1, t2)


def test_load_segmentations_affine_mismatch(tmp_path):
    shifted = AFFINE.copy()
    shifted[0, 3] = 1.0
    t1 = write(tmp_path / "t1.nii.gz", ball(1).astype(np.uint8))
    t2 = write(tmp_path / "t2.nii.gz", ball(3).astype(np.uint8), affine=shifted)
    with pytest.raises(InputError, match=r"different affines \(largest difference 1 mm\)"):
        load_segmentations(t1, t2)


def test_load_segmentations_core_slightly_outside_t2_is_merged(tmp_path):
    t1 = ball(4, shape=(20, 20, 20), centre=(10, 10, 10))  # 257 voxels
    t2 = t1.copy()
    t2[10, 10, 14] = False  # one T1 voxel (0.4%) outside T2
    with pytest.warns(UserWarning, match="1 voxels .* added to the T2 mask"):
        _, merged, _ = load_segmentations(write(tmp_path / "t1.nii", t1.astype(np.uint8)),
                                          write(tmp_path / "t2.nii", t2.astype(np.uint8)))
    np.testing.assert_array_equal(merged, t1)


def test_load_segmentations_core_outside_t2_raises(tmp_path):
    t1 = write(tmp_path / "t1.nii", ball(2, centre=(2, 2, 2)).astype(np.uint8))
    t2 = write(tmp_path / "t2.nii", ball(2, centre=(5, 6, 7)).astype(np.uint8))
    with pytest.raises(InputError, match=r"voxels \(\d+\.\d%\) of the T1 core lie outside the T2"):
        load_segmentations(t1, t2)


# -- resampling -----------------------------------------------------------------------------
def test_to_anatomy_grid_same_grid_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_anatomy_grid(ball(2).astype(np.uint8), AFFINE, anatomy())
    assert out.dtype == bool
    np.testing.assert_array_equal(out, ball(2))


def test_to_anatomy_grid_resamples_mask_with_warning():
    # The same region at 1 mm: its 2 mm-grid version must be the original ball.
    fine = np.kron(ball(2).astype(np.uint8), np.ones((2, 2, 2), np.uint8))
    fine_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine_affine[:3, 3] = -0.5  # fine voxel centres sit a quarter of a coarse voxel off
    with pytest.warns(UserWarning, match="T2 mask .* was resampled \\(nearest neighbour\\)"):
        out = to_anatomy_grid(fine, fine_affine, anatomy(), name="T2 mask")
    assert out.dtype == bool and out.shape == SHAPE
    np.testing.assert_array_equal(out, ball(2))


def test_to_anatomy_grid_resamples_continuous_linearly():
    affine = AFFINE.copy()
    affine[0, 3] = 1.0  # shifted by half a voxel along x
    image = np.broadcast_to(np.arange(SHAPE[0], dtype=np.float32)[:, None, None], SHAPE)
    with pytest.warns(UserWarning, match="resampled \\(trilinear\\)"):
        out = to_anatomy_grid(image, affine, anatomy(), kind="continuous")
    assert out.dtype == np.float32
    # Anatomy voxel i (x = 2i mm) lies at image index i - 0.5: linear interpolation.
    np.testing.assert_allclose(out[1:-1, 4, 4], np.arange(1, SHAPE[0] - 1) - 0.5, atol=1e-5)


def test_to_anatomy_grid_no_overlap():
    far = AFFINE.copy()
    far[:3, 3] = 500.0
    with pytest.raises(InputError, match="does not overlap the anatomy's field of view"):
        to_anatomy_grid(ball(2).astype(np.uint8), far, anatomy(), name="T1 mask")


# -- ADC ------------------------------------------------------------------------------------
def test_adc_to_density_formula():
    adc = np.array([[[0.5, 1.0, 2.0, 9.0]]], dtype=np.float32)
    t2 = np.array([[[True, True, True, False]]])
    density = adc_to_density(adc, t2)
    assert density.dtype == np.float32
    np.testing.assert_allclose(density, [[[1.0, 0.5, 0.25, 0.0]]])


def test_load_adc_roundtrip(tmp_path):
    adc = np.linspace(0.5, 2.0, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) * 1e-3
    data, affine = load_adc(write(tmp_path / "adc.nii.gz", adc))
    assert data.dtype == np.float32
    np.testing.assert_allclose(data, adc)
    np.testing.assert_allclose(affine, AFFINE)


def test_adc_nan_inside_t2():
    adc = np.ones(SHAPE, np.float32)
    adc[4, 4, 5] = np.nan
    adc[0, 0, 0] = np.nan  # outside T2: ignored
    with pytest.raises(InputError, match="1 NaN or infinite voxels inside the T2"):
        adc_to_density(adc, ball(2))


def test_adc_non_positive_inside_t2():
    adc = np.ones(SHAPE, np.float32)
    adc[4, 4, 5] = 0
    adc[4, 4, 4] = -1
    with pytest.raises(InputError, match="2 non-positive voxels inside the T2.*clip"):
        adc_to_density(adc, ball(2))


def test_adc_constant_inside_t2():
    adc = np.where(ball(2), 1.2, 3.0)
    with pytest.raises(InputError, match=r"constant \(1\.2\) inside the T2"):
        adc_to_density(adc, ball(2))


def test_adc_shape_mismatch():
    with pytest.raises(InputError, match="ADC map has shape"):
        adc_to_density(np.ones((2, 2, 2)), ball(2))


def test_check_day():
    assert check_day(30, initial_day=0) == 30.0
    assert check_day(5, initial_day=5) == 5.0
    with pytest.raises(InputError, match="day -3 is before the initial condition \\(day 0\\)"):
        check_day(-3)
    with pytest.raises(InputError, match="finite"):
        check_day(float("nan"))


# -- writing --------------------------------------------------------------------------------
def test_save_nifti_dtypes(tmp_path):
    labels = save_nifti(tmp_path / "labels.nii.gz", ball(2).astype(np.int64) * 2, AFFINE)
    density = save_nifti(tmp_path / "u.nii", torch.rand(SHAPE, dtype=torch.float64), AFFINE)
    img = nib.load(str(labels))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), ball(2) * 2)
    np.testing.assert_allclose(img.affine, AFFINE)
    assert nib.load(str(density)).get_data_dtype() == np.float32
    assert no_hidden_files(tmp_path)


def test_save_nifti_failure_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "u.nii.gz"
    save_nifti(target, np.zeros(SHAPE, np.float32), AFFINE)

    def broken_save(img, filename):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(target, np.ones(SHAPE, np.float32), AFFINE)
    assert [p.name for p in tmp_path.iterdir()] == ["u.nii.gz"]
    monkeypatch.undo()
    assert np.asarray(nib.load(str(target)).dataobj).max() == 0  # the old file is intact


def test_atomic_output_dir(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target) as tmp:
        (tmp / "results.json").write_text("1")
        assert not target.exists()
    assert (target / "results.json").read_text() == "1"

    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        with atomic_output_dir(target):
            pytest.fail("the body must not run")

    with pytest.raises(RuntimeError):
        with atomic_output_dir(target, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("partial")
            raise RuntimeError("simulation failed")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "results.json"]  # old output untouched
    assert no_hidden_files(tmp_path)

    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "b.txt"]
    assert no_hidden_files(tmp_path)

    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="holds files that sbi-tumor did not write"):
        with atomic_output_dir(foreign, overwrite=True):
            pytest.fail("the body must not run")
    assert (foreign / "thesis.tex").exists()


@pytest.mark.parametrize("files", [{"truth.json": "{}"}, {"results.json": "{}", "summary.json": "{}"},
                                   {OUTPUT_MARKER: "my notes"}, {OUTPUT_MARKER: '{"written_by": "me"}'},
                                   {"manifest.json": '{"name": "my project"}'}])
def test_a_users_folder_is_not_taken_for_an_output_by_its_file_names(tmp_path, files):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(FileExistsError, match=f"did not write \\(it has no {OUTPUT_MARKER}\\)"):
        check_replaceable(folder)


def test_outputs_of_this_package_and_of_0_3_0_are_replaceable(tmp_path):
    with atomic_output_dir(tmp_path / "new") as tmp:
        (tmp / "truth.json").write_text("{}")
    check_replaceable(tmp_path / "new")
    old = tmp_path / "posterior-0.3.0"  # infer's manifest from before the marker
    old.mkdir()
    (old / "manifest.json").write_text('{"package_version": "0.3.0"}')
    check_replaceable(old)


def test_atomic_output_dir_failure_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_output_dir(tmp_path / "new") as tmp:
            (tmp / "x").write_text("x")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


# -- simulation store -----------------------------------------------------------------------
GRID = (4, 5, 6)


def batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 4, generator=gen),
            torch.randint(0, 3, (n, *GRID), generator=gen, dtype=torch.uint8))


def test_store_roundtrip(tmp_path):
    config = {"prior": {"low": [0.1, 0.0], "high": [1.0, 1.0]}, "day": 30.0}
    store = SimulationStore.create(tmp_path / "sims.zarr", GRID, config=config)
    theta, x = batch(5, 0)
    np.testing.assert_array_equal(store.append(0, theta[:3], x[:3]), [0, 1, 2])
    np.testing.assert_array_equal(store.append(0, theta[3:], x[3:].float()), [3, 4])
    assert store.completed(0) == 5 and store.completed(1) == 0
    loaded_theta, loaded_x = store.load(0)
    assert loaded_theta.dtype == torch.float32 and loaded_x.dtype == torch.uint8
    torch.testing.assert_close(loaded_theta, theta)
    torch.testing.assert_close(loaded_x, x)
    assert store.config == config and store.grid_shape == GRID and store.theta_dim == 4
    assert store.attrs["format_version"] == SimulationStore.FORMAT_VERSION
    assert store.attrs["package_version"]
    assert store._group["round_0"]["x"].chunks == (1, *GRID)
    assert store.rounds() == [0]


def test_store_resume_after_reopening(tmp_path):
    path = tmp_path / "sims.zarr"
    theta, x = batch(6, 1)
    store = SimulationStore.create(path, GRID)
    store.write(2, [4, 0, 2], theta[[4, 0, 2]], x[[4, 0, 2]])  # out of order, with gaps
    del store

    store = SimulationStore.open(path)
    assert store.completed(2) == 3
    todo = store.pending(2, 6)
    np.testing.assert_array_equal(todo, [1, 3, 5])
    store.write(2, todo, theta[todo], x[todo])
    assert store.completed(2) == 6 and store.pending(2, 6).size == 0
    loaded_theta, loaded_x = SimulationStore.open(path, mode="r").load(2)
    torch.testing.assert_close(loaded_theta, theta)
    torch.testing.assert_close(loaded_x, x)


def test_store_load_skips_unfinished_rows(tmp_path):
    store = SimulationStore.create(tmp_path / "s.zarr", GRID)
    theta, x = batch(3, 2)
    store.write(0, [0, 2], theta[[0, 2]], x[[0, 2]])
    loaded_theta, loaded_x = store.load(0)
    torch.testing.assert_close(loaded_theta, theta[[0, 2]])
    torch.testing.assert_close(loaded_x, x[[0, 2]])


def test_store_incompatible_version(tmp_path):
    path = tmp_path / "sims.zarr"
    SimulationStore.create(path, GRID)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"format version 99 .* reads format version 1"):
        SimulationStore.open(path)


def test_store_errors(tmp_path):
    path = tmp_path / "sims.zarr"
    with pytest.raises(StoreError, match="No simulation store"):
        SimulationStore.open(path)
    store = SimulationStore.create(path, GRID)
    with pytest.raises(StoreError, match="already exists.*SimulationStore.open"):
        SimulationStore.create(path, GRID)
    with pytest.raises(StoreError, match="JSON"):
        SimulationStore.create(tmp_path / "other.zarr", GRID, config={"f": object()})
    theta, x = batch(2, 3)
    with pytest.raises(StoreError, match="x must have shape"):
        store.append(0, theta, x[:, :2])
    with pytest.raises(StoreError, match="integer labels"):
        store.append(0, theta, x.float() + 0.5)
    with pytest.raises(StoreError, match="distinct"):
        store.write(0, [1, 1], theta, x)
    with pytest.raises(StoreError, match="Round 7 is not in the store"):
        store.load(7)


@pytest.mark.parametrize("enhancing", [4, 3])
def test_brats_label_maps_give_the_core_and_the_extent(tmp_path, enhancing):
    from sbi_tumor.patient.inputs import load_brats, load_segmentations

    labels = np.zeros(SHAPE, np.uint8)
    labels[2:7, 2:7, 2:8] = 2                       # oedema
    labels[3:6, 3:6, 3:7] = enhancing               # enhancing rim
    labels[4, 4, 4:6] = 1                           # necrosis
    path = write(tmp_path / "seg.nii.gz", labels)
    t1, t2, affine = load_brats(path)
    assert t1.sum() == 3 * 3 * 4 and t2.sum() == 5 * 5 * 6 and (t1 <= t2).all()
    np.testing.assert_array_equal(affine, AFFINE)
    assert all(np.array_equal(a, b) for a, b in zip(load_segmentations(path, None), (t1, t2, affine)))


def test_brats_without_an_enhancing_core_has_an_empty_t1(tmp_path):
    from sbi_tumor.patient.inputs import load_brats

    t1, t2, _ = load_brats(write(tmp_path / "seg.nii.gz", ball(2).astype(np.uint8) * 2))
    assert not t1.any() and t2.sum() == ball(2).sum()


@pytest.mark.parametrize("values, message", [
    ((0, 1, 2, 5), r"labels \[5\] that BraTS does not use"),
    ((0, 2, 3, 4), r"holds both 3 and 4"),
    ((0,), r"no tumour voxel"),
    ((0, 1.5), r"non-integer values"),
])
def test_brats_label_maps_refuse_what_brats_does_not_use(tmp_path, values, message):
    from sbi_tumor.patient.inputs import load_brats

    labels = np.zeros(SHAPE, np.float32)
    labels.flat[:len(values)] = values
    with pytest.raises(InputError, match=message):
        load_brats(write(tmp_path / "seg.nii.gz", labels))
