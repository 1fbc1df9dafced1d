"""The prox of the multi-column matrix perspective function (``eta`` a p x k matrix).

The function is

    phi(Omega, H) = 1/2 tr(H^T Omega^+ H)   if Omega is PSD and range(H) in range(Omega),
                    +inf                    otherwise,

the sum of the vector function over the columns of ``H``, but with one ``Omega`` shared by all of
them, which is why the prox does not split by column. Derivation (Won's argument, with a k x k
block in place of the scalar corner):

* **Epigraph.** ``phi(Omega, H) <= s`` iff some symmetric ``S`` (k x k) with ``tr S <= s`` makes
  ``Z = [[Omega, H/sqrt(2)], [H^T/sqrt(2), S]]`` PSD (Schur complement), so the prox solves the
  SDP ``min sigma tr Z_22 + 1/2 ||Z_11 - X||_F^2 + ||Z_12 - Y/sqrt(2)||_F^2`` over ``Z >= 0``.
* **Conjugate.** For ``Omega >= 0`` the supremum of ``tr(B^T H) - 1/2 tr(H^T Omega^+ H)`` over
  ``H`` is ``1/2 tr(B^T Omega B)`` (at ``H = Omega B``), so ``phi*(A, B) = sup_{Omega >= 0}
  tr((A + 1/2 B B^T) Omega)``: the indicator of ``C = {(A, B): A + 1/2 B B^T <= 0}``, as for one
  column. Moreau: ``prox_{sigma phi}(X, Y) = (X, Y) - sigma Pi_C((X, Y) / sigma)``; the zero region
  is ``X + Y Y^T / (2 sigma) <= 0``.
* **Dual root.** With ``M(T) = [[X, Y/sqrt(2)], [Y^T/sqrt(2), -T]]`` (``T`` symmetric k x k) and
  ``E`` the last k columns of the identity, ``Z = [M(T)]_+`` is optimal iff ``E^T [M(T)]_- E =
  sigma I_k`` (stationarity: ``Z - M(T) = [M(T)]_-`` must equal the cost ``sigma E E^T`` on the
  corner block, and it already matches ``Z - M_0`` off it). This is the gradient of the convex
  function ``G(T) = 1/2 ||[M(T)]_-||_F^2 - sigma tr T`` (``T -> E^T [M(T)]_- E`` is the gradient
  of the first term, 1-Lipschitz because the projection is firmly nonexpansive), so ``T*`` is its
  minimizer and ``Omega* = Z_11``, ``H* = sqrt(2) Z_12``, ``phi(Omega*, H*) = tr Z_22 = k sigma -
  tr T*`` (the certificate).
* **Newton.** The generalized Hessian of ``G`` in the direction ``D`` is ``W (|Gamma| o (W^T D
  W)) W^T``, with ``W`` the last k rows of the eigenvectors of ``M(T)`` and ``Gamma`` the
  divided differences of ``max(-lambda, 0)`` at its eigenvalues (Loewner); ``k(k+1)/2`` unknowns.
  Each step solves that ``k^2 x k^2`` system (least squares: the Hessian can be singular) and
  backtracks until ``G`` decreases (Armijo) or, near ``T*`` where that decrease is below the
  rounding of ``G``, until ``||grad G||`` drops by 10%; a unit gradient step, always a descent
  step for a 1-Lipschitz gradient, replaces a Newton direction that is not a descent direction.

For ``k = 1`` this is the vector prox (``T = t``), which the tests check. Every evaluation is a
dense ``eigh`` of a ``(p + k)`` matrix: this path is meant for moderate sizes, on data normalized
by an exact power of two as the vector prox is.

Reference: Won, NeurIPS 2020 (the vector case and its lifting); the matrix-fractional function
``tr(H^T Omega^{-1} H)`` is CVXPY's ``matrix_frac``.
"""

from __future__ import annotations

import math

import numpy as np

from stepsize._results import warn_not_converged
from stepsize._validation import check_array, check_real

_EPS = np.finfo(float).eps
_SQRT2 = math.sqrt(2.0)
_ARMIJO = 1e-4


