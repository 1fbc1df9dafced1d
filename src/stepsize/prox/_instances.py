"""Random instances and fits shared by the prox experiment and benchmark."""

from __future__ import annotations

import numpy as np

# Won's table (MatrixPerspective.jl docs/src/index.md; Julia 1.5.1, i5-8279U laptop, sigma = 1):
# p -> (Newton iterations, Newton seconds, bisection seconds, MOSEK seconds)
AUTHOR_TIMINGS = {
    10: (4.9, 0.00017, 0.00030, 0.0098),
    30: (5.7, 0.00055, 0.00126, 0.102),
    50: (5.8, 0.00112, 0.00311, 0.658),
    100: (6.5, 0.00433, 0.0123, 21.27),
    500: (7.9, 0.109, 0.332, None),
    1000: (8.0, 0.740, 2.20, None),
    2000: (8.0, 4.32, 14.66, None),
}


def random_prox_instance(rng: np.random.Generator, p: int, sigma: float = 1.0):
    """``X = (B + B^T) / 2`` with ``B`` standard normal and ``y`` standard normal (the author's
    ``timing.jl`` setup), redrawn while ``(X, y)`` falls in the zero region of ``sigma``."""
    while True:
        B = rng.standard_normal((p, p))
        X = (B + B.T) / 2
        y = rng.standard_normal(p)
        if np.linalg.eigvalsh(X + np.outer(y, y) / (2 * sigma))[-1] > 0:
            return X, y


def loglog_slope(sizes, seconds) -> float:
    """Least-squares slope of ``log(seconds)`` against ``log(sizes)``."""
    return float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds)), 1)[0])
