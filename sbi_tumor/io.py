"""Writing results: NIfTI images and output directories that are complete or absent.

[`save_nifti`][sbi_tumor.io.save_nifti] and [`atomic_output_dir`][sbi_tumor.io.atomic_output_dir] never leave a
half-written file or directory behind: they write next to the target and rename into place (an
atomic operation on POSIX).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

__all__ = ["OUTPUT_MARKERS", "atomic_output_dir", "check_replaceable", "package_version", "save_nifti"]


# -- writing --------------------------------------------------------------------------------
def _numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def save_nifti(path: str | Path, data: np.ndarray | torch.Tensor, affine: np.ndarray,
               dtype: np.dtype | type | str | None = None) -> Path:
    """Write a 3D/4D image to ``path`` (.nii or .nii.gz) atomically; returns the path.

    Default dtype: uint8 for boolean or integer data within 0..255 (masks, label maps), int32
    for other integers, float32 for floating point (densities).
    """
    import nibabel as nib

    path = Path(path)
    data = _numpy(data)
    if dtype is None:
        if data.dtype == bool or (np.issubdtype(data.dtype, np.integer)
                                  and (data.size == 0 or (data.min() >= 0 and data.max() <= 255))):
            dtype = np.uint8
        elif np.issubdtype(data.dtype, np.integer):
            dtype = np.int32
        else:
            dtype = np.float32
    img = nib.Nifti1Image(data.astype(dtype), np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    # nibabel picks the format from the suffix; a fresh name (not mkstemp, which makes the file
    # private) gives the output the usual umask permissions.
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp{suffix}"
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


#: Files by which an output directory of this package is recognised (simulate, infer, predict,
#: demo, benchmark, a synthetic patient's scans): only such a directory, or an empty one, is
#: replaced with ``overwrite``.
OUTPUT_MARKERS = ("volumes.json", "manifest.json", "prediction.json", "results.json", "summary.json",
                  "truth.json", "inputs/truth.json")


def check_replaceable(path: str | Path) -> None:
    """Raise unless ``path`` may be replaced: an empty directory or one this package wrote, and not
    the working directory or one above it (so ``overwrite`` never deletes someone's files)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} is a file, not an output directory; choose another output directory.")
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        raise FileExistsError(f"{path} is the working directory or one above it; give a new output directory.")
    if any(path.iterdir()) and not any((path / marker).exists() for marker in OUTPUT_MARKERS):
        raise FileExistsError(f"{path} holds files that sbi-tumor did not write (none of {', '.join(OUTPUT_MARKERS)}); "
                              "refusing to replace it. Choose another output directory.")


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to ``path`` only if the body succeeds.

    If ``path`` exists it is replaced only with ``overwrite=True``, and only if it is empty or
    an output of this package ([`check_replaceable`][sbi_tumor.io.check_replaceable]); both are
    checked before the body runs, so no work is wasted. On error the temporary directory is deleted and ``path`` is
    left as it was. Replacing moves the old directory aside first, so for an instant neither
    exists, but a reader never sees a mixture of old and new files.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"Output directory {path} already exists; choose another one or pass overwrite=True."
        )
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its directories are private (0700), and this one becomes the output.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not path.exists():
        os.replace(tmp, path)
        return
    if not overwrite:
        raise FileExistsError(
            f"Output directory {path} was created by someone else while writing; the results "
            f"are kept in {tmp}."
        )
    old = path.parent / f".{path.name}.{uuid.uuid4().hex}.old"
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


# -- simulation store -----------------------------------------------------------------------
def package_version() -> str:
    try:
        return metadata.version("sbi-tumor")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"
