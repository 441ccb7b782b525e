"""Sequential neural posterior estimation with sbi's own trainers (NPE_A, NPE_B, NPE_C, TSNPE).

Round 1 samples the prior; every later round samples the current posterior at the observation
``x_o``; the network weights carry over between rounds (one trainer accumulates all rounds).
``NPE_B`` trains a mixture-density network with the importance-weighted loss prior/proposal of
Lueckmann et al. 2017 (the paper's eq. 3); ``NPE_A`` fits a Gaussian-mixture proposal posterior
and corrects it analytically (on the prior's box mapped onto the unit cube, each later round drawn
from the posterior widened by ``proposal_widening``: see ``WidenedGaussian``; its weak mixture
components dropped: see ``PrunedMixture``); ``NPE_C`` is APT
(atomic proposals). ``TSNPE`` (Deistler et al. 2022; the default) samples later rounds from the
prior truncated to the current posterior's highest-density region (mass
``1 - truncation_quantile``) and trains with the plain first-round NPE loss, which stays exact on
that region: no importance weights, no atoms, no analytic correction to fail.

With ``calibration_solves`` the returned posterior is widened per parameter until its central 90%
intervals hold the truths of solves it never saw (split conformal: see ``sbi_tumor.conformal``).

With ``log_space=True`` the networks learn ``(log D, log rho, u_T1, u_T2)``: at a fixed front
speed ``2 sqrt(D rho)`` the posterior ridge is curved in (D, rho) but straight in the logs, where
a Gaussian mixture fits it with few components. The returned posterior still speaks theta.

The settings are an [`InferenceConfig`][sbi_tumor.config.InferenceConfig] (its defaults are the
measured best); the posterior views returned are in [`sbi_tumor.posteriors`][sbi_tumor.posteriors].
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from sbi.inference import EnsemblePosterior
from sbi.neural_nets.estimators import MixtureDensityEstimator, MoG
from sbi.utils import BoxUniform, within_support
from torch.distributions import Distribution

from .conformal import ConformalPosterior, conformal_scales, unbounded_transform
from .config import CSV_COLUMNS, SUMMARY_QUANTILES, InferenceConfig, parameter_names

from .embedding import make_embedding
from .identifiability import contraction
from .posteriors import FeaturePosterior, LogRatesPosterior, UnitBoxPosterior, best_of_draws, label_map_features
from .sbi_compat import (CONSTANT_DATA_WARNING, FOREIGN_PROPOSAL_WARNING, SAMPLING_BATCH_NOTE, InferenceError,
                         epoch_cap_rounds, explained_failures, quiet, sample_truncated, sample_unrejected)
from .one_scan import OneScanPrior
from .prior import LogUniformBox, _LogRatesPrior, box_of, log_rates_prior, support_box
from . import parallel

__all__ = ["InferenceError", "InferenceResult", "ObservedManyTimes", "WidenedGaussian", "parameter_pairs",
           "run_sequential_npe", "simulate_round"]

@dataclass
class InferenceResult:
    """What a run produced, besides the posterior itself.

    Attributes:
        samples: posterior samples at ``x_o``, ``(num_posterior_samples, d)`` (d = 4, or 7 for
            ``sbi_tumor.one_scan``).
        map: maximum a posteriori estimate, ``(d,)``.
        theta_per_round: the parameters simulated in each round, list of ``(n_r, d)``.
        training: per round, sbi's training summary (losses per epoch, epochs trained).
        wall_time: seconds.
        simulation_time: seconds.
        training_time: seconds.
        num_simulations: forward simulations run.
        contraction: per parameter, 1 - posterior std / prior std (see
            [`sbi_tumor.identifiability`][sbi_tumor.identifiability]).
        conformal_scales: with ``calibration_solves``, per parameter the factor the posterior
            was widened by (< 1: narrowed; see [`sbi_tumor.conformal`][sbi_tumor.conformal]).
    """

    method: str
    samples: torch.Tensor
    map: torch.Tensor
    theta_per_round: list[torch.Tensor]
    training: list[dict]
    wall_time: float
    simulation_time: float
    training_time: float
    num_simulations: int
    config: dict
    contraction: list[float] | None = None
    conformal_scales: list[float] | None = None

    def summary(self, names: Sequence[str] | None = None) -> dict:
        """JSON-able summary: per-parameter mean, std, 5/50/95% quantiles, MAP; timings. ``names``
        default to ``config.parameter_names`` of theta's length."""
        names = names or parameter_names(self.samples.shape[1])
        s = self.samples.double()
        q = torch.quantile(s, torch.tensor(SUMMARY_QUANTILES, dtype=s.dtype), dim=0)
        params = {n: {"mean": float(s[:, i].mean()), "std": float(s[:, i].std()),
                      "q05": float(q[0, i]), "median": float(q[1, i]), "q95": float(q[2, i]),
                      "map": float(self.map[i])} for i, n in enumerate(names)}
        for n, c in zip(names, self.contraction or ()):
            params[n]["contraction"] = c
        for n, c in zip(names, self.conformal_scales or ()):
            params[n]["conformal_scale"] = c
        return {"method": self.method, "parameters": params, "wall_time_s": self.wall_time,
                "simulation_time_s": self.simulation_time, "training_time_s": self.training_time,
                "num_simulations": self.num_simulations,
                "epochs_per_round": [t.get("epochs_trained") for t in self.training],
                "config": self.config}


