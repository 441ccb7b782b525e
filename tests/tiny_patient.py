"""A tiny synthetic patient for the workflow, prediction and CLI tests (seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sbi_tumor.anatomy import Anatomy
from sbi_tumor.config import InferenceConfig
from sbi_tumor.io import save_nifti

SEED_MM = (-30.0, 20.0, 30.0)  # frontal white matter of MNI152
# Days since the seed of the three scans: T1 core visible from the second on, T2 within 48 mm.
SCAN_DAYS = (6.0, 8.0, 9.0)


def tiny_anatomy(mni2: Anatomy) -> Anatomy:
    """A 48 mm cube of the 2 mm MNI152 atlas around the seed: real tissue, 25^3 voxels."""
    return mni2.crop(np.array(SEED_MM), 48.0)


def tiny_config(**overrides) -> InferenceConfig:
    # NPE_B (0.1's default, one training pair per solve), with which the workflow tests were written;
    # an augmented TSNPE run has a test of its own (tiny_config(method="TSNPE", augment=3)).
    settings = dict(method="NPE_B", num_rounds=2, num_simulations=30, embedding="mlp", embedding_kwargs={"hidden": 8},
                    num_components=2, max_num_epochs=4, stop_after_epochs=2, num_posterior_samples=100,
                    simulation_batch_size=5, seed=3)
    return InferenceConfig(**(settings | overrides))


def write_anatomy(anatomy: Anatomy, directory: Path) -> list[str]:
    """Write the tissue maps; returns the CLI arguments ``--wm F --gm F --csf F``."""
    args = []
    for name in ("wm", "gm", "csf"):
        path = save_nifti(directory / f"{name}.nii.gz", getattr(anatomy, name), anatomy.affine)
        args += [f"--{name}", str(path)]
    return args
