"""The matrix perspective prox of a stack of problems, vectorized over the stack.

For ``b`` problems ``(X_k, y_k, sigma_k)`` with small ``p`` a loop of single calls spends most of
its time in Python. Here every Newton step is one batched ``numpy.linalg.eigh`` of the ``b``
lifted matrices ``M_k(t_k) = [[X_k, y_k/sqrt(2)], [y_k^T/sqrt(2), -t_k]] / sigma_k`` (the data
divided by ``sigma_k``), and the root function, its Loewner derivative and the step are array
operations over the problems still running:

    m_k(t) = e^T [M_k(t)]_- e = sum_{lambda_i < 0} -lambda_i q_i^2,   h_k = m_k - 1,
    m_k'(t) = (sum_{lambda_i < 0} q_i^2)^2 + 2 sum_{lambda_i < 0 <= lambda_j} q_i^2 q_j^2
              lambda_i / (lambda_i - lambda_j),

with ``q`` the last row of the eigenvectors. The step is that of the single prox near its start
(the model ``C / (tau - t)^2`` fitted to ``m``, ``m'`` while it reduces ``|h|``, Newton on ``h``
after that), kept inside the bracket from the signs of ``h`` by bisection; ``S = [M(t*)]_+``
gives ``Omega = sigma S[:p, :p]``, ``eta = sqrt(2) sigma S[:p, p]``.

Problems outside the band of ratios ``||(X, y)|| / sigma`` where a dense eigensolver is accurate
(``[2^-4, 1e4]``, as for the single prox's dense path), and any that have not converged in
``max_iter`` batched steps, are handed to :func:`prox_matrix_perspective` one by one, so every
answer is the single prox's answer to rounding.

Reference: Won, NeurIPS 2020 (the prox); the single-problem solver in
:mod:`stepsize.prox.perspective`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stepsize._results import SolverResult
from stepsize._validation import check_array, check_int, check_real
from stepsize.prox.perspective import DENSE_MAX_RATIO, DENSE_MIN_RATIO, _prox

__all__ = ["BatchProxInfo", "prox_matrix_perspective_batch"]

_EPS = np.finfo(float).eps
_SQRT2 = math.sqrt(2.0)


@dataclass
class BatchProxInfo(SolverResult):
    """Diagnostics of :func:`prox_matrix_perspective_batch` (``x`` is ``(Omega, eta)``).

    Attributes:
        n_iter: the number of batched steps taken (the largest over the problems).
        iterations: steps per problem, shape ``(b,)`` (a single call's ``n_iter`` for the
            problems handed to it).
        zero_region: problems in the zero region, where the prox is ``(0, 0)``, shape ``(b,)``.
        single_calls: how many problems were handed to the single prox.
    """

    iterations: np.ndarray | None = None
    zero_region: np.ndarray | None = None
    single_calls: int = 0


def prox_matrix_perspective_batch(
    X,
    y,
    sigma,
    *,
    tol: float = 1e-12,
    max_iter: int = 30,
    symmetrize: bool = False,
    return_info: bool = False,
):
    """``prox_{sigma_k phi}(X_k, y_k)`` for a stack of problems, vectorized over the stack.

    Each problem is ``min sigma_k phi(Omega, eta) + 1/2 ||Omega - X_k||_F^2 + 1/2 ||eta -
    y_k||^2``, solved as in :func:`prox_matrix_perspective` (module docstring for the batched
    steps); the results agree with single calls to rounding.

    Args:
        X: stack of symmetric matrices, shape ``(b, p, p)``.
        y: stack of vectors, shape ``(b, p)``.
        sigma: ``sigma > 0``, a number or one per problem, shape ``(b,)``.
        tol: stop a problem when ``|h| <= tol`` (data divided by ``sigma``).
        max_iter: cap on batched steps; problems still running then get a single call.
        symmetrize: use ``(X_k + X_k^T) / 2`` instead of raising on a non-symmetric ``X_k``.
        return_info: also return a :class:`BatchProxInfo`.

    Returns:
        ``(Omega, eta)`` with shapes ``(b, p, p)`` and ``(b, p)``, or ``(Omega, eta, info)``.

    Raises:
        ValueError: wrong shapes (``X`` not ``(b, p, p)``, ``y`` not ``(b, p)``, ``sigma`` not
            a number or ``(b,)``), non-symmetric or non-finite input, ``sigma <= 0``.

    Example:
        >>> X = np.stack([np.diag([1.0, 0.0, -1.0]), -10 * np.eye(3)])
        >>> y = np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]])
        >>> Omega, eta = prox_matrix_perspective_batch(X, y, 1.0)
        >>> np.round(eta, 6)
        array([[0.634093, 0.845887, 0.      ],
               [0.      , 0.      , 0.      ]])

    Reference: Won, NeurIPS 2020.
    """
    X = check_array(X, "X", ndim=3)
    if X.shape[1] != X.shape[2]:
        raise ValueError(f"X must be a stack of square matrices (b, p, p), got shape {X.shape}")
    b, p = X.shape[0], X.shape[1]
    y = check_array(y, "y", ndim=2)
    if y.shape != (b, p):
        raise ValueError(f"y must have shape ({b}, {p}) to match X of shape {X.shape}, "
                         f"got {y.shape}")
    sigma = _check_sigmas(sigma, b)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    if not symmetrize:
        asymmetry = np.abs(X - X.transpose(0, 2, 1)).max(axis=(1, 2))
        size = np.maximum(np.abs(X).max(axis=(1, 2)), np.finfo(float).tiny)
        bad = np.flatnonzero(asymmetry > 1e-10 * size)
        if bad.size:
            raise ValueError(
                f"X must be a stack of symmetric matrices; X[{bad[0]}] is not (relative "
                f"asymmetry {asymmetry[bad[0]] / size[bad[0]]:.3g}); pass symmetrize=True"
            )
    X = 0.5 * X + 0.5 * X.transpose(0, 2, 1)

    Omega = np.zeros((b, p, p))
    eta = np.zeros((b, p))
    iterations = np.zeros(b, dtype=int)
    zero_region = np.zeros(b, dtype=bool)
    norms = np.maximum(np.linalg.norm(X, axis=(1, 2)), np.linalg.norm(y, axis=1))
    with np.errstate(over="ignore", divide="ignore"):
        ratio = norms / sigma
    fast = (ratio >= DENSE_MIN_RATIO) & (ratio <= DENSE_MAX_RATIO)
    index = np.flatnonzero(fast)
    steps = 0
    if index.size:
        results, steps = _batched(
            X[index] / sigma[index, None, None], y[index] / sigma[index, None], tol, max_iter
        )
        Omega_b, eta_b, done, zero, count = results
        Omega[index] = Omega_b * sigma[index, None, None]
        eta[index] = eta_b * sigma[index, None]
        iterations[index] = count
        zero_region[index] = zero
        fast[index[~done]] = False
    single = np.flatnonzero(~fast)
    for k in single:
        Omega[k], eta[k], single_info = _prox(X[k], y[k], float(sigma[k]), "newton", tol, 50)
        iterations[k] = single_info.n_iter
        zero_region[k] = single_info.zero_region
    if not return_info:
        return Omega, eta
    info = BatchProxInfo(
        x=(Omega, eta), n_iter=int(steps), converged=True, message="converged",
        iterations=iterations, zero_region=zero_region, single_calls=int(single.size),
    )
    return Omega, eta, info


def _check_sigmas(sigma, b: int) -> np.ndarray:
    if np.ndim(sigma) == 0:
        value = check_real(sigma, "sigma", low=0, low_inclusive=False)
        return np.full(b, value)
    sigma = check_array(sigma, "sigma", ndim=1)
    if sigma.shape != (b,):
        raise ValueError(f"sigma must be a number or have shape ({b},), got {sigma.shape}")
    if np.any(sigma <= 0):
        k = int(np.flatnonzero(sigma <= 0)[0])
        raise ValueError(f"sigma must be > 0, got sigma[{k}] = {sigma[k]!r}")
    return sigma


def _evaluate(M, t):
    """``m``, ``m'``, the rounding floor of ``m`` and the eigenpairs of ``M(t)`` (batched)."""
    p = M.shape[1] - 1
    M[:, p, p] = -t
    w, V = np.linalg.eigh(M)
    q = V[:, p, :]
    q2 = q * q
    negative = w < 0
    mass = np.sum(np.where(negative, -w * q2, 0.0), axis=1)
    negative_mass = np.sum(np.where(negative, q2, 0.0), axis=1)
    pair = negative[:, :, None] & ~negative[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        divided = np.where(pair, w[:, :, None] / (w[:, :, None] - w[:, None, :]), 0.0)
    cross = np.einsum("bi,bij,bj->b", q2, divided, q2)
    slope = negative_mass**2 + 2.0 * cross
    top = np.abs(w).max(axis=1)
    noise = 8 * _EPS * (top * negative_mass + np.sum(np.where(negative, np.abs(w * q), 0), 1))
    return mass, slope, noise, w, V


def _batched(X, y, tol, maxiter):
    """The prox at sigma = 1 for every problem of the stack; ``done`` marks the converged."""
    b, p = y.shape
    M = np.zeros((b, p + 1, p + 1))
    M[:, :p, :p] = X
    M[:, :p, p] = M[:, p, :p] = y / _SQRT2
    zero_scale = np.linalg.norm(X, axis=(1, 2)) + np.linalg.norm(y, axis=1)
    mass, slope, noise, w, V = _evaluate(M, np.ones(b))
    zero = w[:, -1] <= 64 * _EPS * zero_scale
    t = np.ones(b)
    low = 0.5 - 0.5 * (np.sum(X**2, axis=(1, 2)) + np.sum(y**2, axis=1))
    high = np.ones(b)
    value = mass - 1.0
    target = max(tol, 16 * _EPS)
    done = zero | (value <= np.maximum(target, noise))
    rational = np.ones(b, dtype=bool)
    count = np.zeros(b, dtype=int)
    steps = 0
    active = np.flatnonzero(~done)
    while active.size and steps < maxiter:
        steps += 1
        ta, va, ma, sa = t[active], value[active], mass[active], slope[active]
        above = va > 0
        high[active] = np.where(above, ta, high[active])
        low[active] = np.where(above, low[active], ta)
        usable = sa > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            model = ta + 2.0 * (ma / sa) * (1.0 - np.sqrt(ma))
            newton = ta - va / sa
        candidate = np.where(usable & rational[active] & (ma > 0), model, newton)
        candidate = np.where(usable, candidate, np.nan)
        inside = (candidate > low[active]) & (candidate < high[active])
        candidate = np.where(inside, candidate, 0.5 * (low[active] + high[active]))
        moved = np.abs(candidate - ta) > 4 * _EPS * np.maximum(1.0, np.abs(ta))
        # a problem whose step no longer moves t has met its rounding floor: it stays put
        t[active] = np.where(moved, candidate, ta)
        previous = np.abs(va)
        m_new, s_new, n_new, w_new, V_new = _evaluate(M[active], t[active])
        mass[active], slope[active], noise[active] = m_new, s_new, n_new
        w[active], V[active] = w_new, V_new
        value[active] = m_new - 1.0
        count[active] += 1
        rational[active] &= np.abs(value[active]) < previous
        floor = n_new + np.abs(s_new) * 4 * _EPS * np.maximum(1.0, np.abs(t[active]))
        collapsed = high[active] - low[active] <= 4 * _EPS * np.maximum(
            1.0, np.maximum(np.abs(low[active]), np.abs(high[active]))
        )
        finished = (np.abs(value[active]) <= np.maximum(target, floor)) | collapsed | ~moved
        done[active] = finished
        active = active[~finished]

    S = np.einsum("bij,bj,bkj->bik", V, np.maximum(w, 0.0), V)
    Omega = 0.5 * (S[:, :p, :p] + S[:, :p, :p].transpose(0, 2, 1))
    eta = _SQRT2 * S[:, :p, p]
    Omega[zero] = 0.0
    eta[zero] = 0.0
    return (Omega, eta, done, zero, count), steps
