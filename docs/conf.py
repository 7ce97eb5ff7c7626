"""Sphinx configuration of the neurotwin-dash documentation (``make docs``; CI builds it with -W).

The topic pages are the README's sections and the notebooks are the repository's notebooks: both are
copied into ``_generated/`` at build time (never committed), so there is one copy of each to keep.
The notebooks are rendered as stored (without outputs), never executed here.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))       # document this checkout, whatever is installed

import neurotwin_dash  # noqa: E402  (after the path above)

project = "neurotwin-dash"
author = "neurotwin-dash contributors"
copyright = "2026, neurotwin-dash contributors"
version = release = neurotwin_dash.__version__

extensions = [
    "myst_nb",                      # Markdown pages (README sections, science notes) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",          # numpy-style docstrings
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
html_theme = "alabaster"
html_title = f"neurotwin-dash {release}"

nb_execution_mode = "off"           # notebooks are executed by the test suite (nbmake), not here
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autosummary_generate = True
autosummary_imported_members = False
# a package page documents what the package defines; what it re-exports is documented once, in
# the module that defines it (otherwise every re-exported name has two targets)
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"          # signatures show defaults; types are in the docstrings
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def generate_pages() -> None:
    """README sections -> ``_generated/topics/*.md``; notebooks -> ``_generated/notebooks``."""
    out = DOCS / "_generated"
    topics, notebooks = out / "topics", out / "notebooks"
    for folder in (topics, notebooks):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.M)
    intro, sections = parts[0], parts[1:]
    (out / "intro.md").write_text(re.sub(r"^# .*\n", "", intro, count=1), encoding="utf-8")
    names = []
    for body in sections:
        title, rest = body.split("\n", 1)
        # one level up: the section is the page title; links and images stay relative to the repo
        rest = re.sub(r"^(#{3,6}) ", lambda m: m.group(1)[1:] + " ", rest, flags=re.M)
        rest = re.sub(r"\]\((?!https?:|#)([^)]+)\)", r"](../../../\1)", rest)
        name = _slug(title)
        (topics / f"{name}.md").write_text(f"# {title}\n{rest}", encoding="utf-8")
        names.append(name)
    (out / "topics.md").write_text(
        "# User guide\n\nThe sections of the README, one page each.\n\n```{toctree}\n:maxdepth: 2\n\n"
        + "\n".join(f"topics/{n}" for n in names) + "\n```\n", encoding="utf-8")
    for nb in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        shutil.copy2(nb, notebooks / nb.name)
    (out / "notebooks.md").write_text(
        "# Notebooks\n\nThe teaching notebooks of `notebooks/`, shown without outputs (run them with "
        "Jupyter, or `pytest --nbmake notebooks`).\n\n```{toctree}\n:maxdepth: 1\n\n"
        + "\n".join(f"notebooks/{nb.stem}" for nb in sorted(notebooks.glob("*.ipynb"))) + "\n```\n",
        encoding="utf-8")


_LITERAL = re.compile(r"(``.*?``)")


def escape_bars(app, what, name, obj, options, lines) -> None:
    """Docstrings write |x| for magnitudes, which reST reads as a substitution: escape the bars
    outside inline literals (the project defines no substitutions)."""
    for i, line in enumerate(lines):
        if "|" in line:
            lines[i] = "".join(part if part.startswith("``") else part.replace("|", r"\|")
                               for part in _LITERAL.split(line))


def setup(app):
    app.connect("autodoc-process-docstring", escape_bars)


generate_pages()