def simulate_round(simulator: Callable, theta: torch.Tensor, batch_size: int = 10,
                   progress: bool = True, desc: str = "simulations",
                   on_batch: Callable[[int, torch.Tensor, np.ndarray], None] | None = None, *,
                   num_workers: int = 1, client: Any = None) -> np.ndarray:
    """Run the simulator over ``theta`` in batches; label maps kept as uint8 ``(N, 1, nx, ny, nz)``.

    ``on_batch(start, theta_batch, x_batch)`` is called as each batch finishes (e.g. to store it).
    Locally or on a Dask cluster, with retries: see ``sbi_tumor.parallel.simulate``.
    """
    return parallel.simulate(simulator, theta, batch_size=batch_size, num_workers=num_workers,
                             client=client, progress=progress, desc=desc, on_batch=on_batch)


class CurveTracker:
    """An sbi ``Tracker`` that keeps the training curves in memory (no TensorBoard files)."""

    log_dir = None

    def __init__(self) -> None:
        self.metrics: dict[str, list[tuple[int | None, float]]] = {}

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        self.metrics.setdefault(name, []).append((step, float(value)))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            self.log_metric(name, value, step)

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass


def round_label(r: int, num_rounds: int) -> str:
    """What the progress bar of round ``r`` (0-based) says; round ``num_rounds`` is the calibration's."""
    return "calibration simulations" if r == num_rounds else f"round {r + 1}/{num_rounds} simulations"


def _trainer(prior: Distribution, x_o: torch.Tensor, config: InferenceConfig, progress: bool):
    """sbi's trainer for ``config.method`` and the embedding net inside its density estimator."""
    from sbi.inference import NPE_A, NPE_B, NPE_C
    from sbi.neural_nets import posterior_nn

    embedding = make_embedding(config.embedding, tuple(x_o.shape[-3:]), **config.embedding_kwargs)
    # Label maps have constant voxels, which breaks sbi's z-scoring of x: leave x as it is.
    common = dict(embedding_net=embedding, z_score_x="none", hidden_features=config.hidden_features)
    if config.method == "NPE_A":
        # theta arrives in the unit cube (see run_sequential_npe); not z-scored, so that the
        # posterior's mixture is in the coordinates the proposal is sampled in.
        builder = _standardizing(posterior_nn("mdn_snpe_a", z_score_theta="none", **common), embedding)
        return NPE_A(prior=prior, density_estimator=builder, num_components=config.num_components,
                     show_progress_bars=progress, tracker=CurveTracker()), embedding
    if config.density_estimator == "fmpe":  # a vector field, not a density: sbi's flow-matching trainer
        from sbi.inference import FMPE
        from sbi.neural_nets import posterior_flow_nn

        builder = _standardizing(posterior_flow_nn(**common), embedding)
        return FMPE(prior=prior, vf_estimator=builder, show_progress_bars=progress,
                    tracker=CurveTracker()), embedding
    if config.density_estimator == "mdn":
        common["num_components"] = config.num_components
    if config.unconstrained:  # the prior of the coordinates the net learns (phi's with log_space)
        common.update(z_score_theta="transform_to_unconstrained", x_dist=prior)
    builder = _standardizing(posterior_nn(config.density_estimator, **common), embedding)
    cls = NPE_B if config.method == "NPE_B" else NPE_C  # TSNPE trains NPE_C with its first-round loss
    return cls(prior=prior, density_estimator=builder, show_progress_bars=progress,
               tracker=CurveTracker()), embedding


def _check_observation(x_o: torch.Tensor, embedding: torch.nn.Module, simulator: Callable) -> None:
    """Before any simulation: x_o is a label map the embedding and the simulator can produce."""
    if not torch.isfinite(x_o).all():
        raise ValueError("x_o holds NaN or infinite values; it must be a label map (0 healthy, 1 T2 only, 2 T1 core).")
    classes = getattr(embedding, "num_classes", None)
    if classes is not None:
        bad = x_o[(x_o != x_o.round()) | (x_o < 0) | (x_o >= classes)].unique()
        if len(bad):
            raise ValueError(f"x_o holds values {bad[:5].tolist()} that are not labels 0..{classes - 1} (0 healthy, 1 T2 "
                             "only, 2 T1 core); build it with sbi_tumor.observation.masks_to_labels.")
    roi = getattr(getattr(simulator, "roi", None), "shape", None)
    if roi is not None and tuple(x_o.shape[-3:]) != tuple(roi):
        raise ValueError(f"x_o has the grid {tuple(x_o.shape[-3:])} but the simulator's label maps {tuple(roi)} "
                         "(its region of interest): cut x_o to the same window.")


