"""Is the posterior calibrated? sbi's own diagnostics on held-out simulations.

A posterior that is narrow but wrong is worse than a wide one. Given pairs ``(theta_i, x_i)``
drawn from the prior and the simulator, a calibrated posterior ranks each ``theta_i`` uniformly
among its own samples at ``x_i`` (simulation-based calibration, Talts et al. 2018), and its
central intervals of mass m contain the truth in a fraction m of the pairs (expected coverage).
TARP (Lemos et al. 2023) checks the joint posterior, not only the marginals.

[`calibrate`][sbi_tumor.diagnostics.calibrate] runs sbi's ``run_sbc``/``check_sbc`` and
``run_tarp``/``check_tarp`` and reads the coverage of central intervals off the SBC ranks; the
report names each parameter that misses a target and in which direction:

* SBC: the KS test of each parameter's ranks against uniformity, p > 0.05;
* coverage: the empirical coverage of the central 90% interval within [0.85, 0.95] (below:
  over-confident, too narrow; above: under-confident, too wide);
* TARP: the KS p-value of the expected coverage curve, p > 0.05.

These checks are for the *amortised* posterior (trained on prior draws, valid at every x). A
sequential posterior is trained for one x_o: check it by running the whole pipeline on truths
drawn from the prior, one run per truth, and ranking each truth in its own posterior;
[`sbc_calibration`][sbi_tumor.diagnostics.sbc_calibration] checks those ranks (SBC and coverage,
no TARP).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.distributions import Distribution

from .config import PARAMETER_NAMES
from .sbi_compat import SAMPLING_BATCH_NOTE

__all__ = ["COVERAGE_90_RANGE", "KS_MIN_PVALUE", "Calibration", "calibrate", "coverage_from_ranks",
           "held_out_pairs", "rank_plot", "sbc_calibration", "tarp_plot"]

#: SBC and TARP pass when their KS p-value exceeds this.
KS_MIN_PVALUE = 0.05
#: The central 90% interval's empirical coverage must lie in this range.
COVERAGE_90_RANGE = (0.85, 0.95)


@dataclass(frozen=True)
class Calibration:
    """The diagnostics of one posterior on ``N`` held-out pairs (see the module docstring).

    Attributes:
        names: parameter names, ``(d,)``.
        ranks: SBC rank of each truth among ``num_posterior_samples`` posterior samples, ``(N, d)``.
        num_posterior_samples: samples per posterior.
        ks_pvalues: per parameter, KS p-value of the ranks against uniformity.
        c2st_ranks: per parameter, sbi's C2ST between the ranks and uniform ranks (0.5: uniform).
        c2st_dap: C2ST between prior draws and data-averaged posterior draws (0.5: equal).
        coverage_50: per parameter, the fraction of truths inside the central 50% /
            90% interval of their posterior.
        coverage_90: per parameter, the fraction of truths inside the central 50% /
            90% interval of their posterior.
        tarp_atc: TARP's area to curve (0: calibrated; < 0 over-confident, > 0 under-confident).
        tarp_ks_pvalue: TARP's KS p-value.
        tarp_ecp: TARP's expected coverage at each credibility level, ``(bins,)``.
        tarp_alpha: TARP's expected coverage at each credibility level, ``(bins,)``.
    """

    names: tuple[str, ...]
    ranks: np.ndarray
    num_posterior_samples: int
    ks_pvalues: list[float]
    c2st_ranks: list[float]
    c2st_dap: float
    coverage_50: list[float]
    coverage_90: list[float]
    tarp_atc: float
    tarp_ks_pvalue: float
    tarp_ecp: np.ndarray
    tarp_alpha: np.ndarray

    def verdicts(self) -> dict[str, dict[str, Any]]:
        """Per parameter: whether SBC and 90% coverage pass, and the direction of a miss."""
        low, high = COVERAGE_90_RANGE
        out = {}
        for name, p, c in zip(self.names, self.ks_pvalues, self.coverage_90):
            direction = ("over-confident (intervals too narrow)" if c < low else
                         "under-confident (intervals too wide)" if c > high else "calibrated")
            out[name] = {"sbc_passed": p > KS_MIN_PVALUE, "coverage_90_passed": low <= c <= high,
                         "direction": direction}
        return out

    @property
    def passed(self) -> bool:
        """Every parameter passes SBC and coverage, and the joint posterior passes TARP."""
        per_parameter = all(v["sbc_passed"] and v["coverage_90_passed"] for v in self.verdicts().values())
        return per_parameter and self.tarp_ks_pvalue > KS_MIN_PVALUE

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: every field but the ranks and the TARP curve, plus the verdicts."""
        data = {k: v for k, v in asdict(self).items() if k not in ("ranks", "tarp_ecp", "tarp_alpha")}
        return data | {"num_pairs": len(self.ranks), "verdicts": self.verdicts(), "passed": self.passed,
                       "targets": {"ks_pvalue_above": KS_MIN_PVALUE, "coverage_90_in": list(COVERAGE_90_RANGE)}}

    def table(self) -> str:
        """A markdown table, one row per parameter and one for TARP (none where TARP was not run)."""
        lines = ["| parameter | SBC KS p | 50% coverage | 90% coverage | verdict |", "|---|---|---|---|---|"]
        for (name, verdict), p, c50, c90 in zip(self.verdicts().items(), self.ks_pvalues, self.coverage_50,
                                                self.coverage_90):
            ok = verdict["sbc_passed"] and verdict["coverage_90_passed"]
            ranks = "" if verdict["sbc_passed"] else "; SBC rejects uniform ranks"
            lines.append(f"| {name} | {p:.3f} | {c50:.2f} | {c90:.2f} | "
                         f"{'pass' if ok else 'miss'}: {verdict['direction']}{ranks} |")
        if not np.isnan(self.tarp_ks_pvalue):
            lines.append(f"| joint (TARP) | {self.tarp_ks_pvalue:.3f} | | | "
                         f"{'pass' if self.tarp_ks_pvalue > KS_MIN_PVALUE else 'miss'}: ATC {self.tarp_atc:+.3f} |")
        return "\n".join(lines) + "\n"


