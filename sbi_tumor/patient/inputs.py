"""A patient's inputs: segmentations, an ADC map and the observation window, read and checked.

Segmentations are binary NIfTI masks: the T1-gadolinium core and the T2/FLAIR abnormality, on
one grid. An ADC map (apparent diffusion coefficient, any unit) gives the initial tumour density
through [`adc_to_density`][sbi_tumor.patient.inputs.adc_to_density]. Anything that cannot be used raises
[`InputError`][sbi_tumor.patient.inputs.InputError] with a message that says what is wrong and how
to fix it, before any work starts.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..anatomy import Anatomy, load_mni152
from ..observation import masks_to_labels
from ..one_scan import AGE_UNIT, OneScanSimulator
from ..simulator import InitialCondition, TumorSimulator
from ..solver import SolverConfig
from ..config import BRATS_ENHANCING, BRATS_NECROSIS, BRATS_OEDEMA, GREY_MATTER_RATIO

__all__ = [
    "InputError",
    "Patient",
    "adc_to_density",
    "load_brats",
    "check_day",
    "load_adc",
    "load_label_map",
    "load_mask",
    "load_patient",
    "load_segmentations",
    "roi_edge_mm",
    "to_anatomy_grid",
]

# Two grids are the same when their affines agree to this many mm (rounding in NIfTI headers).
_AFFINE_ATOL = 1e-3


class InputError(ValueError):
    """Raised for a patient input that cannot be used; the message says what to fix."""


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


def load_mask(path: str | Path, name: str = "T1 segmentation",
              allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A binary segmentation: (bool mask of shape (nx, ny, nz), (4, 4) affine in mm).

    Voxel values must be 0 or 1 (integers or floats); a label map with several labels is
    refused, use [`load_label_map`][sbi_tumor.patient.inputs.load_label_map] to choose which labels form the mask.
    """
    img, data = _load_volume(path, name)
    values = np.unique(data)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if values.size > 10 else "")
        integer = np.all(np.isfinite(values)) and np.all(values == np.round(values))
        hint = ("it looks like a label map: give a BraTS map as --seg FILE --labels brats (Python: "
                "load_brats), or pick this region's labels with load_label_map(path, labels=[...])" if integer else
                "it looks like a probability or intensity map: threshold it, e.g. save "
                "(data > 0.5) with save_nifti, or use the segmentation tool's binary output")
        raise InputError(
            f"{name} {path} is not binary: found {values.size} distinct values ({shown}), "
            f"expected only 0 and 1; {hint}."
        )
    mask = data == 1
    if not mask.any() and not allow_empty:
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


#: BraTS label conventions: necrotic core 1, oedema 2, enhancing tumour 4 (BraTS 2012-2021) or 3
#: (BraTS 2023 and later). The T1-gadolinium core is enhancing + necrosis, the T2/FLAIR extent all
#: three.


def load_brats(path: str | Path, name: str = "BraTS segmentation") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1 core and T2 extent of a BraTS label map: (t1 bool, t2 bool, (4, 4) affine).

    Both numberings are read (enhancing 4 or 3, told apart by which occurs); any other label, or
    both 3 and 4, raises an ``InputError``. A map without enhancing or necrotic voxels has an
    empty T1 core, which is a valid observation.
    """
    img, data = _load_volume(path, name)
    if not (np.all(np.isfinite(data)) and np.array_equal(data, np.round(data))):
        raise InputError(f"{name} {path} has non-integer values; a BraTS label map holds the labels 0, 1, 2 "
                         "and 4 (or 3).")
    found = {int(v) for v in np.unique(data)}
    unknown = found - {0, BRATS_NECROSIS, BRATS_OEDEMA, *BRATS_ENHANCING}
    if unknown:
        raise InputError(f"{name} {path} has labels {sorted(unknown)} that BraTS does not use (0 background, "
                         "1 necrosis, 2 oedema, 4 or 3 enhancing); relabel them, or give binary --t1/--t2 masks.")
    if set(BRATS_ENHANCING) <= found:
        raise InputError(f"{name} {path} holds both 3 and 4: BraTS marks enhancing tumour with one of them "
                         "(4 until 2021, 3 since 2023); relabel the map to one convention.")
    enhancing = data == (3 if 3 in found else 4)
    t1 = enhancing | (data == BRATS_NECROSIS)
    t2 = t1 | (data == BRATS_OEDEMA)
    if not t2.any():
        raise InputError(f"{name} {path} has no tumour voxel (labels 1, 2, 4 or 3); check that it is the "
                         "right file.")
    return t1, t2, np.asarray(img.affine, dtype=np.float64)


def _same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=_AFFINE_ATOL)


def load_segmentations(t1_path: str | Path, t2_path: str | Path | None,
                       max_outside: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1 core and T2 masks on one grid: (t1 bool, t2 bool, (4, 4) affine).

    With ``t2_path`` None, ``t1_path`` is a BraTS label map (see
    [`load_brats`][sbi_tumor.patient.inputs.load_brats]).

    The T1 core must lie inside the T2 region (T2 sees more of the tumour). If a fraction of at
    most ``max_outside`` of the T1 voxels lies outside, those voxels (segmentation noise) are
    added to the T2 mask with a warning; more than that raises.
    """
    if t2_path is None:
        return load_brats(t1_path)
    # A tumour without an enhancing core (common in low-grade glioma) is a valid observation: the
    # density stays below u_T1 everywhere, which the simulator and the likelihood both express.
    t1, affine = load_mask(t1_path, "T1 segmentation", allow_empty=True)
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


