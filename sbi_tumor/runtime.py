"""Thread settings shared by the solver (numba) and the networks (torch) in one process.

numba's and torch's OpenMP runtimes both spin-wait for work by default; in one process, and on
a shared machine, the spinning threads starve each other: we measured a 50-100x slow-down of
simulations and training. Passive waiting costs nothing measurable. It must be in the
environment before the first OpenMP runtime loads, i.e. before torch or numba is imported, so
the package does not set it on import (that would be too late whenever torch came first, and a
side effect): the ``sbi-tumor`` command and the worker processes set it, and a Python session
sets it with ``export OMP_WAIT_POLICY=PASSIVE`` (docs, Installation).
"""

from __future__ import annotations

__all__ = ["OPENMP_ENV", "set_threads"]

#: Environment for processes that run the solver and the networks (``os.environ.setdefault``).
OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_threads(threads: int) -> None:
    """Use ``threads`` threads for numba's parallel loops and for torch (at most numba's maximum)."""
    import numba
    import torch

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
