"""Sphinx configuration of the aet-suite user guide (``make docs``)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AET_PROGRESS", "0")

project = "aet-suite"
author = "aet-suite contributors"
copyright = "aet-suite contributors, MIT licence"
from benchmark import __version__ as release  # noqa: E402

version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# docs/notes: helpers' notes, folded into the pages by hand; _build: the output.
exclude_patterns = ["_build", "notes", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 4
# Pages moved from the old README keep their heading levels (they skip levels in places).
suppress_warnings = ["myst.header"]

napoleon_google_docstring = True
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "none"
autosummary_generate = False
# Heavy optional back ends are real dependencies; nothing is mocked.

html_theme = "furo"
html_title = f"aet-suite {release}"
html_static_path: list[str] = []

_SUPERSCRIPT_AFTER_LITERAL = re.compile(r"``([²³⁻¹])")
_BARS = re.compile(r"(?<![\\|`])\|(?=[^|\s`])([^|`\n]*?[^|\s`\\])\|(?![|_`])")


def _rst_safe(app, what, name, obj, options, lines):
    """Make the docstrings' plain-text notation valid reStructuredText, without editing them.

    ``x``² (a superscript right after an inline literal) needs an escaped space, and |a|
    (absolute values, norms) would be read as a substitution reference.
    """
    for k, line in enumerate(lines):
        if line.lstrip().startswith(("|", "+")):  # a table row
            continue
        line = _SUPERSCRIPT_AFTER_LITERAL.sub(r"``\\ \1", line)
        lines[k] = _BARS.sub(r"\\|\1\\|", line)


_SECTION_RULE = re.compile(r"^-{3,}$")


def _numpydoc_prose_after_parameters(app, what, name, obj, options, lines):
    """Before napoleon: prose at column 0 inside a numpydoc Parameters section (a paragraph the
    author meant as notes) gets a Notes heading, instead of being read as a parameter."""
    section = None
    for k in range(len(lines)):
        line = lines[k]
        if k + 1 < len(lines) and _SECTION_RULE.match(lines[k + 1].strip()) and line.strip():
            section = line.strip()
            continue
        if (
            section == "Parameters"
            and line
            and not line[0].isspace()
            and " : " not in line
            and len(line.split()) >= 4
            and (k == 0 or not lines[k - 1].strip())
        ):
            lines[k:k] = ["Notes", "-----"]
            return


def _module_formulas_as_literals(app, what, name, obj, options, lines):
    """Indented formula blocks in module docstrings (after a paragraph ending in ',' or ':')
    render as literal blocks, as they read in the source."""
    if what != "module":
        return
    for k in range(2, len(lines)):
        if (
            lines[k].startswith("    ")
            and not lines[k - 1].strip()
            and lines[k - 2].rstrip().endswith((",", ":"))
            and not lines[k - 2].rstrip().endswith("::")
        ):
            lines[k - 2] = lines[k - 2].rstrip() + " ::"


def setup(app):
    app.connect("autodoc-process-docstring", _numpydoc_prose_after_parameters, priority=100)
    app.connect("autodoc-process-docstring", _module_formulas_as_literals, priority=100)
    app.connect("autodoc-process-docstring", _rst_safe)