def _fixed_features(embedding: torch.nn.Module) -> bool:
    """Switch an embedding with a fixed feature map in front (``features``, ``takes_features``)
    to take features; True if it has one.

    sbi then trains on features computed once per simulation instead of once per epoch (the
    map costs about 1 ms per label map, the rest of the net a fraction of that), and holds
    ``F`` numbers per simulation instead of a float32 copy of the label map; the result is
    wrapped in a [`FeaturePosterior`][sbi_tumor.posteriors.FeaturePosterior], which takes label maps.
    """
    if not hasattr(embedding, "takes_features"):
        return False
    embedding.takes_features = True
    return True


def _standardizing(builder: Callable, embedding: torch.nn.Module) -> Callable:
    """sbi builds the network on the first round's training data: let an embedding with fixed
    features (``standardize``) z-score them on that data first."""
    if not hasattr(embedding, "standardize"):
        return builder

    def build(batch_theta: torch.Tensor, batch_x: torch.Tensor, **kwargs):
        embedding.standardize(batch_x)
        return builder(batch_theta, batch_x, **kwargs)

    return build


def run_sequential_npe(simulator: Callable, prior: Distribution, x_o: torch.Tensor,
                       config: InferenceConfig | None = None, *, progress: bool = True,
                       simulate: Callable[[int, torch.Tensor], np.ndarray] | None = None):
    """Infer ``p(theta | x_o)`` in ``config.num_rounds`` rounds of sequential NPE.

    Args:
        simulator: ``simulator(theta (B, d)) -> x (B, 1, nx, ny, nz)``, the thresholds (u_T1, u_T2)
            last: [`TumorSimulator`][sbi_tumor.simulator.TumorSimulator] (d = 4) or
            [`OneScanSimulator`][sbi_tumor.one_scan.OneScanSimulator] (d = 7).
        prior: a ``torch.distributions`` prior over theta (see
            [`make_prior`][sbi_tumor.prior.make_prior]).
        x_o: the observed label map, ``(1, nx, ny, nz)`` or ``(1, 1, nx, ny, nz)``.
        config: the settings.
        progress: progress bars for simulations and training.
        simulate: ``simulate(round, theta) -> x uint8`` overriding how a round is simulated
            (used to store/resume or to distribute simulations; round ``num_rounds`` is the
            ``calibration_solves``); defaults to
            [`simulate_round`][sbi_tumor.inference.simulate_round]. It receives theta, also with
            ``log_space``. With ``augment = K > 1``, theta is ``(N, d - 2 + 2K)`` (D, rho, then K
            threshold pairs) and x ``(N, K, nx, ny, nz)``: see ``ObservedManyTimes``.

    Returns:
        ``(posterior, result)``: an sbi posterior with ``default_x = x_o`` (a ``DirectPosterior``;
        a ``VectorFieldPosterior`` with ``density_estimator="fmpe"``;
        sbi's ``EnsemblePosterior`` with ``ensemble_size > 1``; with the radial embedding inside a
        [`FeaturePosterior`][sbi_tumor.posteriors.FeaturePosterior]; with ``log_space``, its
        [`LogRatesPosterior`][sbi_tumor.posteriors.LogRatesPosterior] view; with ``NPE_A``, its
        [`UnitBoxPosterior`][sbi_tumor.posteriors.UnitBoxPosterior] view; with
        ``calibration_solves``, all of it widened in a
        [`ConformalPosterior`][sbi_tumor.conformal.ConformalPosterior]) and an
        [`InferenceResult`][sbi_tumor.inference.InferenceResult].
    """
    config = config or InferenceConfig()
    x_o = torch.as_tensor(x_o, dtype=torch.float32)
    x_o = x_o.reshape((1, 1) + tuple(x_o.shape[-3:]))
    if config.seed is not None:
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
    if config.augment > 1 and simulate is None and not hasattr(simulator, "observe"):
        raise ValueError("augment > 1 needs a simulator with solve(theta) and observe(density, theta), as "
                         "TumorSimulator has.")
    dim = int(prior.event_shape[0])
    if simulate is None:
        observed = simulator if config.augment == 1 else ObservedManyTimes(simulator, dim)

        def simulate(r: int, theta: torch.Tensor) -> np.ndarray:
            return simulate_round(observed, theta, config.simulation_batch_size, progress,
                                  desc=round_label(r, config.num_rounds),
                                  num_workers=config.num_workers, client=config.client)

    theta_prior = prior
    # before any work: the widening needs the prior's box
    transform = unbounded_transform(theta_prior) if config.calibration_solves else None
    if config.log_space:
        prior = log_rates_prior(prior)
        if config.method == "NPE_A" and not isinstance(prior, BoxUniform):
            raise ValueError("NPE_A with log_space=True needs a prior that is uniform in (log D, log rho): "
                             "use make_prior(..., log_uniform=True), or method 'NPE_B', 'NPE_C' or 'TSNPE'.")
    if config.unconstrained:  # sbi's transform would silently fall back to z-scoring without a box
        box_of(prior, off="unconstrained=False")
    # Views from the coordinates the networks learn to theta, innermost first.
    views: list[Callable[[Any], Any]] = [LogRatesPosterior] if config.log_space else []
    if config.method == "NPE_A":
        # NPE_A learns the prior's box mapped onto the unit cube: its mixtures then live in the
        # coordinates its proposals are drawn in (see WidenedGaussian).
        if not isinstance(prior, BoxUniform):
            raise ValueError(f"NPE_A needs a prior uniform on a box (its analytic correction), got "
                             f"{type(prior).__name__}: use make_prior(...) without log_uniform, or another method.")
        box = support_box(prior.support)
        views.insert(0, partial(UnitBoxPosterior, low=box.lower_bound, high=box.upper_bound))
        prior = BoxUniform(torch.zeros(dim), torch.ones(dim))

    def to_theta(phi: torch.Tensor) -> torch.Tensor:
        for view in views:
            phi = view(None).to_theta(phi)
        return phi

    # An ensemble is that many trainers on the same simulations, each with its own initial
    # weights and validation split; their posteriors are averaged (sbi's EnsemblePosterior).
    trainers = [_trainer(prior, x_o, config, progress) for _ in range(config.ensemble_size)]
    embedding = trainers[0][1]
    _check_observation(x_o, embedding, simulator)
    # With fixed features, sbi trains on them; otherwise on the label maps themselves. The
    # feature map is fixed, the same in every member.
    features = partial(label_map_features, embedding) if all(_fixed_features(e) for _, e in trainers) else None
    x_train_o = x_o if features is None else features(x_o)
    truncated = config.method == "TSNPE"
    proposal: Any = prior
    region = None  # TSNPE: the indicator of the truncated region, after round 1
    posterior = None
    thetas, training, capped = [], [], []
    t_sim = t_train = 0.0
    start = time.perf_counter()

    def draw(r: int, source: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """theta ``(N, d - 2 + 2 augment)`` from ``source`` (the prior, or the round's proposal) in
        the networks' coordinates, and its label maps ``(N, augment, nx, ny, nz)``."""
        nonlocal t_sim
        n = config.num_simulations if r < config.num_rounds else config.calibration_solves
        with explained_failures(config.method, min(r + 1, config.num_rounds)), quiet(progress):
            if source is prior:
                theta = prior.sample((n,))
            elif truncated:
                theta = sample_truncated(source, n)
            else:
                theta = source.sample((n,), show_progress_bars=False)
        theta = theta.reshape(n, -1).to(torch.float32)
        if config.augment > 1:  # (N, d - 2 + 2 augment): the solve's parameters, then threshold pairs
            with quiet(progress):
                more = _redrawn_thresholds(region if source is not prior else None, prior, theta, config.augment - 1)
            theta = torch.cat([theta, more.flatten(1)], dim=1)
        t0 = time.perf_counter()
        x = torch.from_numpy(simulate(r, to_theta(theta)))
        t_sim += time.perf_counter() - t0
        return theta, x

    for r in range(config.num_rounds):
        theta, x = draw(r, prior if r == 0 else proposal)
        theta_pairs, x = parameter_pairs(theta, dim), x.reshape(-1, 1, *x.shape[2:])
        x = x.to(torch.float32) if features is None else features(x)

        t0 = time.perf_counter()
        with explained_failures(config.method, r + 1), quiet(progress):
            members = []
            for trainer, _ in trainers:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=CONSTANT_DATA_WARNING)
                    warnings.filterwarnings("ignore", message=FOREIGN_PROPOSAL_WARNING)
                    # TSNPE appends its rounds as sbi's TSNPE tutorial does, without the proposal:
                    # its first-round loss does not use it, and sbi deep-copies the proposal given
                    # here (a RestrictedPrior holding the posterior) once per training batch, which
                    # took 40% of the training time.
                    trainer.append_simulations(theta_pairs, x, proposal=None if truncated else proposal)
                extra = {"force_first_round_loss": True} if truncated else {}
                with epoch_cap_rounds(capped, r + 1):
                    trainer.train(max_num_epochs=config.max_num_epochs, stop_after_epochs=config.stop_after_epochs,
                                  training_batch_size=min(config.training_batch_size, len(theta_pairs)),
                                  learning_rate=config.learning_rate, **extra)
                member = trainer.build_posterior()  # no argument: passing the net breaks round 2
                if config.method == "NPE_A":  # its correction, not its training, without weak components
                    member.posterior_estimator = PrunedMixture.of(member.posterior_estimator)
                members.append(member)
            # The members' transform to unbounded theta, for the ensemble's map() as a member's.
            posterior = members[0] if len(members) == 1 else \
                EnsemblePosterior(members, theta_transform=members[0].theta_transform)
            posterior.set_default_x(x_train_o)
            _check_inside_prior(posterior, prior, x_train_o, config.method, r + 1)
            # The last round's region is drawn from only by calibration solves after more than one
            # round: estimating it takes 1e5 posterior densities (0.1 s for the MDN, minutes for FMPE).
            drawn_from = r < config.num_rounds - 1 or (config.calibration_solves and config.num_rounds > 1)
            if truncated:
                if drawn_from:
                    proposal, region = _truncated_prior(prior, posterior, config.truncation_quantile)
            elif config.method == "NPE_A":
                proposal = WidenedGaussian(posterior, config.proposal_widening)
            else:
                proposal = posterior
        t_train += time.perf_counter() - t0
        thetas.append(to_theta(theta[:, :dim]))
        training.append(_round_summary(trainers[0][0].summary, r + 1, training))  # the first member's

    if capped:
        warnings.warn(f"Training stopped at max_num_epochs={config.max_num_epochs} before the validation loss "
                      f"stopped improving, in round(s) {', '.join(map(str, capped))}; raise it (CLI: --max-epochs) "
                      "for a closer fit.", UserWarning, stacklevel=2)
    if features is not None:
        posterior = FeaturePosterior(posterior, embedding)
    for view in views:  # from here on the posterior speaks theta
        posterior = view(posterior)
    scales = None
    if transform is not None:
        # Solves the networks never saw: from the prior after one round (the amortised posterior
        # is checked over the prior), else from the prior truncated to the final posterior's region.
        theta, x = draw(config.num_rounds, prior if config.num_rounds == 1 else proposal)
        with quiet(progress), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=SAMPLING_BATCH_NOTE)
            scales = conformal_scales(posterior, to_theta(parameter_pairs(theta, dim)),
                                      x.reshape(-1, 1, *x.shape[2:]).to(torch.float32), transform)
        posterior = ConformalPosterior(posterior, scales, transform)
    with explained_failures(config.method, config.num_rounds), quiet(progress):
        samples = posterior.sample((config.num_posterior_samples,), x=x_o, show_progress_bars=False)
        if config.ensemble_size > 1:  # sbi's ensemble returns its members' samples one after another
            samples = samples[torch.randperm(len(samples))]
        posterior.set_default_x(x_o)  # sbi 0.27's map() no longer takes x
        if config.density_estimator == "fmpe":
            # sbi's map() climbs FMPE's density through its ODE (minutes for 500 starts x 200
            # steps): the best of the samples already drawn.
            map_ = best_of_draws(posterior, samples)
        else:
            map_ = posterior.map(show_progress_bars=False, num_init_samples=500, num_iter=200)
    result = InferenceResult(
        method=config.method, samples=samples, map=map_.reshape(-1), theta_per_round=thetas,
        training=training, wall_time=time.perf_counter() - start, simulation_time=t_sim,
        training_time=t_train, num_simulations=sum(len(t) for t in thetas) + config.calibration_solves,
        config=config.to_dict(), contraction=contraction(samples, theta_prior),
        conformal_scales=None if scales is None else scales.tolist())
    return posterior, result


