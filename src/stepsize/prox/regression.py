"""The matrix scaled lasso: multivariate regression with an unknown noise covariance.

Reading implemented (Won, NeurIPS 2020 names "a matrix variant of the scaled lasso"; the paper's
exact formulation was not available offline): for responses ``Y`` (n x k), design ``X`` (n x d),
coefficients ``B`` (d x k) and the noise scale ``Omega`` (k x k, an estimate of the square root of
the noise covariance),

    min_{B, Omega >= 0}  1/(2n) tr((Y - X B) Omega^+ (Y - X B)^T) + 1/2 tr(Omega) + lam ||B||_1,

where the first term is ``(1/n) sum_j phi(Omega, r_j)``, the matrix perspective of the rows
``r_j`` of the residual ``R = Y - X B`` sharing one scale ``Omega`` (jointly convex). For ``k =
1`` it is the scaled lasso of Sun and Zhang, ``|r|^2 / (2 n s) + s / 2 + lam |b|_1``. Minimizing
over ``Omega`` is closed form: ``Omega = (R^T R / n)^{1/2}`` and the objective becomes

    P(B) = ||Y - X B||_* / sqrt(n) + lam ||B||_1

(the nuclear norm; for ``k = 1`` the square-root lasso). As for the scaled lasso, ``lam`` does not
depend on the noise level; ``lam = sqrt(2 log(d k) / n)`` is the usual pivotal choice.

Solver: Chambolle-Pock on ``min_B lam ||B||_1 + h(X B)`` with ``h(Z) = ||Y - Z||_* / sqrt(n)``.
The dual step of ``h`` is the projection onto the spectral-norm ball ``||U||_2 <= 1/sqrt(n)``
shifted by ``Y`` (one thin SVD of an n x k matrix): this is the perspective term after its
closed-form minimization over ``Omega``, and it is cheaper than a perspective prox, which would
need the matrix-valued ``eta`` (``k`` columns, not one) for each iteration; applying the vector
prox row by row inside the splitting (one ``Omega`` copy per row) was the alternative and costs
``n`` proxes per iteration. Stopping rule: a certified duality gap. The dual is ``max <U, Y>``
over ``||U||_2 <= 1/sqrt(n)``, ``||X^T U||_max <= lam``; the iterate's ``U``, scaled into the
second set, gives a lower bound, and the solver stops when ``P(B) - <U, Y> <= tol max(1, P(B))``.

References:
    J.-H. Won, NeurIPS 2020 (applications). T. Sun, C.-H. Zhang, "Scaled sparse linear
    regression", Biometrika 99 (2012). A. Belloni, V. Chernozhukov, L. Wang, "Square-root lasso",
    Biometrika 98 (2011). A. Chambolle, T. Pock, J. Math. Imaging Vis. 40 (2011).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stepsize._progress import progress_bar
from stepsize._results import SolverResult, warn_not_converged
from stepsize._validation import check_array, check_int, check_real

__all__ = ["ScaledLassoResult", "matrix_scaled_lasso", "matrix_scaled_lasso_objective"]


@dataclass
class ScaledLassoResult(SolverResult):
    """Result of :func:`matrix_scaled_lasso` (``x`` is the coefficient matrix ``B``, d x k).

    Attributes:
        coef: ``B`` (the same array as ``x``).
        noise_scale: ``Omega = (R^T R / n)^{1/2}``, the minimizing scale: the square root of
            the residual covariance, an estimate of ``Sigma^{1/2}`` for noise covariance
            ``Sigma`` (for ``k = 1`` the scaled lasso's noise level ``sigma``, not ``sigma^2``);
            ``noise_scale @ noise_scale`` estimates ``Sigma``.
        objective: the joint objective at ``(B, Omega)``, equal to ``P(B)``.
        duality_gap: ``P(B)`` minus the dual bound.
    """

    coef: np.ndarray | None = None
    noise_scale: np.ndarray | None = None
    objective: float = math.nan
    duality_gap: float = math.nan


def matrix_scaled_lasso_objective(coef, Omega, X, Y, lam: float) -> float:
    """``1/(2n) tr(R Omega^+ R^T) + 1/2 tr(Omega) + lam ||B||_1`` with ``R = Y - X B``.

    ``+inf`` when ``Omega`` is not PSD or the residual rows leave its range.

    Example:
        >>> X, Y = np.eye(2), np.eye(2)
        >>> float(matrix_scaled_lasso_objective(np.zeros((2, 2)), np.eye(2) / 2 ** 0.5, X, Y, 0.1))
        1.414213562373095
    """
    X, Y, lam = _check_data(X, Y, lam)
    coef = check_array(coef, "coef", shape=(X.shape[1], Y.shape[1]))
    Omega = check_array(Omega, "Omega", shape=(Y.shape[1], Y.shape[1]))
    residual = Y - X @ coef
    w, Q = np.linalg.eigh(0.5 * (Omega + Omega.T))
    threshold = 1e-10 * max(float(w[-1]), 0.0)
    rotated = residual @ Q
    keep = w > threshold
    if w[0] < -threshold or np.linalg.norm(rotated[:, ~keep]) > 1e-6 * np.linalg.norm(residual):
        return math.inf
    quadratic = float(np.sum(rotated[:, keep] ** 2 / w[keep]))
    n = X.shape[0]
    return quadratic / (2 * n) + 0.5 * float(np.sum(w)) + lam * float(np.sum(np.abs(coef)))


def _check_data(X, Y, lam):
    X = check_array(X, "X", ndim=2)
    Y = check_array(Y, "Y")
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have {X.shape[0]} rows like X, got shape {Y.shape}")
    lam = check_real(lam, "lam", low=0)
    return X, Y, lam


def matrix_scaled_lasso(
    X,
    Y,
    lam: float,
    *,
    max_iter: int = 20000,
    tol: float = 1e-8,
    progress: bool | None = None,
) -> ScaledLassoResult:
    """The matrix scaled lasso (module docstring): sparse ``B`` and the noise scale.

    Args:
        X: design, n x d.
        Y: responses, n x k (a vector for ``k = 1``).
        lam: the l1 weight ``lam >= 0`` (scale-free: it does not depend on the noise level).
        max_iter: iteration cap.
        tol: relative duality gap at which to stop.
        progress: a progress bar; None shows one when stderr is a terminal.

    Returns:
        A :class:`ScaledLassoResult`; ``history`` holds the relative gap every 10 iterations.
        ``Y`` is divided by its root mean square inside (``P`` is 1-homogeneous in ``(Y,
        B)``), so the iteration does not depend on the responses' units.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((50, 4))
        >>> Y = X[:, :2] @ np.array([[2.0, 0.0], [0.0, -1.0]]) + 0.1 * rng.standard_normal((50, 2))
        >>> result = matrix_scaled_lasso(X, Y, 0.2)
        >>> bool(result.converged), bool(np.abs(result.coef[2:]).max() < 1e-6)
        (True, True)

    Reference: Won, NeurIPS 2020; Sun and Zhang (2012).
    """
    X, Y, lam = _check_data(X, Y, lam)
    max_iter = check_int(max_iter, "max_iter", low=1)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    n = X.shape[0]
    radius = 1.0 / math.sqrt(n)
    norm_X = max(float(np.linalg.norm(X, 2)), 1e-300)
    tau = sigma = 0.99 / norm_X
    # P is 1-homogeneous in (Y, B): solve for Y / s, whose entries are of size 1
    scale = float(np.linalg.norm(Y)) / math.sqrt(Y.size)
    if scale == 0.0:
        return _result(np.zeros((X.shape[1], Y.shape[1])), X, Y, lam, 0, True, [0.0], 0.0, tau)
    Y_user, Y = Y, Y / scale
    coef = np.zeros((X.shape[1], Y.shape[1]))
    dual = _spectral_projection(-sigma * Y, radius)
    history: list[float] = []
    converged, iteration, gap, primal = False, 0, math.inf, math.inf
    for iteration in progress_bar(range(1, max_iter + 1), progress=progress, desc="scaled lasso"):
        step = coef - tau * (X.T @ dual)
        coef_next = np.sign(step) * np.maximum(np.abs(step) - tau * lam, 0.0)
        dual = _spectral_projection(dual + sigma * (X @ (2.0 * coef_next - coef) - Y), radius)
        coef = coef_next
        if iteration % 10 == 0 or iteration == max_iter:
            primal, gap = _gap(coef, dual, X, Y, lam, radius)
            history.append(gap / max(1.0, primal))
            if gap <= tol * max(1.0, primal):
                converged = True
                break
    if not converged:
        warn_not_converged("matrix_scaled_lasso", iteration)
    return _result(scale * coef, X, Y_user, lam, iteration, converged, history, scale * gap,
                   tau)


def _spectral_projection(U, radius):
    """Projection onto ``{||U||_2 <= radius}``: clip the singular values."""
    left, singular, right = np.linalg.svd(U, full_matrices=False)
    if singular[0] <= radius:
        return U
    return (left * np.minimum(singular, radius)) @ right


def _gap(coef, dual, X, Y, lam, radius):
    """``(P(B), P(B) - <U', Y>)`` with ``U'`` the dual iterate scaled to ``||X^T U'||_max <=
    lam`` (it is already in the spectral ball)."""
    primal = radius * float(np.sum(np.linalg.svd(Y - X @ coef, compute_uv=False)))
    primal += lam * float(np.sum(np.abs(coef)))
    largest = float(np.max(np.abs(X.T @ dual)))
    scale = 1.0 if largest <= lam else lam / largest
    # the saddle point has U = -(dual variable of h at X B); the bound is <-U, Y>
    return primal, primal - scale * float(np.sum(-dual * Y))


def _result(coef, X, Y, lam, iteration, converged, history, gap, tau) -> ScaledLassoResult:
    residual = Y - X @ coef
    gram = residual.T @ residual / X.shape[0]
    w, Q = np.linalg.eigh(0.5 * (gram + gram.T))
    Omega = (Q * np.sqrt(np.maximum(w, 0.0))) @ Q.T
    objective = float(np.sum(np.sqrt(np.maximum(w, 0.0)))) + lam * float(np.sum(np.abs(coef)))
    return ScaledLassoResult(
        x=coef, n_iter=iteration, converged=converged, history=history,
        message="converged" if converged else "iteration cap reached", coef=coef,
        noise_scale=0.5 * (Omega + Omega.T), objective=objective, duality_gap=gap,
        info={"step": tau})
