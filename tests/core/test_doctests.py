"""Every docstring example in the package runs and prints what it claims.

The modules are discovered, not listed, so a new module's examples are tested from the start.
Modules that need an extra which is not installed (torch, the bench peers) are skipped.
"""

import doctest
import importlib
import pkgutil
import warnings

import pytest

import stepsize


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(stepsize.__path__, "stepsize."):
        if info.name.endswith("__main__"):
            continue  # runs the command line when imported
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue  # an extra that is not installed; its tests skip too
        if any(test.examples for test in doctest.DocTestFinder().find(module)):
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_discovery_finds_every_subpackage():
    for subpackage in ("chebyshev", "matching", "prox"):
        assert any(name.startswith(f"stepsize.{subpackage}.") for name in MODULES), subpackage


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    assert attempted > 0
