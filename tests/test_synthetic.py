"""The synthetic patient: scans on the anatomy's grid, replaced only when asked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbi_tumor.patient.synthetic import make_synthetic_patient
from tiny_patient import SCAN_DAYS, tiny_anatomy


def test_synthetic_patient_replaces_its_own_scans(mni2, tmp_path):
    anatomy = tiny_anatomy(mni2)
    first = make_synthetic_patient(tmp_path / "p", anatomy=anatomy, scan_days=SCAN_DAYS)
    with pytest.raises(FileExistsError, match="already exists"):
        make_synthetic_patient(tmp_path / "p", anatomy=anatomy, scan_days=SCAN_DAYS)
    again = make_synthetic_patient(tmp_path / "p", anatomy=anatomy, scan_days=SCAN_DAYS,
                                   truth=(1.0, 0.6, 0.7, 0.25), overwrite=True)
    assert (first.truth[0], again.truth[0]) == (2.0, 1.0)
    assert json.loads((tmp_path / "p" / "truth.json").read_text())["parameters"]["D"] == 1.0
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["p"]  # no temporary or old folder left
    assert np.isclose(again.day, SCAN_DAYS[1] - SCAN_DAYS[0])
