"""Every docstring example in the package runs and prints what it says (slow: ~2 min).

The examples are written so that they hold in float32 and float64 alike.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import jaxlr

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(jaxlr.__path__, "jaxlr.")
                 if not name.endswith("__main__"))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
