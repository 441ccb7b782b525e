"""Sequential NPE against TMCMC on the same synthetic case, prior and Bernoulli likelihood.

The same as ``sbi-tumor benchmark npe-vs-mcmc`` (see :mod:`sbi_tumor.benchmark`):

    python benchmarks/npe_vs_mcmc.py --budgets 500 1000 --seed 0 --out benchmarks/results/npe_vs_mcmc
    python benchmarks/npe_vs_mcmc.py --quick --out /tmp/npe_vs_mcmc
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import sys

from sbi_tumor.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
