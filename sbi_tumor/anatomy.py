"""Brain anatomy: tissue probability maps on one grid, and the diffusivity they imply.

An [`Anatomy`][sbi_tumor.anatomy.Anatomy] holds white-matter, grey-matter and CSF probability maps (each in [0, 1],
shape ``(nx, ny, nz)``, float32), the NIfTI affine that maps voxel indices to world millimetres,
and the voxel spacing in mm.

Partial-volume voxels
---------------------
A voxel's relative diffusivity is the tissue-weighted mean

    k = p_wm + p_gm / ratio            (CSF and background contribute 0)

so that ``D(x) = D_white * k(x)``. A voxel is *tissue* (tumour cells may live there) when
``p_wm + p_gm >= tissue_threshold`` (0.1 by default); elsewhere ``k`` is set to 0, so no cell
enters it (the solver uses harmonic-mean face diffusivities, which vanish next to a zero).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .config import GREY_MATTER_RATIO

__all__ = ["Anatomy", "load_mni152", "load_nifti_anatomy", "AnatomyError"]


class AnatomyError(ValueError):
    """Raised for anatomy input that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Anatomy:
    """Tissue probability maps on a common grid.

    Attributes:
        wm: probability maps, float32 arrays of shape ``(nx, ny, nz)``, values in [0, 1],
            with ``wm + gm + csf <= 1`` (the rest is background).
        gm: probability maps, float32 arrays of shape ``(nx, ny, nz)``, values in [0, 1],
            with ``wm + gm + csf <= 1`` (the rest is background).
        csf: probability maps, float32 arrays of shape ``(nx, ny, nz)``, values in [0, 1],
            with ``wm + gm + csf <= 1`` (the rest is background).
        affine: ``(4, 4)`` voxel-to-world (mm) matrix, as in NIfTI.
        tissue_threshold: minimum ``wm + gm`` for a voxel to count as tissue.
    """

    wm: np.ndarray
    gm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray
    tissue_threshold: float = 0.1

    def __post_init__(self) -> None:
        maps = {"wm": self.wm, "gm": self.gm, "csf": self.csf}
        shapes = {name: np.shape(m) for name, m in maps.items()}
        if len(set(shapes.values())) != 1:
            raise AnatomyError(
                f"Tissue maps have different shapes {shapes}; resample them to one grid first "
                "(e.g. with nilearn.image.resample_to_img)."
            )
        if len(shapes["wm"]) != 3:
            raise AnatomyError(f"Tissue maps must be 3D, got shape {shapes['wm']}.")
        for name, m in maps.items():
            m = np.asarray(m)
            if not np.all(np.isfinite(m)):
                raise AnatomyError(f"The {name} map contains NaN or infinite values; replace them by 0.")
            if m.min() < 0 or m.max() > 1 + 1e-4:
                raise AnatomyError(
                    f"The {name} map has values in [{m.min():.3g}, {m.max():.3g}]; probabilities "
                    "must lie in [0, 1] (rescale it, e.g. divide a 0-255 map by 255)."
                )
            # C order: the solver's kernels vectorise along the last axis (NIfTI data is F order).
            object.__setattr__(self, name, np.ascontiguousarray(np.clip(m, 0, 1), dtype=np.float32))
        total = self.wm.astype(np.float64) + self.gm + self.csf
        if total.max() > 1 + 1e-3:
            idx = np.unravel_index(int(np.argmax(total)), total.shape)
            raise AnatomyError(
                f"wm + gm + csf reaches {total.max():.3f} at voxel {tuple(int(i) for i in idx)}; the "
                "probabilities of one voxel must sum to at most 1 (normalise the maps)."
            )
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise AnatomyError(f"The affine must be an invertible 4x4 matrix, got {affine!r}.")
        object.__setattr__(self, "affine", affine)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.wm.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each axis, shape (3,)."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def world_to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        """Continuous voxel coordinates of world points (mm), shape (..., 3) -> (..., 3)."""
        points = np.asarray(points_mm, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return points @ inv[:3, :3].T + inv[:3, 3]

    def voxel_to_world(self, index: np.ndarray) -> np.ndarray:
        """World coordinates (mm) of voxel indices, shape (..., 3) -> (..., 3)."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    # -- tissue -----------------------------------------------------------------------------
    @property
    def tissue(self) -> np.ndarray:
        """Boolean mask of voxels where tumour cells can live, shape (nx, ny, nz)."""
        return (self.wm + self.gm) >= self.tissue_threshold

    def relative_diffusivity(self, ratio: float = GREY_MATTER_RATIO) -> np.ndarray:
        """``k = p_wm + p_gm / ratio`` inside tissue, 0 elsewhere; float32 (nx, ny, nz).

        Multiply by ``D_white`` (mm^2/day) to get the diffusivity map.
        """
        if not ratio >= 1:
            raise AnatomyError(f"The white/grey diffusivity ratio must be >= 1, got {ratio}.")
        k = self.wm + self.gm / np.float32(ratio)
        return np.where(self.tissue, k, np.float32(0)).astype(np.float32)

    def diffusivity(self, d_white: float, ratio: float = GREY_MATTER_RATIO) -> np.ndarray:
        """Diffusivity map in mm^2/day: D_white in white matter, D_white/ratio in grey, 0 in CSF."""
        return np.float32(d_white) * self.relative_diffusivity(ratio)

    def check_seed(self, seed_mm: np.ndarray) -> tuple[int, int, int]:
        """Voxel index of a seed point given in world mm; raises if it is not in tissue."""
        ijk = np.rint(self.world_to_voxel(np.asarray(seed_mm, dtype=np.float64))).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.array(self.shape)):
            raise AnatomyError(
                f"Seed {_fmt(seed_mm)} mm lies outside the image (voxel {_fmt(ijk)}, "
                f"grid {self.shape}); give a point inside the brain in world (scanner/MNI) mm."
            )
        i, j, k = (int(v) for v in ijk)
        if not self.tissue[i, j, k]:
            raise AnatomyError(
                f"Seed {_fmt(seed_mm)} mm (voxel {_fmt(ijk)}) is not in brain tissue "
                f"(wm={self.wm[i, j, k]:.2f}, gm={self.gm[i, j, k]:.2f}, csf={self.csf[i, j, k]:.2f}); "
                "move it into white or grey matter."
            )
        return i, j, k

    # -- resampling ---------------------------------------------------------------------------
    def resample(self, resolution_mm: float) -> "Anatomy":
        """Coarsen to an isotropic ``resolution_mm`` grid by averaging blocks of voxels.

        Averaging probabilities keeps them probabilities (sums stay <= 1). ``resolution_mm``
        must be an integer multiple of the current (isotropic) spacing.
        """
        spacing = self.spacing
        factor = resolution_mm / spacing
        f = int(round(float(factor[0])))
        if not np.allclose(factor, f, atol=1e-3) or f < 1:
            raise AnatomyError(
                f"Resolution {resolution_mm:g} mm is not an integer multiple of the spacing "
                f"({', '.join(f'{v:g}' for v in np.round(spacing, 3))}) mm"
                + (", and finer than it" if float(factor[0]) < 1 else "") + f"; choose e.g. {2 * spacing[0]:g} mm."
            )
        if f == 1:
            return self
        n = np.array(self.shape) // f

        def block_mean(m: np.ndarray) -> np.ndarray:
            m = m[: n[0] * f, : n[1] * f, : n[2] * f]
            return m.reshape(n[0], f, n[1], f, n[2], f).mean(axis=(1, 3, 5), dtype=np.float64)

        affine = self.affine.copy()
        affine[:3, :3] = self.affine[:3, :3] * f
        # The centre of the new voxel 0 is the centre of the old block 0 .. f-1.
        affine[:3, 3] = self.voxel_to_world(np.full(3, (f - 1) / 2))
        return replace(self, wm=block_mean(self.wm), gm=block_mean(self.gm),
                       csf=block_mean(self.csf), affine=affine)

    def crop(self, centre_mm: np.ndarray, size_mm: float | np.ndarray) -> "Anatomy":
        """Region of interest: the box of ``size_mm`` (scalar or per axis) centred on a world point.

        The box is clipped to the image; the affine is shifted so world coordinates are unchanged.
        """
        centre = np.rint(self.world_to_voxel(centre_mm)).astype(int)
        half = np.ceil(np.broadcast_to(np.asarray(size_mm, float), (3,)) / self.spacing / 2).astype(int)
        lo = np.clip(centre - half, 0, np.array(self.shape))
        hi = np.clip(centre + half + 1, 0, np.array(self.shape))
        if np.any(hi - lo < 3):
            point = ", ".join(f"{float(c):g}" for c in np.asarray(centre_mm).reshape(-1))
            corners = self.voxel_to_world(np.array([[0, 0, 0], np.array(self.shape) - 1]))
            span = " x ".join(f"[{min(a, b):g}, {max(a, b):g}]" for a, b in zip(*corners))
            raise AnatomyError(f"The region of interest around ({point}) mm lies (almost) outside the image, which "
                               f"spans {span} mm; give a point (seed or tumour centre) inside the brain, in world mm.")
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        affine = self.affine.copy()
        affine[:3, 3] = self.voxel_to_world(lo.astype(float))
        return replace(self, wm=self.wm[sl], gm=self.gm[sl], csf=self.csf[sl], affine=affine)

    def crop_slices(self, other: "Anatomy") -> tuple[slice, slice, slice]:
        """Index slices of this grid that ``other`` (a crop of it) covers."""
        offset = np.rint(self.world_to_voxel(other.affine[:3, 3])).astype(int)
        return tuple(slice(int(o), int(o) + s) for o, s in zip(offset, other.shape))  # type: ignore


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def _load(path: str | Path):
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise AnatomyError(f"File not found: {path}")
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise AnatomyError(f"Cannot read {path} as NIfTI: {err}") from err