class ObservedManyTimes:
    """``theta (B, s + 2K) -> x (B, K, nx, ny, nz)``: one solve per row's first ``s = dim - 2``
    parameters (the solve's: D and rho, or origin, ell and tau), observed with each of its K
    threshold pairs. Picklable for simulation workers."""

    def __init__(self, simulator: Callable, dim: int = 4):
        self.simulator, self.solved = simulator, dim - 2

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        theta = torch.as_tensor(theta, dtype=torch.float64)
        s = self.solved
        density = self.simulator.solve(theta[:, :s])
        pairs = theta[:, s:].reshape(len(theta), -1, 2)
        return torch.cat([self.simulator.observe(density, torch.cat([theta[:, :s], pairs[:, k]], dim=1))
                          for k in range(pairs.shape[1])], dim=1)


def parameter_pairs(theta: torch.Tensor, dim: int = 4) -> torch.Tensor:
    """``(N K, dim)`` parameter sets from ``theta (N, s + 2K)``, ``s = dim - 2``: row ``n K + k`` is
    row n's solve parameters with its k-th threshold pair (thresholds are the last two of the
    ``dim``), matching ``x (N, K, ...)`` reshaped to ``(N K, 1, ...)``."""
    s = dim - 2
    n, k = theta.shape[0], (theta.shape[1] - s) // 2
    solved = theta[:, None, :s].expand(n, k, s)
    return torch.cat([solved, theta[:, s:].reshape(n, k, 2)], dim=2).reshape(n * k, dim)


