"""sbi-tumor: personalise a Fisher-Kolmogorov brain-tumour growth model with simulation-based inference."""

from .anatomy import Anatomy, AnatomyError, load_mni152, load_nifti_anatomy
from .observation import label_map
from .solver import FKSolver, SolverConfig, seed_density

__version__ = "0.1.0"

__all__ = [
    "Anatomy",
    "AnatomyError",
    "FKSolver",
    "SolverConfig",
    "label_map",
    "load_mni152",
    "load_nifti_anatomy",
    "seed_density",
]