@dataclass
class Patient:
    """One patient's inputs, on the anatomy (simulation) grid.

    Attributes:
        anatomy: tissue maps, shape ``(nx, ny, nz)``.
        t1: bool masks of the segmentations being fitted, anatomy grid.
        t2: bool masks of the segmentations being fitted, anatomy grid.
        day: days from the initial condition to the segmentations; with ``initial`` None, the
            tumour's age if known (else None).
        initial: the initial condition (seed point or density map on the anatomy grid), or
            None: one scan, the origin unknown (inferred, see ``sbi_tumor.one_scan``).
        input_shape: grid of the input segmentations (results are written on it).
        input_affine: grid of the input segmentations (results are written on it).
        roi_size_mm: edge of the cubic region of interest the model runs on (mm).
        ratio: white/grey-matter diffusivity ratio of the model.
    """

    anatomy: Anatomy
    t1: np.ndarray
    t2: np.ndarray
    day: float | None
    initial: InitialCondition | None
    input_shape: tuple[int, int, int]
    input_affine: np.ndarray
    roi_size_mm: float
    ratio: float = GREY_MATTER_RATIO

    @property
    def one_scan(self) -> bool:
        """True when the origin is unknown: theta is ``sbi_tumor.one_scan``'s (origin, ell, tau, ...)."""
        return self.initial is None

    @property
    def scan_day(self) -> float:
        """The fitted scan's time: ``day``, or with one scan of unknown age ``AGE_UNIT`` (times in
        units of the age)."""
        return AGE_UNIT if self.day is None else self.day

    @property
    def scan_name(self) -> str:
        """The fitted scan as figures and reports name it: "day 9", or "the scan" when its time
        since the origin is unknown."""
        return "the scan" if self.day is None else f"day {self.day:g}"

    @property
    def centre_mm(self) -> np.ndarray:
        """Centre of the observation window (world mm): the initial tumour's, or with an unknown
        origin the T2 region's centroid."""
        if self.initial is not None:
            return self.initial.centre_mm(self.anatomy)
        return self.anatomy.voxel_to_world(np.argwhere(self.t2).mean(0))

    def simulator(self, roi_size_mm: float | None = None,
                  day: float | None = None) -> TumorSimulator | OneScanSimulator:
        """The batched simulator of this patient (at ``day``, by default the fitted day): a
        ``TumorSimulator``, or a ``OneScanSimulator`` when the origin is unknown (its times in days
        when the age is known, else in units of the age)."""
        roi = roi_size_mm or self.roi_size_mm
        if self.one_scan:
            return OneScanSimulator(self.anatomy, self.centre_mm, roi_size_mm=roi, ratio=self.ratio,
                                    age_days=self.day)
        return TumorSimulator(self.anatomy, self.initial, day=self.day if day is None else day,
                              roi_size_mm=roi, solver_config=SolverConfig(ratio=self.ratio))

    def observation(self, simulator: TumorSimulator) -> torch.Tensor:
        """The observed label map x_o on the simulator's ROI, float32 ``(1, nx, ny, nz)``."""
        return torch.from_numpy(self.labels[simulator.roi_slices][None].astype(np.float32))

    @property
    def labels(self) -> np.ndarray:
        """Observed label map (0 healthy, 1 T2 only, 2 T1 core), uint8, anatomy grid."""
        return masks_to_labels(self.t1, self.t2)

    def fingerprint(self) -> str:
        """Hash of everything that determines the simulations and x_o (to match a resumed run)."""
        h = hashlib.sha256()
        initial = self.initial
        for a in (self.anatomy.wm, self.anatomy.gm, self.anatomy.csf, self.anatomy.affine, self.labels,
                  np.asarray([] if initial is None else initial.seed_mm if initial.density is None
                             else initial.density, dtype=np.float64),
                  np.array([np.nan if self.day is None else self.day, self.roi_size_mm, self.ratio,
                            self.anatomy.tissue_threshold])):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write everything ``load`` needs to rebuild the simulator, compressed ``.npz``."""
        initial = self.initial
        np.savez_compressed(
            path, wm=self.anatomy.wm, gm=self.anatomy.gm, csf=self.anatomy.csf,
            affine=self.anatomy.affine, tissue_threshold=self.anatomy.tissue_threshold,
            t1=self.t1, t2=self.t2, day=np.nan if self.day is None else self.day,
            input_shape=np.array(self.input_shape), input_affine=self.input_affine,
            roi_size_mm=self.roi_size_mm, ratio=self.ratio, one_scan=initial is None,
            seed_mm=np.array(initial.seed_mm if initial is not None and initial.seed_mm is not None else []),
            density=(initial.density if initial is not None and initial.density is not None
                     else np.zeros(0, np.float32)))

    @classmethod
    def load(cls, path: str | Path) -> "Patient":
        with np.load(path) as f:
            anatomy = Anatomy(wm=f["wm"], gm=f["gm"], csf=f["csf"], affine=f["affine"],
                              tissue_threshold=float(f["tissue_threshold"]))
            initial = (None if "one_scan" in f and bool(f["one_scan"])
                       else InitialCondition(seed_mm=tuple(f["seed_mm"].tolist())) if f["seed_mm"].size
                       else InitialCondition(density=f["density"]))
            day = float(f["day"])
            return cls(anatomy=anatomy, t1=f["t1"], t2=f["t2"], day=None if np.isnan(day) else day,
                       initial=initial,
                       input_shape=tuple(int(n) for n in f["input_shape"]), input_affine=f["input_affine"],
                       roi_size_mm=float(f["roi_size_mm"]), ratio=float(f["ratio"]))


def load_patient(t1: str | Path, t2: str | Path | None, day: float | None = None, *,
                 adc: str | Path | None = None,
                 t2_initial: str | Path | None = None, seed_mm: Sequence[float] | None = None,
                 anatomy: Anatomy | None = None, ratio: float = GREY_MATTER_RATIO, roi_margin_mm: float = 16.0,
                 min_roi_mm: float = 64.0) -> Patient:
    """Read and check one patient's images; every problem raises an ``InputError`` saying what to fix.

    Args:
        t1: binary NIfTI segmentation of the T1-gadolinium core to fit (empty: no enhancing core),
            or, with ``t2`` None, a BraTS label map ([`load_brats`][sbi_tumor.patient.inputs.load_brats]).
        t2: binary NIfTI segmentation of the T2/FLAIR region to fit; None for a BraTS ``t1``.
        day: days from the initial condition to ``t1``/``t2`` (see the module docstring); with
            neither ``adc`` nor ``seed_mm``, the tumour's age if known, else None.
        adc: ADC map of the first scan: the initial density (give this, ``seed_mm``, or neither:
            one scan, whose origin and age are inferred; see ``sbi_tumor.one_scan``).
        t2_initial: T2 segmentation of the ADC scan, inside which ADC defines the density;
            defaults to ``t2`` (with a warning: that overstates the initial tumour).
        seed_mm: seed point in world mm: the initial condition is a point tumour there.
        anatomy: the anatomy (simulation grid); default the MNI152 atlas at 2 mm.
        ratio: white/grey-matter diffusivity ratio.
        roi_margin_mm: the ROI is the T2 extent around the tumour centre plus this
            margin on each side, and at least ``min_roi_mm`` wide.
        min_roi_mm: the ROI is the T2 extent around the tumour centre plus this
            margin on each side, and at least ``min_roi_mm`` wide.
    """
    if adc is not None and seed_mm is not None:
        raise InputError("Give one initial condition: an ADC map (--adc) or a seed point (--seed-mm X Y Z), "
                         "not both (or neither, to infer the origin from one scan).")
    if t2_initial is not None and adc is None:
        raise InputError("t2_initial (--t2-initial) masks the ADC map; it needs an ADC map (--adc).")
    one_scan = adc is None and seed_mm is None
    if day is None and not one_scan:
        raise InputError("With " + ("an ADC map" if adc is not None else "a seed point") + ", give the days "
                         "between it and the segmentations (--day); or leave out --adc/--seed-mm too, and the "
                         "origin and age are inferred from the scan.")
    if day is not None:
        day = check_day(day, 0.0)
        if day == 0:
            raise InputError("The observation day is 0, the time of the initial condition itself; give "
                             "the days between the initial condition and the segmentations (> 0).")
    anatomy = anatomy if anatomy is not None else load_mni152(2.0)
    t1_mask, t2_mask, affine = load_segmentations(t1, t2)
    t1a = to_anatomy_grid(t1_mask, affine, anatomy, "mask", name="T1 segmentation")
    t2a = to_anatomy_grid(t2_mask, affine, anatomy, "mask", name="T2 segmentation")
    outside = float((t2a & ~anatomy.tissue).sum() / t2a.sum())
    if outside > _MAX_T2_OUTSIDE_TISSUE:
        raise InputError(
            f"{outside:.0%} of the T2 segmentation lies outside brain tissue of the anatomy; the "
            "segmentations must be registered to the anatomy's space (e.g. MNI for the default "
            "atlas) before inference.")

    initial: InitialCondition | None = None
    if seed_mm is not None:
        seed = tuple(float(v) for v in seed_mm)
        i, j, k = anatomy.check_seed(np.asarray(seed))
        if not t2a[i, j, k]:
            warnings.warn(f"The seed {seed} mm is not inside the T2 segmentation; a tumour grows "
                          "from its seed, so check the coordinates (world mm, not voxels).",
                          UserWarning, stacklevel=2)
        initial = InitialCondition(seed_mm=seed)
    elif adc is not None:
        adc_map, adc_affine = load_adc(adc)
        if t2_initial is None:
            warnings.warn("No T2 segmentation of the ADC scan (t2_initial / --t2-initial): the ADC "
                          "is used inside the fitted T2 region, which overstates the initial "
                          "tumour if it grew between the scans.", UserWarning, stacklevel=2)
            mask0 = t2a
        else:
            mask0_in, affine0 = load_mask(t2_initial, "Initial T2 segmentation")
            mask0 = to_anatomy_grid(mask0_in, affine0, anatomy, "mask", name="initial T2 segmentation")
        adc_a = to_anatomy_grid(adc_map, adc_affine, anatomy, "continuous", name="ADC map")
        initial = InitialCondition(density=adc_to_density(adc_a, mask0))

    elif not ((t1a if t1a.any() else t2a) & anatomy.tissue).any():
        raise InputError("No voxel of the " + ("T1 core" if t1a.any() else "T2 region") + " lies on brain "
                         "tissue, where the tumour's origin must be; register the segmentations to the anatomy.")
    patient = Patient(anatomy=anatomy, t1=t1a, t2=t2a, day=day, initial=initial,
                      input_shape=tuple(t1_mask.shape), input_affine=affine, roi_size_mm=0.0, ratio=ratio)
    patient.roi_size_mm = roi_edge_mm(anatomy, t2a, patient.centre_mm, roi_margin_mm, min_roi_mm)
    return patient


# A T2 region mostly outside brain tissue means images not registered to the anatomy.
_MAX_T2_OUTSIDE_TISSUE = 0.2


def roi_edge_mm(anatomy: Anatomy, t2: np.ndarray, centre_mm: np.ndarray, margin_mm: float = 16.0,
                min_mm: float = 64.0) -> float:
    """Edge (mm) of the cube around ``centre_mm`` that holds the T2 region (bool, anatomy grid) plus
    ``margin_mm`` on each side, at least ``min_mm``: the observation window of a patient.

    The window only cuts the label maps: the model itself runs on the whole anatomy, so prior
    draws that outgrow it keep their physics (see [`TumorSimulator`][sbi_tumor.simulator.TumorSimulator]).
    """
    points = anatomy.voxel_to_world(np.argwhere(t2))
    half = np.abs(points - centre_mm).max() + anatomy.spacing.max() + margin_mm
    return float(max(min_mm, 2 * half))


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
