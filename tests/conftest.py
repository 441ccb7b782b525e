import os

from sbi_tumor.runtime import OPENMP_ENV  # before numpy, torch and numba load (see that module)

for _key, _value in OPENMP_ENV.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sbi_tumor.anatomy import Anatomy  # noqa: E402


def phantom(shape, spacing=1.0, wm=1.0, gm=0.0, csf_mask=None) -> Anatomy:
    """Homogeneous tissue on a small grid, with optional CSF voxels; origin at voxel 0."""
    wm_map = np.full(shape, wm, np.float32)
    gm_map = np.full(shape, gm, np.float32)
    csf = np.zeros(shape, np.float32)
    if csf_mask is not None:
        wm_map[csf_mask] = 0
        gm_map[csf_mask] = 0
        csf[csf_mask] = 1
    return Anatomy(wm=wm_map, gm=gm_map, csf=csf, affine=np.diag([spacing] * 3 + [1.0]))


def random_anatomy(shape, seed=0, spacing=1.0) -> Anatomy:
    """Heterogeneous white/grey/CSF mixture with partial volumes."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1.0, 1.0, 0.4], size=shape).astype(np.float32)
    return Anatomy(wm=p[..., 0], gm=p[..., 1], csf=p[..., 2], affine=np.diag([spacing] * 3 + [1.0]))


@pytest.fixture(scope="session")
def mni2():
    from sbi_tumor.anatomy import load_mni152

    return load_mni152(2.0)