def _redrawn_thresholds(inside: Callable | None, prior: Distribution, theta: torch.Tensor, k: int,
                        candidates: int = 64, tries: int = 20) -> torch.Tensor:
    """``k`` more threshold pairs per row of ``theta (N, d)`` (thresholds last), each drawn from the
    proposal's conditional given the row's other parameters (D, rho, or origin, ell, tau); ``(N, k, 2)``.

    The proposal is the prior (``inside`` None) or the prior restricted to the region where
    ``inside(theta)`` is true (TSNPE). With thresholds
    independent of (D, rho) in the prior, that conditional is the prior's thresholds restricted
    to the region's slice at (D, rho): draw candidates from the prior and keep those inside.
    Replacing a row's thresholds by such a draw leaves the pair's distribution the proposal
    (as a Gibbs step does), so TSNPE's loss stays exact. Rows whose slice is so thin that fewer
    than ``k`` candidates fall inside take theirs, and the row's own thresholds (also a draw from
    the slice), uniformly with replacement: each pair is still such a draw, only less independent.
    """
    if not isinstance(prior, (BoxUniform, LogUniformBox, _LogRatesPrior, OneScanPrior)):
        raise ValueError("augment needs a prior whose thresholds are independent of (D, rho), such as "
                         f"make_prior(...) returns; got {type(prior).__name__}.")
    n = len(theta)
    found: list[torch.Tensor] = [theta.new_empty(0, 2)] * n
    for _ in range(tries):
        draws = prior.sample((n * candidates,))[:, -2:].reshape(n, candidates, 2).to(theta.dtype)
        if inside is None:
            ok = torch.ones(n, candidates, dtype=torch.bool)
        else:
            s = theta.shape[1] - 2
            full = torch.cat([theta[:, None, :s].expand(n, candidates, s), draws], dim=2)
            ok = inside(full.reshape(-1, s + 2)).reshape(n, candidates)
        found = [torch.cat([f, d[o]]) if len(f) < k else f for f, d, o in zip(found, draws, ok)]
        if min(len(f) for f in found) >= k:
            break
    out = []
    for row, f in zip(theta, found):
        if len(f) < k:
            pool = torch.cat([f, row[None, -2:]])
            f = pool[torch.randint(len(pool), (k,))]
        out.append(f[:k])
    return torch.stack(out)


