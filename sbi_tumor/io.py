"""Reading patient images, writing results atomically, and storing simulations on disk.

Patient inputs
--------------
Segmentations are binary NIfTI masks: the T1-gadolinium core and the T2/FLAIR abnormality, on
one grid. An ADC map (apparent diffusion coefficient, any unit) gives the initial tumour density
through [`adc_to_density`][sbi_tumor.io.adc_to_density]. Anything that cannot be used raises [`InputError`][sbi_tumor.io.InputError] with a
message that says what is wrong and how to fix it.

Outputs
-------
[`save_nifti`][sbi_tumor.io.save_nifti] and [`atomic_output_dir`][sbi_tumor.io.atomic_output_dir] never leave a half-written file or directory
behind: they write next to the target and rename into place (an atomic operation on POSIX).

Simulations
-----------
[`SimulationStore`][sbi_tumor.io.SimulationStore] keeps the parameters and label maps of every finished simulation in a
zarr (v3) directory, so an interrupted inference run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .anatomy import Anatomy

__all__ = [
    "InputError",
    "StoreError",
    "SimulationStore",
    "adc_to_density",
    "atomic_output_dir",
    "check_day",
    "load_adc",
    "load_label_map",
    "load_mask",
    "load_segmentations",
    "save_nifti",
    "to_anatomy_grid",
]

# Two grids are the same when their affines agree to this many mm (rounding in NIfTI headers).
_AFFINE_ATOL = 1e-3


class InputError(ValueError):
    """Raised for a patient input that cannot be used; the message says what to fix."""


class StoreError(ValueError):
    """Raised when a simulation store cannot be created, opened or written as asked."""


# -- reading --------------------------------------------------------------------------------
def _load_volume(path: str | Path, name: str):
    """(nibabel image, 3D data array) of a NIfTI file holding one volume."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{name}: file not found: {path}")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises several types for unreadable files
        raise InputError(f"{name}: cannot read {path} as a NIfTI image ({err}).") from err
    shape = data.shape
    if len(shape) == 4 and shape[3] == 1:
        data = data[..., 0]
    elif len(shape) != 3:
        hint = (f"it holds {shape[3]} volumes; extract one, e.g. nilearn.image.index_img(img, 0)"
                if len(shape) == 4 else "give a single 3D volume")
        raise InputError(f"{name} {path} has shape {shape}, expected a 3D image: {hint}.")
    return img, np.ascontiguousarray(data)


def load_mask(path: str | Path, name: str = "T1 segmentation") -> tuple[np.ndarray, np.ndarray]:
    """A binary segmentation: (bool mask of shape (nx, ny, nz), (4, 4) affine in mm).

    Voxel values must be 0 or 1 (integers or floats); a label map with several labels is
    refused, use [`load_label_map`][sbi_tumor.io.load_label_map] to choose which labels form the mask.
    """
    img, data = _load_volume(path, name)
    values = np.unique(data)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if values.size > 10 else "")
        integer = np.all(np.isfinite(values)) and np.all(values == np.round(values))
        hint = ("it looks like a label map: pick the labels of this region with "
                "load_label_map(path, labels=[...])" if integer else
                "it looks like a probability or intensity map: threshold it, e.g. save "
                "(data > 0.5) with save_nifti, or use the segmentation tool's binary output")
        raise InputError(
            f"{name} {path} is not binary: found {values.size} distinct values ({shown}), "
            f"expected only 0 and 1; {hint}."
        )
    mask = data == 1
    if not mask.any():
        raise InputError(f"{name} {path} is empty (no voxel is 1); check that it is the right file.")
    return mask, np.asarray(img.affine, dtype=np.float64)


def load_label_map(path: str | Path, labels: Sequence[int],
                   name: str = "segmentation") -> tuple[np.ndarray, np.ndarray]:
    """Binary mask of the voxels whose label is one of ``labels``, and the (4, 4) affine.

    E.g. for BraTS label maps (1 necrosis, 2 oedema, 4 enhancing; 3 since BraTS 2023) the
    T1 core is ``labels=[1, 4]`` and the T2/FLAIR region ``labels=[1, 2, 4]``.
    """
    img, data = _load_volume(path, name)
    if not (np.all(np.isfinite(data)) and np.array_equal(data, np.round(data))):
        raise InputError(f"{name} {path} has non-integer values; a label map holds integer labels.")
    mask = np.isin(data, list(labels))
    if not mask.any():
        found = ", ".join(f"{v:g}" for v in np.unique(data)[:10])
        raise InputError(
            f"{name} {path} has no voxel with label {list(labels)}; labels found: {found}."
        )
    return mask, np.asarray(img.affine, dtype=np.float64)


