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
``max_iter`` batched steps, are handed to the single prox one by one, so every
answer is the single prox's answer to rounding.

Reference: Won, NeurIPS 2020 (the prox); the single-problem solver in
:mod:`stepsize.prox.perspective`.
"""

from __future__ import annotations

import math

import numpy as np

from stepsize._validation import check_array, check_real
from stepsize.prox.perspective import (
    DENSE_MAX_RATIO,
    DENSE_MIN_RATIO,
    PerspectiveProxResult,
    _prox,
)

_EPS = np.finfo(float).eps
_SQRT2 = math.sqrt(2.0)
_FIELDS = ("root", "certificate", "residual", "zero_region", "n_newton", "n_bisection", "rank")


def prox_batch(X, y, sigma, method, tol, max_iter, symmetrize) -> PerspectiveProxResult:
    """The prox of every problem of a stack (``X`` of shape ``(b, p, p)``); see
    :func:`stepsize.prox.prox_matrix_perspective`, which validates ``method``, ``tol`` and
    ``max_iter`` and calls this for 3-d ``X``."""
    if np.ndim(y) == 3:
        return _matrix_eta_stack(X, y, sigma, method, tol, max_iter, symmetrize)
    X, y, sigma = _check_stack(X, y, sigma, symmetrize)
    b, p = y.shape
    fields = {
        "Omega": np.zeros((b, p, p)), "eta": np.zeros((b, p)),
        "n_iter": np.zeros(b, dtype=int), "converged": np.ones(b, dtype=bool),
        "root": np.zeros(b), "certificate": np.zeros(b), "residual": np.zeros(b),
        "zero_region": np.zeros(b, dtype=bool), "n_newton": np.zeros(b, dtype=int),
        "n_bisection": np.zeros(b, dtype=int), "rank": np.zeros(b, dtype=int),
    }
    norms = np.maximum(np.linalg.norm(X, axis=(1, 2)), np.linalg.norm(y, axis=1))
    with np.errstate(over="ignore", divide="ignore"):
        ratio = norms / sigma
    fast = (ratio >= DENSE_MIN_RATIO) & (ratio <= DENSE_MAX_RATIO) & (method == "newton")
    index = np.flatnonzero(fast)
    if index.size:
        done = _solve_batched(X, y, sigma, index, tol, max_iter, fields)
        fast[index[~done]] = False
    single = np.flatnonzero(~fast)
    for k in single:
        _, _, result = _prox(X[k], y[k], float(sigma[k]), method, tol, max_iter)
        fields["Omega"][k], fields["eta"][k] = result.x
        fields["n_iter"][k], fields["converged"][k] = result.n_iter, bool(result.converged)
        for name in _FIELDS:
            fields[name][k] = getattr(result, name)
    converged = bool(fields["converged"].all())
    failed = int(np.sum(~fields["converged"]))
    return PerspectiveProxResult(
        x=(fields.pop("Omega"), fields.pop("eta")),
        n_iter=int(fields["n_iter"].max(initial=0)),
        converged=converged,
        message="converged" if converged else f"{failed} of {b} problems did not converge",
        info={"n_iter": fields.pop("n_iter"), "converged": fields.pop("converged"),
              "single_calls": int(single.size)},
        method=method,
        **fields,
    )


def _matrix_eta_stack(X, Y, sigma, method, tol, max_iter, symmetrize):
    """A stack of matrix-eta problems (``y`` of shape ``(b, p, k)``), one call each."""
    from stepsize.prox._matrix_eta import matrix_eta_prox

    X = _check_X_stack(X, symmetrize)
    b, p = X.shape[0], X.shape[1]
    Y = check_array(Y, "y", ndim=3)
    if Y.shape[:2] != (b, p) or Y.shape[2] == 0:
        raise ValueError(f"y must have shape ({b}, {p}) or ({b}, {p}, k) to match X of shape "
                         f"{X.shape}, got {Y.shape}")
    sigma = _check_sigmas(sigma, b)
    results = [matrix_eta_prox(X[k], Y[k], float(sigma[k]), method, tol, max_iter, True)
               for k in range(b)]
    fields = {name: np.array([getattr(r, name) for r in results]) for name in _FIELDS}
    n_iter = np.array([r.n_iter for r in results])
    converged = np.array([bool(r.converged) for r in results])
    return PerspectiveProxResult(
        x=(np.stack([r.Omega for r in results]), np.stack([r.eta for r in results])),
        n_iter=int(n_iter.max(initial=0)), converged=bool(converged.all()),
        message="converged" if converged.all() else
        f"{int(np.sum(~converged))} of {b} problems did not converge",
        info={"n_iter": n_iter, "converged": converged, "single_calls": b},
        method=method, **fields,
    )


def _check_X_stack(X, symmetrize):
    """A validated float64 stack of symmetric matrices (b, p, p), symmetrized."""
    X = check_array(X, "X", ndim=3)
    if X.shape[1] != X.shape[2]:
        raise ValueError(f"X must be a stack of square matrices (b, p, p), got shape {X.shape}")
    if not symmetrize:
        asymmetry = np.abs(X - X.transpose(0, 2, 1)).max(axis=(1, 2))
        size = np.maximum(np.abs(X).max(axis=(1, 2)), np.finfo(float).tiny)
        bad = np.flatnonzero(asymmetry > 1e-10 * size)
        if bad.size:
            raise ValueError(
                f"X must be a stack of symmetric matrices; X[{bad[0]}] is not (relative "
                f"asymmetry {asymmetry[bad[0]] / size[bad[0]]:.3g}); pass symmetrize=True"
            )
    return 0.5 * X + 0.5 * X.transpose(0, 2, 1)


def _check_stack(X, y, sigma, symmetrize):
    """Validated float64 ``X`` (symmetrized), ``y`` and ``sigma`` (one per problem)."""
    X = _check_X_stack(X, symmetrize)
    b, p = X.shape[0], X.shape[1]
    if np.ndim(y) != 2:
        raise ValueError(f"y must have shape ({b}, {p}) or ({b}, {p}, k) to match X of shape "
                         f"{X.shape}, got {np.shape(y)}")
    y = check_array(y, "y", ndim=2)
    if y.shape != (b, p):
        raise ValueError(f"y must have shape ({b}, {p}) to match X of shape {X.shape}, "
                         f"got {y.shape}")
    return X, y, _check_sigmas(sigma, b)


def _solve_batched(X, y, sigma, index, tol, max_iter, fields):
    """Vectorized Newton on the problems ``index`` (data divided by ``sigma``); fills ``fields``
    and returns which of them converged."""
    s = sigma[index]
    solved = _batched(X[index] / s[:, None, None], y[index] / s[:, None], tol, max_iter)
    fields["Omega"][index] = solved["Omega"] * s[:, None, None]
    fields["eta"][index] = solved["eta"] * s[:, None]
    fields["root"][index] = solved["t"] * s
    fields["certificate"][index] = (1.0 - solved["t"]) * s
    for name in ("n_iter", "residual", "zero_region", "n_newton", "n_bisection", "rank"):
        fields[name][index] = solved[name]
    return solved["done"]


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
    state = {
        "t": np.ones(b), "value": mass - 1.0, "mass": mass, "slope": slope, "w": w, "V": V,
        "low": 0.5 - 0.5 * (np.sum(X**2, axis=(1, 2)) + np.sum(y**2, axis=1)),
        "high": np.ones(b), "rational": np.ones(b, dtype=bool),
        "n_iter": np.zeros(b, dtype=int), "n_newton": np.zeros(b, dtype=int),
    }
    done = zero | (state["value"] <= np.maximum(max(tol, 16 * _EPS), noise))
    active = np.flatnonzero(~done)
    steps = 0
    while active.size and steps < maxiter:
        steps += 1
        finished = _step(M, state, active, max(tol, 16 * _EPS))
        done[active] = finished
        active = active[~finished]
    w, V = state["w"], state["V"]
    S = np.einsum("bij,bj,bkj->bik", V, np.maximum(w, 0.0), V)
    Omega = 0.5 * (S[:, :p, :p] + S[:, :p, :p].transpose(0, 2, 1))
    eta = _SQRT2 * S[:, :p, p]
    # eta = Omega (Omega + I)^-1 y where sigma (here 1) >= 4 ||Omega||_F, as in the single prox
    # (perspective._relative_eta): S[:p, p] is only absolutely accurate there
    small = np.flatnonzero(~zero & (np.linalg.norm(Omega, axis=(1, 2)) <= 0.25))
    if small.size:
        solved = np.linalg.solve(Omega[small] + np.eye(p), y[small][:, :, None])
        eta[small] = np.einsum("bij,bj->bi", Omega[small], solved[:, :, 0])
    Omega[zero] = 0.0
    eta[zero] = 0.0
    t = np.where(zero, 1.0, state["t"])
    return {
        "Omega": Omega, "eta": eta, "t": t, "done": done, "zero_region": zero,
        "n_iter": state["n_iter"], "n_newton": state["n_newton"],
        "n_bisection": state["n_iter"] - state["n_newton"],
        "residual": np.where(zero, 0.0, np.abs(state["value"])),
        "rank": np.where(zero, 0, np.sum(w > 0, axis=1)),
    }


def _step(M, state, active, target):
    """One safeguarded step of every active problem; returns which of them finished."""
    ta, va = state["t"][active], state["value"][active]
    ma, sa = state["mass"][active], state["slope"][active]
    low, high = state["low"][active], state["high"][active]
    above = va > 0
    high = np.where(above, ta, high)
    low = np.where(above, low, ta)
    state["low"][active], state["high"][active] = low, high
    usable = sa > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        model = ta + 2.0 * (ma / sa) * (1.0 - np.sqrt(ma))
        newton = ta - va / sa
    candidate = np.where(usable & state["rational"][active] & (ma > 0), model, newton)
    candidate = np.where(usable, candidate, np.nan)
    inside = (candidate > low) & (candidate < high)
    candidate = np.where(inside, candidate, 0.5 * (low + high))
    moved = np.abs(candidate - ta) > 4 * _EPS * np.maximum(1.0, np.abs(ta))
    # a problem whose step no longer moves t has met its rounding floor: it stays put
    t = np.where(moved, candidate, ta)
    state["t"][active] = t
    m_new, s_new, n_new, w_new, V_new = _evaluate(M[active], t)
    state["mass"][active], state["slope"][active] = m_new, s_new
    state["w"][active], state["V"][active] = w_new, V_new
    value = m_new - 1.0
    state["value"][active] = value
    state["n_iter"][active] += 1
    state["n_newton"][active] += inside
    state["rational"][active] &= np.abs(value) < np.abs(va)
    floor = n_new + np.abs(s_new) * 4 * _EPS * np.maximum(1.0, np.abs(t))
    collapsed = high - low <= 4 * _EPS * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))
    return (np.abs(value) <= np.maximum(target, floor)) | collapsed | ~moved