#: TSNPE draws its truncated prior by rejection from the prior while at least this many of 100,000
#: prior draws fall in the region (acceptance 1e-4: 2.5 million posterior densities for a round of
#: 250, seconds). Below, a prior that can draw itself inside a box (``sample_within``, as
#: ``OneScanPrior`` can) is drawn inside the box around the region, then by rejection
#: (``BoxedRegion``): with 7 parameters (one scan: the origin narrows to a few mm^3 of a 60 mL
#: core) rejection from the whole prior took more than 15 minutes for one round.
MIN_REJECTION_HITS = 10


def _truncated_prior(prior: Distribution, posterior: Any, quantile: float) -> tuple[Any, Callable]:
    """The prior restricted to the posterior's highest-density region of mass ``1 - quantile``,
    and the region's indicator ``theta (N, d) -> bool (N,)``."""
    from sbi.utils import RestrictedPrior, get_density_thresholder

    class Quiet:  # get_density_thresholder calls sample() without show_progress_bars
        sample = staticmethod(lambda shape: posterior.sample(shape, show_progress_bars=False))
        log_prob = staticmethod(posterior.log_prob)

    inside = get_density_thresholder(Quiet(), quantile=quantile, num_samples_to_estimate_support=100_000)
    if hasattr(prior, "sample_within"):
        with torch.random.fork_rng(devices=[]):  # the estimate must not move the run's random stream
            torch.manual_seed(0)
            hits = int(inside(prior.sample((100_000,))).sum())
        if hits < MIN_REJECTION_HITS:
            return BoxedRegion(prior, posterior, inside), inside
    return RestrictedPrior(prior, inside, posterior=posterior, sample_with="rejection"), inside


class BoxedRegion:
    """The prior restricted to a region, drawn exactly: the prior restricted to a box that holds
    the region (``prior.sample_within(low, high, n)``), then rejection by the region's indicator.

    The box is the range of 100,000 posterior draws (the region is their highest-density part),
    widened by a fifth of its width on each side (with 7 parameters a wider box holds the region in
    a smaller fraction of itself: acceptance about 1e-4 at half the width). Importance
    resampling from the posterior was tried first and is not used: with 7 parameters and 64
    draws per sample its effective sample size was a tenth of the samples, and the draws were
    posterior-shaped rather than uniform over the region, which makes TSNPE over-confident.
    """

    def __init__(self, prior: Distribution, posterior: Any, inside: Callable, widening: float = 0.2):
        draws = posterior.sample((100_000,), show_progress_bars=False)
        low, high = draws.min(0).values, draws.max(0).values
        self.low, self.high = low - widening * (high - low), high + widening * (high - low)
        self.prior, self.inside = prior, inside

    def sample(self, sample_shape=torch.Size(), tries: int = 200, batch: int = 50_000, **_: Any) -> torch.Tensor:
        n = int(torch.Size(sample_shape).numel())
        kept, count = [], 0
        for _ in range(tries):
            draws = self.prior.sample_within(self.low, self.high, batch)
            draws = draws[self.inside(draws)]
            kept.append(draws)
            count += len(draws)
            if count >= n:
                return torch.cat(kept)[:n].reshape(*torch.Size(sample_shape), -1)
        raise InferenceError(f"Fewer than {n} draws of the prior fell in the truncated region; raise truncation_quantile.")


