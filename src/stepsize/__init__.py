"""stepsize: the step-size parameter of iterative algorithms.

Chebyshev steps and deep-unfolded gradient descent (Takabe & Wadayama), adaptive step size and
dynamical softassign for graph matching (Shen, Niu, Zhu), learned step size quantization (Esser
et al.), and the proximity operator of the matrix perspective function (Won).

Importing ``stepsize`` is cheap: it loads no subpackage and never torch. The most used names are
resolved lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from stepsize._results import ConvergenceWarning, SolverResult

__version__ = "0.1.0"

_LAZY = {
    "chebyshev_steps": "stepsize.chebyshev",
    "chebyshev_bound": "stepsize.chebyshev",
    "estimate_spectrum": "stepsize.chebyshev",
    "match_graphs": "stepsize.matching",
    "prox_matrix_perspective": "stepsize.prox",
}

__all__ = ["ConvergenceWarning", "SolverResult", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stepsize' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
