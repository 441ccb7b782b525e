"""The command line: infer -> predict, error messages and exit codes, Ctrl-C and --resume, demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sbi_tumor.cli import main
from sbi_tumor.io import OUTPUT_MARKER, check_replaceable, save_nifti
from sbi_tumor.patient.report import ADC_CAVEAT
from sbi_tumor.patient.store import SimulationStore
from sbi_tumor.patient.synthetic import make_synthetic_patient
from sbi_tumor.patient.run import load_run
from tiny_patient import SCAN_DAYS, SEED_MM, tiny_anatomy, write_anatomy

# --log-space: the CLI tests also cover the theta-space wrapper of a posterior trained on log rates.
# --method NPE_B, the default before 0.2, with which these tests were written: one training pair per
# solve (the default TSNPE runs are covered by the demo test below and by tests/test_inference.py).
FAST = ["--method", "NPE_B", "--rounds", "1", "--simulations", "30", "--embedding", "mlp", "--max-epochs", "3",
        "--log-space", "--quiet"]


@pytest.fixture(scope="module")
def case(mni2, tmp_path_factory):
    """(synthetic patient, the infer arguments of it but --out)."""
    root = tmp_path_factory.mktemp("cli")
    anatomy = tiny_anatomy(mni2)
    patient = make_synthetic_patient(root / "inputs", anatomy=anatomy, scan_days=SCAN_DAYS)
    args = ["infer", "--t1", str(patient.t1), "--t2", str(patient.t2), "--day", f"{patient.day:g}",
            "--adc", str(patient.adc), "--t2-initial", str(patient.t2_initial), "--prior", "paper",
            *write_anatomy(anatomy, root), *FAST]
    return patient, args


@pytest.fixture(scope="module")
def fitted(case, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "posterior"
    assert main(case[1] + ["--out", str(out)]) == 0
    return out


def test_infer_then_predict(case, fitted, tmp_path, capsys):
    patient, _ = case
    assert load_run(fitted).result.samples.shape[1] == 4
    assert ADC_CAVEAT in (fitted / "report.md").read_text()
    out = tmp_path / "prediction"
    code = main(["predict", "--posterior", str(fitted), "--days", "2", "4", "--samples", "3", "--quiet",
                 "--t2-observed", f"{patient.later_day:g}={patient.t2_later}", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"Wrote to {out}" in printed and "Dice T2" in printed
    for name in ("volumes.csv", "volumes.png", "slices.png", "report.md", "prediction.json",
                 "map_labels_day4.nii.gz", "map_density_day2.nii.gz"):
        assert (out / name).is_file()


def write_bad(case, tmp_path, what):
    patient, args = case
    args = list(args)
    if what == "missing":
        args[args.index("--t2") + 1] = str(tmp_path / "missing.nii.gz")
    elif what == "not binary":
        path = save_nifti(tmp_path / "t1.nii.gz", np.full((4, 4, 4), 0.5, np.float32), np.eye(4))
        args[args.index("--t1") + 1] = str(path)
    elif what == "log space":
        args += ["--log-space", "--method", "NPE_A"]
    elif what == "day":
        args[args.index("--day") + 1] = "-1"
    elif what == "seed":
        i = args.index("--adc")
        args[i:i + 4] = ["--seed-mm", "500", "0", "0"]
    return args


@pytest.mark.parametrize("what, message", [
    ("log space", "--log-space works with --method NPE_B, NPE_C or TSNPE"),
    ("missing", "file not found"),
    ("not binary", "is not binary"),
    ("day", "argument --day: must be a finite number > 0 and < 10000 (days; a later day is a unit error), got -1"),
    ("seed", "outside the image"),
])
def test_input_errors_exit_2_with_a_message_and_no_output(case, tmp_path, capsys, what, message):
    out = tmp_path / "posterior"
    try:
        code = main(write_bad(case, tmp_path, what) + ["--out", str(out)])
    except SystemExit as refused:  # argparse's own check of an option's value
        code = refused.code
    assert code == 2
    err = capsys.readouterr().err
    assert "sbi-tumor infer: error:" in err.splitlines()[-1] and message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_a_run_that_cannot_go_on_exits_1_with_its_message(case, tmp_path, capsys, monkeypatch):
    import sbi_tumor.patient.workflow as workflow
    from sbi_tumor.inference import InferenceError

    def fails(*args, **kwargs):
        raise InferenceError("TSNPE failed in round 3: its posterior puts 0.0e+00 of its mass inside the prior")

    monkeypatch.setattr(workflow, "infer_patient", fails)
    assert main(case[1] + ["--out", str(tmp_path / "posterior")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("sbi-tumor infer: error: TSNPE failed in round 3") and "Traceback" not in err
    def breaks(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(workflow, "infer_patient", breaks)  # any other runtime error is a bug: raised
    with pytest.raises(RuntimeError, match="a bug"):
        main(case[1] + ["--out", str(tmp_path / "posterior")])


def test_predict_errors(fitted, tmp_path, capsys):
    assert main(["predict", "--posterior", str(tmp_path), "--days", "3", "--out", str(tmp_path / "p")]) == 2
    assert "not a posterior directory" in capsys.readouterr().err
    assert main(["predict", "--posterior", str(fitted), "--days", "3", "--out", str(tmp_path / "p"),
                 "--t2-observed", "three=x.nii.gz"]) == 2
    assert "DAY=FILE" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def completed(store_path: Path) -> int:
    """Finished simulations of round 1 in a store another process is writing (0 while it is set up)."""
    try:
        return SimulationStore.open(store_path, mode="r").completed(0)
    except (ValueError, KeyError, FileNotFoundError):
        return 0


# `sbi-tumor` as run from a terminal, whose simulator sleeps before each batch so that the signal
# lands while it simulates however fast the machine is. A test run started in the background
# (`nohup ... &`) inherits SIGINT ignored, so the handler a terminal would have is put back first.
SLOW_CLI = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from sbi_tumor import simulator
density = simulator.TumorSimulator.density
def slow_density(self, *args, **kwargs):
    time.sleep(1.0)
    return density(self, *args, **kwargs)
simulator.TumorSimulator.density = slow_density
from sbi_tumor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_then_resume_gives_the_uninterrupted_result(case, fitted, tmp_path):
    args = case[1]
    out = tmp_path / "posterior"
    store_path = tmp_path / "posterior.partial" / "simulations.zarr"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if completed(store_path) > 0:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err
    assert not out.exists()
    assert 0 < completed(store_path) < 30  # stopped part-way through round 1

    assert main(args + ["--out", str(out), "--resume"]) == 0
    resumed = np.loadtxt(out / "samples.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(resumed, np.loadtxt(fitted / "samples.csv", delimiter=",", skiprows=1))
    assert not store_path.parent.exists()


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--rounds", "1", "--simulations", "10", "--max-epochs", "2",
                 "--samples", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Done in" in printed and str(out / "posterior") in printed
    for name in ("inputs/scan1_adc.nii.gz", "inputs/truth.json", "posterior/pairplot.png",
                 "posterior/samples.csv", "prediction/volumes.png", "prediction/volumes.csv"):
        assert (out / name).is_file(), name
    # Its top folder is marked as ours, so `demo --overwrite` may replace it (a folder without the marker
    # is refused: tests/test_io.py).
    assert json.loads((out / OUTPUT_MARKER).read_text())["written_by"] == "sbi-tumor"
    check_replaceable(out)


def test_simulate_runs_user_tissue_maps_on_their_own_grid(mni2, tmp_path, capsys):
    """Without --resolution-mm, --wm/--gm/--csf are simulated on their own grid (the atlas: 2 mm)."""
    anatomy = tiny_anatomy(mni2)
    maps = write_anatomy(anatomy, tmp_path)
    out = tmp_path / "sim"
    code = main(["simulate", "--dw", "0.5", "--rho", "0.3", "--days", "5", "--seed-mm", *map(str, SEED_MM),
                 *maps, "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "volumes.json").read_text())
    assert report["grid"] == list(anatomy.shape) and report["spacing_mm"] == anatomy.spacing.tolist()
    assert report["seed_sigma_mm"] == 3.0 and report["days"]["5"]["T2_volume_ml"] > 0