#: NPE_A: mixture components lighter than this are weak (see ``PrunedMixture``).
WEAK_COMPONENT_WEIGHT = 0.01


def _without_weak_components(mog: MoG) -> MoG:
    """The mixture with each component lighter than ``WEAK_COMPONENT_WEIGHT`` moved onto the
    heaviest one (same mean and precision, its own weight); ``(B, K)`` mixtures."""
    weights = torch.softmax(mog.logits, dim=-1)
    weak = weights < WEAK_COMPONENT_WEIGHT
    if not weak.any():
        return mog
    heaviest = weights.argmax(dim=-1)
    rows = torch.arange(len(heaviest))
    means = torch.where(weak[..., None], mog.means[rows, heaviest][:, None], mog.means)
    precisions = torch.where(weak[..., None, None], mog.precisions[rows, heaviest][:, None], mog.precisions)
    return MoG(mog.logits, means, precisions)


class PrunedMixture(MixtureDensityEstimator):
    """sbi's mixture-density estimator without its weak components: NPE_A's posterior (and so its
    correction, its samples and the next round's proposal) reads this view of the trained network.

    Why: the fitted mixture can keep a light component that few simulations constrain, off-centre
    and wider than the proposal in some direction (seen on the paper case: weight below 5e-4
    centred at 2.2 in cube units, outside the prior; weight 0.004 twice as wide in rho). sbi's
    correction divides every component by the proposal, and for such a one the result is not
    positive definite ("covariance not positive definite" in rounds 3-4 on the paper truths with
    2 components). Moved onto the heaviest one, each moves less than ``WEAK_COMPONENT_WEIGHT`` of
    the fitted density's mass (the correction may weigh that mass differently). The view shares the
    weights of sbi's copy of the network in the posterior; training goes on with the network
    itself (sbi's ``log_prob`` reads ``get_uncorrected_mog`` too). sbi's own ``potential`` and
    ``map`` of the inner posterior keep the unpruned copy; the package's views sample and rank
    with the corrected mixture.
    """

    @classmethod
    def of(cls, estimator: MixtureDensityEstimator) -> "PrunedMixture":
        if estimator.has_input_transform:  # NPE_A here learns the unit cube, not z-scored
            raise ValueError("PrunedMixture does not carry sbi's z-scoring of theta over.")
        return cls(estimator.net, estimator.input_shape, estimator.condition_shape, estimator.embedding_net)

    def get_uncorrected_mog(self, condition: torch.Tensor) -> MoG:
        return _without_weak_components(super().get_uncorrected_mog(condition))


