"""The patient application: NIfTI segmentations in, a posterior, a report and predictions out.

Built on the sbi-facing core of `sbi_tumor`; nothing in the core imports it. ``inputs``
reads and checks a patient's images, ``store`` keeps every simulation so a run resumes,
``workflow`` runs the inference, ``report`` writes its files (with the posterior predictive
check), ``run`` reloads a finished run, ``prediction`` forecasts growth and ``synthetic`` makes
synthetic patients.
"""

from .inputs import InputError, Patient, load_patient
from .prediction import Prediction, predict, save_prediction
from .store import SimulationStore
from .synthetic import SyntheticPatient, make_synthetic_patient
from .run import InferenceRun, load_run
from .workflow import infer_patient

__all__ = ["InferenceRun", "InputError", "Patient", "Prediction", "SimulationStore", "SyntheticPatient",
           "infer_patient", "load_patient", "load_run", "make_synthetic_patient", "predict", "save_prediction"]
