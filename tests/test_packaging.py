"""The package carries everything it reads at run time, and its version is defined once.

The wheel itself is built, installed into a fresh venv and used from outside the source tree by
``.ci/wheel-smoke`` (run by ``.ci/run``); these tests are the quick checks that fail first.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import yaml

import neurotwin_dash
from neurotwin_dash import catalog
from neurotwin_dash.ui import serve

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(neurotwin_dash.__file__).resolve().parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_catalog_and_apps_live_inside_the_package():
    assert catalog.catalog_path() == PKG / "data" / "catalog.yaml"
    assert "tvb76" in catalog.names("connectome")
    paths = serve.app_paths()
    assert [p.name for p in paths] == [f"{a}.py" for a in serve.APPS]
    assert all(p.is_file() and PKG in p.parents for p in paths)


def test_top_level_entry_points_are_links_not_copies():
    # one copy to keep in sync: the repository's folders point at the packaged files
    assert (ROOT / "data_catalog" / "catalog.yaml").resolve() == PKG / "data" / "catalog.yaml"
    assert (ROOT / "apps").resolve() == PKG / "apps"


def test_every_data_file_of_the_package_is_declared_package_data():
    """A file the package reads but pyproject does not declare would be missing from the wheel."""
    declared = _pyproject()["tool"]["setuptools"]["package-data"]
    tracked = subprocess.run(["git", "ls-files", "neurotwin_dash"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    if not tracked:   # not a git checkout (e.g. an sdist): nothing to compare with
        return
    missing = []
    for rel in tracked:
        if rel.endswith(".py"):
            continue          # a module (folders without __init__.py are namespace packages): shipped
        ok = False
        for pkg, globs in declared.items():
            base = Path(*pkg.split("."))
            try:
                sub = Path(rel).relative_to(base)
            except ValueError:
                continue
            ok = ok or any(fnmatch(str(sub), g) for g in globs)
        if not ok:
            missing.append(rel)
    assert not missing, f"not declared in [tool.setuptools.package-data]: {missing}"


def test_version_is_defined_once():
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "neurotwin_dash.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", neurotwin_dash.__version__)
    out = subprocess.run([sys.executable, "-m", "neurotwin_dash.cli", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"neurotwin {neurotwin_dash.__version__}"
    # the changelog's newest release is this version; CITATION.cff does not repeat it
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert released and released[0] == neurotwin_dash.__version__
    assert "version" not in yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_licence_citation_and_metadata_agree():
    assert _pyproject()["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["authors"]