class WidenedGaussian(Distribution):
    """NPE_A's proposal for the next round: one Gaussian with the mean and covariance of the
    posterior's mixture at ``x_o``, its standard deviations multiplied by ``widening``, restricted
    to the unit cube (the prior's support in the coordinates NPE_A learns).

    Why one Gaussian: the correction posterior = fit x prior / proposal is a Gaussian mixture
    again only when the proposal is a single Gaussian (Papamakarios and Murray 2016 propose with
    one); sbi 0.27 also takes the posterior's whole mixture, pairing every component of the fit
    with every component of the proposal, so the components multiply each round and each pair must
    pass the correction. Why wider: the correction's precision, fit - proposal, is positive
    definite only while the fit is narrower than the proposal in every direction; with the last
    posterior itself as the proposal that margin is zero ("covariance not positive definite" in
    rounds 3-4 on two of three paper truths with sbi's default). The correction divides by the
    untruncated Gaussian: restricting it to the cube changes it by a constant there, and the prior
    is 0 outside.
    """

    arg_constraints: dict = {}

    def __init__(self, posterior: Any, widening: float):
        self.posterior, self.widening = posterior, widening
        self.mog = self._widened(posterior.get_mog_params(posterior.default_x))
        super().__init__(event_shape=torch.Size([self.mog.dim]), validate_args=False)

    @property
    def default_x(self) -> torch.Tensor:
        return self.posterior.default_x

    def get_mog_params(self, x: torch.Tensor):
        """The widened Gaussian at ``x_o`` as a one-component ``MoG``, what sbi's NPE_A reads from a
        proposal (sbi passes ``default_x``)."""
        return self.mog

    def _widened(self, mog):
        from sbi.neural_nets.estimators import MoG

        weights = torch.softmax(mog.logits[0].detach().double(), 0)
        means = mog.means[0].detach().double()
        mean = weights @ means
        offsets = means - mean
        covariance = torch.einsum("k,kij->ij", weights, torch.linalg.inv(mog.precisions[0].detach().double())
                                  + offsets[:, :, None] * offsets[:, None, :])
        precision = torch.linalg.inv(covariance * self.widening**2)
        precision = (precision + precision.T) / 2
        return MoG(torch.zeros(1, 1), mean[None, None].float(), precision[None, None].float())

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The untruncated Gaussian's log density (what NPE_A's correction divides by)."""
        return self.mog.log_prob(value)

    def sample(self, sample_shape=torch.Size(), batch: int = 10_000, tries: int = 1000, **_: Any) -> torch.Tensor:
        n = int(torch.Size(sample_shape).numel())
        kept, count = [], 0
        for _ in range(tries):
            draws = self.mog.sample(torch.Size([batch]))[:, 0].detach()
            draws = draws[((draws >= 0) & (draws <= 1)).all(dim=1)]
            kept.append(draws)
            count += len(draws)
            if count >= n:
                return torch.cat(kept)[:n].reshape(*torch.Size(sample_shape), -1)
        raise InferenceError(f"Fewer than {n} of {tries * batch} draws of NPE_A's proposal fell inside the prior; "
                             "use num_components=1 or 2 (CLI: --components), or method='TSNPE' (the default).")


#: A round's posterior must put at least this fraction of its mass inside the prior's support:
#: sbi draws from it by rejection there (TSNPE's truncation 1e5 draws), and below about 1e-3 that
#: rejection holds gigabytes and runs for hours instead of failing.
MIN_MASS_INSIDE = 1e-3


def _check_inside_prior(posterior: Any, prior: Distribution, x: torch.Tensor, method: str, round_: int,
                        draws: tuple[int, int] = (256, 4_000)) -> None:
    """Refuse a round's posterior (each member of an ensemble) whose draws at ``x`` lie almost all
    outside the prior's support, before anything draws from it by rejection.

    Two ways there, measured: NPE_A's analytic correction divides the network's Gaussian fit by the
    Gaussian proposal, and where the two are nearly as wide a small offset of their means is
    extrapolated far outside the prior (paper case: a component of weight 0.89 centred at 1.1-1.6 in
    cube units); and an observation the model cannot reproduce inside the prior (an ADC initial
    condition with a front tail added, tried in 0.4's development: the round-2 posterior went to
    u_T2 0.02, below the box's 0.05, the round-3 one wholly outside, and TSNPE's truncation hung).
    ``draws``: a first look, enough when a twentieth of it is inside (FMPE draws through an ODE:
    4,000 took 25 s), then the count that resolves ``MIN_MASS_INSIDE``.
    """
    def fraction_inside(member: Any, n: int) -> float:
        return float(within_support(prior, sample_unrejected(member, n, x)).float().mean())

    members = getattr(posterior, "posteriors", None) or [posterior]  # sbi's EnsemblePosterior
    with torch.random.fork_rng(devices=[]):  # the check must not move the run's random stream
        torch.manual_seed(0)
        inside = min(fraction if (fraction := fraction_inside(member, draws[0])) >= 0.05
                     else fraction_inside(member, draws[1]) for member in members)
    if inside >= MIN_MASS_INSIDE:
        return
    hint = ("(its correction extrapolated the network's fit beyond the prior's box). Use num_components=1 or 2 "
            "(CLI: --components), or method='TSNPE' (the default), 'NPE_B' or 'NPE_C'." if method == "NPE_A" else
            "(drawing from it by rejection would not end). The model does not reproduce the observation with "
            "parameters inside the prior: check that the segmentations are registered to the anatomy, the day "
            "and the initial condition, and that the prior (CLI: --prior) holds the tumour.")
    raise InferenceError(f"{method} failed in round {round_}: its posterior puts {inside:.1e} of its mass inside "
                       f"the prior {hint}")


def _round_summary(summary: dict, round_: int, previous: list[dict]) -> dict:
    """This round's part of sbi's cumulative training summary (lists grow over rounds)."""
    seen = {k: sum(len(p.get(k, ())) for p in previous) for k in ("training_loss", "validation_loss")}
    out: dict[str, Any] = {"round": round_}
    for key, values in summary.items():
        values = [float(v) for v in values]
        out[key] = values[seen[key]:] if key in seen else (values[-1] if values else None)
    return out


def save_result(directory: str | Path, posterior, result: InferenceResult) -> None:
    """Write ``posterior.pt`` (reload with [`load_posterior`][sbi_tumor.inference.load_posterior]), ``samples.csv``, ``summary.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"posterior": posterior, "result": result, "format": 1}, directory / "posterior.pt")
    np.savetxt(directory / "samples.csv", result.samples.numpy(), delimiter=",",
               header=CSV_COLUMNS[result.samples.shape[1]], comments="")
    (directory / "summary.json").write_text(json.dumps(result.summary(), indent=2, default=_jsonable))


def load_posterior(directory: str | Path):
    """``(posterior, result)`` saved by [`save_result`][sbi_tumor.inference.save_result]."""
    blob = torch.load(Path(directory) / "posterior.pt", weights_only=False)
    return blob["posterior"], blob["result"]


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)
