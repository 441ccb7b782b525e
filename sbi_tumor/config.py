"""The package's settings and defaults, defined once, importable without torch, sbi or numba.

The command line builds its options (and shows their defaults) from these before any heavy
library loads; the modules that use them import them from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

__all__ = ["DEFAULT_AUGMENT", "DEFAULT_COMPONENTS", "DENSITY_ESTIMATORS", "EMBEDDING_NAMES", "GREY_MATTER_RATIO", "SUMMARY_QUANTILES", "SYNTHETIC_SEED_MM", "INFILTRATION_LEVELS", "MAX_DAY", "MAX_STEPS", "InferenceConfig", "METHODS", "Method", "PARAMETER_LABELS",
           "PARAMETER_NAMES", "PRESETS", "ONE_SCAN_NAMES", "ONE_SCAN_LABELS", "CSV_COLUMNS", "parameter_names", "parameter_labels", "INFILTRATION_LENGTH_MM", "FRONT_RADIUS_MM", "PriorPreset", "SEED_SIGMA_MM"]

def check_counts(settings: Any, names: str, minimum: int = 1) -> None:
    """Raise a ``ValueError`` naming the first of ``names`` (space-separated attributes of
    ``settings``) that is not an integer >= ``minimum``."""
    for name in names.split():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_positive(settings: Any, names: str) -> None:
    """Raise a ``ValueError`` naming the first of ``names`` that is not a finite number > 0."""
    for name in names.split():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


#: D_white / D_grey: diffusion in grey matter is this many times slower than in white matter.
GREY_MATTER_RATIO = 10.0

#: Seed of the synthetic tumours (frontal white matter of the MNI152 atlas, world mm).
SYNTHETIC_SEED_MM: tuple[float, float, float] = (-30.0, 20.0, 30.0)

#: Quantiles of the posterior summaries (the median and the central 90% interval).
SUMMARY_QUANTILES: tuple[float, float, float] = (0.05, 0.5, 0.95)

#: Latest day the commands accept (27 years): a later one is a unit error (hours, seconds).
MAX_DAY = 10_000.0

#: Most time steps ``sbi-tumor simulate`` runs without ``--max-steps`` (a human-prior tumour at the
#: fastest D of the prior needs about 2,300 steps per 1,000 days on the 2 mm atlas).
MAX_STEPS = 100_000

#: Cell-density levels c of the infiltration maps P(u > c | data): well below the detection
#: thresholds (the human prior's u_T2 is 0.05-0.6), where tumour cells are present but invisible.
INFILTRATION_LEVELS: tuple[float, ...] = (0.01, 0.05)

#: BraTS segmentation labels: necrotic core, oedema, enhancing tumour (4 until 2021, 3 since 2023).
BRATS_NECROSIS, BRATS_OEDEMA, BRATS_ENHANCING = 1, 2, (4, 3)

#: Embedding nets by name (``sbi_tumor.embedding.EMBEDDINGS`` maps them to their classes).
EMBEDDING_NAMES: tuple[str, ...] = ("cnn", "mlp", "radial")


PARAMETER_NAMES: tuple[str, ...] = ("D", "rho", "u_T1", "u_T2")


PARAMETER_LABELS: tuple[str, ...] = (
    r"$D$ [mm$^2$/day]",
    r"$\rho$ [1/day]",
    r"$u_{T1}$ [-]",
    r"$u_{T2}$ [-]",
)


#: Parameters of one scan with unknown origin and age (``sbi_tumor.one_scan``): the origin (world
#: mm), the infiltration length ell = sqrt(D / rho) (mm), the dimensionless age tau = rho T and
#: the thresholds.
ONE_SCAN_NAMES: tuple[str, ...] = ("x", "y", "z", "ell", "tau", "u_T1", "u_T2")


ONE_SCAN_LABELS: tuple[str, ...] = (
    r"$x_0$ [mm]",
    r"$y_0$ [mm]",
    r"$z_0$ [mm]",
    r"$\ell=\sqrt{D/\rho}$ [mm]",
    r"$\tau=\rho T$ [-]",
    r"$u_{T1}$ [-]",
    r"$u_{T2}$ [-]",
)

#: Column names with units of theta in CSV files, by theta's length.
CSV_COLUMNS: dict[int, str] = {4: "D_mm2_per_day,rho_per_day,u_T1,u_T2",
                               7: "x_mm,y_mm,z_mm,ell_mm,tau,u_T1,u_T2"}


def parameter_names(dim: int) -> tuple[str, ...]:
    """Names of theta's columns: ``PARAMETER_NAMES`` (d = 4) or ``ONE_SCAN_NAMES`` (d = 7)."""
    names = {4: PARAMETER_NAMES, 7: ONE_SCAN_NAMES}
    if dim not in names:
        raise ValueError(f"theta has 4 parameters {PARAMETER_NAMES} or 7 {ONE_SCAN_NAMES}, not {dim}.")
    return names[dim]


