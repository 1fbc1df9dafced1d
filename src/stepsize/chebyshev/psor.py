r"""Chebyshev periodical successive over-relaxation (Chebyshev-PSOR) for fixed-point iterations.

For a map :math:`f` with fixed point :math:`x^\star`, PSOR iterates

.. math::  x_{k+1} = x_k + \omega_{k \bmod T}\,\big(f(x_k) - x_k\big).

Near :math:`x^\star` the error obeys :math:`e_{k+1} = (I - \omega_k (I - J)) e_k` with J the
Jacobian of f, i.e. gradient descent with steps :math:`\omega_k` on the spectrum of
:math:`I - J`. The Chebyshev omegas for the interval :math:`[\lambda_{\min}, \lambda_{\max}]` of
that spectrum contract each period by :math:`1/T_T((\kappa+1)/(\kappa-1))`. The spectrum must be
(nearly) real and positive, as for Jacobi on a symmetric positive definite system, where
:math:`I - J = D^{-1} P` is similar to :math:`D^{-1/2} P D^{-1/2}`.

Reference: Takabe & Wadayama, "Convergence Acceleration via Chebyshev Step: Plausible
Interpretation of Deep-Unfolded Gradient Descent", arXiv:2010.13335 (Chebyshev-PSOR; the
authors' ``Jacobi.ipynb`` experiment).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize._results import SolverResult, warn_not_converged
from stepsize._validation import check_array, check_int, check_real
from stepsize.chebyshev.spectrum import Spectrum, as_matrix_or_operator, estimate_spectrum
from stepsize.chebyshev.steps import chebyshev_steps

__all__ = ["chebyshev_psor", "jacobi_map", "jacobi_spectrum", "psor"]


def psor(
    fixed_point_map: Callable, x0, omegas, *, max_iter: int | None = None, tol=None,
    x_true=None, history: bool = False, warn: bool = True,
) -> SolverResult:
    r"""Periodic over-relaxation :math:`x_{k+1} = x_k + \omega_{k \bmod T}(f(x_k) - x_k)`.

    Args:
        fixed_point_map: f, mapping an array of the shape of ``x0`` to the same shape.
        x0: starting point.
        omegas: a positive scalar or T relaxation factors, repeated periodically.
        max_iter: iterations (default T).
        tol: stop when the relative fixed-point residual
            :math:`\|f(x_k) - x_k\| / \|f(x_0) - x_0\|` is at most ``tol``; None runs
            ``max_iter`` iterations and reports ``converged=None`` (nothing was tested).
        warn: warn with :class:`~stepsize.ConvergenceWarning` when ``tol`` is not met.
        x_true: the fixed point; the history then holds :math:`\|x_k - x^\star\| / \|x_0 -
            x^\star\|`, otherwise the relative fixed-point residual :math:`\|f(x_k) - x_k\|`.
        history: record the per-iteration values (k = 0..max_iter).

    >>> psor(lambda x: 0.5 * x, np.ones(2), 2.0, max_iter=1).x.tolist()
    [0.0, 0.0]
    >>> psor(lambda x: x + 1, np.ones(2), 0.5, max_iter=50, tol=1e-8, warn=False).converged
    False
    """
    if not callable(fixed_point_map):
        raise TypeError(f"fixed_point_map must be callable, got {type(fixed_point_map).__name__}")
    x0 = check_array(x0, "x0", ndim=(1, 2))
    omegas = check_array(np.atleast_1d(np.asarray(omegas, dtype=np.float64)), "omegas", ndim=1)
    if np.any(omegas <= 0):
        raise ValueError(f"omegas must be positive, got min {omegas.min():.3g}")
    n_iter = omegas.size if max_iter is None else check_int(max_iter, "max_iter", low=1)
    if tol is not None:
        tol = check_real(tol, "tol", low=0, low_inclusive=False)
    if x_true is not None:
        x_true = check_array(x_true, "x_true", shape=x0.shape)
        scale = max(float(np.linalg.norm(x0 - x_true)), np.finfo(float).tiny)

    x = x0
    image = np.asarray(fixed_point_map(x))
    if image.shape != x0.shape:
        raise ValueError(f"fixed_point_map returned shape {image.shape}, expected {x0.shape}")
    first_residual = max(float(np.linalg.norm(image - x)), np.finfo(float).tiny)

    def measure(x, image):
        if x_true is not None:
            return float(np.linalg.norm(x - x_true)) / scale
        return float(np.linalg.norm(image - x)) / first_residual

    trace = [measure(x, image)] if history else None
    converged = None
    iterations = 0
    for k in range(n_iter):
        x = x + omegas[k % omegas.size] * (image - x)
        image = np.asarray(fixed_point_map(x))
        iterations = k + 1
        if history:
            trace.append(measure(x, image))
        if tol is not None and float(np.linalg.norm(image - x)) <= tol * first_residual:
            converged = True
            break
    if tol is None:
        message = f"ran {iterations} iterations (no tolerance tested)"
    elif converged:
        message = f"relative fixed-point residual <= {tol:g} after {iterations} iterations"
    else:
        converged = False
        message = f"relative fixed-point residual above {tol:g} after {iterations} iterations"
        if warn:
            warn_not_converged("psor", iterations, f"tol={tol:g}")
    return SolverResult(x=x, n_iter=iterations, converged=converged, history=trace,
                        message=message,
                        info={"omegas": omegas, "map_evaluations": iterations + 1})


def chebyshev_psor(
    fixed_point_map: Callable, x0, *, lmin: float, lmax: float, T: int,
    max_iter: int | None = None, tol=None, order: str = "fractal", x_true=None,
    history: bool = False, warn: bool = True,
) -> SolverResult:
    r"""PSOR with the T Chebyshev omegas of ``[lmin, lmax]``, the spectrum of :math:`I - J`.

    See :func:`psor` for the arguments; ``order`` is as in
    :func:`~stepsize.chebyshev.chebyshev_steps`.
    """
    omegas = chebyshev_steps(lmin, lmax, T, order=order)
    result = psor(fixed_point_map, x0, omegas, max_iter=max_iter or T, tol=tol, x_true=x_true,
                  history=history, warn=warn)
    result.info.update(lmin=lmin, lmax=lmax, T=T, order=order)
    return result


def _diagonal(P) -> np.ndarray:
    diagonal = np.asarray(P.diagonal(), dtype=np.float64)
    if np.any(diagonal <= 0):
        raise ValueError("P must have a positive diagonal for the Jacobi map")
    return diagonal


def jacobi_map(P, q) -> Callable:
    r"""The Jacobi map :math:`f(x) = D^{-1}(q - R x)` for :math:`P x = q`, P = D + R.

    Its fixed point solves :math:`P x = q`, and :math:`I - J = D^{-1} P`.

    >>> f = jacobi_map(np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([3.0, 3.0]))
    >>> f(np.ones(2)).tolist()
    [1.0, 1.0]
    """
    P = as_matrix_or_operator(P, "P", check_symmetry=False)
    if isinstance(P, spla.LinearOperator):
        raise TypeError("P must be a dense or sparse matrix for the Jacobi map")
    diagonal = _diagonal(P)
    q = check_array(q, "q", ndim=(1, 2))
    if q.shape[0] != P.shape[0]:
        raise ValueError(f"q must have {P.shape[0]} rows to match P, got shape {q.shape}")
    scale = diagonal if q.ndim == 1 else diagonal[:, None]

    def fixed_point_map(x):
        return x + (q - P @ x) / scale

    return fixed_point_map


def jacobi_spectrum(P, method: str = "exact", *, safety: float = 1.0, max_iter: int = 300,
                    seed=None) -> Spectrum:
    r"""Spectrum of :math:`I - J = D^{-1} P` via the similar symmetric :math:`D^{-1/2} P D^{-1/2}`.

    Args:
        P: symmetric positive definite matrix (dense or sparse) with a positive diagonal.
        method, safety, max_iter, seed: as in :func:`estimate_spectrum` (here ``"exact"``
            with ``safety=1`` by default: the eigenvalues themselves).

    Returns:
        :class:`~stepsize.chebyshev.Spectrum` of :math:`D^{-1} P`.

    >>> s = jacobi_spectrum(np.array([[2.0, 1.0], [1.0, 2.0]]))
    >>> round(s.lmin, 12), round(s.lmax, 12)
    (0.5, 1.5)
    """
    P = as_matrix_or_operator(P, "P")
    if isinstance(P, spla.LinearOperator):
        raise TypeError("P must be a dense or sparse matrix")
    inverse_root = 1.0 / np.sqrt(_diagonal(P))
    if sp.issparse(P):
        scaled = sp.diags(inverse_root) @ P @ sp.diags(inverse_root)
    else:
        scaled = P * inverse_root[:, None] * inverse_root[None, :]
    return estimate_spectrum(scaled, method=method, safety=safety, max_iter=max_iter,
                             seed=seed)
