"""Where this package meets sbi's behaviour rather than its API: every sbi-version workaround.

sbi (pinned ``>=0.27,<0.28``) prints notes and bars regardless of ``show_progress_bars``, warns
through ``logging`` and ``warnings`` with messages that are matched here by their text, and fails
deep inside NPE_A with a message that is translated here. A new sbi version is checked against
this module (and ``tests/test_inference.py``) alone.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any

import torch

__all__ = ["CONSTANT_DATA_WARNING", "EPOCH_CAP_WARNING", "FOREIGN_PROPOSAL_WARNING", "SAMPLING_BATCH_NOTE", "epoch_cap_rounds", "explained_failures", "quiet",
           "sample_truncated"]


def sample_truncated(proposal: Any, n: int) -> torch.Tensor:
    """``n`` draws of the truncated prior, without sbi's notes on its rejection rate: a region
    holding 0.01% of the prior is expected after a few rounds, and rejection stays cheap there
    (a posterior density per prior draw)."""
    low_acceptance = logging.Filter()
    low_acceptance.filter = lambda record: "proposal samples are" not in record.getMessage()
    root = logging.getLogger()  # sbi warns through logging.warning
    root.addFilter(low_acceptance)
    try:
        return proposal.sample((n,), show_progress_bars=False, print_rejected_frac=False)
    finally:
        root.removeFilter(low_acceptance)


@contextmanager
def quiet(progress: bool) -> Iterator[None]:
    """Without progress, swallow what sbi prints regardless of ``show_progress_bars``: its notes
    on stdout ("Training neural network. Epochs trained", "Neural network successfully
    converged") and on stderr the sampling bar of ``map()`` (which overshoots, 0/500 -> 534).
    Warnings are kept: they are recorded and shown again outside (see ``epoch_cap_rounds``)."""
    if progress:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            yield
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


#: sbi's warning when training stops at ``max_num_epochs`` before early stopping.
EPOCH_CAP_WARNING = "Maximum number of epochs"
#: sbi's warning for a proposal that is neither the prior nor an sbi posterior (NPE_A's widened
#: Gaussian, ``sbi_tumor.inference.WidenedGaussian``, is one on purpose).
FOREIGN_PROPOSAL_WARNING = "The proposal you passed is neither the prior"
#: sbi's warning for constant dimensions of x (label maps have many constant voxels; x is not
#: z-scored here, z_score_x="none", so the warning does not apply).
CONSTANT_DATA_WARNING = "Data has constant values"


#: sbi's note when it lowers its own sampling batch size for memory (nothing to act on).
SAMPLING_BATCH_NOTE = "Capping max_sampling_batch_size"
#: sbi's warning when draws taken without rejection fall outside the prior: the mass a probe of
#: that mass measures, not a problem of the run.
OUTSIDE_SUPPORT_WARNING = ".*lie outside the prior support"


def sample_unrejected(posterior: Any, n: int, x: torch.Tensor) -> torch.Tensor:
    """``n`` draws of an sbi posterior at ``x`` without its rejection outside the prior, to probe
    how much of its mass lies inside (rejection is what never ends when almost none does), and
    without sbi's warning about the draws outside, which is what the probe measures."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=OUTSIDE_SUPPORT_WARNING)
        return posterior.sample((n,), x=x, show_progress_bars=False, reject_outside_prior=False)


@contextmanager
def epoch_cap_rounds(rounds: list[int], round_: int) -> Iterator[None]:
    """Record in ``rounds`` that sbi's training of round ``round_`` stopped at ``max_num_epochs``,
    instead of letting sbi warn (once per round, naming sbi's own file); the caller warns once,
    naming its own setting."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if EPOCH_CAP_WARNING in str(w.message):
            if round_ not in rounds:
                rounds.append(round_)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class InferenceError(RuntimeError):
    """A sequential run that cannot go on, with what to change; the command line prints it
    without a traceback."""


@contextmanager
def explained_failures(method: str, round_: int):
    """Turn NPE_A's failing analytic proposal correction (deep inside sbi) into an actionable error."""
    try:
        yield
    except (AssertionError, ValueError, RuntimeError) as err:
        if "positive definite" not in str(err):
            raise
        raise InferenceError(
            f"{method} failed in round {round_}: its analytic proposal correction gave a posterior "
            "covariance that is not positive definite (the network's fit came out wider than the proposal "
            "in some direction; a mixture's weak components are broad). Use num_components=1 or 2 (CLI: "
            "--components) with proposal_widening 2 (the default; with 1 it failed on two of four paper truths), "
            "which completed on every paper truth, or method='TSNPE', 'NPE_B' or 'NPE_C'.") from err
