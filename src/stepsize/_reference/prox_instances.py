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


HARD_KINDS = ("random", "zeros", "negative", "lowrank", "clusters")


def hard_instance(kind: str, rng: np.random.Generator, p: int):
    """Random ``(X, y)`` and the structures that were hard for the root finder (issue 13):
    ``"zeros"``: PSD ``X`` with two zero eigenvalues and ``y`` 1e-9..1e-5 there (the family of
    PyProximal's crash); ``"negative"``: ``X = -c I`` with large ``y``; ``"lowrank"``: ``G G^T -
    c I``; ``"clusters"``: three repeated eigenvalues and ``y`` in a 2-D subspace."""
    if kind == "random" or p < 3:
        B = rng.standard_normal((p, p))
        return (B + B.T) / 2, rng.standard_normal(p)
    if kind == "zeros":
        d = np.r_[np.zeros(2), np.abs(rng.standard_normal(p - 2)) * rng.uniform(0.1, 10)]
        Q = np.linalg.qr(rng.standard_normal((p, p)))[0] if rng.random() < 0.5 else np.eye(p)
        y = rng.standard_normal(p)
        y[:2] *= 10 ** rng.uniform(-9, -5)
        X = (Q * d) @ Q.T
        return 0.5 * (X + X.T), Q @ y
    if kind == "negative":
        return -rng.uniform(0.1, 3) * np.eye(p), 10 * rng.standard_normal(p)
    if kind == "lowrank":
        G = rng.standard_normal((p, 2))
        return G @ G.T - rng.uniform(0, 1) * np.eye(p), rng.standard_normal(p)
    values = np.repeat(rng.standard_normal(3), [p // 3, p // 3, p - 2 * (p // 3)])
    Q = np.linalg.qr(rng.standard_normal((p, p)))[0]
    X = (Q * values) @ Q.T
    return 0.5 * (X + X.T), Q[:, :2] @ rng.standard_normal(2)
