"""Bad input, as a new user would give it: every case is refused before any work starts.

CLI: exit code 2, a one-line message that names the option (and, where there is one, the fix),
no traceback, and no output folder left behind. Python API: a ``ValueError`` (or subclass) whose
message names the argument.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sbi_tumor import cli
from sbi_tumor.io import save_nifti

SHAPE = (8, 9, 10)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    t2 = np.zeros(SHAPE, np.uint8)
    t2[2:6, 3:7, 3:7] = 1
    t1 = np.zeros(SHAPE, np.uint8)
    t1[3:5, 4:6, 4:6] = 1
    paths = {}
    for name, data in {"t1": t1, "t2": t2, "empty": np.zeros(SHAPE, np.uint8),
                       "labels": (t2 + 3 * t1).astype(np.uint8), "prob": t2 * 0.7}.items():
        paths[name] = str(d / f"{name}.nii.gz")
        save_nifti(paths[name], data, affine, dtype=np.float32)
    (d / "notnifti.nii.gz").write_text("hello")
    paths["notnifti"] = str(d / "notnifti.nii.gz")
    paths["existing"] = str(d)
    return paths


SIM = "simulate --dw 0.3 --rho 0.05 --days 100 --seed-mm -30 20 30"
INFER = "infer --t1 {t1} --t2 {t2} --day 100 --seed-mm -30 20 30"

#: (command line, pattern the message must match)
CLI_CASES = [
    (f"{SIM} --days inf", r"--days: must be a finite number > 0 and < 10000.*got inf"),
    (f"{SIM} --days 0", r"--days: must be a finite number > 0"),
    (f"{SIM} --days -5", r"--days: must be a finite number > 0"),
    (f"{SIM} --days ten", r"--days: expected a number, got 'ten'"),
    ("simulate --dw nan --rho 0.05 --days 100 --seed-mm -30 20 30", r"--dw: must be a finite number > 0, got nan"),
    ("simulate --dw -1 --rho 0.05 --days 100 --seed-mm -30 20 30", r"--dw: must be a finite number > 0"),
    ("simulate --dw 0.3 --rho 0 --days 100 --seed-mm -30 20 30", r"--rho: must be a finite number > 0"),
    ("simulate --dw 1e6 --rho 0.05 --days 100 --seed-mm -30 20 30", r"time steps.*--max-steps"),
    ("simulate --dw 0.3 --rho 1e4 --days 100 --seed-mm -30 20 30", r"time steps.*--max-steps"),
    (f"{SIM} --u-t1 1.5", r"--u-t1: must be a finite number > 0 and < 1"),
    (f"{SIM} --u-t2 0", r"--u-t2: must be a finite number > 0 and < 1"),
    (f"{SIM} --u-t1 0.2 --u-t2 0.5", r"u_T2 .*u_T1"),
    (f"{SIM} --resolution-mm 0", r"--resolution-mm: must be a finite number > 0, got 0"),
    (f"{SIM} --resolution-mm -2", r"--resolution-mm: must be a finite number > 0"),
    (f"{SIM} --ratio 0.5", r"--ratio: must be a finite number >= 1"),
    (f"{SIM} --seed-sigma-mm 0", r"--seed-sigma-mm: must be a finite number > 0"),
    (f"{SIM} --seed-mm 1 2", r"--seed-mm: expected 3 arguments"),
    (f"{SIM} --wm {{t2}}", r"--wm, --gm and --csf"),
    ("simulate --dw 0.3 --rho 0.05 --days 100 --seed-mm -30 20 30 --out {existing}", r"already exists.*--overwrite"),
    ("simulate --dw 0.3 --rho 0.05 --days 100 --seed-mm -30 20 30 --out /proc/sbi-tumor-x",
     r"--out /proc/sbi-tumor-x: cannot create it.*not a writable directory"),
    (f"{INFER} --day 0", r"--day: must be a finite number > 0"),
    (f"{INFER} --rounds 0", r"--rounds: must be an integer > 0"),
    (f"{INFER} --simulations 2", r"--simulations: must be an integer >= 10"),
    (f"{INFER} --max-epochs 0", r"--max-epochs: must be an integer > 0"),
    (f"{INFER} --augment 0", r"--augment: must be an integer > 0"),
    (f"{INFER} --workers 0", r"--workers: must be an integer > 0"),
    (f"{INFER} --method SNLE", r"--method: invalid choice"),
    (f"{INFER} --embedding resnet", r"--embedding: invalid choice"),
    (f"{INFER} --prior mouse", r"--prior: invalid choice"),
    (f"{INFER} --method NPE_B --augment 5", r"augment must be 1, or > 1 with method='TSNPE'"),
    (f"{INFER} --method NPE_A --log-space", r"--log-space works with"),
    (f"{INFER} --resume", r"--resume: there is no interrupted run.*drop --resume"),
    (f"{INFER} --scheduler tcp://127.0.0.1:9", r"--scheduler: cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
    (f"{INFER} --scheduler 127.0.0.1:8786", r"--scheduler 127.0.0.1:8786: expected tcp://HOST:PORT"),
    ("infer --t1 {t1} --t2 {t2} --seed-mm -30 20 30", r"With a seed point, give the days .* \(--day\)"),
    ("infer --t1 {t1} --day 100 --seed-mm -30 20 30", r"Give the segmentations: --t1 T1.nii.gz --t2 T2.nii.gz"),
    ("infer --seg {labels} --t1 {t1} --day 100 --seed-mm -30 20 30", r"Give --seg .* not both"),
    ("infer --seg {prob} --day 100 --seed-mm -30 20 30", r"non-integer values"),
    ("infer --seg {labels} --labels nifti --day 100 --seed-mm -30 20 30", r"--labels: invalid choice"),
    ("infer --t1 {notnifti} --t2 {t2} --day 100 --seed-mm -30 20 30", r"cannot read .* as a NIfTI"),
    ("infer --t1 {t1} --t2 {empty} --day 100 --seed-mm -30 20 30", r"T2 segmentation .* is empty"),
    ("infer --t1 {t1} --t2 {labels} --day 100 --seed-mm -30 20 30", r"not binary.*label map"),
    ("infer --t1 {prob} --t2 {t2} --day 100 --seed-mm -30 20 30", r"not binary.*threshold"),
    ("infer --t1 /nonexistent/t1.nii.gz --t2 {t2} --day 100 --seed-mm -30 20 30", r"file not found"),
    ("predict --posterior {existing} --days 10", r"not a posterior directory"),
    ("predict --posterior {existing} --days 0", r"--days: must be a finite number > 0"),
    ("predict --posterior {existing} --days 10 --samples 0", r"--samples: must be an integer > 0"),
    ("demo --rounds 0", r"--rounds: must be an integer > 0"),
    ("demo --samples 0", r"--samples: must be an integer > 0"),
    ("demo --simulations 2", r"--simulations: must be an integer >= 10"),
    ("demo --out {existing}", r"already exists.*--overwrite"),
    ("benchmark npe-vs-mcmc --case human", r"--case: invalid choice"),
    ("benchmark npe-vs-mcmc --budgets 4", r"budget"),
    ("benchmark npe-vs-mcmc --method NPE_B --augment 4", r"npe_augment must be 1"),
    ("benchmark npe-vs-mcmc --rounds 0", r"--rounds: must be an integer > 0"),
    ("benchmark npe-vs-mcmc --threads 0", r"--threads: must be an integer > 0"),
    ("benchmark npe-vs-mcmc --tmcmc-factor -1", r"--tmcmc-factor: must be an integer >= 0"),
    ("benchmark npe-vs-mcmc --reference-samples -5", r"--reference-samples: must be an integer > 0"),
    ("benchmark npe-vs-mcmc --embedding-kwargs [1,2]", r"--embedding-kwargs: expected a JSON object"),
    ("benchmark npe-vs-mcmc --embedding-kwargs {{octants", r"--embedding-kwargs: not valid JSON"),
    ("benchmark npe-vs-mcmc --random-seed -1", r"--random-seed/--seed: must be an integer >= 0 and < 4294967296"),
    (f"{INFER} --random-seed 99999999999999", r"--random-seed: must be an integer >= 0 and < 4294967296"),
    (f"{INFER} --scheduler tcp://127.0.0.1:99999", r"--scheduler tcp://127.0.0.1:99999: expected tcp://HOST:PORT"),
    ("demo --method NPE_A --log-space", r"--log-space works with"),
    ("predict --posterior {existing} --days 10 --out {existing} --overwrite", r"is the --posterior directory"),
]


@pytest.mark.parametrize("command, message", CLI_CASES, ids=[c for c, _ in CLI_CASES])
def test_cli_refuses_bad_input_before_any_work(files, tmp_path, capsys, command, message):
    out = tmp_path / "out"
    argv = command.format(**files).split()
    if "--out" not in argv:
        argv += ["--out", str(out)]
    with _exit_code(2):
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err
    messages = [line for line in err.splitlines() if line.startswith("sbi-tumor ")]
    assert len(messages) == 1 and ": error: " in messages[0], err  # argparse's usage lines, then one message
    assert not out.exists() and not list(tmp_path.glob("out*"))


class _exit_code:
    """``main`` returns the code, or argparse exits with it (SystemExit) when it refuses an option."""

    def __init__(self, code: int):
        self.code = code

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is SystemExit:
            assert error.code == self.code
            return True
        return False


def _api_cases():
    from sbi_tumor import InferenceConfig, TumorSimulator, make_prior, seed_density
    from sbi_tumor.benchmark import BenchmarkConfig
    from sbi_tumor.observation import check_thresholds
    from sbi_tumor.one_scan import OneScanPrior, OneScanSimulator, rates
    from sbi_tumor.patient.inputs import check_day, load_mask
    from conftest import phantom

    anatomy = phantom((12, 12, 12), spacing=2.0)
    return [
        (lambda: TumorSimulator(anatomy, seed_mm=(500, 500, 500), day=5.0),
         r"around \(500, 500, 500\) mm lies \(almost\) outside the image, which spans \[0, 22\]"),
        (lambda: InferenceConfig(method="SNLE"), r"method must be one of"),
        (lambda: InferenceConfig(num_rounds=0), r"num_rounds must be an integer >= 1, got 0"),
        (lambda: InferenceConfig(learning_rate=-1e-3), r"learning_rate must be a finite number > 0"),
        (lambda: InferenceConfig(num_rounds=2.5), r"num_rounds must be an integer >= 1, got 2.5"),
        (lambda: BenchmarkConfig(budgets=500), r"budgets must be a sequence of integers"),
        (lambda: BenchmarkConfig(reference_samples=0), r"reference_samples must be an integer >= 1"),
        (lambda: InferenceConfig(method="NPE_B", augment=4), r"augment must be 1"),
        (lambda: InferenceConfig(truncation_quantile=1.5), r"truncation_quantile must be in \(0, 1\)"),
        (lambda: make_prior("mouse"), r"Unknown prior preset 'mouse'"),
        (lambda: check_thresholds(0.2, 0.5), r"u_T2"),
        (lambda: check_day(float("inf")), r"finite"),
        (lambda: load_mask("/nonexistent.nii.gz"), r"file not found"),
        (lambda: BenchmarkConfig(case="human"), r"Unknown benchmark case"),
        (lambda: seed_density(anatomy, (500.0, 500.0, 500.0)), r"Seed \(500, 500, 500\) mm lies outside the image"),
        (lambda: OneScanPrior(anatomy, anatomy.tissue, ell_mm=(5.0, 1.0)), r"ell_mm must be \(low, high\)"),
        (lambda: rates([[0, 0, 0, 3.0, 2.0, 0.7, 0.2]], -5.0), r"age must be a finite number of days > 0"),
        (lambda: OneScanSimulator(anatomy, (10.0, 10.0, 10.0), roi_size_mm=10.0)(
            torch.tensor([[10.0, 10.0, 10.0, 0.0, 2.0, 0.7, 0.2]])), r"ell and tau must be > 0"),
    ]


@pytest.mark.parametrize("index", range(18))
def test_api_refuses_bad_input_with_a_value_error_naming_it(index):
    call, message = _api_cases()[index]
    with pytest.raises(ValueError, match=message):
        call()


@pytest.fixture(scope="module")
def tiny():
    from sbi_tumor import TumorSimulator, make_prior
    from conftest import phantom

    anatomy = phantom((16, 16, 16), spacing=2.0)
    simulator = TumorSimulator(anatomy, seed_mm=(16.0, 16.0, 16.0), day=5.0, roi_size_mm=16.0)
    return simulator, make_prior("paper")


@pytest.mark.parametrize("bad, message", [
    (7, r"x_o holds values \[7\.0\] that are not labels 0\.\.2"),
    (float("nan"), r"x_o holds NaN"),
    ("shape", r"x_o has the grid \(5, 5, 5\) but the simulator's label maps"),
])
def test_run_sequential_npe_checks_x_o_before_simulating(tiny, monkeypatch, bad, message):
    from sbi_tumor import InferenceConfig, run_sequential_npe

    simulator, prior = tiny
    monkeypatch.setattr(type(simulator), "solve", lambda *a, **k: pytest.fail("simulated before checking x_o"))
    x_o = torch.zeros((1, *simulator.roi.shape))
    if bad == "shape":
        x_o = torch.zeros((1, 5, 5, 5))
    else:
        x_o[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=message):
        run_sequential_npe(simulator, prior, x_o, InferenceConfig(num_rounds=1, num_simulations=20), progress=False)


def test_a_tumour_without_an_enhancing_core_is_a_valid_observation(files):
    from sbi_tumor.patient.inputs import load_segmentations

    t1, t2, _ = load_segmentations(files["empty"], files["t2"])
    assert not t1.any() and t2.sum() == 64


def test_a_leftover_work_area_is_refused_without_resume_before_any_work(files, tmp_path, capsys):
    out = tmp_path / "fit"
    (tmp_path / "fit.partial").mkdir()
    argv = INFER.format(**files).split() + ["--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "An interrupted run left its simulations in" in err and "--resume" in err and not out.exists()


def test_overwrite_never_deletes_what_sbi_tumor_did_not_write(tmp_path, capsys, monkeypatch):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("years of work")
    argv = SIM.split() + ["--out", str(thesis), "--overwrite"]
    assert cli.main(argv) == 2
    assert "holds files that sbi-tumor did not write" in capsys.readouterr().err
    assert (thesis / "thesis.tex").read_text() == "years of work"
    monkeypatch.chdir(thesis)
    assert cli.main(SIM.split() + ["--out", ".", "--overwrite"]) == 2
    assert "is the working directory" in capsys.readouterr().err