def parameter_labels(dim: int) -> tuple[str, ...]:
    """Axis labels (with units) of theta's columns, as ``parameter_names``."""
    parameter_names(dim)
    return PARAMETER_LABELS if dim == 4 else ONE_SCAN_LABELS


#: Prior range of the infiltration length sqrt(D / rho) (mm) with unknown origin and age. The
#: human preset allows 0.3-27 mm; below 1 mm the front is narrower than half a voxel of the 2 mm
#: grid and its speed no longer converges, and 20 mm already makes a tumour without a visible edge.
INFILTRATION_LENGTH_MM: tuple[float, float] = (1.0, 20.0)

#: Prior range of the distance the front has travelled, 2 ell tau (mm; 2 sqrt(D rho) T, the
#: asymptotic speed times the age): from a tumour a few mm across to twice a hemisphere. A diffuse
#: tumour (large ell, high u_T2) shows far less than its front has travelled: a synthetic human
#: tumour with a visible T2 radius of 28 mm had 2 ell tau = 84 mm (``benchmarks/rt_target.py``).
FRONT_RADIUS_MM: tuple[float, float] = (5.0, 150.0)


@dataclass(frozen=True)
class PriorPreset:
    """Named box of parameter bounds, in the order of ``PARAMETER_NAMES``.

    Attributes:
        name: Key of the preset in ``PRESETS``.
        low: Lower bounds ``(D, rho, u_T1, u_T2)`` in (mm^2/day, 1/day, -, -).
        high: Upper bounds, same order and units.
        truth: Ground-truth parameters of a synthetic experiment, if any.
        day: Day at which the observed label map is taken, if any.
        validation_day: Later day used to validate predictions, if any.
        description: Where the ranges come from.
    """

    name: str
    low: tuple[float, float, float, float]
    high: tuple[float, float, float, float]
    truth: tuple[float, float, float, float] | None = None
    day: float | None = None
    validation_day: float | None = None
    description: str = ""


PRESETS: dict[str, PriorPreset] = {
    "human": PriorPreset(
        name="human",
        low=(0.02, 0.002, 0.5, 0.05),
        high=(1.5, 0.2, 0.85, 0.5),
        description="Glioma ranges of Lipkova et al. (2019) for human patients.",
    ),
    "paper": PriorPreset(
        name="paper",
        low=(0.2, 0.1, 0.5, 0.05),
        high=(4.0, 1.2, 0.85, 0.5),
        truth=(2.0, 0.6, 0.7, 0.25),
        day=9.0,
        validation_day=11.0,
        description=(
            "Rat experiment of Ezhov/Lipkova made dimensionless on the human atlas: "
            "lengths are 10x larger, so D is scaled by 100."
        ),
    ),
}


#: Width (standard deviation, mm) of the default seed tumour. TumorGrowthToolkit, the reference
#: numpy solver of the Fisher-Kolmogorov glioma model, seeds a Gaussian of variance 10 mm^2
#: (sigma 3.2 mm, peak 0.89); Learn-Morph-Infer/GliODIL use sigma 3.9-5.5 mm. A sigma of 3 mm
#: with peak 1 is of that size and is resolved on the 2 mm grid that inference runs on.
SEED_SIGMA_MM = 3.0


Method = Literal["NPE_A", "NPE_B", "NPE_C", "TSNPE"]