def _same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=_AFFINE_ATOL)


def load_segmentations(t1_path: str | Path, t2_path: str | Path,
                       max_outside: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1 core and T2 masks on one grid: (t1 bool, t2 bool, (4, 4) affine).

    The T1 core must lie inside the T2 region (T2 sees more of the tumour). If a fraction of at
    most ``max_outside`` of the T1 voxels lies outside, those voxels (segmentation noise) are
    added to the T2 mask with a warning; more than that raises.
    """
    t1, affine = load_mask(t1_path, "T1 segmentation")
    t2, affine2 = load_mask(t2_path, "T2 segmentation")
    if t1.shape != t2.shape:
        raise InputError(
            f"The T1 segmentation has shape {t1.shape} but the T2 segmentation {t2.shape}; they "
            "must be on one grid: resample one onto the other (nilearn.image.resample_to_img with "
            "interpolation='nearest')."
        )
    if not np.allclose(affine, affine2, atol=_AFFINE_ATOL):
        diff = float(np.abs(affine - affine2).max())
        raise InputError(
            f"The T1 and T2 segmentations have the same shape but different affines (largest "
            f"difference {diff:.3g} mm), so their voxels are not the same points: resample one onto "
            "the other (nilearn.image.resample_to_img with interpolation='nearest')."
        )
    outside = t1 & ~t2
    n_out = int(outside.sum())
    if n_out:
        fraction = n_out / int(t1.sum())
        if fraction > max_outside:
            raise InputError(
                f"{n_out} voxels ({fraction:.1%}) of the T1 core lie outside the T2 segmentation; "
                f"the core must lie inside T2 (at most {max_outside:.1%} outside is tolerated). "
                "Check that the files are not swapped and are from the same visit."
            )
        warnings.warn(
            f"{n_out} voxels ({fraction:.2%}) of the T1 core lay outside the T2 segmentation; "
            "they were added to the T2 mask.", UserWarning, stacklevel=2,
        )
        t2 = t2 | t1
    return t1, t2, affine


def to_anatomy_grid(image: np.ndarray, affine: np.ndarray, anatomy: Anatomy,
                    kind: Literal["mask", "continuous"] = "mask",
                    name: str = "image") -> np.ndarray:
    """``image`` (nx', ny', nz') with its ``affine``, on the anatomy's grid (nx, ny, nz).

    Unchanged when the grids already agree; otherwise resampled with a warning, by nearest
    neighbour for masks (returns bool) and trilinearly for continuous maps such as ADC (returns
    float32; cubic splines would overshoot and could make a positive ADC negative). Voxels
    outside the image's field of view become 0.
    """
    if kind not in ("mask", "continuous"):
        raise ValueError(f"kind must be 'mask' or 'continuous', got {kind!r}.")
    image = np.asarray(image)
    affine = np.asarray(affine, dtype=np.float64)
    dtype = bool if kind == "mask" else np.float32
    if _same_grid(image.shape, affine, anatomy.shape, anatomy.affine):
        return np.ascontiguousarray(image, dtype=dtype)

    # Overlap of the two boxes, in anatomy voxel coordinates (voxel i spans i - 1/2 .. i + 1/2).
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in image.shape], indexing="ij"))
    corners = corners.reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3]
    lo_hi = anatomy.world_to_voxel(corners)
    grid = np.array(anatomy.shape)
    if np.any(lo_hi.max(axis=0) <= -0.5) or np.any(lo_hi.min(axis=0) >= grid - 0.5):
        raise InputError(
            f"The {name} (shape {image.shape}, origin {tuple(np.round(affine[:3, 3], 1))} mm) does "
            f"not overlap the anatomy's field of view (shape {anatomy.shape}, origin "
            f"{tuple(np.round(anatomy.affine[:3, 3], 1))} mm); register the patient images to "
            "the anatomy's space (e.g. MNI) first."
        )
    import nibabel as nib
    from nilearn.image import resample_img  # slow to import: only when needed

    source = nib.Nifti1Image(image.astype(np.uint8 if kind == "mask" else np.float32), affine)
    out = resample_img(source, target_affine=anatomy.affine, target_shape=anatomy.shape,
                       interpolation="nearest" if kind == "mask" else "linear",
                       fill_value=0, force_resample=True, copy_header=True)
    data = np.asarray(out.dataobj)
    if kind == "mask":
        data = data > 0
        if image.any() and not data.any():
            raise InputError(
                f"The {name} is empty after resampling to the anatomy grid: it lies outside the "
                "anatomy's field of view or is smaller than one anatomy voxel."
            )
    warnings.warn(
        f"The {name} (shape {image.shape}) is not on the anatomy grid (shape {anatomy.shape}); "
        f"it was resampled ({'nearest neighbour' if kind == 'mask' else 'trilinear'}).",
        UserWarning, stacklevel=2,
    )
    return np.ascontiguousarray(data, dtype=dtype)


def load_adc(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """ADC map as (float32 array (nx, ny, nz), (4, 4) affine); any unit (only ratios are used)."""
    img, data = _load_volume(path, "ADC map")
    return data.astype(np.float32), np.asarray(img.affine, dtype=np.float64)


def adc_to_density(adc: np.ndarray, t2_mask: np.ndarray) -> np.ndarray:
    """Initial tumour cell density from ADC, float32 of the mask's shape, values in (0, 1].

    Cell density is inversely proportional to ADC (densely packed cells hinder water
    diffusion) inside the T2 segmentation, normalised so that its maximum is 1, and 0 outside:

        u(x) = min_{y in T2} ADC(y) / ADC(x)   for x in T2,       u(x) = 0 elsewhere.

    This is a ratio, so the unit of ADC does not matter. A min-max rescaling
    ``(ADC_max - ADC) / (ADC_max - ADC_min)`` was not chosen: it is not proportional to
    1/ADC and sets the highest-ADC T2 voxel to 0, whereas T2 marks where the density is above
    the detection threshold u_T2 > 0.
    """
    adc = np.asarray(adc, dtype=np.float64)
    mask = np.asarray(t2_mask, dtype=bool)
    if adc.shape != mask.shape:
        raise InputError(
            f"The ADC map has shape {adc.shape} but the T2 mask {mask.shape}; bring both onto the "
            "anatomy grid first with to_anatomy_grid."
        )
    if not mask.any():
        raise InputError("The T2 mask is empty; the initial density needs a tumour region.")
    inside = adc[mask]
    n_bad = int((~np.isfinite(inside)).sum())
    if n_bad:
        raise InputError(
            f"The ADC map has {n_bad} NaN or infinite voxels inside the T2 segmentation; fill them "
            "(e.g. with the median ADC of the region) or recompute the ADC map."
        )
    n_bad = int((inside <= 0).sum())
    if n_bad:
        raise InputError(
            f"The ADC map has {n_bad} non-positive voxels inside the T2 segmentation (ADC must be "
            "> 0); check the ADC map covers the tumour (zeros often mean outside its field of "
            "view or skull-stripped) and clip tiny values, e.g. np.maximum(adc, 1e-5)."
        )
    if np.ptp(inside) == 0:
        raise InputError(
            f"The ADC map is constant ({inside[0]:g}) inside the T2 segmentation, so it carries no "
            "information on cell density; check that the file is an ADC map and not a mask."
        )
    density = np.zeros(adc.shape, dtype=np.float32)
    density[mask] = inside.min() / inside
    return density


def check_day(day: float, initial_day: float = 0.0) -> float:
    """The observation day (days) as a float; raises if not finite or before ``initial_day``."""
    day = float(day)
    if not np.isfinite(day):
        raise InputError(f"The observation day must be a finite number, got {day}.")
    if day < initial_day:
        raise InputError(
            f"The observation day {day:g} is before the initial condition (day {initial_day:g}); "
            "the model only runs forward in time: give days counted from the initial scan."
        )
    return day


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


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to ``path`` only if the body succeeds.

    If ``path`` exists it is replaced only with ``overwrite=True`` (checked before the body
    runs, so no work is wasted). On error the temporary directory is deleted and ``path`` is
    left as it was. Replacing moves the old directory aside first, so for an instant neither
    exists, but a reader never sees a mixture of old and new files.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"Output directory {path} already exists; choose another one or pass overwrite=True."
        )
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


class SimulationStore:
    """Parameters and label maps of finished simulations, per inference round, in zarr v3.

    Layout: a group per round ``round_<r>`` holding ``theta`` (float32, (N, theta_dim)),
    ``x`` (uint8, (N, nx, ny, nz), one chunk per simulation, compressed) and ``done`` (bool,
    (N,)). A row counts only once ``done`` is set, which is written after its ``theta`` and
    ``x`` (zarr writes each chunk atomically), so an interruption loses at most the batch being
    written. Root attributes: ``config`` (JSON), ``package_version``, ``format_version``,
    ``grid_shape``, ``theta_dim``. Meant for one writer at a time.

    Create with [`create`][sbi_tumor.io.SimulationStore.create], reopen (to resume or read) with [`open`][sbi_tumor.io.SimulationStore.open].
    """

    FORMAT = "sbi-tumor.simulations"
    FORMAT_VERSION = 1
    # Rows of theta/done per chunk: small arrays, so large chunks keep the file count low.
    _ROWS_PER_CHUNK = 4096

    def __init__(self, group: Any, path: Path) -> None:
        self._group = group
        self.path = path

    @classmethod
    def create(cls, path: str | Path, grid_shape: Sequence[int], theta_dim: int = 4,
               config: dict[str, Any] | None = None, overwrite: bool = False) -> "SimulationStore":
        """New empty store for label maps of shape ``grid_shape`` and ``theta_dim`` parameters."""
        import zarr

        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(
                f"Simulation store {path} already exists; reopen it with SimulationStore.open to "
                "resume, or pass overwrite=True to start afresh."
            )
        grid_shape = [int(n) for n in grid_shape]
        if len(grid_shape) != 3 or min(grid_shape) < 1:
            raise StoreError(f"grid_shape must be three positive sizes, got {grid_shape}.")
        config = dict(config or {})
        try:
            json.dumps(config, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise StoreError(f"config must be JSON-serialisable (plain numbers, strings, lists, "
                             f"dicts): {err}") from err
        attributes = {"format": cls.FORMAT, "format_version": cls.FORMAT_VERSION,
                      "package_version": package_version(), "config": config,
                      "grid_shape": grid_shape, "theta_dim": int(theta_dim)}
        group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=attributes)
        return cls(group, path)

    @classmethod
    def open(cls, path: str | Path, mode: Literal["r", "r+"] = "r+") -> "SimulationStore":
        """Existing store; ``mode="r"`` for read only. Raises for an incompatible format."""
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"No simulation store at {path} (no zarr.json); create one with "
                             "SimulationStore.create.")
        group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        attrs = group.attrs.asdict()
        if attrs.get("format") != cls.FORMAT:
            raise StoreError(f"{path} is a zarr group but not an sbi-tumor simulation store.")
        found = attrs.get("format_version")
        if found != cls.FORMAT_VERSION:
            raise StoreError(
                f"Simulation store {path} has format version {found} (written by sbi-tumor "
                f"{attrs.get('package_version')}), but this sbi-tumor ({package_version()}) reads "
                f"format version {cls.FORMAT_VERSION}; re-run the simulations into a new store or "
                "use the sbi-tumor version that wrote it."
            )
        return cls(group, path)

    # -- metadata ---------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return self._group.attrs.asdict()

    @property
    def config(self) -> dict[str, Any]:
        return self.attrs["config"]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(self.attrs["grid_shape"])  # type: ignore[return-value]

    @property
    def theta_dim(self) -> int:
        return int(self.attrs["theta_dim"])

    def rounds(self) -> list[int]:
        """Rounds that hold at least one row, ascending."""
        return sorted(int(k.removeprefix("round_")) for k in self._group.group_keys())

    # -- writing ----------------------------------------------------------------------------
    def _round(self, round: int, create: bool):
        key = f"round_{int(round)}"
        if key in self._group:
            return self._group[key]
        if not create:
            raise StoreError(f"Round {round} is not in the store; rounds present: {self.rounds()}.")
        if int(round) < 0:
            raise StoreError(f"Round must be >= 0, got {round}.")
        g = self._group.create_group(key)
        g.create_array("theta", shape=(0, self.theta_dim), dtype="float32",
                       chunks=(self._ROWS_PER_CHUNK, self.theta_dim), fill_value=np.nan)
        g.create_array("x", shape=(0, *self.grid_shape), dtype="uint8",
                       chunks=(1, *self.grid_shape), fill_value=0)
        g.create_array("done", shape=(0,), dtype="bool", chunks=(self._ROWS_PER_CHUNK,),
                       fill_value=False)
        return g

    def _check_batch(self, theta, x) -> tuple[np.ndarray, np.ndarray]:
        theta, x = _numpy(theta), _numpy(x)
        if theta.ndim != 2 or theta.shape[1] != self.theta_dim:
            raise StoreError(f"theta must have shape (batch, {self.theta_dim}), got {theta.shape}.")
        if x.shape != (len(theta), *self.grid_shape):
            expected = (len(theta), *self.grid_shape)
            raise StoreError(f"x must have shape {expected} (theta's batch, the store's grid), "
                             f"got {x.shape}.")
        x8 = x.astype(np.uint8)
        if not np.array_equal(x8, x):
            raise StoreError("x must hold integer labels in 0..255 (label maps); got other values.")
        return theta.astype(np.float32), x8

    def write(self, round: int, indices: Sequence[int] | np.ndarray,
              theta: np.ndarray | torch.Tensor, x: np.ndarray | torch.Tensor) -> None:
        """Store simulations at given rows of a round, growing it if needed, and mark them done.

        ``theta``: (B, theta_dim); ``x``: (B, nx, ny, nz) label maps; ``indices``: B distinct
        rows. Rows may be rewritten (e.g. a re-run after a crash).
        """
        theta, x = self._check_batch(theta, x)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.shape != (len(theta),) or np.unique(idx).size != idx.size or (idx < 0).any():
            raise StoreError(f"indices must be {len(theta)} distinct non-negative rows, got {idx}.")
        if idx.size == 0:
            return
        g = self._round(round, create=True)
        n = max(g["done"].shape[0], int(idx.max()) + 1)
        if n > g["done"].shape[0]:
            g["theta"].resize((n, self.theta_dim))
            g["x"].resize((n, *self.grid_shape))
            g["done"].resize((n,))
        order = np.argsort(idx)  # zarr orthogonal selections want increasing indices
        idx, theta, x = idx[order], theta[order], x[order]
        g["theta"].set_orthogonal_selection((idx, slice(None)), theta)
        g["x"].set_orthogonal_selection((idx,), x)
        g["done"].set_orthogonal_selection((idx,), np.ones(idx.size, dtype=bool))

    def append(self, round: int, theta: np.ndarray | torch.Tensor,
               x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Store a batch after the last row of a round; returns the row indices used, (B,)."""
        start = self._round(round, create=True)["done"].shape[0]
        indices = np.arange(start, start + len(theta))
        self.write(round, indices, theta, x)
        return indices

    # -- reading ----------------------------------------------------------------------------
    def _done(self, round: int) -> np.ndarray:
        if f"round_{int(round)}" not in self._group:
            return np.zeros(0, dtype=bool)
        return self._group[f"round_{int(round)}"]["done"][:]

    def completed(self, round: int) -> int:
        """Number of finished simulations in a round (0 for a round not started)."""
        return int(self._done(round).sum())

    def pending(self, round: int, num_simulations: int) -> np.ndarray:
        """Rows in ``0 .. num_simulations - 1`` not yet done: what is left to simulate."""
        done = self._done(round)[:num_simulations]
        return np.concatenate([np.flatnonzero(~done), np.arange(done.size, num_simulations)])

    def load(self, round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Finished rows of a round: theta float32 (N, theta_dim), x uint8 (N, nx, ny, nz)."""
        g = self._round(round, create=False)
        idx = np.flatnonzero(g["done"][:])
        theta = g["theta"].get_orthogonal_selection((idx, slice(None)))
        x = g["x"].get_orthogonal_selection((idx,))
        return torch.from_numpy(np.asarray(theta, np.float32)), torch.from_numpy(np.asarray(x))
