"""The docstring examples of the numpy subpackages run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "stepsize._validation",
    "stepsize._checkpoint",
    "stepsize.chebyshev.preconditioning",
    "stepsize.chebyshev.steps",
    "stepsize.chebyshev.spectrum",
    "stepsize.chebyshev.solvers",
    "stepsize.chebyshev.psor",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    assert attempted > 0 or name == "stepsize._validation"