METHODS: tuple[str, ...] = get_args(Method)
#: sbi density estimators for the methods other than NPE_A, whose analytic correction needs its own
#: mixture-density network: ``posterior_nn(model=...)``'s, and ``"fmpe"``, sbi's flow matching
#: (``FMPE`` with ``posterior_flow_nn``), one round only: its density is an ODE solve with the exact
#: divergence (3.4 ms per theta on 2 cores), and TSNPE's truncation evaluates 1e5 densities for
#: each later round's region and one per prior draw it rejects (docs, Benchmarks, NPE variants).
DENSITY_ESTIMATORS: tuple[str, ...] = ("mdn", "nsf", "maf", "fmpe")


#: The central interval the conformal widening calibrates (``sbi_tumor.conformal``).
CONFORMAL_MASS = 0.9
#: Fewer calibration solves than this cannot give a (n + 1) 0.9-th score.
MIN_CALIBRATION_SOLVES = math.ceil(CONFORMAL_MASS / (1 - CONFORMAL_MASS))

#: Training pairs per solve with TSNPE when ``augment`` is not given (``benchmarks/defaults.py``).
DEFAULT_AUGMENT = 10
#: Mixture components of the MDN, except NPE_A's: one (with two or five it completes on every paper
#: truth too, but meets every target less often: docs, Benchmarks, NPE_A).
DEFAULT_COMPONENTS = 5


