"""Sequential NPE against TMCMC on the same case, prior and likelihood (``sbi-tumor benchmark``).

``sbi-tumor benchmark npe-vs-mcmc --case paper --budgets 500 1000 --out DIR`` (or
``python benchmarks/npe_vs_mcmc.py ...``) infers theta = (D, rho, u_T1, u_T2) of a synthetic tumour
with both methods at each simulation budget and writes ``results.json``, ``table.md``,
``samples.npz`` and plots to ``DIR``; ``--random-seeds 0 1 2 3 4`` repeats it per seed and summarises.

The benchmark stands apart: it uses the core (simulator, likelihood, TMCMC, inference, metrics)
and nothing in the package imports it. ``task`` builds the matched problem, ``runners`` runs
both methods on it, ``report`` writes tables and figures, ``cli`` is the command.
"""

import importlib
from typing import Any

_MODULE_OF = {"BenchmarkConfig": "config", "MatchedProblem": "task", "run_npe_vs_mcmc": "runners"}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that the command line's parser (``cli``) imports no torch.
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'sbi_tumor.benchmark' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
