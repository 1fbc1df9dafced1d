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


SCS_OPTIONS = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 100000}


def _solve(problem, solver: str) -> float:
    """Solve with ``solver`` (SCS at tight tolerances); a failed solve raises RuntimeError."""
    import cvxpy as cp

    options = SCS_OPTIONS if solver == "SCS" else {}
    problem.solve(solver=getattr(cp, solver), **options)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"{solver}: status {problem.status}")
    return float(problem.value)


def cvxpy_gaussian_mle(second_moment: np.ndarray, mean: np.ndarray, caps: np.ndarray,
                       solver: str = "CLARABEL", ridge: float = 0.0):
    """The constrained Gaussian MLE with ``cp.log_det`` and ``cp.matrix_frac``.

    Minimizes ``-log det Omega + tr(Omega S) - 2 xbar^T eta + eta^T Omega^{-1} eta
    + ridge/2 ||Omega||_F^2`` subject to ``Omega >= c_i c_i^T``; returns ``(Omega, eta,
    objective)``; a failed solve raises RuntimeError.
    """
    import cvxpy as cp

    p = mean.size
    Omega = cp.Variable((p, p), symmetric=True)
    eta = cp.Variable(p)
    objective = (-cp.log_det(Omega) + cp.trace(Omega @ second_moment) - 2 * mean @ eta
                 + cp.matrix_frac(eta, Omega) + ridge / 2 * cp.sum_squares(Omega))
    problem = cp.Problem(cp.Minimize(objective), [Omega >> np.outer(c, c) for c in caps])
    value = _solve(problem, solver)
    return np.asarray(Omega.value), np.asarray(eta.value), value


def cvxpy_matrix_scaled_lasso(X, Y, lam, solver="CLARABEL"):
    """``1/(2n) matrix_frac((Y - X B)^T, Omega) + tr(Omega)/2 + lam ||B||_1``; returns ``(B,
    Omega, objective)``."""
    import cvxpy as cp

    Y = Y[:, None] if Y.ndim == 1 else Y
    n, k = Y.shape
    B, Omega = cp.Variable((X.shape[1], k)), cp.Variable((k, k), symmetric=True)
    objective = (cp.matrix_frac((Y - X @ B).T, Omega) / (2 * n) + cp.trace(Omega) / 2
                 + lam * cp.sum(cp.abs(B)))
    value = _solve(cp.Problem(cp.Minimize(objective)), solver)
    return B.value, Omega.value, value


def cvxpy_pseudolikelihood(samples, lam, solver="CLARABEL"):
    """``sum_i -log omega_ii + quad_over_lin(L^T omega_i, omega_ii) + lam sum_{i != j}
    |omega_ij|`` with ``L L^T = S`` (centred); returns ``(Omega, objective)``."""
    import cvxpy as cp

    centred = samples - samples.mean(axis=0)
    second = centred.T @ centred / samples.shape[0]
    p = second.shape[0]
    root = np.linalg.cholesky(second)
    Omega = cp.Variable((p, p), symmetric=True)
    objective = sum(-cp.log(Omega[i, i]) + cp.quad_over_lin(root.T @ Omega[:, i], Omega[i, i])
                    for i in range(p))
    objective += lam * cp.sum(cp.abs(cp.multiply(1 - np.eye(p), Omega)))
    value = _solve(cp.Problem(cp.Minimize(objective)), solver)
    return Omega.value, value


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
