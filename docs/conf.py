"""Sphinx configuration of the jaxlr API reference.

Build (from the repository root; about half a minute on two cores, no network)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The notebooks in ``notebooks/`` (linked as ``docs/notebooks``) become pages through
myst-nb with execution off: they are committed without outputs, so their pages show the
code and prose; ``notebooks/README.md`` says how to render them with outputs.
"""

from __future__ import annotations

import jaxlr

project = "jaxlr"
author = "the jaxlr authors"
copyright = "the jaxlr authors"
release = jaxlr.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# the docstrings are Google style ("Args:", "Returns:", "Example:")
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Entries that name several arguments at once ("tol, maxiter: PCG settings.") are common:
# render "Args:" and "Attributes:" as plain field lists, where such a name stays one name
# (typed ``:param:`` / ``:ivar:`` fields would split it into a "type" and a name, and link
# the "type"), and where attributes do not collide with the fields autodoc lists
napoleon_use_param = False
napoleon_use_keyword = False
napoleon_custom_sections = [("Attributes", "params_style")]
napoleon_attr_annotations = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": False}
# flax, optax, ASE and jax-md are real dependencies, so nothing is mocked: every page imports
# what it documents, and an import error fails the build
autodoc_mock_imports: list[str] = []

# notebooks: rendered as they are committed (no outputs), never executed by the build
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath"]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "notebooks/README.md", "**/.ipynb_checkpoints"]

html_theme = "alabaster"
html_title = f"jaxlr {release}"
html_static_path: list[str] = []


# --------------------------------------------------------------------------------------
# Every page lists its module's ``__all__`` explicitly, grouped into classes, functions
# and constants, instead of relying on ``automodule``'s member discovery: that skips
# constants imported from a submodule and functions wrapped by jax (``custom_jvp``), and a
# name in ``__all__`` without an entry would go unnoticed.  The root page documents the
# names defined by the front doors; names it re-exports from a subpackage link to that
# subpackage's entry (documenting an object twice makes short cross-references ambiguous).
# A page asks for its entries with the line ``.. jaxlr-members:: MODULE``.
# --------------------------------------------------------------------------------------
#: the public subpackages and modules with a page under api/, in the order of the index
PAGES = ("electrostatics", "equilibration", "features", "tuning", "system", "data", "models", "train",
         "md", "ase", "hyper", "parallel", "performance", "units", "testing")


def _home(name: str):
    """The public subpackage whose ``__all__`` holds the same object as ``jaxlr.NAME``, or None."""
    import importlib

    obj = getattr(jaxlr, name)
    for page in PAGES:
        module = importlib.import_module(f"jaxlr.{page}")
        if name in getattr(module, "__all__", ()) and getattr(module, name) is obj:
            return f"jaxlr.{page}"
    return None


def _constant_doc(module, name: str) -> list[str]:
    """The ``#:`` comment above ``NAME = ...`` in the module or in one of its submodules."""
    import pkgutil

    from sphinx.pycode import ModuleAnalyzer

    names = [module.__name__]
    if hasattr(module, "__path__"):
        names += [info.name for info in pkgutil.walk_packages(module.__path__, module.__name__ + ".")]
    for modname in names:
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:          # a module without source (none in jaxlr today)
            continue
        if ("", name) in docs:
            return [line for line in docs[("", name)] if line.strip()]
    return []


def _kind(obj) -> str:
    import inspect

    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "data"


def _entry(modname: str, name: str, obj) -> str:
    kind = _kind(obj)
    if kind == "class":
        return f".. autoclass:: {modname}.{name}\n"
    if kind == "function":
        return f".. autofunction:: {modname}.{name}\n"
    import importlib

    value = repr(obj).replace("\n", " ")
    value = value if len(value) <= 160 else value[:150] + " ..."
    doc = _constant_doc(importlib.import_module(modname), name)
    body = "".join(f"   {line}\n" for line in doc)
    return f".. py:data:: {name}\n   :module: {modname}\n   :value: {value}\n\n{body}"


_TITLES = {"class": "Classes", "function": "Functions", "data": "Constants"}


def members_rst(modname: str) -> str:
    """reST entries for every name of ``MODULE.__all__`` (see above)."""
    import importlib

    module = importlib.import_module(modname)
    groups = {"class": [], "function": [], "data": []}
    reexported = []
    for name in module.__all__:
        if name == "__version__":
            continue
        obj = getattr(module, name)
        home = _home(name) if modname == "jaxlr" else None
        if home is not None:
            role = {"class": "class", "function": "func", "data": "data"}[_kind(obj)]
            reexported.append(f"   * - ``jaxlr.{name}``\n     - :{role}:`{home}.{name}`")
        else:
            groups[_kind(obj)].append(_entry(modname, name, obj))
    parts = []
    for kind, entries in groups.items():
        if entries:
            title = _TITLES[kind]
            parts.append(f"{title}\n{'-' * len(title)}\n\n" + "\n".join(entries))
    if reexported:
        parts.append("Re-exported from subpackages\n----------------------------\n\n"
                     "These names are importable from ``jaxlr`` and documented on their subpackage's page.\n\n"
                     ".. list-table::\n   :header-rows: 1\n\n   * - name\n     - documented as\n"
                     + "\n".join(reexported) + "\n")
    return "\n".join(parts)


def _fill_members(app, docname, source):
    import re

    source[0] = re.sub(r"^\.\. jaxlr-members:: ([\w.]+)[ \t]*$", lambda m: members_rst(m.group(1)), source[0],
                       flags=re.M)


def setup(app):
    app.connect("source-read", _fill_members)
