"""Shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import json


def emit(results: dict, out: str | None) -> dict:
    """Print ``results`` as JSON, and also write it to ``out`` when given."""
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return results
