r"""MkDocs hooks of the documentation build (see mkdocs.yml).

* ``<!-- cli-help -->`` in a page is replaced by the ``--help`` text of every ``sbi-tumor``
  command, generated from the argparse parser itself, so the CLI reference cannot drift.
* The figures recorded under ``benchmarks/results/`` are added to the site (as
  ``benchmarks/results/...``), so the benchmark page shows the committed results, not copies.
* The footer shows the package version, read from ``sbi_tumor/__init__.py`` (no import).
* Pages made from notebooks (mkdocs-jupyter): their math gets the markup of
  ``pymdownx.arithmatex``, their links to ``.md`` and ``.ipynb`` sources point at the built pages,
  and they get a download button for the notebook (``on_page_content``).

Why the math needs a hook: mkdocs-jupyter renders markdown cells with nbconvert (mistune), not
with Python-Markdown, so ``pymdownx.arithmatex`` never sees them. nbconvert keeps ``$...$`` and
``$$...$$`` as literal text (for the MathJax 2 it would load itself), and it treats ``\(`` as an
escaped parenthesis (``\(x\)`` comes out as ``(x)``: that is why the notebooks write ``$...$``).
The site's MathJax only typesets elements of class ``arithmatex`` (docs/javascripts/mathjax.js),
so the renderer below emits those elements, exactly as arithmatex does for the ``.md`` pages.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- cli-help -->"
log = logging.getLogger("mkdocs.hooks.sbi_tumor")  # a warning here fails `mkdocs build --strict`


def _subcommands(parser: argparse.ArgumentParser, prefix: str):
    """(command words, parser) of a parser and, depth first, of all its subcommands."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, f"{prefix} {name}")


def cli_reference() -> str:
    from sbi_tumor.cli import build_parser

    os.environ["COLUMNS"] = "80"  # argparse wraps help text to the terminal width: the column shows 80
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


def package_version() -> str:
    """``__version__`` of sbi_tumor/__init__.py, else pyproject.toml's version (nothing imported)."""
    for path, name in (("sbi_tumor/__init__.py", "__version__"), ("pyproject.toml", "version")):
        found = re.search(rf"^{name}\s*=\s*[\"']([^\"']+)[\"']", (ROOT / path).read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    raise RuntimeError("no version in sbi_tumor/__init__.py or pyproject.toml")


def on_config(config):
    if not config.get("copyright"):
        config["copyright"] = f"{config['repo_name'] or config['site_name']} {package_version()} · Apache License 2.0"
    return config


# --- notebooks ---------------------------------------------------------------------------------


def _patch_nbconvert_math() -> None:
    """Make nbconvert's markdown renderer emit arithmatex markup for the math it parses."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer

    def inline_math(self, body: str) -> str:
        return f'<span class="arithmatex">\\({self.escape_html(body)}\\)</span>'

    def block_math(self, body: str) -> str:
        return f'<div class="arithmatex">\\[{self.escape_html(body)}\\]</div>'

    def latex_environment(self, name: str, body: str) -> str:
        name, body = self.escape_html(name), self.escape_html(body)
        return f'<div class="arithmatex">\\begin{{{name}}}{body}\\end{{{name}}}</div>'

    IPythonRenderer.inline_math = inline_math
    IPythonRenderer.block_math = block_math
    IPythonRenderer.latex_environment = latex_environment


try:
    _patch_nbconvert_math()
except ImportError:  # no nbconvert: no notebooks to render either
    pass

# The MathJax 2 that nbconvert's template loads (from a CDN, or `<script src="">` without one) and
# configures; the site loads its own MathJax 3 (mkdocs.yml, extra_javascript).
NB_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)
LINK = re.compile(r'(?P<attr>\b(?:href|src))="(?P<url>[^"]*)"')
DOWNLOAD_ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">'
                 '<path d="M5 20h14v-2H5m14-9h-4V3H9v6H5l7 7z"/></svg>')


def _is_notebook(page) -> bool:
    return page.file.src_uri.endswith(".ipynb")


def _rewrite_link(url: str, page, files) -> str:
    """A relative link to a ``.md``/``.ipynb`` source, as the URL of its page relative to ``page``."""
    if not url or re.match(r"^[a-z][a-z0-9+.-]*:|^[/#]", url, re.IGNORECASE):
        return url
    path, sep, fragment = html.unescape(url).partition("#")
    if not path.endswith((".md", ".ipynb")):
        return url
    target_uri = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), path))
    target = files.get_file_from_path(target_uri)
    if target is None or not target.is_documentation_page():
        log.warning("%s links to '%s', which is not a page of the site", page.file.src_uri, url)
        return url
    return html.escape(target.url_relative_to(page.file) + sep + fragment)


def on_page_content(html_: str, page, config, files) -> str:
    if not _is_notebook(page):
        return html_
    html_ = NB_MATHJAX.sub("", html_)
    html_ = LINK.sub(lambda m: f'{m["attr"]}="{_rewrite_link(m["url"], page, files)}"', html_)
    if config["plugins"]["mkdocs-jupyter"].config["include_source"]:  # the .ipynb lies next to the page
        name = posixpath.basename(page.file.src_uri)
        button = (f'<a href="{html.escape(name)}" download title="Download the notebook ({name})" '
                  f'class="md-content__button md-icon">{DOWNLOAD_ICON}</a>')
        html_ = button + html_
    return html_
