"""Shared by the benchmark scripts (run as ``python benchmarks/<name>.py``).

Each script imports this module before torch or numba, so that OpenMP's passive waiting
(``sbi_tumor.runtime.OPENMP_ENV``) is in the environment when their runtimes load.
"""

from __future__ import annotations

import json
import os

from sbi_tumor.runtime import OPENMP_ENV  # light: the package loads its modules on first use

for _key, _value in OPENMP_ENV.items():
    os.environ.setdefault(_key, _value)


def emit(results: dict, out: str | None) -> dict:
    """Print ``results`` as JSON, and also write it to ``out`` when given."""
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return results
