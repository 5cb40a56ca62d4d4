"""The Sphinx API reference builds without a warning and documents every public name.

One build per test session (about 30 s on two cores), in a temporary folder, with the
command of ``docs/conf.py`` plus ``-E`` (a fresh environment)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Skipped when Sphinx or myst-nb is not installed (``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import importlib
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")

import jaxlr

ROOT = Path(__file__).resolve().parent.parent
#: one page per public subpackage (``docs/api/NAME.rst``), as listed in docs/conf.py; the root
#: has ``docs/api/jaxlr.rst``
PAGES = runpy.run_path(str(ROOT / "docs" / "conf.py"))["PAGES"]


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
           "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sphinx-build failed (warnings are errors):\n{run.stderr[-6000:]}"
    return out / "html"


def _page(html: Path, name: str) -> str:
    path = html / "api" / f"{name}.html"
    assert path.is_file(), f"no page {path.name} in the built docs"
    return path.read_text(encoding="utf-8")


def test_every_public_subpackage_has_a_page_and_is_in_the_index():
    index = (ROOT / "docs" / "index.rst").read_text()
    for name in ("jaxlr",) + PAGES:
        assert (ROOT / "docs" / "api" / f"{name}.rst").is_file(), f"docs/api/{name}.rst is missing"
        assert f"api/{name}\n" in index, f"docs/index.rst does not list api/{name}"
    on_disk = {p.name for p in (ROOT / "jaxlr").iterdir()
               if not p.name.startswith("_") and (p.is_dir() and (p / "__init__.py").is_file() or p.suffix == ".py")}
    public = {n.removesuffix(".py") for n in on_disk} - {"cli"}       # the command line is documented by --help
    assert public <= set(PAGES), f"public subpackages without a page: {sorted(public - set(PAGES))}"


@pytest.mark.parametrize("name", PAGES)
def test_every_name_of_all_has_an_entry(html, name):
    module = importlib.import_module(f"jaxlr.{name}")
    page = _page(html, name)
    missing = [n for n in module.__all__ if f'id="jaxlr.{name}.{n}"' not in page]
    assert not missing, f"jaxlr.{name}: no entry for {missing} in api/{name}.html"


def test_every_root_name_has_an_entry(html):
    page = _page(html, "jaxlr")
    missing = []
    for n in jaxlr.__all__:
        if n == "__version__":
            assert "__version__" in page
            continue
        own = f'id="jaxlr.{n}"' in page
        linked = re.search(rf'href="(\w+)\.html#jaxlr\.\1\.{re.escape(n)}"', page)
        if not (own or linked):
            missing.append(n)
    assert not missing, f"jaxlr: no entry or link for {missing} in api/jaxlr.html"


def test_notebooks_are_pages(html):
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb in notebooks:
        assert (html / "notebooks" / f"{nb.stem}.html").is_file(), f"{nb.name} has no page in the built docs"


def test_build_output_is_ignored_by_git():
    lines = {line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert "docs/_build" in lines
