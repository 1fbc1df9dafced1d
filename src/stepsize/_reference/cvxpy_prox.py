"""CVXPY formulations used as independent references (tests, experiment, benchmark).

CVXPY and its solvers belong to the ``bench`` extra; they are imported inside the functions.
"""

from __future__ import annotations

import math

import numpy as np


def cvxpy_prox(X: np.ndarray, y: np.ndarray, sigma: float, solver: str = "CLARABEL", **options):
    """``prox_{sigma phi}(X, y)`` as one SDP: ``Z = [[Omega, eta/sqrt(2)], [., s]] >= 0``.

    Minimizes ``sigma s + 1/2 ||Omega - X||_F^2 + ||Z[:p, p] - y/sqrt(2)||^2`` (the last term is
    ``1/2 ||eta - y||^2``). Returns ``(Omega, eta, objective)`` with the objective of the prox
    problem as reported by the solver.
    """
    import cvxpy as cp

    p = X.shape[0]
    Z = cp.Variable((p + 1, p + 1), PSD=True)
    objective = (
        sigma * Z[p, p]
        + 0.5 * cp.sum_squares(Z[:p, :p] - X)
        + cp.sum_squares(Z[:p, p] - y / math.sqrt(2.0))
    )
    problem = cp.Problem(cp.Minimize(objective))
    problem.solve(solver=getattr(cp, solver), **options)
    value = np.asarray(Z.value)
    Omega = 0.5 * (value[:p, :p] + value[:p, :p].T)
    return Omega, math.sqrt(2.0) * value[:p, p], float(problem.value)


def cvxpy_gaussian_mle(
    second_moment: np.ndarray, mean: np.ndarray, caps: np.ndarray, solver: str = "CLARABEL"
):
    """The constrained Gaussian MLE with ``cp.log_det`` and ``cp.matrix_frac``.

    Minimizes ``-log det Omega + tr(Omega S) - 2 xbar^T eta + eta^T Omega^{-1} eta`` subject to
    ``Omega >= c_i c_i^T``; returns ``(Omega, eta, objective)``.
    """
    import cvxpy as cp

    p = mean.size
    Omega = cp.Variable((p, p), symmetric=True)
    eta = cp.Variable(p)
    objective = (
        -cp.log_det(Omega)
        + cp.trace(Omega @ second_moment)
        - 2 * mean @ eta
        + cp.matrix_frac(eta, Omega)
    )
    constraints = [Omega >> np.outer(c, c) for c in caps]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver=getattr(cp, solver))
    return np.asarray(Omega.value), np.asarray(eta.value), float(problem.value)


def cvxpy_prox_matrix_eta(X: np.ndarray, Y: np.ndarray, sigma: float, solver: str = "CLARABEL"):
    """The prox of ``sigma phi`` at a p x k ``Y`` with ``cp.matrix_frac`` and a PSD ``Omega``.

    Minimizes ``sigma/2 tr(H^T Omega^{-1} H) + 1/2 ||Omega - X||_F^2 + 1/2 ||H - Y||_F^2``;
    returns ``(Omega, H, objective)``.
    """
    import cvxpy as cp

    p, k = Y.shape
    Omega = cp.Variable((p, p), PSD=True)
    H = cp.Variable((p, k))
    objective = (
        0.5 * sigma * cp.matrix_frac(H, Omega)
        + 0.5 * cp.sum_squares(Omega - X)
        + 0.5 * cp.sum_squares(H - Y)
    )
    problem = cp.Problem(cp.Minimize(objective))
    problem.solve(solver=getattr(cp, solver))
    value = np.asarray(Omega.value)
    return 0.5 * (value + value.T), np.asarray(H.value), float(problem.value)
