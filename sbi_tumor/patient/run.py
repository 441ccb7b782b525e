"""A fitted run: its posterior and what produced it, and the layout of its directory on disk."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..inference import InferenceResult
from ..io import package_version
from .inputs import InputError, Patient

__all__ = ["InferenceRun", "POSTERIOR_FORMAT", "POSTERIOR_FORMAT_VERSION", "load_run"]


# -- inference --------------------------------------------------------------------------------
@dataclass
class InferenceRun:
    """A fitted patient: the posterior and what produced it (see [`load_run`][sbi_tumor.patient.run.load_run]).

    Attributes:
        posterior: the posterior ``run_sequential_npe`` returned, ``default_x`` set to the observation.
        result: samples, MAP, training curves and timings.
        patient: the checked inputs (rebuild the simulator with ``patient.simulator()``).
        directory: where it was written, if it was.
        prior_bounds: ``(low, high)`` of the prior box, each ``(4,)``.
    """

    posterior: Any
    result: InferenceResult
    patient: Patient
    directory: Path | None = None
    prior_bounds: tuple[list[float], list[float]] | None = None
    truth: list[float] | None = None
    files: dict[str, str] = field(default_factory=dict)


def load_run(directory: str | Path) -> InferenceRun:
    """A posterior directory written by [`infer_patient`][sbi_tumor.patient.workflow.infer_patient] (``sbi-tumor infer``).

    Raises:
        InputError: not such a directory, or written by an incompatible version.
    """
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{directory} is not a posterior directory of sbi-tumor infer (no "
                         "manifest.json); give the --out directory of a finished infer run.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{manifest_path} is not valid JSON ({err}); re-run infer.") from err
    found = manifest.get("format_version")
    if manifest.get("format") != POSTERIOR_FORMAT or found != POSTERIOR_FORMAT_VERSION:
        raise InputError(
            f"The posterior in {directory} has format version {found} (written by sbi-tumor "
            f"{manifest.get('package_version')}), but this sbi-tumor ({package_version()}) reads "
            f"version {POSTERIOR_FORMAT_VERSION}; re-run infer with this version, or use the one "
            "that wrote it.")
    try:
        blob = torch.load(directory / "posterior.pt", weights_only=False)
        patient = Patient.load(directory / "patient.npz")
    except (OSError, EOFError, KeyError, ValueError, RuntimeError, ImportError, AttributeError,
            pickle.UnpicklingError) as err:
        raise InputError(f"Cannot read the posterior in {directory} ({err}); the directory is "
                         "damaged, incomplete or from another sbi-tumor version: re-run infer.") from err
    return InferenceRun(posterior=blob["posterior"], result=blob["result"], patient=patient,
                        directory=directory, prior_bounds=tuple(manifest.get("prior_bounds") or ()) or None,
                        truth=manifest.get("truth"), files=manifest.get("files", {}))


#: Version of the layout of a posterior directory; [`load_run`][sbi_tumor.patient.run.load_run] refuses other versions.
POSTERIOR_FORMAT_VERSION = 1


POSTERIOR_FORMAT = "sbi-tumor.posterior"
