r"""Bounds on the spectrum of a symmetric positive (semi)definite operator.

Chebyshev steps need an interval :math:`[\lambda_{\min}, \lambda_{\max}]` that contains the
spectrum. Underestimating :math:`\lambda_{\max}` is catastrophic (5% too low turns the T = 25
Chebyshev product of the (300, 600) instance into an amplifier, :math:`\rho = 9.2`), while
overestimating it by 10% costs little (:math:`\rho` 2.2e-4 -> 3.4e-4). Krylov methods approach the
extreme eigenvalues from inside the spectrum, so :func:`estimate_spectrum` widens the Ritz interval
by the Ritz residual norms (each Ritz value is within its residual of an eigenvalue) and then by a
multiplicative ``safety`` factor: ``lmax = (theta_max + r_max) * safety`` and
``lmin = (theta_min - r_min) / safety``. The default ``safety = 1.05`` sits between PyAMG's and
PETSc's (1.1) choices.

For Gaussian ensembles the Marchenko-Pastur edges give data-free bounds
(:func:`marchenko_pastur_edges`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize._results import ConvergenceWarning
from stepsize._validation import (
    check_array,
    check_choice,
    check_int,
    check_real,
    check_rng,
    check_square,
    check_symmetric,
)

__all__ = ["Spectrum", "as_matrix_or_operator", "estimate_spectrum", "marchenko_pastur_edges"]

METHODS = ("lanczos", "exact")


@dataclass(frozen=True)
class Spectrum:
    """An interval holding the spectrum, with how it was obtained.

    Attributes:
        lmin, lmax: the safe bounds to use (widened by residuals and ``safety``).
        ritz_min, ritz_max: the raw estimates before widening.
        matvecs: operator applications spent (0 for ``"exact"``, which factorizes).
        converged: whether the eigensolver met its tolerance.
        method: ``"lanczos"``, ``"exact"`` or ``"marchenko-pastur"``.
    """

    lmin: float
    lmax: float
    ritz_min: float
    ritz_max: float
    matvecs: int
    converged: bool
    method: str

    @property
    def kappa(self) -> float:
        """Condition number of the safe interval, ``lmax / lmin`` (inf if ``lmin == 0``)."""
        return self.lmax / self.lmin if self.lmin > 0 else float("inf")


def as_matrix_or_operator(W, name: str = "W", *, check_symmetry: bool = True):
    """Validate a square operator: dense array (or torch tensor), sparse matrix or LinearOperator.

    Dense and sparse inputs are checked for finiteness and symmetry; a LinearOperator is taken
    as given (its symmetry cannot be checked without applying it n times).
    """
    if isinstance(W, spla.LinearOperator):
        check_square(W, name)
        return W
    if sp.issparse(W):
        check_square(W, name)
        W = sp.csr_array(W, dtype=np.result_type(W.dtype, np.float32))
        if not np.all(np.isfinite(W.data)):
            raise ValueError(f"{name} must be finite, but it has NaN or infinite entries")
        if check_symmetry:
            check_symmetric(W, name, rtol=1e-8)
        return W
    W = check_array(W, name, ndim=2, dtype=None)
    if W.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real matrix, got dtype {W.dtype}")
    check_square(W, name)
    if check_symmetry:
        check_symmetric(W, name, rtol=1e-6 if W.dtype == np.float32 else 1e-8)
    return W


class _CountingOperator(spla.LinearOperator):
    """Counts operator applications (columns) for the matvec budget."""

    def __init__(self, W):
        super().__init__(dtype=np.float64, shape=W.shape)
        self.W = W
        self.count = 0

    def _matvec(self, x):
        self.count += 1
        if (isinstance(self.W, np.ndarray) or sp.issparse(self.W)) and self.W.dtype.kind == "f":
            # a float32 matrix times a float64 vector would convert the whole matrix every call
            x = x.astype(self.W.dtype, copy=False)
        return np.asarray(self.W @ x, dtype=np.float64).ravel()


def estimate_spectrum(
    W,
    method: str = "lanczos",
    *,
    safety: float = 1.05,
    tol: float = 1e-2,
    maxiter: int | None = None,
    krylov_dimension: int = 64,
    seed=None,
) -> Spectrum:
    r"""Safe bounds ``[lmin, lmax]`` on the spectrum of a symmetric PSD operator.

    ``method="lanczos"`` runs one implicitly restarted Lanczos (ARPACK ``eigsh``, ``which="BE"``)
    for both ends and widens the Ritz interval by the residual norms and ``safety``;
    ``method="exact"`` computes all eigenvalues of a dense matrix (``eigvalsh``) and applies no
    widening beyond ``safety``.

    Args:
        W: symmetric positive (semi)definite matrix (dense, scipy sparse) or a
            ``scipy.sparse.linalg.LinearOperator``.
        method: ``"lanczos"`` (default) or ``"exact"``.
        safety: factor >= 1 multiplying lmax and dividing lmin.
        tol: relative tolerance of the Ritz values (their residuals widen the interval, so a
            loose tolerance is safe).
        maxiter: cap on Lanczos restarts (ARPACK default when None).
        krylov_dimension: Lanczos basis size (ARPACK's ``ncv``); a larger basis needs fewer
            restarts: at kappa = 1000 and n = 2000, 64 vectors take about 4x fewer matvecs than
            ARPACK's default of 5.
        seed: seed of the random starting vector.

    Returns:
        :class:`Spectrum`. If Lanczos does not converge it warns (:class:`ConvergenceWarning`) and
        returns the widened interval of the best Ritz values it has, with ``converged=False``.

    Raises:
        ValueError: for non-square, non-finite or non-symmetric input, or a spectrum with a
            negative end (an indefinite operator).

    >>> W = np.diag([1.0, 2.0, 4.0])
    >>> s = estimate_spectrum(W, method="exact", safety=1.0)
    >>> (s.lmin, s.lmax)
    (1.0, 4.0)
    """
    check_choice(method, "method", METHODS)
    safety = check_real(safety, "safety", low=1.0)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    W = as_matrix_or_operator(W)
    n = W.shape[0]
    if method == "exact" or n <= 3:
        if isinstance(W, spla.LinearOperator):
            raise ValueError("method='exact' needs a dense or sparse W, not a LinearOperator")
        dense = W.toarray() if sp.issparse(W) else W
        eigenvalues = np.linalg.eigvalsh(np.asarray(dense, dtype=np.float64))
        return _widened(eigenvalues[0], eigenvalues[-1], 0.0, 0.0, safety, 0, True, "exact")

    counter = _CountingOperator(W)
    start = check_rng(seed).standard_normal(n)
    if maxiter is not None:
        maxiter = check_int(maxiter, "maxiter", low=1)
    krylov_dimension = min(check_int(krylov_dimension, "krylov_dimension", low=3), n)
    converged = True
    try:
        values, vectors = spla.eigsh(counter, k=2, which="BE", tol=tol, v0=start, maxiter=maxiter,
                                   ncv=krylov_dimension)
    except spla.ArpackNoConvergence as exc:
        converged = False
        values, vectors = exc.eigenvalues, exc.eigenvectors
        warnings.warn(
            f"Lanczos did not converge after {counter.count} matvecs; returning widened bounds "
            f"from {len(values)} partial Ritz values",
            ConvergenceWarning,
            stacklevel=2,
        )
        if len(values) == 0:
            return _power_fallback(counter, start, safety)
    order = np.argsort(values)
    values, vectors = values[order], vectors[:, order]
    residuals = np.linalg.norm(counter.W @ vectors - vectors * values, axis=0)
    counter.count += vectors.shape[1]
    return _widened(values[0], values[-1], residuals[0], residuals[-1], safety, counter.count,
                    converged, "lanczos")


def _widened(ritz_min, ritz_max, res_min, res_max, safety, matvecs, converged, method) -> Spectrum:
    ritz_min, ritz_max = float(ritz_min), float(ritz_max)
    scale = max(abs(ritz_max), np.finfo(float).tiny)
    if ritz_min < -1e-8 * scale:
        raise ValueError(
            f"W must be positive semidefinite, but it has an eigenvalue near {ritz_min:.3g}"
        )
    lmin = max(ritz_min - float(res_min), 0.0) / safety
    lmax = (ritz_max + float(res_max)) * safety
    return Spectrum(lmin, lmax, max(ritz_min, 0.0), ritz_max, int(matvecs), converged, method)


def _power_fallback(counter: _CountingOperator, start: np.ndarray, safety: float) -> Spectrum:
    """Power iteration bound for lmax when Lanczos returned nothing; lmin is unknown (0)."""
    vector = start / np.linalg.norm(start)
    estimate = 0.0
    for _ in range(50):
        image = counter.matvec(vector)
        estimate = float(np.linalg.norm(image))
        if estimate == 0.0:
            break
        vector = image / estimate
    return Spectrum(0.0, estimate * max(safety, 1.1), 0.0, estimate, counter.count, False, "power")


def marchenko_pastur_edges(n: int, m: int, variance: float = 1.0) -> tuple[float, float]:
    r"""Edges of the Marchenko-Pastur law for :math:`A^\top A`, A of shape (m, n), iid entries.

    With entry variance :math:`v`, the nonzero spectrum of :math:`A^\top A` concentrates on
    :math:`[v(\sqrt m - \sqrt n)^2,\; v(\sqrt m + \sqrt n)^2]` as n, m grow: data-free bounds for
    Chebyshev steps on Gaussian ensembles. For m < n, :math:`A^\top A` is singular and the lower
    edge describes its nonzero eigenvalues only.

    >>> [round(e, 4) for e in marchenko_pastur_edges(300, 600, 1 / 300)]
    [0.1716, 5.8284]
    """
    n = check_int(n, "n", low=1)
    m = check_int(m, "m", low=1)
    variance = check_real(variance, "variance", low=0, low_inclusive=False)
    return (float(variance * (np.sqrt(m) - np.sqrt(n)) ** 2),
            float(variance * (np.sqrt(m) + np.sqrt(n)) ** 2))
