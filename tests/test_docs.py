"""The documentation is tested like code.

* Every ```python block of README.md and docs/**/*.md runs (the blocks of one file in order, in one
  fresh interpreter, in a temporary directory).
* Every ``sbi-tumor ...`` command line in a ```bash block parses with the real argument parser.
* The site builds with ``mkdocs build --strict`` (skipped when the docs extra is not installed).
* The committed tutorial notebooks carry their outputs, no errors, and stay small; the slow tests
  (``pytest -m slow``) execute each of them at the ``tiny`` size.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_FILES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
NOTEBOOKS = sorted((DOCS / "tutorials").glob("*.ipynb"))
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

# One thread each for numba and torch: on a busy machine numba's parallel loops are many times
# slower than one thread on the small grids of the snippets (see docs/installation.md).
SNIPPET_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def blocks(path: Path, language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(path.read_text()) if lang == language]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


PYTHON_FILES = [p for p in DOC_FILES if blocks(p, "python")]


@pytest.mark.parametrize("path", PYTHON_FILES, ids=_rel)
def test_python_snippets_run(path: Path, tmp_path: Path) -> None:
    script = "\n\n".join(f"# --- block {i + 1} of {_rel(path)}\n{code}"
                         for i, code in enumerate(blocks(path, "python")))
    (tmp_path / "snippets.py").write_text(script)
    done = subprocess.run([sys.executable, "snippets.py"], cwd=tmp_path, capture_output=True, text=True,
                          env=os.environ | SNIPPET_ENV, timeout=900)
    assert done.returncode == 0, f"snippets of {_rel(path)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


def command_lines(path: Path) -> list[str]:
    """``sbi-tumor ...`` commands of the ```bash blocks (continuations joined, ``&&`` split)."""
    commands = []
    for code in blocks(path, "bash"):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("sbi-tumor"):
                    commands.append(part)
    return commands


COMMANDS = [(p, c) for p in DOC_FILES for c in command_lines(p)]


@pytest.mark.parametrize("path,command", COMMANDS, ids=[f"{_rel(p)}: {c[:60]}" for p, c in COMMANDS])
def test_command_lines_parse(path: Path, command: str) -> None:
    from sbi_tumor.cli import build_parser

    argv = shlex.split(command)[1:]
    parser = build_parser()
    if "--help" in argv or "-h" in argv:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 0
        return
    try:
        parser.parse_args(argv)
    except SystemExit as err:  # argparse exits on unknown commands or options
        pytest.fail(f"{_rel(path)} shows a command the parser rejects: {command!r} (exit {err.code})")


def test_every_command_is_documented() -> None:
    """The CLI page shows an example of each subcommand (its reference is generated)."""
    from sbi_tumor.cli import build_parser

    parser = build_parser()
    names = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    shown = {c.split()[1] for p, c in COMMANDS}
    assert set(names) <= shown, f"no example of: {sorted(set(names) - shown)}"


def _mkdocs_available() -> bool:
    return all(importlib.util.find_spec(m) for m in ("mkdocs", "material", "mkdocstrings", "mkdocs_jupyter"))


@pytest.mark.skipif(not _mkdocs_available(), reason='docs extra not installed (pip install -e ".[docs]")')
def test_docs_build_strict(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "simulator.html").is_file()
    assert "sbi-tumor infer" in (tmp_path / "site" / "cli.html").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_with_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert path.stat().st_size < 1_000_000, f"{path.name} is {path.stat().st_size} bytes; keep it under 1 MB"
    assert all(c.get("execution_count") for c in code_cells), f"{path.name} has unexecuted cells"
    errors = [o for c in code_cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error: {errors[0].get('evalue')}"
    assert any("image/png" in o.get("data", {}) for c in code_cells for o in c.get("outputs", [])), \
        f"{path.name} has no figure"
    assert "SBI_TUMOR_TUTORIAL_SIZE" in "".join(code_cells[0]["source"]), "first cell must read the run size"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_tiny(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec = importlib.util.spec_from_file_location("execute_notebooks", DOCS / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, value in SNIPPET_ENV.items() | {("SBI_TUMOR_TUTORIAL_SIZE", "tiny")}:
        monkeypatch.setenv(name, value)  # the kernel inherits the environment
    seconds = module.execute(path, out=tmp_path / path.name, timeout=900, cwd=tmp_path)
    assert seconds < 1200