def matrix_eta_prox(X, Y, sigma, method, tol, max_iter, symmetrize):
    """:func:`stepsize.prox.prox_matrix_perspective` for a p x k ``y`` (validated here; ``method``,
    ``tol`` and ``max_iter`` were validated by the caller)."""
    from stepsize.prox.perspective import PerspectiveProxResult, check_symmetric_matrix

    X = check_symmetric_matrix(X, "X", symmetrize)
    Y = check_matrix_eta(Y, X.shape[0])
    sigma = check_real(sigma, "sigma", low=0, low_inclusive=False)
    if method != "newton":
        raise ValueError(f"method must be 'newton' for a p x k y (matrix eta), got {method!r}")
    Omega, H, T, details = prox_matrix_eta(X, Y, sigma, tol, max_iter)
    converged = details["converged"]
    zero = bool(details["zero_region"])
    return PerspectiveProxResult(
        x=(Omega, H), n_iter=details["n_iter"], converged=converged,
        history=details["history"],
        message=("zero region: X + Y Y^T / (2 sigma) is negative semidefinite" if zero
                 else details.get("message") or (
                     "converged" if converged else "iteration cap reached")),
        root=T, certificate=Y.shape[1] * sigma - float(np.trace(T)),
        residual=details["residual"], zero_region=zero, n_newton=details["n_newton"],
        n_bisection=details["n_gradient"], method="newton", rank=details["rank"],
    )


def check_matrix_eta(Y, p: int, name: str = "y") -> np.ndarray:
    """A validated float64 p x k matrix ``y`` (``k >= 1``)."""
    Y = check_array(Y, name, ndim=2)
    if Y.shape[0] != p or Y.shape[1] == 0:
        raise ValueError(f"{name} must be a vector of length {p} or a {p} x k matrix (k >= 1) to "
                         f"match X, got shape {Y.shape}")
    return Y


# Below this data / sigma ratio (log2) the first-order closed form is used: its error is
# O(r^2) relative, while the dense eigh of the lifted matrix, whose entries are of sigma's size,
# loses O(eps / r) of Omega's relative accuracy; they cross near r = eps^(1/3) = 2^-17.3.
MATRIX_SMALL_LOG2_RATIO = -17


def prox_matrix_eta(X, Y, sigma, tol, max_iter):
    """``(Omega, H, T, details)`` for validated ``X`` (p x p), ``Y`` (p x k), ``sigma > 0``."""
    largest = max(float(np.max(np.abs(X), initial=0.0)), float(np.max(np.abs(Y), initial=0.0)))
    shift = max(math.frexp(largest)[1], math.frexp(sigma)[1])
    X_n, Y_n, sigma_n = np.ldexp(X, -shift), np.ldexp(Y, -shift), math.ldexp(sigma, -shift)
    if 0.0 < largest and math.log2(largest) - math.log2(sigma) < MATRIX_SMALL_LOG2_RATIO:
        Omega, H, T, details = _large_sigma(X_n, Y_n, sigma_n)
    else:
        Omega, H, T, details = _solve(X_n, Y_n, sigma_n, tol, max_iter)
    details["residual"] /= sigma_n
    return np.ldexp(Omega, shift), np.ldexp(H, shift), np.ldexp(T, shift), details


def _large_sigma(X, Y, sigma):
    """``sigma >> data``: ``Omega = Pi_+(X + Y Y^T / (2 sigma))``, exact to first order in data /
    sigma (relative error O(r^2)), ``H`` from the optimality condition ``H = Omega (Omega + sigma
    I)^-1 Y``, and ``T = sigma I - Y^T Omega Y / (2 sigma^2)`` (``tr T = k sigma - phi``)."""
    p, k = Y.shape
    w, V = np.linalg.eigh(X + (Y @ Y.T) / (2.0 * sigma))
    Omega = (V * np.maximum(w, 0.0)) @ V.T
    Omega = 0.5 * (Omega + Omega.T)
    H = _optimal_eta(Omega, Y, sigma)
    T = sigma * np.eye(k) - (Y.T @ Omega @ Y) / (2.0 * sigma * sigma)
    rank = int(np.sum(w > 0))
    details = {"n_newton": 0, "n_gradient": 0, "history": [], "zero_region": rank == 0,
               "rank": rank, "n_iter": 0, "converged": True, "residual": 0.0,
               "message": "sigma >= 2^17 max|X, y|: closed form Omega = Pi_+(X + Y Y^T / "
                          "(2 sigma)) (first order in data / sigma), H = Omega (Omega + "
                          "sigma I)^-1 Y"}
    return Omega, H, 0.5 * (T + T.T), details


def _lifted(X, Y):
    p, k = Y.shape
    M = np.zeros((p + k, p + k))
    M[:p, :p] = X
    M[:p, p:] = Y / _SQRT2
    M[p:, :p] = M[:p, p:].T
    return M


def _evaluate(M, T, sigma):
    """``G(T)``, its gradient and the eigenpairs of ``M(T)``."""
    k = T.shape[0]
    M[-k:, -k:] = -T
    w, V = np.linalg.eigh(M)
    negative = np.minimum(w, 0.0)
    W = V[-k:]
    gradient = (W * -negative) @ W.T - sigma * np.eye(k)
    value = 0.5 * float(negative @ negative) - sigma * float(np.trace(T))
    return value, 0.5 * (gradient + gradient.T), w, V


