r"""Chebyshev steps as a multigrid smoother, in pyamg's relaxation signature.

One application of the smoother runs ``degree`` preconditioned Richardson steps

.. math::

    x \leftarrow x + \gamma_t D^{-1} (b - A x), \qquad t = 0, \dots, \text{degree} - 1,

with :math:`D = \operatorname{diag}(A)` (or :math:`D = I` without a preconditioner) and the
Chebyshev steps :math:`\gamma_t` of :func:`~stepsize.chebyshev.chebyshev_steps` for an interval
:math:`[a, b]` around the upper part of the spectrum of :math:`D^{-1} A`. The error goes through
the Chebyshev polynomial :math:`e \leftarrow \prod_t (I - \gamma_t D^{-1} A)\, e`, which is at
most :math:`1 / T_d((b + a)/(b - a))` in size on :math:`[a, b]` (the oscillatory error a coarse
grid cannot see) and leaves the smooth error to the coarse grid.

The interval follows pyamg's ``'chebyshev'`` smoother
(``pyamg.relaxation.smoothing.setup_chebyshev``): :math:`[a, b] = [\text{lower}\,\rho,
\text{upper}\,\rho]` with ``lower = 1/30``, ``upper = 1.1`` and :math:`\rho` an estimate of the
largest eigenvalue, computed once when the smoother is built. pyamg applies its polynomial to A
itself (``approximate_spectral_radius(A)``, no diagonal scaling); ``preconditioner=None`` is that
same polynomial, ``"jacobi"`` (default) scales by the diagonal first, which matters for matrices
with a varying diagonal.

pyamg applies the polynomial through its monomial coefficients by Horner's rule, which loses
accuracy at high degree; here the steps are applied one at a time in the ``"fractal"``
(Lebedev-Finogenov) order, which keeps every partial product bounded, so degrees 16 and 32 stay
accurate (measured in ``docs/chebyshev.md``).

The smoother validates A once, when it is built (shape, finiteness, symmetry, positive
diagonal), and precomputes :math:`D^{-1}`, :math:`D^{-1} A` (sharing A's sparsity structure) and
the steps; a call does no checks beyond an O(1) guard and runs ``degree`` sparse products in a
residual recurrence, :math:`z = D^{-1}(b - A x)`, :math:`x \mathrel{+}= \gamma_t z`,
:math:`z \mathrel{-}= \gamma_t D^{-1} A z`, with BLAS ``axpy`` updates in place.

Reference: S. Takabe and T. Wadayama, "Convergence Acceleration via Chebyshev Step",
arXiv:2010.13335; M. Adams, M. Brezina, J. Hu and R. Tuminaro, "Parallel multigrid smoothing:
polynomial versus Gauss-Seidel", J. Comput. Phys. 188 (2003).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg.blas import get_blas_funcs

from stepsize._validation import check_choice, check_int, check_real, check_rng, describe
from stepsize.chebyshev.solvers import preconditioned_spectrum
from stepsize.chebyshev.spectrum import Spectrum, as_matrix_or_operator
from stepsize.chebyshev.steps import ORDERS, _check_interval, chebyshev_steps

__all__ = ["ChebyshevSmoother", "attach_smoothers", "chebyshev_smoother"]

PRECONDITIONERS = ("jacobi", None)


class ChebyshevSmoother:
    """A built Chebyshev smoother: call it as ``smoother(A, x, b)`` to update ``x`` in place.

    Made by :func:`chebyshev_smoother`. Attributes: ``degree``, ``preconditioner``, ``steps``
    (the step sizes in the order applied), ``interval`` (the ``(a, b)`` the steps are built for),
    ``spectrum`` (the Spectrum used, estimated or given; None when an interval pair was given).
    """

    def __init__(self, matrix, scaled, inverse_diagonal, steps, interval, spectrum,
                 preconditioner):
        self.matrix = matrix
        self._scaled = scaled
        self._inverse_diagonal = inverse_diagonal
        self.steps = steps
        self._step_list = [float(step) for step in steps]
        self._negated_steps = [-step for step in self._step_list]
        self.interval = interval
        self.spectrum = spectrum
        self.preconditioner = preconditioner
        self.degree = len(steps)
        self._dtype = np.dtype(scaled.dtype)
        self._axpy = get_blas_funcs("axpy", dtype=self._dtype)
        self._buffer = np.empty(matrix.shape[0], dtype=self._dtype)

    def __repr__(self) -> str:
        a, b = self.interval
        return (f"ChebyshevSmoother(degree={self.degree}, preconditioner={self.preconditioner!r}, "
                f"interval=({a:.4g}, {b:.4g}))")

    def __call__(self, A, x, b) -> None:
        if A is not self.matrix:
            raise ValueError("A must be the matrix this smoother was built for (got another "
                             f"object: {describe(A)}); build one smoother per matrix")
        if x.dtype != self._dtype or not x.flags.c_contiguous:
            raise ValueError(f"x must be a contiguous {self._dtype} array updated in place, got "
                             f"{describe(x)}")
        if x.ndim != 1:
            x = x.reshape(-1)
            b = b.reshape(-1)
        scaled, inverse, axpy = self._scaled, self._inverse_diagonal, self._axpy
        # z = D^{-1} (b - A x); a zero x (coarse levels of a V-cycle) saves one product.
        if x[0] == 0 and not x.any():
            z = b * inverse if inverse is not None else np.array(b, dtype=self._dtype)
        else:
            z = scaled @ x
            if inverse is None:
                np.subtract(b, z, out=z)
            else:
                np.subtract(np.multiply(b, inverse, out=self._buffer), z, out=z)
        steps, negated = self._step_list, self._negated_steps
        last = len(steps) - 1
        for t in range(last):
            axpy(z, x, a=steps[t])
            axpy(scaled @ z, z, a=negated[t])
        axpy(z, x, a=steps[last])


def _validated_matrix(A):
    """A as a checked float dense array or CSR matrix (not a LinearOperator: the smoother needs
    its diagonal and entries)."""
    if isinstance(A, spla.LinearOperator):
        raise TypeError("A must be a dense array or a scipy sparse matrix (its diagonal and "
                        "entries are needed), got a LinearOperator")
    validated = as_matrix_or_operator(A, "A")
    if validated.shape[0] == 0:
        raise ValueError("A must not be empty, got shape (0, 0)")
    if validated.dtype.kind != "f":
        validated = validated.astype(np.float64)
    return validated


def _inverse_diagonal(A):
    diagonal = np.asarray(A.diagonal())
    smallest = float(diagonal.min())
    if not smallest > 0:
        raise ValueError(f"A must have a positive diagonal (an SPD matrix has one), got "
                         f"min A[i, i] = {smallest:.3g}")
    return 1.0 / diagonal


def _row_scaled(A, inverse):
    """:math:`D^{-1} A`, sharing the index arrays of a CSR A."""
    if isinstance(A, np.ndarray):
        return inverse[:, None] * A
    rows = np.repeat(inverse, np.diff(A.indptr))
    return sp.csr_array((A.data * rows, A.indices, A.indptr), shape=A.shape)


def _interval(spectrum, estimate, lower, upper):
    """The ``(a, b)`` the steps are built for, and the Spectrum behind it (None if given)."""
    if spectrum is None:
        spectrum = estimate()
    if isinstance(spectrum, Spectrum):
        rho = check_real(spectrum.ritz_max, "spectrum.ritz_max", low=0, low_inclusive=False)
        return (lower * rho, upper * rho), spectrum
    if isinstance(spectrum, (str, bytes)) or not hasattr(spectrum, "__len__") or len(
            spectrum) != 2:
        raise TypeError(f"spectrum must be None, a Spectrum or a pair (lmin, lmax), got "
                        f"{describe(spectrum)}")
    a, b = _check_interval(*(check_real(v, "spectrum") for v in spectrum))
    return (a, b), None


def chebyshev_smoother(
    A,
    degree: int = 3,
    *,
    preconditioner: str | None = "jacobi",
    spectrum=None,
    lower: float = 1 / 30,
    upper: float = 1.1,
    order: str = "fractal",
    estimate_iter: int = 15,
    seed=None,
) -> ChebyshevSmoother:
    r"""A Chebyshev polynomial smoother for the SPD matrix A, in pyamg's relaxation signature.

    Each call ``smoother(A, x, b)`` updates ``x`` in place by ``degree`` steps
    :math:`x \leftarrow x + \gamma_t D^{-1}(b - A x)`, so the error is multiplied by
    :math:`\prod_t (I - \gamma_t D^{-1} A)`; :math:`\gamma_t` are the Chebyshev steps of
    ``[a, b] = [lower * rho, upper * rho]`` (pyamg's convention) in the stable order.

    Args:
        A: symmetric positive definite matrix (scipy sparse, any format, or a dense array).
            Checked once here; calls must pass this same object.
        degree: steps (sparse products) per call, ``>= 1``.
        preconditioner: ``"jacobi"`` (:math:`D = \operatorname{diag}(A)`) or None
            (:math:`D = I`, pyamg's ``'chebyshev'`` polynomial in A).
        spectrum: None to estimate rho once with
            :func:`~stepsize.chebyshev.preconditioned_spectrum` (CG-Lanczos, ``estimate_iter``
            steps); a :class:`~stepsize.chebyshev.Spectrum` of :math:`D^{-1} A`, whose raw
            ``ritz_max`` is taken as rho; or a pair ``(a, b)`` used as the interval itself
            (``lower`` and ``upper`` are then unused).
        lower, upper: interval ends as fractions of rho, ``0 < lower < upper``.
        order: step order (see :func:`~stepsize.chebyshev.chebyshev_order`); ``"fractal"`` stays
            accurate at high degree, ``"natural"`` does not.
        estimate_iter: CG-Lanczos steps of the estimate, one product each (as ``estimate_iter``
            of :func:`~stepsize.chebyshev.chebyshev_gd`).
        seed: seed of the estimate's random start.

    Returns:
        :class:`ChebyshevSmoother`, a callable ``smoother(A, x, b) -> None``.

    >>> import scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(50, 50), format="csr")
    >>> smoother = chebyshev_smoother(A, degree=3, seed=0)
    >>> smoother
    ChebyshevSmoother(degree=3, preconditioner='jacobi', interval=(0.06659, 2.197))
    >>> x, b = (-1.0) ** np.arange(50), np.zeros(50)  # the most oscillatory error
    >>> smoother(A, x, b)  # in place
    >>> round(float(np.linalg.norm(x) / np.sqrt(50)), 2)
    0.21
    """
    matrix = A
    validated = _validated_matrix(A)
    degree = check_int(degree, "degree", low=1)
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be 'jacobi' or None, got {preconditioner!r}")
    lower = check_real(lower, "lower", low=0, low_inclusive=False)
    upper = check_real(upper, "upper", low=0, low_inclusive=False)
    if not lower < upper:
        raise ValueError(f"lower must be < upper, got lower={lower!r}, upper={upper!r}")
    check_choice(order, "order", ORDERS)
    estimate_iter = check_int(estimate_iter, "estimate_iter", low=1)
    rng = check_rng(seed)
    inverse = _inverse_diagonal(validated)
    interval, estimate = _interval(
        spectrum,
        lambda: preconditioned_spectrum(validated, preconditioner, max_iter=estimate_iter,
                                        seed=rng),
        lower, upper)
    steps = chebyshev_steps(*interval, degree, order)
    if preconditioner is None:
        scaled, inverse = validated, None
    else:
        scaled = _row_scaled(validated, inverse.astype(validated.dtype))
    return ChebyshevSmoother(matrix, scaled, inverse, steps.astype(validated.dtype), interval,
                             estimate, preconditioner)


def attach_smoothers(
    ml,
    degree: int = 3,
    *,
    spectrum=None,
    preconditioner: str | None = "jacobi",
    lower: float = 1 / 30,
    upper: float = 1.1,
    order: str = "fractal",
    estimate_iter: int = 15,
    seed=None,
):
    """Install a Chebyshev smoother as pre- and post-smoother on every level of a pyamg solver.

    Every level but the coarsest (which pyamg solves directly, as in
    ``pyamg.relaxation.smoothing.change_smoothers``) gets one smoother, built for that level's
    matrix and used both before and after the coarse-grid correction, so the V-cycle stays
    symmetric (usable as a CG preconditioner).

    Args:
        ml: a ``pyamg.MultilevelSolver``.
        degree: steps per smoothing call.
        spectrum: None (estimate per level) or a sequence with one entry per smoothed level, each
            a :class:`~stepsize.chebyshev.Spectrum` or an interval pair, as in
            :func:`chebyshev_smoother`.
        preconditioner, lower, upper, order, estimate_iter: as in :func:`chebyshev_smoother`,
            for every level.
        seed: seed of the estimates' random starts (one generator across the levels).

    Returns:
        ``ml``, modified in place.

    >>> import pyamg
    >>> ml = pyamg.smoothed_aggregation_solver(pyamg.gallery.poisson((30, 30), format="csr"))
    >>> ml = attach_smoothers(ml, degree=3, seed=0)
    >>> residuals = []
    >>> _ = ml.solve(np.ones(900), tol=1e-8, residuals=residuals)
    >>> bool(residuals[-1] < 1e-8 * residuals[0]), len(residuals) - 1 < 25
    (True, True)
    """
    levels = getattr(ml, "levels", None)
    if not isinstance(levels, list) or not levels or not all(
            hasattr(level, "A") for level in levels):
        raise TypeError(f"ml must be a pyamg MultilevelSolver (with .levels, each with .A), got "
                        f"{describe(ml)}")
    smoothed = levels[:-1]
    if spectrum is not None:
        if not hasattr(spectrum, "__len__") or len(spectrum) != len(smoothed):
            raise ValueError(f"spectrum must be None or have one entry per smoothed level "
                             f"({len(smoothed)}), got {describe(spectrum)}")
    rng = check_rng(seed)
    for index, level in enumerate(smoothed):
        smoother = chebyshev_smoother(
            level.A, degree, preconditioner=preconditioner,
            spectrum=None if spectrum is None else spectrum[index], lower=lower, upper=upper,
            order=order, estimate_iter=estimate_iter, seed=rng)
        level.presmoother = smoother
        level.postsmoother = smoother
    ml.symmetric_smoothing = True
    return ml
