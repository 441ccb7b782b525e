"""sbi-tumor: personalise a Fisher-Kolmogorov brain-tumour growth model with simulation-based inference.

The public API reads like sbi: a batched ``simulator(theta) -> x``, a ``torch.distributions``
prior, embedding nets for ``sbi.neural_nets.posterior_nn(embedding_net=...)``, and a driver for
sequential neural posterior estimation built on sbi's own trainers.
"""

import os as _os

# numba's and torch's OpenMP runtimes both spin-wait for work by default; in one process (and on
# a shared machine) the spinning threads starve each other: we measured a 50-100x slow-down of
# simulations and training. Passive waiting costs nothing measurable. It must be set before the
# first OpenMP runtime loads, i.e. before torch or numba is imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .anatomy import Anatomy, AnatomyError, load_mni152, load_nifti_anatomy
from .baselines import TMCMCResult, tmcmc
from .embedding import LabelMapCNN3d, PaperMLPEmbedding, RadialProfileEmbedding, make_embedding
from .inference import (InferenceConfig, InferenceResult, LogRatesPosterior, load_posterior, run_sequential_npe,
                        save_result)
from .io import InputError, SimulationStore
from .likelihood import BernoulliLikelihood
from .observation import best_threshold, dice, label_map, masks_to_labels
from .parallel import SimulationError, simulate
from .prediction import Prediction, predict, save_prediction
from .prior import PARAMETER_NAMES, PRESETS, LogUniformBox, make_prior
from .simulator import InitialCondition, TumorSimulator
from .solver import FKSolver, SolverConfig, seed_density
from .torch_solver import TorchFKSolver
from .workflow import InferenceRun, Patient, infer_patient, load_patient, load_run, make_synthetic_patient

__version__ = "0.2.0"

__all__ = [
    "Anatomy",
    "AnatomyError",
    "BernoulliLikelihood",
    "FKSolver",
    "InferenceConfig",
    "InferenceResult",
    "LogRatesPosterior",
    "InitialCondition",
    "InferenceRun",
    "InputError",
    "LabelMapCNN3d",
    "LogUniformBox",
    "PARAMETER_NAMES",
    "PRESETS",
    "PaperMLPEmbedding",
    "RadialProfileEmbedding",
    "Patient",
    "Prediction",
    "SimulationError",
    "SimulationStore",
    "SolverConfig",
    "TMCMCResult",
    "TorchFKSolver",
    "TumorSimulator",
    "dice",
    "infer_patient",
    "best_threshold",
    "label_map",
    "load_mni152",
    "load_nifti_anatomy",
    "load_patient",
    "load_posterior",
    "load_run",
    "make_synthetic_patient",
    "make_embedding",
    "make_prior",
    "masks_to_labels",
    "predict",
    "run_sequential_npe",
    "save_prediction",
    "save_result",
    "seed_density",
    "simulate",
    "tmcmc",
]
