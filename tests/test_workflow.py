"""infer_patient and friends: input checks with their messages, outputs, reload, resume."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sbi_tumor.patient.inputs import InputError

from sbi_tumor.patient.store import SimulationStore, StoreError
from sbi_tumor.simulator import TumorSimulator
from sbi_tumor.patient.inputs import load_patient
from sbi_tumor.patient.report import posterior_predictive_check
from sbi_tumor.patient.synthetic import make_synthetic_patient
from sbi_tumor.patient.run import load_run
from sbi_tumor.patient.workflow import infer_patient, prior_bounds
from sbi_tumor.prior import make_prior
from tiny_patient import SCAN_DAYS, tiny_anatomy, tiny_config


@pytest.fixture(scope="module")
def anatomy(mni2):
    return tiny_anatomy(mni2)


@pytest.fixture(scope="module")
def patient(anatomy, tmp_path_factory):
    return make_synthetic_patient(tmp_path_factory.mktemp("case") / "inputs", anatomy=anatomy,
                                  scan_days=SCAN_DAYS)


@pytest.fixture(scope="module")
def fitted(patient, anatomy, tmp_path_factory):
    """An uninterrupted run: (run, output directory)."""
    out = tmp_path_factory.mktemp("fit") / "posterior"
    return fit(patient, anatomy, out, truth=patient.truth), out


def fit(patient, anatomy, out, config=None, **kw):
    return infer_patient(patient.t1, patient.t2, patient.day, adc=patient.adc,
                         t2_initial=patient.t2_initial, anatomy=anatomy, prior="paper",
                         config=config or tiny_config(), out_dir=out, progress=False, **kw)


def image(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


# -- inputs a user gets wrong ---------------------------------------------------------------------
def test_synthetic_patient_has_the_scans_it_promises(patient):
    t2_first, t2, t2_later = (image(p)[0] > 0 for p in (patient.t2_initial, patient.t2, patient.t2_later))
    assert 0 < t2_first.sum() < t2.sum() < t2_later.sum()  # the tumour grows
    assert (image(patient.t1)[0] > 0).any() and (image(patient.t1)[0] <= t2).all()
    adc = image(patient.adc)[0]
    assert adc[t2_first].max() <= adc[~t2_first & (adc > 0)].min() * 1.2  # low ADC in the tumour
    truth = json.loads((patient.directory / "truth.json").read_text())
    assert truth["scan_days_since_first_scan"] == [0.0, patient.day, patient.later_day]


def test_adc_initial_condition_is_inverse_adc_inside_initial_t2(patient, anatomy):
    p = load_patient(patient.t1, patient.t2, patient.day, adc=patient.adc,
                     t2_initial=patient.t2_initial, anatomy=anatomy)
    density = p.initial.density
    t2_first = image(patient.t2_initial)[0] > 0
    adc = image(patient.adc)[0]
    assert density.max() == pytest.approx(1.0) and (density[~t2_first] == 0).all()
    np.testing.assert_allclose(density[t2_first], adc[t2_first].min() / adc[t2_first], rtol=1e-5)
    assert p.day == patient.day and p.t2.sum() == (image(patient.t2)[0] > 0).sum()


def test_seed_initial_condition_and_roi_holds_the_tumour(patient, anatomy):
    seed = anatomy.voxel_to_world(np.argwhere(image(patient.t1)[0] > 0).mean(0))
    p = load_patient(patient.t1, patient.t2, 8.0, seed_mm=seed, anatomy=anatomy)
    sim = p.simulator()
    assert p.initial.seed_mm == tuple(seed)
    assert p.observation(sim).sum() == p.labels.sum()  # the ROI crops nothing of the tumour


def write(path: Path, data, affine) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "file not found"),
    ("unreadable", "cannot read"),
    ("not binary", "is not binary"),
    ("empty", "is empty"),
    ("core outside T2", "outside the T2 segmentation"),
    ("adc nan", "NaN or infinite"),
    ("adc zero", "non-positive voxels"),
    ("seed outside brain", "not in brain tissue"),
    ("seed outside image", "outside the image"),
    ("day before initial", "before the initial condition"),
    ("day zero", "is 0"),
    ("adc and seed", "not both"),
    ("different T1/T2 grids", "must be on one grid"),
    ("not registered", "registered to the anatomy"),
])
def test_bad_inputs_say_what_to_fix(case, message, patient, anatomy, tmp_path):
    t2_data, affine = image(patient.t2)
    t1_data, _ = image(patient.t1)
    args = dict(t1=patient.t1, t2=patient.t2, day=patient.day)
    kw = dict(adc=patient.adc, t2_initial=patient.t2_initial, anatomy=anatomy)
    adc, _ = image(patient.adc)
    if case == "missing":
        args["t2"] = tmp_path / "nope.nii.gz"
    elif case == "unreadable":
        args["t1"] = tmp_path / "junk.nii.gz"
        args["t1"].write_bytes(b"not an image")
    elif case == "not binary":
        args["t2"] = write(tmp_path / "t2.nii.gz", t2_data * 2.0, affine)
    elif case == "empty":  # an empty T1 core is valid (no enhancing core); an empty T2 is not
        args["t2"] = write(tmp_path / "t2.nii.gz", np.zeros_like(t2_data), affine)
    elif case == "core outside T2":
        args["t1"] = write(tmp_path / "t1.nii.gz", np.roll(t2_data, 8, axis=0), affine)
    elif case in ("adc nan", "adc zero"):
        bad = adc.copy()
        bad[tuple(np.argwhere(image(patient.t2_initial)[0] > 0)[:3].T)] = np.nan if case == "adc nan" else 0
        kw["adc"] = write(tmp_path / "adc.nii.gz", bad, affine)
    elif case in ("seed outside brain", "seed outside image"):
        kw = dict(anatomy=anatomy, seed_mm=anatomy.voxel_to_world(
            np.argwhere(~anatomy.tissue)[0] if case == "seed outside brain" else np.array([-5, 0, 0])))
    elif case == "day before initial":
        args["day"] = -2.0
    elif case == "day zero":
        args["day"] = 0.0
    elif case == "adc and seed":
        kw["seed_mm"] = (0.0, 0.0, 0.0)
    elif case == "different T1/T2 grids":
        args["t1"] = write(tmp_path / "t1.nii.gz", t1_data[:-1], affine)
    elif case == "not registered":  # an anatomy whose tissue is not where the tumour is
        holes = image(patient.t2)[0] > 0
        kw["anatomy"] = dataclasses.replace(anatomy, wm=np.where(holes, 0, anatomy.wm),
                                            gm=np.where(holes, 0, anatomy.gm))
    with pytest.raises(ValueError, match=message):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_patient(**args, **kw)


def test_segmentations_on_a_finer_grid_are_resampled_with_a_warning(patient, anatomy, tmp_path):
    # The same masks at 1 mm (every 2 mm voxel split into 8): resampling must give them back.
    paths = {}
    for name in ("t1", "t2"):
        data, affine = image(getattr(patient, name))
        fine = np.repeat(np.repeat(np.repeat(data, 2, 0), 2, 1), 2, 2)
        fine_affine = affine.copy()
        fine_affine[:3, :3] /= 2
        fine_affine[:3, 3] -= 0.5  # voxel centres of the 1 mm grid, half a fine voxel off
        paths[name] = write(tmp_path / f"{name}.nii.gz", fine, fine_affine)
    with pytest.warns(UserWarning, match="resampled"):
        p = load_patient(paths["t1"], paths["t2"], patient.day, adc=patient.adc,
                         t2_initial=patient.t2_initial, anatomy=anatomy)
    np.testing.assert_array_equal(p.t2, image(patient.t2)[0] > 0)
    assert p.input_shape == tuple(2 * n for n in anatomy.shape)


# -- outputs, reload ------------------------------------------------------------------------------
def test_posterior_predictive_check_flags_a_posterior_that_misses_the_data(fitted):
    """Draws at the truth reproduce the synthetic observation (not exactly: the model grows it from the
    first scan's ADC map, not from the true seed); draws at the prior's slowest corner grow far
    smaller tumours: the observed volume lies above every draw's, and the Dice drops."""
    from dataclasses import replace

    run, _ = fitted

    def check(theta):
        samples = torch.as_tensor(theta, dtype=torch.float32).expand(20, 4)
        return posterior_predictive_check(replace(run, result=replace(run.result, samples=samples)), num_draws=20)

    at_truth = check(run.truth)
    slow = check([run.prior_bounds[0][0], run.prior_bounds[0][1], *run.truth[2:]])
    assert slow["T2"]["observed_volume_quantile"] == 1.0
    assert max(slow["T2"]["volume_ml"]) < min(at_truth["T2"]["volume_ml"])
    assert max(slow["T2"]["dice"]) < min(at_truth["T2"]["dice"])  # measured 0.67 against 0.79


def test_existing_output_is_refused_before_any_work(fitted, patient, anatomy):
    with pytest.raises(FileExistsError, match="already exists"):
        fit(patient, anatomy, fitted[1])


@pytest.mark.parametrize("change, message", [
    ({"format_version": 99}, "format version 99"),
    ({"format": "something else"}, "format version"),
])
def test_posterior_from_an_incompatible_version_is_refused(fitted, tmp_path, change, message):
    import shutil

    copy = tmp_path / "posterior"
    shutil.copytree(fitted[1], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | change))
    with pytest.raises(InputError, match=message):
        load_run(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(InputError, match="not a posterior directory"):
        load_run(copy)


# -- nothing lost -----------------------------------------------------------------------------
class Interrupt(BaseException):
    """Like Ctrl-C: not an ``Exception``, so it is not retried as a failed batch would be."""


def interrupt_after(monkeypatch, calls: int) -> None:
    """Make the simulator fail on its ``calls + 1``-th batch, as a crash or Ctrl-C would."""
    original = TumorSimulator.solve
    count = {"n": 0}

    def call(self, theta):
        count["n"] += 1
        if count["n"] > calls:
            raise Interrupt("simulated crash")
        return original(self, theta)

    monkeypatch.setattr(TumorSimulator, "solve", call)


def crash_midway(patient, anatomy, out, monkeypatch) -> None:
    """Start a fit that crashes on its third simulation batch, leaving its stored work behind."""
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupt):
        fit(patient, anatomy, out)
    monkeypatch.undo()


