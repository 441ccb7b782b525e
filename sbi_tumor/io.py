"""Writing results: NIfTI images and output directories that are complete or absent.

[`save_nifti`][sbi_tumor.io.save_nifti] and [`atomic_output_dir`][sbi_tumor.io.atomic_output_dir] never leave a
half-written file or directory behind: they write next to the target and rename into place (an
atomic operation on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

__all__ = ["OUTPUT_MARKER", "atomic_output_dir", "check_replaceable", "mark_output", "package_version", "save_nifti"]


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


#: The file every output directory of this package holds (simulate, infer, predict, demo,
#: benchmark, a synthetic patient's scans): only such a directory, or an empty one, is replaced
#: with ``overwrite``. Its name and contents are this package's, so a user's own folder is never
#: mistaken for one (a ``results.json`` or ``truth.json`` of their own proves nothing).
OUTPUT_MARKER = ".sbi-tumor-output"
#: What ``sbi-tumor infer`` wrote before the marker (0.3.0): a ``manifest.json`` with this key.
_LEGACY_MANIFEST_KEY = "package_version"


def mark_output(path: str | Path) -> None:
    """Mark the directory ``path`` as an output of this package (see ``OUTPUT_MARKER``)."""
    (Path(path) / OUTPUT_MARKER).write_text(json.dumps({"written_by": "sbi-tumor", "version": package_version()}))


def _is_output(path: Path) -> bool:
    marker = path / OUTPUT_MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text()).get("written_by") == "sbi-tumor"
        except (ValueError, AttributeError):
            return False
    try:  # a posterior directory written before the marker
        return _LEGACY_MANIFEST_KEY in json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


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
    if any(path.iterdir()) and not _is_output(path):
        raise FileExistsError(f"{path} holds files that sbi-tumor did not write (it has no {OUTPUT_MARKER}); "
                              "refusing to replace it. Choose another output directory, or delete it yourself "
                              "if it is an output of sbi-tumor 0.3.0 or older.")


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to ``path`` only if the body succeeds.

    If ``path`` exists it is replaced only with ``overwrite=True``, and only if it is empty or
    an output of this package ([`check_replaceable`][sbi_tumor.io.check_replaceable]); both are
    checked before the body runs, so no work is wasted. On error the temporary directory is deleted and ``path`` is
    left as it was. Replacing moves the old directory aside first, so for an instant neither
    exists, but a reader never sees a mixture of old and new files. The directory holds
    ``OUTPUT_MARKER``, so a later ``overwrite`` knows it for this package's.
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
        mark_output(tmp)
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
