"""Result types and warnings shared by the solvers of every subpackage.

Every iterative solver returns a dataclass derived from :class:`SolverResult`, so the same
field names (``x``, ``n_iter``, ``converged``, ``history``, ``message``) mean the same thing
everywhere, as with scipy's ``OptimizeResult``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConvergenceWarning", "SolverResult", "warn_not_converged"]


class ConvergenceWarning(UserWarning):
    """An iterative method stopped at its iteration cap before meeting its tolerance."""


@dataclass
class SolverResult:
    """Outcome of an iterative solver.

    Attributes:
        x: the final iterate (numpy array or torch tensor, as the input was).
        n_iter: iterations performed.
        converged: whether the stopping tolerance was met; None when no tolerance was tested
            (a fixed number of iterations was asked for).
        history: per-iteration diagnostics (e.g. relative residual or error), when requested.
        message: a human-readable reason for stopping.
        info: solver-specific extras (matvec counts, step sizes, ...).
    """

    x: Any
    n_iter: int
    converged: bool | None
    history: list[float] | None = None
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def warn_not_converged(solver: str, n_iter: int, detail: str = "", stacklevel: int = 3) -> None:
    """Emit the standard :class:`ConvergenceWarning` for ``solver``."""
    text = f"{solver} did not converge in {n_iter} iterations"
    warnings.warn(text + (f": {detail}" if detail else ""), ConvergenceWarning, stacklevel)
