"""sbi-tumor: personalise a Fisher-Kolmogorov brain-tumour growth model with simulation-based inference.

The public API reads like sbi: a batched ``simulator(theta) -> x``, a ``torch.distributions``
prior, embedding nets for ``sbi.neural_nets.posterior_nn(embedding_net=...)``, a driver for
sequential neural posterior estimation built on sbi's own trainers, and sbi's diagnostics.
This namespace is that sbi-facing core; the patient application is ``sbi_tumor.patient`` and
the benchmark against MCMC ``sbi_tumor.benchmark``.

Names are imported when first used (so ``import sbi_tumor`` and ``sbi-tumor --help`` do not
load torch, sbi or numba), and importing the package changes nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

#: public name -> the core module that defines it
_EXPORTS = {
    "anatomy": ["Anatomy", "AnatomyError", "load_mni152", "load_nifti_anatomy"],
    "solver": ["FKSolver", "SolverConfig", "seed_density"],
    "torch_solver": ["TorchFKSolver"],
    "simulator": ["InitialCondition", "TumorSimulator"],
    "one_scan": ["OneScanPrior", "OneScanSimulator", "one_scan_prior"],
    "observation": ["best_threshold", "dice", "label_map", "masks_to_labels"],
    "prior": ["PARAMETER_NAMES", "PRESETS", "LogUniformBox", "make_prior"],
    "embedding": ["LabelMapCNN3d", "PaperMLPEmbedding", "RadialProfileEmbedding", "make_embedding"],
    "config": ["InferenceConfig"],
    "inference": ["InferenceResult", "load_posterior", "run_sequential_npe", "save_result"],
    "posteriors": ["FeaturePosterior", "LogRatesPosterior", "ReparametrizedPosterior", "UnitBoxPosterior"],
    "diagnostics": ["Calibration", "calibrate"],
    "conformal": ["ConformalPosterior", "conformal_scales"],
    "likelihood": ["BernoulliLikelihood"],
    "tmcmc": ["TMCMCResult", "tmcmc"],
    "importance": ["Refinement", "refine"],
    "parallel": ["SimulationError", "simulate"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'sbi_tumor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from .anatomy import Anatomy, AnatomyError, load_mni152, load_nifti_anatomy  # noqa: F401
    from .diagnostics import Calibration, calibrate  # noqa: F401
    from .embedding import LabelMapCNN3d, PaperMLPEmbedding, RadialProfileEmbedding, make_embedding  # noqa: F401
    from .config import InferenceConfig  # noqa: F401
    from .inference import InferenceResult, load_posterior, run_sequential_npe, save_result  # noqa: F401
    from .posteriors import FeaturePosterior, LogRatesPosterior, ReparametrizedPosterior, UnitBoxPosterior  # noqa: F401
    from .likelihood import BernoulliLikelihood  # noqa: F401
    from .observation import best_threshold, dice, label_map, masks_to_labels  # noqa: F401
    from .one_scan import OneScanPrior, OneScanSimulator, one_scan_prior  # noqa: F401
    from .parallel import SimulationError, simulate  # noqa: F401
    from .prior import PARAMETER_NAMES, PRESETS, LogUniformBox, make_prior  # noqa: F401
    from .simulator import InitialCondition, TumorSimulator  # noqa: F401
    from .solver import FKSolver, SolverConfig, seed_density  # noqa: F401
    from .tmcmc import TMCMCResult, tmcmc  # noqa: F401
    from .importance import Refinement, refine  # noqa: F401
    from .torch_solver import TorchFKSolver  # noqa: F401