def load_nifti_anatomy(wm: str | Path, gm: str | Path, csf: str | Path,
                       tissue_threshold: float = 0.1) -> Anatomy:
    """Anatomy from three NIfTI probability maps that share one grid and affine."""
    imgs = {"wm": _load(wm), "gm": _load(gm), "csf": _load(csf)}
    ref = imgs["wm"]
    for name, img in imgs.items():
        if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise AnatomyError(
                f"The {name} map ({img.shape}, affine origin {img.affine[:3, 3]}) is not on the grid of "
                f"the wm map ({ref.shape}, origin {ref.affine[:3, 3]}); resample all maps to one grid."
            )
    data = {name: np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
            for name, img in imgs.items()}
    return Anatomy(affine=ref.affine, tissue_threshold=tissue_threshold, **data)


def load_mni152(resolution_mm: float = 1.0, tissue_threshold: float = 0.1) -> Anatomy:
    """The embedded default: MNI ICBM152 2009a grey/white templates shipped inside nilearn (1 mm).

    CSF is the brain mask minus grey and white matter. Nothing is downloaded. ``resolution_mm``
    (an integer number of mm) coarsens the 1 mm templates by block averaging.
    """
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    gm = np.asarray(gm_img.dataobj, dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj, dtype=np.float32) > 0
    wm = np.where(brain, wm, 0)
    gm = np.where(brain, gm, 0)
    total = wm + gm
    # The templates' grey + white may exceed 1 by float rounding; renormalise those voxels.
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-12), 1).astype(np.float32)
    wm, gm = wm * scale, gm * scale
    csf = np.where(brain, np.clip(1 - wm - gm, 0, 1), 0).astype(np.float32)
    anatomy = Anatomy(wm=wm, gm=gm, csf=csf, affine=gm_img.affine, tissue_threshold=tissue_threshold)
    return anatomy.resample(resolution_mm)