def test_interrupted_run_resumes_to_the_same_result(fitted, patient, anatomy, tmp_path, monkeypatch):
    out = tmp_path / "posterior"
    work = tmp_path / "posterior.partial"
    # 30 simulations per round in batches of 5: crash in round 2, after 6 + 2 batches.
    interrupt_after(monkeypatch, 8)
    with pytest.raises(Interrupt):
        fit(patient, anatomy, out)
    monkeypatch.undo()
    assert not out.exists()  # nothing half-written
    store = SimulationStore.open(work / "simulations.zarr", mode="r")
    assert store.completed(0) == 30 and store.completed(1) == 10

    with pytest.raises(FileExistsError, match="--resume"):
        fit(patient, anatomy, out)  # refuses to throw the work away

    calls = count_solves(monkeypatch)
    run = fit(patient, anatomy, out, resume=True)
    assert sum(calls) == 20  # only the missing simulations
    assert torch.equal(run.result.samples, fitted[0].result.samples)
    assert torch.equal(run.result.map, fitted[0].result.map)
    assert out.is_dir() and not work.exists()


def count_solves(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = TumorSimulator.solve
    monkeypatch.setattr(TumorSimulator, "solve", lambda self, t: calls.append(len(t)) or original(self, t))
    return calls


def test_augmented_run_stores_every_map_and_resumes_to_the_same_result(patient, anatomy, tmp_path, monkeypatch):
    config = tiny_config(method="TSNPE", augment=3)
    reference = fit(patient, anatomy, tmp_path / "reference", config=config)
    out = tmp_path / "posterior"
    interrupt_after(monkeypatch, 8)  # round 2, after 6 + 2 batches of 5 solves
    with pytest.raises(Interrupt):
        fit(patient, anatomy, out, config=config)
    monkeypatch.undo()
    store = SimulationStore.open(tmp_path / "posterior.partial" / "simulations.zarr", mode="r")
    assert store.completed(0) == 90 and store.completed(1) == 30  # 3 maps per solve
    theta, x = store.load(0)
    assert torch.equal(theta[0::3, :2], theta[1::3, :2]) and not torch.equal(theta[0::3, 2:], theta[1::3, 2:])
    calls = count_solves(monkeypatch)
    run = fit(patient, anatomy, out, config=config, resume=True)
    assert sum(calls) == 20 and run.result.num_simulations == 60
    assert torch.equal(run.result.samples, reference.result.samples)


def test_calibration_solves_are_stored_resumed_and_reported(patient, anatomy, tmp_path, monkeypatch):
    config = tiny_config(method="TSNPE", augment=3, calibration_solves=10)
    reference = fit(patient, anatomy, tmp_path / "reference", config=config)
    out = tmp_path / "posterior"
    interrupt_after(monkeypatch, 13)  # 2 rounds of 6 batches of 5 solves, then the calibration's first batch
    with pytest.raises(Interrupt):
        fit(patient, anatomy, out, config=config)
    monkeypatch.undo()
    store = SimulationStore.open(tmp_path / "posterior.partial" / "simulations.zarr", mode="r")
    assert store.completed(2) == 15  # the calibration's round: 5 solves, 3 maps each
    calls = count_solves(monkeypatch)
    run = fit(patient, anatomy, out, config=config, resume=True)
    assert sum(calls) == 5 and run.result.num_simulations == 70
    assert torch.equal(run.result.samples, reference.result.samples)
    report = (out / "report.md").read_text()
    scales = ", ".join(f"{n} {c:.2f}" for n, c in zip(("D", "rho", "u_T1", "u_T2"), run.result.conformal_scales))
    assert f"scaled by {scales}" in report and "of 10 solves it was not trained on" in report


def test_resume_with_other_inputs_is_refused(patient, anatomy, tmp_path, monkeypatch):
    out = tmp_path / "posterior"
    crash_midway(patient, anatomy, out, monkeypatch)
    with pytest.raises(StoreError, match="different patient settings"):
        infer_patient(patient.t1, patient.t2, patient.day + 1, adc=patient.adc,
                      t2_initial=patient.t2_initial, anatomy=anatomy, prior="paper",
                      config=tiny_config(), out_dir=out, progress=False, resume=True)
    with pytest.raises(StoreError, match="different inference settings"):
        infer_patient(patient.t1, patient.t2, patient.day, adc=patient.adc,
                      t2_initial=patient.t2_initial, anatomy=anatomy, prior="paper",
                      config=tiny_config(seed=4), out_dir=out, progress=False, resume=True)
    assert not out.exists()


def test_changed_draws_on_resume_are_detected(patient, anatomy, tmp_path, monkeypatch):
    out = tmp_path / "posterior"
    crash_midway(patient, anatomy, out, monkeypatch)
    # Tamper with the stored parameters: a machine that does not reproduce the draws.
    store = SimulationStore.open(tmp_path / "posterior.partial" / "simulations.zarr")
    theta, x = store.load(0)
    store.write(0, np.arange(len(theta)), theta * 1.01, x)
    with pytest.raises(StoreError, match="differ from those stored"):
        fit(patient, anatomy, out, resume=True)


def test_seed_in_tissue_but_outside_t2_only_warns(anatomy, patient):
    outside = anatomy.voxel_to_world(np.argwhere(anatomy.tissue & ~(image(patient.t2)[0] > 0))[0])
    with pytest.warns(UserWarning, match="not inside the T2 segmentation"):
        load_patient(patient.t1, patient.t2, 8.0, seed_mm=outside, anatomy=anatomy)


@pytest.mark.parametrize("method, resumes", [("TSNPE", True), ("NPE_A", False)])
def test_a_run_started_before_the_newer_settings_resumes_at_their_defaults(tmp_path, method, resumes):
    from sbi_tumor.config import InferenceConfig
    from sbi_tumor.patient.store import open_store

    from sbi_tumor.patient.store import _NEW_INFERENCE_SETTINGS

    settings = {"patient": "p", "inference": InferenceConfig(method=method).to_dict()}
    old = {"patient": "p", "inference": {k: v for k, v in settings["inference"].items()
                                         if k not in _NEW_INFERENCE_SETTINGS}}
    path = tmp_path / "work" / "simulations.zarr"
    open_store(path, (4, 4, 4), old, resume=False, progress=False)
    if resumes:  # the new settings at their defaults: as before them
        open_store(path, (4, 4, 4), settings, resume=True, progress=False)
        changed = settings | {"inference": settings["inference"] | {"ensemble_size": 3}}
        with pytest.raises(StoreError, match="different inference settings"):
            open_store(path, (4, 4, 4), changed, resume=True, progress=False)
    else:  # NPE_A's proposal changed with them
        with pytest.raises(StoreError, match="different inference settings"):
            open_store(path, (4, 4, 4), settings, resume=True, progress=False)


def test_prior_bounds_are_the_box_or_else_wide_quantiles():
    low, high = prior_bounds(make_prior("human", log_uniform=True))
    assert low == pytest.approx([0.02, 0.002, 0.5, 0.05]) and high == pytest.approx([1.5, 0.2, 0.85, 0.5])
    torch.manual_seed(0)
    low, high = prior_bounds(torch.distributions.MultivariateNormal(torch.zeros(4), torch.eye(4)))
    assert low == pytest.approx([-3.09] * 4, abs=0.3) and high == pytest.approx([3.09] * 4, abs=0.3)
