"""The package's layering, checked by an AST scan of every import (lazy ones included).

Rules (README, "Architecture"):

1. The core — ``units``, ``performance``, ``system``, ``electrostatics``, ``equilibration``,
   ``features``, ``tuning`` and the front doors in ``_api`` — never imports ``data``,
   ``models``, ``train``, ``cli``, ``testing``, the integrations ``md`` and ``ase``, nor
   flax, optax, matplotlib, ase or jax_md.
2. No module inside the package imports the root package ``jaxlr`` itself.
3. No name starting with ``_`` is imported from another module.
4. No import cycle, neither between modules nor between the topic subpackages.
5. ``import jaxlr`` loads neither flax, optax, matplotlib, ase nor jax_md.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxlr"
CORE = ("units", "performance", "system", "electrostatics", "equilibration", "features", "tuning", "_api")
NOT_IN_CORE_PACKAGES = ("data", "models", "train", "cli", "testing", "md", "ase", "hyper", "parallel")
HEAVY = ("flax", "optax", "matplotlib", "ase", "jax_md")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str):
    """Yield (line, imported module, [imported names]) for every import statement of a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield node.lineno, module, [alias.name for alias in node.names]


def _targets(module: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """The package modules an import statement loads (submodules imported by name included)."""
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
    if names and len(subs) == len(names):       # ``from pkg import submodule``
        return subs
    return ([module] if module in modules else []) + subs


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges():
    modules = _modules()
    for name, path in modules.items():
        for line, module, names in _imports(path, name):
            yield name, path, line, module, names, _targets(module, names, modules)


def test_core_does_not_import_ml_stack_or_apps():
    bad = []
    for name, path, line, module, names, targets in _edges():
        if _layer(name) not in CORE:
            continue
        top = module.split(".")[0]
        if top in HEAVY or any(_layer(t) in NOT_IN_CORE_PACKAGES for t in targets):
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not bad, "the core imports outer layers:\n" + "\n".join(bad)


def test_no_module_imports_the_package_root():
    modules = _modules()
    bad = []
    for name, path, line, module, names, targets in _edges():
        if module == "jaxlr" and not all(f"jaxlr.{n}" in modules for n in names or ["?"]):
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports the root jaxlr")
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name, path, line, module, names, targets in _edges():
        if module == "__future__":
            continue
        private = [n for n in names if n.startswith("_")]
        if private:
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {private} from {module}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    for name, path, line, module, names, targets in _edges():
        graph.setdefault(name, set()).update(t for t in targets if t != name)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for name, path, line, module, names, targets in _edges():
        a = _layer(name)
        for t in targets:
            b = _layer(t)
            if a and b and a != b:
                graph.setdefault(a, set()).add(b)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_scan_sees_lazy_imports(tmp_path):
    """The scan walks function bodies too: a lazy import is found like a top-level one."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..models import _x\n")
    [(line, module, names)] = list(_imports(path, "jaxlr.electrostatics.m"))
    assert (line, module, names) == (2, "jaxlr.models", ["_x"])


@pytest.mark.parametrize("heavy", HEAVY)
def test_import_jaxlr_does_not_load(heavy):
    code = (f"import sys, jaxlr; jaxlr.coulomb; "
            f"sys.exit(1 if any(m == {heavy!r} or m.startswith({heavy!r} + '.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, f"import jaxlr loaded {heavy}"


def test_no_function_shadows_a_module():
    import importlib

    import jaxlr
    for name in jaxlr.__all__:
        obj = getattr(jaxlr, name)
        if callable(obj) and (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir() and callable(obj):
            pytest.fail(f"jaxlr.{name} is a function and also a module")
    for sub in ("electrostatics", "equilibration", "features", "system", "tuning", "data", "models", "train"):
        mod = importlib.import_module(f"jaxlr.{sub}")
        for name in mod.__all__:
            assert hasattr(mod, name), f"jaxlr.{sub}.__all__ lists {name}, which it lacks"