def coverage_from_ranks(ranks: np.ndarray, num_posterior_samples: int, mass: float) -> list[float]:
    """Per parameter, the fraction of truths inside the central ``mass`` interval of their
    posterior, from SBC ranks ``(N, d)``: a truth of rank r lies inside when
    ``(1 - mass) / 2 <= r / L <= (1 + mass) / 2`` (L posterior samples)."""
    q = np.asarray(ranks, dtype=float) / num_posterior_samples
    inside = (q >= (1 - mass) / 2) & (q <= (1 + mass) / 2)
    return inside.mean(0).tolist()


def held_out_pairs(simulator: Callable, prior: Distribution, num_pairs: int,
                   seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_pairs`` prior draws and their simulations, ``(N, 4)`` and ``(N, 1, nx, ny, nz)``,
    from a generator of their own (``seed``), so the caller's random stream does not move."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        theta = prior.sample((num_pairs,))
    return theta, simulator(theta)


def calibrate(posterior: Any, theta: torch.Tensor, x: torch.Tensor, num_posterior_samples: int = 1000,
              names: Sequence[str] = PARAMETER_NAMES, seed: int = 0) -> Calibration:
    """Run sbi's SBC and TARP for ``posterior`` on held-out pairs ``theta (N, d)``, ``x (N, ...)``.

    ``posterior`` is anything with sbi's ``sample_batched(shape, x=..., show_progress_bars=...)``
    (what [`run_sequential_npe`][sbi_tumor.inference.run_sequential_npe] returns). Needs ``N >= 100`` pairs for the checks to mean something (sbi warns below that).
    """
    from sbi.diagnostics import check_tarp, run_sbc, run_tarp

    theta = torch.as_tensor(theta, dtype=torch.float32)
    x = torch.as_tensor(x, dtype=torch.float32)
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SAMPLING_BATCH_NOTE)
        torch.manual_seed(seed)
        ranks, dap = run_sbc(theta, x, posterior, num_posterior_samples=num_posterior_samples,
                             show_progress_bar=False)
        calibration = sbc_calibration(ranks, theta, dap, num_posterior_samples, names)
        ecp, alpha = run_tarp(theta, x, posterior, num_posterior_samples=num_posterior_samples,
                              show_progress_bar=False)
        atc, tarp_p = check_tarp(ecp, alpha)
    return replace(calibration, tarp_atc=float(atc), tarp_ks_pvalue=float(tarp_p), tarp_ecp=ecp.numpy(),
                   tarp_alpha=alpha.numpy())


