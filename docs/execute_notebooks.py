"""Execute the tutorial notebooks and store their outputs (in place, or into --out).

    python docs/execute_notebooks.py                       # all of docs/tutorials, size "small"
    SBI_TUMOR_TUTORIAL_SIZE=full python docs/execute_notebooks.py docs/tutorials/02_sequential_npe.ipynb

Each notebook reads ``SBI_TUMOR_TUTORIAL_SIZE`` in its first code cell: ``tiny`` (the test suite's
smoke run), ``small`` (the committed outputs, a few minutes each on 2 cores) or ``full`` (the sizes
the text discusses, under 20 minutes each on a CPU). Notebooks run with their own directory as
working directory; execution times are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, out: Path | None = None, timeout: int = 1800, cwd: Path | None = None) -> float:
    """Run every cell of ``path``; write the executed notebook to ``out`` (default: in place)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd or path.parent)}}).execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:  # execution metadata (timestamps) only makes diffs noisy
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, out or path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        default=sorted((HERE / "tutorials").glob("*.ipynb")))
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        seconds = execute(path, timeout=args.timeout)
        print(f"{path}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
