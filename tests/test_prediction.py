"""predict / save_prediction: forward runs of a posterior, volumes, Dice, files on the input grid."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest

from sbi_tumor.patient import prediction as prediction_module
from sbi_tumor.io import OUTPUT_MARKER, save_nifti
from sbi_tumor.observation import dice
from sbi_tumor.patient.prediction import predict, save_prediction
from sbi_tumor.patient.synthetic import make_synthetic_patient
from sbi_tumor.patient.workflow import infer_patient
from tiny_patient import SCAN_DAYS, tiny_anatomy, tiny_config


@pytest.fixture(scope="module")
def case(mni2, tmp_path_factory):
    """(synthetic patient, fitted run) on the tiny anatomy."""
    root = tmp_path_factory.mktemp("prediction")
    anatomy = tiny_anatomy(mni2)
    patient = make_synthetic_patient(root / "inputs", anatomy=anatomy, scan_days=SCAN_DAYS)
    run = infer_patient(patient.t1, patient.t2, patient.day, adc=patient.adc,
                        t2_initial=patient.t2_initial, anatomy=anatomy, prior="paper",
                        config=tiny_config(num_rounds=1), out_dir=root / "posterior", progress=False)
    return patient, run


@pytest.fixture(scope="module")
def prediction(case):
    patient, run = case
    return predict(run, [patient.day, 4.0], num_samples=6, observed_t2={patient.later_day: patient.t2_later},
                   observed_t1={patient.later_day: patient.t1_later}, progress=False)


def test_dice():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 6, 7, 8)) > 0.5
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0  # both empty: a perfect match
    assert 0 < dice(a, b) < 1
    assert dice(a, b) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_prediction_shapes_and_volumes(case, prediction):
    patient, run = case
    days = [4.0, patient.day, patient.later_day]  # the observed day is added
    assert prediction.days.tolist() == sorted(days)
    n_days = len(days)
    assert prediction.samples.shape == (6, 4) and prediction.map.shape == (4,)
    assert prediction.map_labels.shape == (n_days,) + run.patient.anatomy.shape
    for region in ("T1", "T2"):
        assert prediction.volumes[region].shape == (6, n_days)
        assert prediction.map_volumes[region].shape == (n_days,)
        assert prediction.curves[region].shape == (6, len(prediction.curve_days))
        assert (prediction.curves[region] >= 0).all()
    assert (prediction.volumes["T1"] <= prediction.volumes["T2"]).all()
    voxel = run.patient.anatomy.voxel_volume
    np.testing.assert_allclose(prediction.map_volumes["T2"], (prediction.map_labels >= 1).sum((1, 2, 3)) * voxel)
    rows = prediction.table()
    assert [r["day"] for r in rows] == prediction.days.tolist()
    observed = rows[prediction.days.tolist().index(patient.later_day)]
    for key in ("T1_dice_map", "T2_dice_map", "T1_dice_mean", "T2_dice_mean"):
        assert 0 <= observed[key] <= 1
    truth_t2 = (np.asarray(nib.load(str(patient.t2_later)).dataobj) > 0).sum() * voxel
    assert observed["T2_observed_mm3"] == pytest.approx(truth_t2)


def test_infiltration_maps_are_probabilities_that_reach_beyond_the_visible_tumour(case, prediction):
    from sbi_tumor.config import INFILTRATION_LEVELS

    _, run = case
    p = prediction.infiltration
    assert prediction.levels == INFILTRATION_LEVELS
    assert p.shape == (len(INFILTRATION_LEVELS), len(prediction.days)) + run.patient.anatomy.shape
    assert p.min() >= 0 and p.max() <= 1 and (p * 6 == np.round(p * 6)).all()  # fractions of 6 samples
    assert (p[0] >= p[1]).all()  # u > 0.01 wherever u > 0.05
    assert (p[:, :, ~run.patient.anatomy.tissue] == 0).all()  # no cells outside tissue
    # each sample's visible T2 region (u >= u_T2 > 0.05) lies inside its u > 0.05 region, and
    # cells reach beyond it
    j = prediction.days.tolist().index(run.patient.day)
    assert (prediction.samples[:, 3] > INFILTRATION_LEVELS[1]).all()
    assert (p[1, j] > 0).sum() > run.patient.t2.sum()
    mean = prediction.mean_density
    assert mean.shape == (len(prediction.days),) + run.patient.anatomy.shape and 0 <= mean.min() <= mean.max() <= 1


def test_dice_is_one_against_the_prediction_itself(case, prediction, tmp_path):
    patient, run = case
    day = float(prediction.days[-1])
    path = save_nifti(tmp_path / "t2.nii.gz", prediction.map_labels[-1] >= 1, run.patient.anatomy.affine)
    again = predict(run, [day], num_samples=2, observed_t2={day: path}, progress=False)
    assert again.observed[day]["T2_dice_map"] == 1.0


def test_saved_prediction_is_complete_and_on_the_input_grid(case, prediction, tmp_path):
    patient, run = case
    out = tmp_path / "prediction"
    files = save_prediction(prediction, run, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*files.values(), OUTPUT_MARKER])
    labels = nib.load(str(out / f"map_labels_day{patient.later_day:g}.nii.gz"))
    assert labels.shape == run.patient.input_shape
    np.testing.assert_allclose(labels.affine, run.patient.input_affine)
    j = prediction.days.tolist().index(patient.later_day)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), prediction.map_labels[j])
    table = np.genfromtxt(out / "volumes.csv", delimiter=",", names=True)
    assert table["day"].tolist() == prediction.days.tolist()
    assert "Dice" in (out / "report.md").read_text()
    infiltration = nib.load(str(out / f"infiltration_c0.01_day{patient.later_day:g}.nii.gz"))
    np.testing.assert_allclose(np.asarray(infiltration.dataobj), prediction.infiltration[0, j], atol=1e-6)
    assert (out / "infiltration.png").stat().st_size > 10_000


def test_outputs_are_resampled_to_a_finer_input_grid(case, prediction, tmp_path):
    _, run = case
    fine = run.patient.input_affine.copy()
    fine[:3, :3] /= 2
    fine[:3, 3] -= 0.5
    patient = dataclasses.replace(run.patient, input_affine=fine,
                                  input_shape=tuple(2 * n for n in run.patient.input_shape))
    out = tmp_path / "prediction"
    save_prediction(prediction, dataclasses.replace(run, patient=patient), out)
    labels = nib.load(str(out / f"map_labels_day{prediction.days[-1]:g}.nii.gz"))
    assert labels.shape == patient.input_shape
    # nearest neighbour: every fine voxel carries its coarse voxel's label
    np.testing.assert_array_equal(np.asarray(labels.dataobj)[::2, ::2, ::2], prediction.map_labels[-1])


def test_nothing_is_written_when_saving_fails(case, prediction, tmp_path, monkeypatch):
    _, run = case
    monkeypatch.setattr(prediction_module, "volume_plot", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        save_prediction(prediction, run, tmp_path / "prediction")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("days, kw, message", [
    ([-1.0], {}, "before the initial condition"),
    ([0.0], {}, "Give days > 0"),
    ([3.0], {"num_samples": 0}, "num_samples"),
    ([3.0], {"observed_t2": {3.0: "missing.nii.gz"}}, "file not found"),
])
def test_bad_prediction_requests(case, days, kw, message):
    with pytest.raises(ValueError, match=message):
        predict(case[1], days, progress=False, **kw)


def test_predict_from_a_directory(case):
    _, run = case
    prediction = predict(run.directory, [2.0], num_samples=2, progress=False)
    assert prediction.volumes["T2"].shape == (2, 1)