def _newton_direction(w, V, gradient):
    """The semismooth Newton step ``-J^+ grad`` with the Loewner Jacobian ``J``."""
    k = gradient.shape[0]
    W = V[-k:]
    f = np.maximum(-w, 0.0)
    difference = w[:, None] - w[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.abs((f[:, None] - f[None, :]) / difference)
    same = np.abs(difference) <= 64 * _EPS * max(1.0, float(np.max(np.abs(w))))
    gamma = np.where(same, (w[:, None] < 0).astype(float), gamma)
    # J[a, b, c, d] = sum_ij W[a, i] W[b, j] |Gamma|_ij W[c, i] W[d, j]
    jacobian = np.einsum("ai,bj,ij,ci,dj->abcd", W, W, gamma, W, W).reshape(k * k, k * k)
    step, *_ = np.linalg.lstsq(jacobian, -gradient.ravel(), rcond=1e-13)
    step = step.reshape(k, k)
    return 0.5 * (step + step.T)


def _solve(X, Y, sigma, tol, max_iter):
    """Newton with Armijo backtracking on ``G`` from ``T = sigma I``."""
    p, k = Y.shape
    M = _lifted(X, Y)
    T = sigma * np.eye(k)
    value, gradient, w, V = _evaluate(M, T, sigma)
    scale = float(np.linalg.norm(X)) + float(np.linalg.norm(Y))
    zero = float(w[-1]) <= 64 * _EPS * scale  # M(sigma I) <= 0: X + Y Y^T / (2 sigma) <= 0
    history = [float(np.linalg.norm(gradient)) / sigma]
    details = {"n_newton": 0, "n_gradient": 0, "history": history, "zero_region": zero, "rank": 0}
    target = max(tol, 16 * _EPS) * sigma * math.sqrt(k)
    converged = zero or history[0] * sigma <= target
    iterations = 0
    while not converged and iterations < max_iter:
        T, value, gradient, w, V, moved = _line_search(M, T, value, gradient, w, V, sigma, details)
        iterations += 1
        history.append(float(np.linalg.norm(gradient)) / sigma)
        converged = history[-1] * sigma <= target
        if not moved:
            # no acceptable step: G is at its rounding level. T is optimal to working accuracy
            # only if the gradient is down to the eigensolver's absolute accuracy on M(T)
            floor = 64 * _EPS * (scale + float(np.linalg.norm(T))) * math.sqrt(k)
            converged = history[-1] * sigma <= max(target, floor)
            break
    details.update(n_iter=iterations, converged=bool(converged),
                   residual=float(np.linalg.norm(gradient)))
    if not converged:
        warn_not_converged("prox_matrix_perspective (matrix eta)", iterations,
                           f"||grad G|| / sigma = {details['residual'] / sigma:.3g}")
    if zero:
        details["residual"] = 0.0
        return np.zeros((p, p)), np.zeros((p, k)), T, details
    S = (V * np.maximum(w, 0.0)) @ V.T
    Omega = 0.5 * (S[:p, :p] + S[:p, :p].T)
    details["rank"] = int(np.sum(w > 0))
    return Omega, _optimal_eta(Omega, Y, sigma), T, details


def _optimal_eta(Omega, Y, sigma):
    """``H = Omega (Omega + sigma I)^-1 Y``, the minimizer over ``H`` at ``Omega``: relative error
    that of ``Omega`` (``sqrt(2) Z_12`` of the lifted projection has the eigensolver's absolute
    error ``eps sigma``, large next to a small ``H`` when sigma is large)."""
    return Omega @ np.linalg.solve(Omega + sigma * np.eye(Omega.shape[0]), Y)


def _line_search(M, T, value, gradient, w, V, sigma, details):
    """One Newton step (or a unit gradient step when it fails) with backtracking."""
    direction = _newton_direction(w, V, gradient)
    slope = float(np.sum(direction * gradient))
    newton = slope < 0 and np.all(np.isfinite(direction))
    if not newton:
        direction, slope = -gradient, -float(np.sum(gradient * gradient))
    length = 1.0
    for _ in range(60):
        trial = T + length * direction
        trial_value, trial_gradient, trial_w, trial_V = _evaluate(M, trial, sigma)
        # Armijo on G, or (where the decrease of G is below its rounding, near T*) a gradient
        # norm cut by 10%: either is progress, so the iteration cannot cycle
        decrease = trial_value <= value + _ARMIJO * length * slope
        if decrease or np.linalg.norm(trial_gradient) <= 0.9 * np.linalg.norm(gradient):
            details["n_newton" if newton else "n_gradient"] += 1
            return trial, trial_value, trial_gradient, trial_w, trial_V, True
        length *= 0.5
        # the decrease is below the rounding of G: the point is optimal to working accuracy
        if abs(length * slope) <= 4 * _EPS * max(abs(value), sigma):
            break
    return T, value, gradient, w, V, False