def sbc_calibration(ranks: torch.Tensor, theta: torch.Tensor, dap: torch.Tensor, num_posterior_samples: int,
                    names: Sequence[str] = PARAMETER_NAMES) -> Calibration:
    """sbi's ``check_sbc`` on SBC ranks ``(N, d)`` of truths ``theta (N, d)`` with their data-averaged
    posterior draws ``dap (N, d)``, as a `Calibration` without TARP (its fields NaN).

    For ranks that come from separate posteriors, as in a sweep of sequential runs, one per truth,
    where TARP does not apply. Its C2ST draws from torch's global generator: seed it for a
    reproducible ``c2st_ranks``."""
    from sbi.diagnostics import check_sbc

    ranks = torch.as_tensor(ranks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are computing SBC checks with less than")
        checks = check_sbc(ranks, torch.as_tensor(theta), torch.as_tensor(dap),
                           num_posterior_samples=num_posterior_samples)
    ranks_np = ranks.numpy()
    nan = np.full(1, np.nan)
    return Calibration(
        names=tuple(names), ranks=ranks_np, num_posterior_samples=num_posterior_samples,
        ks_pvalues=[float(v) for v in checks["ks_pvals"]], c2st_ranks=[float(v) for v in checks["c2st_ranks"]],
        c2st_dap=float(torch.as_tensor(checks["c2st_dap"]).mean()),
        coverage_50=coverage_from_ranks(ranks_np, num_posterior_samples, 0.5),
        coverage_90=coverage_from_ranks(ranks_np, num_posterior_samples, 0.9),
        tarp_atc=float("nan"), tarp_ks_pvalue=float("nan"), tarp_ecp=nan, tarp_alpha=nan)


def rank_plot(calibration: Calibration, labels: Sequence[str] | None = None):
    """sbi's SBC rank plot (empirical CDF of the ranks, with the band of uniform ranks)."""
    from sbi.analysis import sbc_rank_plot

    # sbi's default, one bin per 20 ranks, leaves a single bin (an empty plot) for 30 truths
    bins = int(np.clip(len(calibration.ranks) // 5, 5, 20))
    fig, _ = sbc_rank_plot(calibration.ranks, calibration.num_posterior_samples, plot_type="cdf",
                           parameter_labels=list(labels or calibration.names), num_bins=bins)
    # sbi's x axis counts bins (0 to `bins`), where a reader expects the rank (0 to L), and its y axis
    # has no numbers
    num_samples = calibration.num_posterior_samples
    for ax in fig.axes:
        ticks = ax.get_xticks()
        ax.set_xticks(ticks, [f"{t * num_samples / bins:.0f}" for t in ticks])
        ax.set_xlabel(f"rank of the truth among {num_samples} posterior samples")
        ax.set_yticks([0, 0.5, 1], ["0", "0.5", "1"])
    return fig


def tarp_plot(calibration: Calibration):
    """sbi's TARP plot: expected coverage against credibility (the diagonal is calibrated)."""
    from sbi.analysis import plot_tarp

    fig, _ = plot_tarp(torch.as_tensor(calibration.tarp_ecp), torch.as_tensor(calibration.tarp_alpha),
                       title=f"TARP: ATC {calibration.tarp_atc:+.3f}, KS p {calibration.tarp_ks_pvalue:.3f}")
    return fig