@dataclass
class InferenceConfig:
    """Settings of [`run_sequential_npe`][sbi_tumor.inference.run_sequential_npe].

    The defaults are the configuration that ``benchmarks/defaults.py`` measured best on human-prior
    cases and the paper case (docs, Benchmarks): TSNPE with the radial embedding (octant
    profiles), each solve observed with 10 threshold pairs, trained with batches of 200 at a
    learning rate of 1e-3 and stopped after 20 epochs without improvement; 4 rounds of 250
    solves. On the human case of that benchmark this takes about 110 s on 2 cores.

    Attributes:
        method: ``"TSNPE"`` (truncated proposals, the default), ``"NPE_B"`` (SNPE-B,
            importance-weighted MDN), ``"NPE_A"`` or ``"NPE_C"`` (APT).
        num_rounds: number of rounds (round 1 samples the prior).
        num_simulations: forward simulations per round.
        density_estimator: sbi's density estimator, ``"mdn"`` (mixture of Gaussians, the
            default), ``"nsf"`` (neural spline flow) or ``"maf"`` (masked autoregressive flow);
            ``NPE_A`` needs ``"mdn"`` (its correction is analytic); ``"fmpe"`` (sbi's flow
            matching, FMPE) needs ``num_rounds=1`` with ``TSNPE``, because its density is an ODE solve, and is
            not bounded to the prior's box: at label maps where it puts most of its mass outside,
            sbi's rejection sampling slows to a crawl (seen for held-out maps after 250 solves).
        num_components: mixture components of the MDN; ``None`` (the default) means
            ``DEFAULT_COMPONENTS`` (5), and 1 with ``NPE_A`` (2 and 5 complete on every paper truth
            too, but meet every target less often: docs, Benchmarks, NPE_A).
        ensemble_size: density estimators trained on the same simulations, each from its own
            initial weights and validation split, and averaged (sbi's ``EnsemblePosterior``);
            the training time grows with it. ``TSNPE`` only.
        proposal_widening: with ``NPE_A``, each later round's proposal is a Gaussian with the
            posterior's mean and covariance, its standard deviations multiplied by this, which
            keeps NPE_A's analytic correction valid (``WidenedGaussian`` in ``sbi_tumor.inference``).
        hidden_features: width of the density estimator's hidden layers.
        embedding: ``"radial"`` (radial label profiles around the seed, then an MLP; the default),
            ``"cnn"`` (3D CNN on one-hot label maps) or ``"mlp"`` (the paper's network).
        embedding_kwargs: extra arguments for the embedding net.
        log_space: train on ``(log D, log rho, u_T1, u_T2)`` (see the module docstring); the
            MAP is then the mode in those coordinates. ``NPE_A`` needs a log-uniform prior for it.
        unconstrained: the density estimator learns theta mapped from the prior's box onto the
            real line (a logit per parameter: sbi's ``z_score_theta="transform_to_unconstrained"``)
            instead of theta z-scored, so its density ends at the box's faces instead of leaking
            past them. Calibrated with one round; after four, no better calibrated than the
            default and wider (docs, Benchmarks, "The density in the prior box's logit"). ``mdn``
            with ``TSNPE`` or ``NPE_B`` (``NPE_C`` with one round); a prior on a box, so not with
            one scan.
        truncation_quantile: with ``TSNPE``, the posterior mass left out of each later round's
            proposal (sbi's ``get_density_thresholder`` default, 1e-4).
        augment: training pairs per forward solve (``TSNPE`` only); ``None`` (the default) means
            ``DEFAULT_AUGMENT`` (10) with ``TSNPE`` and 1 otherwise. The thresholds act after
            the solve, so each solve is observed ``augment`` times: with the thresholds it was
            drawn with and with ``augment - 1`` more pairs drawn from the round's proposal given
            its (D, rho), and, for a noisy observation model, fresh noise. Every pair is then
            still a draw from the proposal, which is what TSNPE's loss needs (see
            ``_redrawn_thresholds``). Needs a simulator with ``solve(theta)`` and
            ``observe(density, theta)``, as [`TumorSimulator`][sbi_tumor.simulator.TumorSimulator]
            has, and a prior whose thresholds are independent of (D, rho), as every
            ``make_prior`` prior is. ``num_simulations`` still counts solves.
        calibration_solves: solves drawn after the last round (TSNPE: from the prior truncated to
            the final posterior's region; with one round: from the prior), never trained on,
            that set how far to widen the posterior about its median, per parameter, so that its
            central 90% intervals hold the truth in at least 90% of such draws, on average over
            them rather than at x_o alone (split conformal, approximate with ``augment > 1``:
            [`sbi_tumor.conformal`][sbi_tumor.conformal]); 0 returns the network's posterior as it
            is, else at least ``MIN_CALIBRATION_SOLVES`` (10). Counted in ``num_simulations`` of
            the result. ``TSNPE``, or one round of any method.
        max_num_epochs: passed to ``train``.
        stop_after_epochs: passed to ``train``.
        training_batch_size: passed to ``train``.
        learning_rate: passed to ``train``.
        num_posterior_samples: samples drawn from the final posterior for the result.
        simulation_batch_size: parameter sets per simulator call (and per task on workers).
        num_workers: local worker processes for the simulations; 1 (the default, fastest on the
            2-core machine we measured: ``benchmarks/parallel.py``) simulates in this process,
            where the numba solver uses every core.
        client: a ``dask.distributed.Client`` or a scheduler address (``"tcp://HOST:PORT"``):
            each round's simulations run on that cluster. Recorded by its address.
        seed: seed of torch and numpy for the whole run (reproducible on the CPU).
    """

    method: Method = "TSNPE"
    num_rounds: int = 4
    num_simulations: int = 250
    density_estimator: str = "mdn"
    num_components: int | None = None
    ensemble_size: int = 1
    proposal_widening: float = 2.0
    hidden_features: int = 64
    embedding: str = "radial"
    embedding_kwargs: dict = field(default_factory=dict)
    log_space: bool = False
    unconstrained: bool = False
    truncation_quantile: float = 1e-4
    augment: int | None = None
    calibration_solves: int = 0
    max_num_epochs: int = 200
    stop_after_epochs: int = 20
    training_batch_size: int = 200
    learning_rate: float = 1e-3
    num_posterior_samples: int = 2000
    simulation_batch_size: int = 10
    num_workers: int = 1
    client: Any = None
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}.")
        if self.density_estimator not in DENSITY_ESTIMATORS:
            raise ValueError(f"density_estimator must be one of {list(DENSITY_ESTIMATORS)}, got "
                             f"{self.density_estimator!r}.")
        if self.num_components is None:
            self.num_components = 1 if self.method == "NPE_A" else DEFAULT_COMPONENTS
        check_counts(self, "num_rounds num_components hidden_features ensemble_size max_num_epochs stop_after_epochs "
                           "training_batch_size num_posterior_samples simulation_batch_size num_workers")
        check_counts(self, "num_simulations", minimum=2)
        if self.method != "TSNPE" and self.ensemble_size > 1:
            # NPE_A corrects one mixture analytically; NPE_C's loss changes with a proposal that is
            # not one mixture-density posterior, and NPE_B weights by its density.
            raise ValueError(f"ensemble_size must be 1 with {self.method!r} (an ensemble needs method='TSNPE', whose "
                             f"loss ignores the proposal; CLI: --ensemble, --method), got {self.ensemble_size}.")
        if self.method == "NPE_A" and self.density_estimator != "mdn":
            raise ValueError(f"NPE_A corrects a Gaussian mixture analytically: density_estimator must be 'mdn', got "
                             f"{self.density_estimator!r} (CLI: --density-estimator).")
        if self.unconstrained and (self.density_estimator != "mdn" or self.method == "NPE_A"
                                   or (self.method == "NPE_C" and self.num_rounds > 1)):
            # sbi maps theta onto the real line only in its MDN (and its zuko flows); NPE_A's mixture
            # must stay in the unit cube its analytic correction is made in, and NPE_C's later
            # rounds correct a mixture proposal analytically, which sbi refuses in the logit.
            raise ValueError(f"unconstrained=True needs density_estimator='mdn' and method 'TSNPE' or 'NPE_B' "
                             f"('NPE_C' with one round), got {self.density_estimator!r} with {self.method!r} and "
                             f"{self.num_rounds} rounds (CLI: --density-estimator, --method, --rounds).")
        if self.density_estimator == "fmpe" and (self.num_rounds != 1 or self.method != "TSNPE"):
            # sbi's FMPE takes no proposal, and one round of it is the same under any method.
            raise ValueError(f"density_estimator='fmpe' needs num_rounds=1 and method='TSNPE' (its density is an ODE "
                             f"solve, 3.4 ms per theta, and each later round's truncated prior needs 1e5 or more of "
                             f"them; CLI: --rounds 1 --method TSNPE, or --density-estimator nsf for several rounds), "
                             f"got num_rounds={self.num_rounds} with {self.method!r}.")
        check_positive(self, "learning_rate")
        if not self.proposal_widening >= 1:
            raise ValueError(f"proposal_widening must be >= 1 (a proposal as wide as the posterior or wider), got "
                             f"{self.proposal_widening}.")
        if self.augment is None:
            self.augment = DEFAULT_AUGMENT if self.method == "TSNPE" else 1
        if not 0 < self.truncation_quantile < 1:
            raise ValueError(f"truncation_quantile must be in (0, 1), got {self.truncation_quantile}.")
        check_counts(self, "augment")
        check_counts(self, "calibration_solves", minimum=0)
        if 0 < self.calibration_solves < MIN_CALIBRATION_SOLVES:
            raise ValueError(f"calibration_solves must be 0 or at least {MIN_CALIBRATION_SOLVES} (the 90% quantile "
                             f"of the scores needs them), got {self.calibration_solves}.")
        if self.calibration_solves and self.method != "TSNPE" and self.num_rounds > 1:
            raise ValueError(f"calibration_solves needs method='TSNPE' or num_rounds=1, got {self.method!r} with "
                             f"{self.num_rounds} rounds: its later proposals are posteriors, not the prior or the prior "
                             "truncated, so coverage over draws from them is not the coverage a user of the posterior "
                             "needs (CLI: --calibration-solves 0).")
        if self.augment > 1 and self.method != "TSNPE":
            raise ValueError(f"augment must be 1, or > 1 with method='TSNPE' (whose proposals stay valid when "
                             f"thresholds are redrawn), got augment={self.augment} with {self.method!r} "
                             "(CLI: --augment, --method).")

    def to_dict(self) -> dict:
        """The settings as plain data: a ``Client`` is recorded by its scheduler address."""
        client = getattr(getattr(self.client, "scheduler", None), "address", self.client)
        return asdict(replace(self, client=None)) | {"client": client}
