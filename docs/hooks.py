"""MkDocs hooks of the documentation build (see mkdocs.yml).

* ``<!-- cli-help -->`` in a page is replaced by the ``--help`` text of every ``sbi-tumor``
  command, generated from the argparse parser itself, so the CLI reference cannot drift.
* The figures recorded under ``benchmarks/results/`` are added to the site (as
  ``benchmarks/results/...``), so the benchmark page shows the committed results, not copies.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- cli-help -->"


def _subcommands(parser: argparse.ArgumentParser, prefix: str):
    """(command words, parser) of a parser and, depth first, of all its subcommands."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, f"{prefix} {name}")


def cli_reference() -> str:
    from sbi_tumor.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help text to the terminal width
    parts = []
    for words, parser in _subcommands(build_parser(), "sbi-tumor"):
        level = "##" if words.count(" ") <= 1 else "###"
        parts.append(f"{level} `{words}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    return markdown


def on_files(files, config):
    results = ROOT / "benchmarks" / "results"
    for path in sorted(results.rglob("*.png")):
        src_uri = path.relative_to(ROOT).as_posix()
        files.append(File(src_uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
