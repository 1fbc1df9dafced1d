r"""First-order solvers for :math:`W x = c` with W symmetric positive definite.

All solvers share one driver (:func:`_drive`): a method is a generator that performs one operator
application per iteration and yields the new iterate and residual; the driver records the history,
checks the tolerance and counts matvecs. Right-hand sides may be batched (``c`` of shape (n, k)),
and numpy arrays, scipy sparse matrices, LinearOperators and torch tensors (any device, any float
dtype; the iteration runs in the dtype of ``c``) are accepted.

- :func:`gradient_descent`: :math:`x_{t+1} = x_t + \gamma_{t \bmod T} (c - W x_t)`, a periodic
  step sequence (constant step for T = 1).
- :func:`chebyshev_gd`: the same with Chebyshev steps from an (estimated) spectrum; the paper's
  CHGD. Its error meets the Chebyshev bound at multiples of T only.
- :func:`chebyshev_semi_iterative`: the three-term Chebyshev recurrence (Golub & Varga 1961),
  optimal at every iteration, immune to step ordering.
- :func:`heavy_ball`: Polyak's momentum with the optimal constants.
- :func:`conjugate_gradient`: the Krylov-optimal reference (uses inner products), column-wise
  for batches.

Least squares :math:`\min \|A x - y\|` runs through :func:`normal_equations`, which applies
:math:`A^\top A` without forming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize._results import SolverResult, warn_not_converged
from stepsize._validation import check_array, check_int, check_real
from stepsize.chebyshev.spectrum import Spectrum, as_matrix_or_operator, estimate_spectrum
from stepsize.chebyshev.steps import (
    _check_interval,
    chebyshev_steps,
    heavy_ball_parameters,
)

__all__ = [
    "NormalOperator",
    "chebyshev_gd",
    "chebyshev_period",
    "chebyshev_semi_iterative",
    "conjugate_gradient",
    "gradient_descent",
    "heavy_ball",
    "normal_equations",
]


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch")


class NormalOperator:
    r"""The operator :math:`x \mapsto A^\top (A x)` of the normal equations, never formed.

    Works for dense numpy arrays, scipy sparse matrices, LinearOperators and torch tensors.
    """

    def __init__(self, A):
        if _is_torch(A):
            if A.ndim != 2:
                raise ValueError(f"A must be a matrix, got shape {tuple(A.shape)}")
        elif not (isinstance(A, spla.LinearOperator) or sp.issparse(A)):
            A = check_array(A, "A", ndim=2, dtype=None)
        self.A = A
        self.shape = (A.shape[1], A.shape[1])
        self.dtype = A.dtype

    def __matmul__(self, x):
        return self.A.T @ (self.A @ x)


def normal_equations(A, y) -> tuple[NormalOperator, object]:
    r"""``(W, c)`` with :math:`W = A^\top A` (as an operator) and :math:`c = A^\top y`.

    >>> A = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> W, c = normal_equations(A, np.array([1.0, 2.0, 3.0]))
    >>> (W @ np.ones(2)).tolist(), c.tolist()
    ([1.0, 4.0], [1.0, 4.0])
    """
    W = NormalOperator(A)
    if not _is_torch(y):
        y = check_array(y, "y", ndim=(1, 2), dtype=None)
    if y.shape[0] != W.A.shape[0]:
        raise ValueError(f"y must have {W.A.shape[0]} rows to match A, got shape {tuple(y.shape)}")
    return W, W.A.T @ y


def _check_torch(tensor, name: str):
    import torch

    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite, but it has NaN or infinite entries")
    return tensor if tensor.is_floating_point() else tensor.double()


def _validated_vector(value, name: str, like):
    """Check ``c``, ``x0`` or ``x_true``: finite, floating, and (but for c) shaped like ``like``."""
    if _is_torch(value):
        value = _check_torch(value, name)
    else:
        value = check_array(value, name, ndim=(1, 2), dtype=None)
        if value.dtype.kind != "f":
            value = value.astype(np.float64)
    if like is not None and tuple(value.shape) != tuple(like.shape):
        raise ValueError(f"{name} must have the shape of c {tuple(like.shape)}, got "
                         f"{tuple(value.shape)}")
    return value


def _validated_system(W, c, x0, x_true=None):
    """Check the operator and vectors once; return W, c, the starting point and x_true."""
    if _is_torch(W):
        if W.ndim != 2 or W.shape[0] != W.shape[1]:
            raise ValueError(f"W must be a square matrix, got shape {tuple(W.shape)}")
        W = _check_torch(W, "W")
        gap = float((W - W.T).abs().max())
        if gap > 1e-6 * max(float(W.abs().max()), np.finfo(float).tiny):
            raise ValueError(f"W must be symmetric: max |W - W^T| = {gap:.3g}")
    elif not isinstance(W, NormalOperator):
        W = as_matrix_or_operator(W)
    c = _validated_vector(c, "c", None)
    if c.ndim not in (1, 2) or c.shape[0] != W.shape[0]:
        raise ValueError(f"c must have shape ({W.shape[0]},) or ({W.shape[0]}, k), got "
                         f"{tuple(c.shape)}")
    x0 = c * 0 if x0 is None else _validated_vector(x0, "x0", c)
    if x_true is not None:
        x_true = _validated_vector(x_true, "x_true", c)
    return W, c, x0, x_true


def _column_norms(X):
    if _is_torch(X):
        import torch

        return torch.linalg.vector_norm(X, dim=0).cpu().numpy().astype(np.float64)
    if X.ndim == 2:  # einsum avoids the temporary of X * X
        return np.sqrt(np.einsum("ij,ij->j", X, X, dtype=np.float64))
    return np.linalg.norm(X, axis=0).astype(np.float64)


# In-place kernels: on large batches, fresh temporaries cost more in page faults than the
# arithmetic (a 10^4 x 256 sparse iteration measured 18 ms with temporaries, 13 ms in place).


def _copy(x):
    return x.clone() if _is_torch(x) else np.array(x, copy=True)


def _axpy(alpha, x, y, buffer):
    """y += alpha * x in place (``buffer`` is scratch space shaped like x for numpy)."""
    if _is_torch(y):
        y.add_(x, alpha=float(alpha))
    else:
        np.multiply(x, alpha, out=buffer)
        y += buffer


def _residual(W, c, x, out):
    """c - W x, written into ``out`` when W is a dense array of the right dtype."""
    if isinstance(W, np.ndarray) and isinstance(out, np.ndarray) and out.dtype == np.result_type(
            W, x):
        np.matmul(W, x, out=out)
    else:
        out = W @ x
    if _is_torch(out):
        return out.neg_().add_(c)
    return np.subtract(c, out, out=out)


def _dot_columns(X, Y):
    return (X * Y).sum(0)


_Method = Callable[[object, object, object], Iterator[tuple[object, object]]]


def _drive(
    name: str,
    method: Iterator,
    W,
    c,
    x0,
    *,
    n_iter: int,
    tol: float | None,
    x_true,
    history: bool,
    warn: bool,
    extra_matvecs: int = 0,
    info: dict | None = None,
) -> SolverResult:
    """Run ``method`` for at most ``n_iter`` iterations, recording the error or residual.

    The history holds :math:`\\|X_t - X^\\star\\|_F / \\|X_0 - X^\\star\\|_F` when ``x_true`` is
    given, else :math:`\\|c - W X_t\\|_F / \\|c - W X_0\\|_F`, for t = 0..n_iter (with x0 = 0 these
    are the relative error and residual). Convergence means every column's relative residual
    :math:`\\|c - W x\\| / \\|c\\|` is at most ``tol``. Matvecs count the method's
    operator applications per column (the initial residual included). A method yields ``(x, r)``
    after each iteration, or ``(x, r, steps, extra)`` after ``steps`` iterations that also spent
    ``extra`` operator applications per column (then the history has one entry per yield).
    """
    columns = 1 if c.ndim == 1 else c.shape[1]
    c_norms = np.maximum(_column_norms(c.reshape(c.shape[0], -1)), np.finfo(float).tiny)

    def frobenius(X):
        return float(np.linalg.norm(_column_norms(X.reshape(X.shape[0], -1))))

    trace = None
    if history:  # the initial residual costs one extra matvec, spent only for the history
        initial = frobenius(c - W @ x0) if x_true is None else frobenius(x0 - x_true)
        initial = max(initial, np.finfo(float).tiny)
        trace = [1.0]

    def record(x, r):
        return (frobenius(r) if x_true is None else frobenius(x - x_true)) / initial

    converged, iterations, extra = False, 0, 0
    for x, r, *counts in method:
        steps, products = counts or (1, 0)
        iterations += steps
        extra += products
        if history:
            trace.append(record(x, r))
        if tol is not None and np.all(_column_norms(r.reshape(r.shape[0], -1)) / c_norms <= tol):
            converged = True
            break
        if iterations >= n_iter:
            break
    if tol is None:
        converged = True
        message = f"ran {iterations} iterations"
    elif converged:
        message = f"relative residual <= {tol:g} after {iterations} iterations"
    else:
        message = f"relative residual above {tol:g} after {iterations} iterations"
        if warn:
            warn_not_converged(name, iterations, f"tol={tol:g}", stacklevel=4)
    details = {"matvecs": (iterations + 1 + extra) * columns + extra_matvecs, **(info or {})}
    return SolverResult(x=x, n_iter=iterations, converged=converged, history=trace,
                        message=message, info=details)


def _check_budget(n_iter, tol, default):
    n_iter = default if n_iter is None else check_int(n_iter, "n_iter", low=1)
    if tol is not None:
        tol = check_real(tol, "tol", low=0, low_inclusive=False)
    return n_iter, tol


def _cast_steps(steps, like):
    if _is_torch(like):
        import torch

        return torch.as_tensor(steps, dtype=like.dtype, device=like.device)
    return np.asarray(steps, dtype=like.dtype)


# Sparse products with many right-hand sides are bandwidth-bound: the (n, k) iterates of a 10^4 x
# 256 batch (20 MB each) fall out of cache between passes. Solving blocks of columns whose
# per-iteration working set stays within this budget is 2x to 4x faster per column on a 2-D grid
# (docs/chebyshev.md; on that grid 32 float64 or 64 float32 columns beat both halving and
# doubling the block). Dense W is not split: its own reads dominate, and a GEMM over all columns
# reads it once per iteration.
_BLOCK_BYTES = 12 * 2**20


def _column_blocks(W, c, history: bool, entry_bytes: int) -> list[slice] | None:
    """Column slices for a sparse, batched, history-free solve; None to solve in one piece.

    ``entry_bytes`` is what one entry of a column costs per iteration over all work arrays.
    """
    if history or not (sp.issparse(W) and isinstance(c, np.ndarray) and c.ndim == 2):
        return None
    width = max(8, 2 ** int(np.log2(max(_BLOCK_BYTES // (entry_bytes * c.shape[0]), 1))))
    if width >= c.shape[1]:
        return None
    return [slice(j, j + width) for j in range(0, c.shape[1], width)]


def _in_column_blocks(solver, kernel, W, c, x0, *, entry_bytes, history, warn, extra_matvecs,
                      **options):
    """Run ``kernel`` on the whole batch or block by block (:func:`_column_blocks`).

    Columns are independent in every method here, so blocks are exact: the merged result has
    ``x`` stacked, ``n_iter`` the largest block's, ``converged`` when every block converged, and
    the matvecs of all blocks plus ``extra_matvecs`` (the shared spectrum estimate) once.
    """
    blocks = _column_blocks(W, c, history, entry_bytes)
    if blocks is None:
        return kernel(W, c, x0, history=history, warn=warn, extra_matvecs=extra_matvecs,
                      **options)
    parts = [kernel(W, np.ascontiguousarray(c[:, b]), np.ascontiguousarray(x0[:, b]),
                    history=False, warn=False, extra_matvecs=0, **options) for b in blocks]
    result = parts[0]
    result.x = np.hstack([part.x for part in parts])
    result.n_iter = max(part.n_iter for part in parts)
    result.converged = all(part.converged for part in parts)
    result.info["matvecs"] = sum(part.info["matvecs"] for part in parts) + extra_matvecs
    result.info["column_blocks"] = len(blocks)
    tol = options.get("tol")
    if tol is not None:
        state = "<=" if result.converged else "above"
        result.message = (f"relative residual {state} {tol:g} after at most {result.n_iter} "
                          f"iterations ({len(blocks)} column blocks)")
        if warn and not result.converged:
            warn_not_converged(solver, result.n_iter, f"tol={tol:g}", stacklevel=4)
    return result


def gradient_descent(
    W, c, steps, *, x0=None, n_iter=None, tol=None, x_true=None, history=False, warn=True,
) -> SolverResult:
    r"""Gradient descent with a periodic step sequence on :math:`\tfrac12 x^\top W x - c^\top x`.

    :math:`x_{t+1} = x_t + \gamma_{t \bmod T}\,(c - W x_t)`; one matvec per iteration.

    Args:
        W: SPD matrix, sparse matrix, LinearOperator, :class:`NormalOperator` or torch tensor.
        c: right-hand side, shape (n,) or (n, k).
        steps: a positive scalar or a sequence of T steps, repeated periodically.
        x0: starting point (zeros by default).
        n_iter: iterations (default: one period T).
        tol: stop when every column's relative residual is <= tol (None: run n_iter).
        x_true: if given, the history records the relative error instead of the residual.
        history: record the per-iteration relative error (or residual).
        warn: warn with :class:`~stepsize.ConvergenceWarning` when ``tol`` is not met.

    Returns:
        :class:`~stepsize.SolverResult` with ``info["matvecs"]``.

    >>> W = np.diag([1.0, 2.0])
    >>> gradient_descent(W, np.array([1.0, 2.0]), [1.0, 0.5]).x.tolist()
    [1.0, 1.0]
    """
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    steps = check_array(np.atleast_1d(np.asarray(steps, dtype=np.float64)), "steps", ndim=1)
    if np.any(steps <= 0):
        raise ValueError(f"steps must be positive, got min {steps.min():.3g}")
    n_iter, tol = _check_budget(n_iter, tol, steps.size)
    return _in_column_blocks("gradient_descent", _periodic_descent, W, c, x0, steps=steps,
                             entry_bytes=_DESCENT_ARRAYS * c.dtype.itemsize, n_iter=n_iter,
                             tol=tol, x_true=x_true, history=history, warn=warn, extra_matvecs=0)


# Work arrays touched per iteration: x, r, c and the axpy buffer for periodic descent; the four
# float32 arrays (right-hand side, correction, residual, buffer) of a mixed-precision period.
_DESCENT_ARRAYS = 4
_MIXED_ENTRY_BYTES = 4 * 4


def _periodic_descent(W, c, x0, *, steps, name="gradient_descent", extra_matvecs=0, info=None,
                      **options):
    """GD kernel of :func:`gradient_descent` and :func:`chebyshev_gd`; inputs already checked."""
    gammas = _cast_steps(steps, c)

    def method():
        x, r = _copy(x0), c - W @ x0
        buffer = r * 0
        t = 0
        while True:
            _axpy(gammas[t % len(gammas)], r, x, buffer)
            r = _residual(W, c, x, r)
            t += 1
            yield x, r

    return _drive(name, method(), W, c, x0, extra_matvecs=extra_matvecs,
                  info={"steps": steps, **(info or {})}, **options)


def _spectrum_of(W, spectrum, lmin, lmax, seed) -> tuple[float, float, int]:
    if spectrum is not None:
        if not isinstance(spectrum, Spectrum):
            raise TypeError(f"spectrum must be a Spectrum, got {type(spectrum).__name__}")
        return spectrum.lmin, spectrum.lmax, spectrum.matvecs
    if lmin is not None and lmax is not None:
        lmin, lmax = _check_interval(lmin, lmax)
        return lmin, lmax, 0
    if lmin is not None or lmax is not None:
        raise ValueError("give both lmin and lmax, or neither (to estimate them)")
    operator = W
    if _is_torch(W) or isinstance(W, NormalOperator):
        operator = spla.LinearOperator(W.shape, matvec=lambda v: _to_numpy(W @ _like(W, v)),
                                       dtype=np.float64)
    estimate = estimate_spectrum(operator, seed=seed)
    if estimate.lmin <= 1e-12 * estimate.lmax:
        raise ValueError(f"W appears singular (estimated lmin {estimate.lmin:.3g}, lmax "
                         f"{estimate.lmax:.3g}); Chebyshev steps need lmin > 0")
    return estimate.lmin, estimate.lmax, estimate.matvecs


def _like(W, v):
    operand = W.A if isinstance(W, NormalOperator) else W
    if _is_torch(operand):
        import torch

        return torch.as_tensor(v, dtype=operand.dtype, device=operand.device)
    return v


def _to_numpy(x):
    return x.detach().cpu().numpy().astype(np.float64) if _is_torch(x) else np.asarray(x)


def chebyshev_gd(
    W, c, *, T=None, lmin=None, lmax=None, spectrum=None, order="fractal", x0=None,
    n_iter=None, tol=None, x_true=None, history=False, warn=True, seed=None,
    mixed_precision=False,
) -> SolverResult:
    r"""Chebyshev gradient descent (CHGD): periodic Chebyshev steps for ``[lmin, lmax]``.

    Without ``lmin``/``lmax``/``spectrum`` the interval comes from :func:`estimate_spectrum` and
    its matvecs are included in ``info["matvecs"]``. The period defaults to
    :math:`T = \lceil \sqrt\kappa \,\ln(2/\epsilon)/2 \rceil` capped to [8, 256] with
    :math:`\epsilon` = ``tol`` (or 1e-8), long enough for the per-period bound to reach
    :math:`\epsilon`.

    With ``mixed_precision=True`` (float64 ``c``, a dense, sparse or torch ``W``; see
    :func:`_mixed_precision_descent`) the periods run in float32 and each is corrected by one
    float64 residual (iterative refinement): the same float64 accuracy at about half the cost
    per iteration, since float32 products move half the bytes. ``T`` is then chosen per period.

    >>> W = np.diag([1.0, 2.0, 4.0])
    >>> r = chebyshev_gd(W, np.ones(3), lmin=1.0, lmax=4.0, T=3, n_iter=9)
    >>> bool(np.allclose(r.x, [1.0, 0.5, 0.25], atol=1e-3))
    True
    """
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    if T is not None:
        T = check_int(T, "T", low=1)
    if tol is not None:
        tol = check_real(tol, "tol", low=0, low_inclusive=False)
    if mixed_precision:
        if T is not None:
            raise ValueError("T is chosen per period when mixed_precision=True; leave T=None")
        if str(c.dtype) not in ("float64", "torch.float64"):
            raise ValueError(f"mixed_precision refines float64 solves; c has dtype {c.dtype}")
        # the float32 copy also serves the spectrum estimate: bounds need no float64 accuracy
        W_low = _low_precision(W)
        lmin, lmax, estimation_matvecs = _spectrum_of(W_low, spectrum, lmin, lmax, seed)
        if lmax / lmin > _MIXED_PRECISION_MAX_KAPPA:
            raise ValueError(f"mixed_precision needs lmax / lmin <= "
                             f"{_MIXED_PRECISION_MAX_KAPPA:g} (float32 cannot resolve the "
                             f"system), got {lmax / lmin:.3g}")
        result = _in_column_blocks(
            "chebyshev_gd", _mixed_precision_descent, W, c, x0, entry_bytes=_MIXED_ENTRY_BYTES,
            W_low=W_low, lmin=lmin, lmax=lmax, order=order, n_iter=n_iter, tol=tol,
            x_true=x_true, history=history, warn=warn, extra_matvecs=estimation_matvecs)
        result.info["estimation_matvecs"] = estimation_matvecs
        return result
    lmin, lmax, estimation_matvecs = _spectrum_of(W, spectrum, lmin, lmax, seed)
    if T is None:
        T = chebyshev_period(lmin, lmax, 1e-8 if tol is None else tol)
    n_iter, tol = _check_budget(n_iter, tol, T)
    steps = chebyshev_steps(lmin, lmax, T, order=order)
    return _in_column_blocks(
        "chebyshev_gd", _periodic_descent, W, c, x0, steps=steps, name="chebyshev_gd",
        entry_bytes=_DESCENT_ARRAYS * c.dtype.itemsize, n_iter=n_iter, tol=tol, x_true=x_true,
        history=history, warn=warn, extra_matvecs=estimation_matvecs,
        info={"lmin": lmin, "lmax": lmax, "T": T, "order": order,
              "estimation_matvecs": estimation_matvecs})


def chebyshev_period(lmin: float, lmax: float, reduction: float) -> int:
    r"""Period ``T`` whose Chebyshev bound reaches ``reduction``, clipped to [8, 256].

    :math:`1/T_T((\kappa+1)/(\kappa-1)) \le 2 r^T` with
    :math:`r = (\sqrt\kappa - 1)/(\sqrt\kappa + 1) \approx e^{-2/\sqrt\kappa}`, so
    :math:`T = \lceil \sqrt\kappa\,\ln(2/\epsilon)/2 \rceil` suffices; the cap keeps float32
    runs within the tested stability range of the fractal order.

    >>> chebyshev_period(1.0, 30.0, 1e-10)
    65
    """
    lmin, lmax = _check_interval(lmin, lmax)
    reduction = check_real(reduction, "reduction", low=0, high=1, low_inclusive=False)
    return int(np.clip(np.ceil(np.sqrt(lmax / lmin) * np.log(2 / reduction) / 2), 8, 256))


# What one float32 period can reduce the float64 residual by: the float32 copy of W and the
# float32 recurrence perturb the correction by about kappa * eps32 relative (measured on dense
# log-spaced spectra: 5e-6 at kappa 30, 1.3e-4 to 2.6e-4 at kappa 1000 whatever the period aimed
# at), so a period aims at no less than max(1e-5, 2 kappa eps32): lower targets only add steps.
# Above kappa 1e5 float32 cannot resolve the system and refinement would stall.
_FLOAT32_REDUCTION_FLOOR = 1e-5
_MIXED_PRECISION_MAX_KAPPA = 1e5


def _low_precision(W):
    """A float32 copy of a dense, sparse or torch operator (mixed precision needs the entries)."""
    if _is_torch(W):
        return W.float()
    if isinstance(W, np.ndarray) or sp.issparse(W):
        return W.astype(np.float32)
    raise TypeError("mixed_precision needs W as a dense array, a sparse matrix or a torch tensor, "
                    f"got {type(W).__name__}")


def _mixed_precision_descent(W, c, x0, *, W_low, lmin, lmax, order, n_iter, tol, x_true,
                             history, warn, extra_matvecs):
    r"""Chebyshev GD in float32 with float64 iterative refinement.

    Outer loop (float64): :math:`r_k = c - W x_k`, stop when every column's
    :math:`\|r_k\|/\|c\| \le` ``tol``. Inner loop (float32, no inner products, no checks): one
    period of Chebyshev GD for :math:`W d = r_k` from :math:`d = 0`, whose residual polynomial
    bounds :math:`\|r_k - W d\| \le \epsilon_k \|r_k\|` up to float32 rounding; then
    :math:`x_{k+1} = x_k + d`. The period aims at the reduction still needed,
    :math:`\epsilon_k = \max(\mathrm{tol}/\mathrm{res}_k,\ 10^{-5},\ 2\kappa\epsilon_{32})`,
    so a 1e-10 solve at moderate kappa takes two periods of float32 work plus two float64
    products. The history has one entry per period. Reference: iterative refinement (Wilkinson
    1963; Moler 1967); mixed precision as in Carson & Higham (SIAM J. Sci. Comput. 2018).
    Inputs are checked by :func:`chebyshev_gd`. ``n_iter`` caps the float32 steps; it is checked
    after each period, so the last period may run past it.
    """
    n_iter, tol = _check_budget(n_iter, tol, 10 * chebyshev_period(lmin, lmax, 1e-8))
    target = 1e-8 if tol is None else tol
    floor = max(_FLOAT32_REDUCTION_FLOOR, 2 * (lmax / lmin) * float(np.finfo(np.float32).eps))
    c_norms = np.maximum(_column_norms(c.reshape(c.shape[0], -1)), np.finfo(float).tiny)

    def method():
        x, r = _copy(x0), c - W @ x0
        while True:
            residual = float(np.max(_column_norms(r.reshape(r.shape[0], -1)) / c_norms))
            reduction = min(max(target / max(residual, np.finfo(float).tiny), floor), 0.5)
            steps = chebyshev_steps(lmin, lmax, chebyshev_period(lmin, lmax, reduction), order)
            rhs = r.float() if _is_torch(r) else r.astype(np.float32)
            gammas = _cast_steps(steps, rhs)
            d = rhs * 0
            inner, buffer = _copy(rhs), rhs * 0
            for gamma in gammas:
                _axpy(gamma, inner, d, buffer)
                inner = _residual(W_low, rhs, d, inner)
            x += d.double() if _is_torch(d) else d
            r = _residual(W, c, x, r)
            yield x, r, len(steps), 1  # one float64 residual per period

    return _drive("chebyshev_gd", method(), W, c, x0, n_iter=n_iter, tol=tol, x_true=x_true,
                  history=history, warn=warn, extra_matvecs=extra_matvecs,
                  info={"lmin": lmin, "lmax": lmax, "order": order, "mixed_precision": True})


def chebyshev_semi_iterative(
    W, c, *, lmin=None, lmax=None, spectrum=None, x0=None, n_iter=100, tol=None, x_true=None,
    history=False, warn=True, seed=None,
) -> SolverResult:
    r"""Chebyshev semi-iterative method (three-term recurrence; Golub & Varga 1961).

    With :math:`\theta = (l_{\max} + l_{\min})/2`, :math:`\delta = (l_{\max} - l_{\min})/2`,
    :math:`\sigma = \theta/\delta`: :math:`\rho_0 = 1/\sigma`, :math:`d_0 = r_0/\theta`, and

    .. math::

        x_{k+1} = x_k + d_k,\quad r_{k+1} = r_k - W d_k,\quad
        \rho_{k+1} = (2\sigma - \rho_k)^{-1},\quad
        d_{k+1} = \rho_{k+1}\rho_k d_k + \tfrac{2\rho_{k+1}}{\delta} r_{k+1}.

    The error after k steps is the scaled Chebyshev polynomial of degree k at *every* k, so it
    equals :func:`chebyshev_gd` with period k at t = k, and it has no ordering issue.
    """
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    lmin, lmax, estimation_matvecs = _spectrum_of(W, spectrum, lmin, lmax, seed)
    n_iter, tol = _check_budget(n_iter, tol, 100)
    theta, delta = (lmax + lmin) / 2, (lmax - lmin) / 2

    def method():
        x, r = x0, c - W @ x0
        if delta == 0:  # one exact step solves a problem with a single eigenvalue
            while True:
                x = x + r / theta
                r = c - W @ x
                yield x, r
        sigma = theta / delta
        rho = 1 / sigma
        x = _copy(x)
        d = r / theta
        buffer = r * 0
        while True:
            x += d
            _axpy(-1.0, W @ d, r, buffer)
            rho_next = 1 / (2 * sigma - rho)
            d *= rho_next * rho
            _axpy(2 * rho_next / delta, r, d, buffer)
            rho = rho_next
            yield x, r

    return _drive("chebyshev_semi_iterative", method(), W, c, x0, n_iter=n_iter, tol=tol,
                  x_true=x_true, history=history, warn=warn, extra_matvecs=estimation_matvecs,
                  info={"lmin": lmin, "lmax": lmax, "estimation_matvecs": estimation_matvecs})


def heavy_ball(
    W, c, *, lmin=None, lmax=None, spectrum=None, x0=None, n_iter=100, tol=None, x_true=None,
    history=False, warn=True, seed=None,
) -> SolverResult:
    r"""Polyak's heavy ball, :math:`x_{k+1} = x_k + \alpha (c - W x_k) + \beta (x_k - x_{k-1})`,
    with the optimal :math:`(\alpha, \beta)` of :func:`heavy_ball_parameters`
    (and :math:`x_{-1} = x_0`)."""
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    lmin, lmax, estimation_matvecs = _spectrum_of(W, spectrum, lmin, lmax, seed)
    n_iter, tol = _check_budget(n_iter, tol, 100)
    alpha, beta = heavy_ball_parameters(lmin, lmax)

    def method():
        previous, x = x0, x0
        r = c - W @ x
        while True:
            x, previous = x + alpha * r + beta * (x - previous), x
            r = c - W @ x
            yield x, r

    return _drive("heavy_ball", method(), W, c, x0, n_iter=n_iter, tol=tol, x_true=x_true,
                  history=history, warn=warn, extra_matvecs=estimation_matvecs,
                  info={"alpha": alpha, "beta": beta})


def conjugate_gradient(
    W, c, *, x0=None, n_iter=None, tol=None, x_true=None, history=False, warn=True,
) -> SolverResult:
    r"""Conjugate gradient, one independent recurrence per column of ``c`` (the reference).

    Uses two inner products per iteration and no eigenvalue bounds. Columns whose residual
    reaches zero are frozen rather than divided by zero.
    """
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    n_iter, tol = _check_budget(n_iter, tol, 10 * W.shape[0])
    tiny = np.finfo(np.float64).tiny

    def method():
        x, r = x0, c - W @ x0
        p = r
        rr = _dot_columns(r, r)
        while True:
            Wp = W @ p
            pWp = _dot_columns(p, Wp)
            alpha = rr / (pWp + (pWp == 0) * tiny)
            x = x + alpha * p
            r = r - alpha * Wp
            rr_next = _dot_columns(r, r)
            beta = rr_next / (rr + (rr == 0) * tiny)
            p = r + beta * p
            rr = rr_next
            yield x, r

    return _drive("conjugate_gradient", method(), W, c, x0, n_iter=n_iter, tol=tol,
                  x_true=x_true, history=history, warn=warn)
