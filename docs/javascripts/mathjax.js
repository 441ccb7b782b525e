// MathJax 3 configuration; loaded before MathJax itself (see extra_javascript in mkdocs.yml).
// MathJax is vendored as tex-svg.js (MathJax 3.2.2, es5/tex-svg.js from the npm package,
// Apache-2.0, see mathjax-LICENSE.txt): SVG output needs no font files, so the math renders
// offline. Only the elements pymdownx.arithmatex marks (class "arithmatex", `\(...\)` and
// `\[...\]` inside) are typeset; docs/hooks.py gives the notebooks' math the same markup.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  },
  svg: {
    fontCache: "global"
  }
};

// Material for MkDocs emits document$ on every page load (and on instant navigation); typeset
// again once MathJax is ready (its own start-up typesets the first page).
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
