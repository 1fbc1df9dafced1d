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

import warnings
from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize._results import ConvergenceWarning, SolverResult, warn_not_converged
from stepsize._validation import check_array, check_choice, check_int, check_real, check_rng
from stepsize.chebyshev._torch_support import BatchedMatrices, torch_extensions
from stepsize.chebyshev.preconditioning import LMAX_WIDENING, as_preconditioner, lanczos_bounds
from stepsize.chebyshev.spectrum import Spectrum, as_matrix_or_operator, estimate_spectrum
from stepsize.chebyshev.steps import (
    ORDERS,
    _check_interval,
    chebyshev_bound,
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
    return type(value).__module__[:5] == "torch"


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
    """A torch operand: on a real device, real float32/float64 (ints become float64), finite."""
    import torch

    if tensor.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and has no values to solve with")
    if tensor.is_complex():
        raise TypeError(f"{name} must be real, got {tensor.dtype}; Chebyshev steps need a real "
                        f"SPD system (solve the real and imaginary parts of c separately)")
    if tensor.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"{name} has dtype {tensor.dtype}, whose 8- to 11-bit mantissa cannot "
                        f"resolve a linear solve; cast with .float() (mixed_precision=True "
                        f"refines float32 periods to float64 accuracy)")
    if not tensor.is_floating_point():
        tensor = tensor.double()
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite, but it has NaN or infinite entries")
    return tensor


def _validated_vector(value, name: str, like):
    """Check ``c``, ``x0`` or ``x_true``: finite, real floating, and shaped like ``like``."""
    if _is_torch(value):
        value = _check_torch(value, name)
    else:
        value = check_array(value, name, ndim=(1, 2), dtype=None)
        if value.dtype.kind == "c":
            raise TypeError(f"{name} must be real, got {value.dtype}; Chebyshev steps need a "
                            f"real SPD system (solve the real and imaginary parts separately)")
        if value.dtype.kind != "f":
            value = value.astype(np.float64)
    if like is not None and tuple(value.shape) != tuple(like.shape):
        raise ValueError(f"{name} must have the shape of c {tuple(like.shape)}, got "
                         f"{tuple(value.shape)}")
    return value


def _validated_system(W, c, x0, x_true=None):
    """Check the operator and vectors once; return W, c, the starting point and x_true."""
    operand = W.A if isinstance(W, NormalOperator) else W
    operand = operand.W if isinstance(operand, BatchedMatrices) else operand
    if _is_torch(operand) != _is_torch(c):
        raise TypeError(f"W and c must both be torch tensors or neither, got "
                        f"{type(operand).__name__} and {type(c).__name__}")
    if _is_torch(W):
        if W.ndim != 2 or W.shape[0] != W.shape[1]:
            raise ValueError(f"W must be a square matrix, got shape {tuple(W.shape)}")
        W = _check_torch(W, "W")
        gap = float((W - W.T).abs().max())
        if gap > 1e-6 * max(float(W.abs().max()), np.finfo(float).tiny):
            raise ValueError(f"W must be symmetric: max |W - W^T| = {gap:.3g}")
    elif not isinstance(W, (NormalOperator, BatchedMatrices)):
        W = as_matrix_or_operator(W)
    c = _validated_vector(c, "c", None)
    if c.ndim not in (1, 2) or c.shape[0] != W.shape[0]:
        raise ValueError(f"c must have shape ({W.shape[0]},) or ({W.shape[0]}, k), got "
                         f"{tuple(c.shape)}")
    if _is_torch(W) and (W.device != c.device or W.dtype != c.dtype):
        raise ValueError(f"W and c must share device and dtype, got {W.device}/{W.dtype} and "
                         f"{c.device}/{c.dtype}")
    x0 = c * 0 if x0 is None else _validated_vector(x0, "x0", c)
    if x_true is not None:
        x_true = _validated_vector(x_true, "x_true", c)
    return W, c, x0, x_true


def _column_norms(X):
    if _is_torch(X):
        import torch

        return torch.linalg.vector_norm(X, dim=0).cpu().numpy().astype(np.float64)
    if X.ndim == 2 and X.shape[1] == 1 and X.dtype == np.float64:  # one column: BLAS ddot
        return np.array([np.sqrt(np.dot(X[:, 0], X[:, 0]))])
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
    if X.ndim == 1 and isinstance(X, np.ndarray):
        return np.dot(X, Y)
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
        converged = None
        message = f"ran {iterations} iterations (no tolerance tested)"
    elif converged:
        message = f"relative residual <= {tol:g} after {iterations} iterations"
    else:
        message = f"relative residual above {tol:g} after {iterations} iterations"
        if warn:
            warn_not_converged(name, iterations, f"tol={tol:g}", stacklevel=4)
    details = {"matvecs": (iterations + 1 + extra) * columns + extra_matvecs, **(info or {})}
    return SolverResult(x=x, n_iter=iterations, converged=converged, history=trace,
                        message=message, info=details)


def _check_budget(max_iter, tol, default):
    n_iter = default if max_iter is None else check_int(max_iter, "max_iter", low=1)
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
    result.converged = (None if options.get("tol") is None
                        else all(part.converged for part in parts))
    result.info["matvecs"] = sum(part.info["matvecs"] for part in parts) + extra_matvecs
    result.info["column_blocks"] = len(blocks)
    tol = options.get("tol")
    if tol is not None:
        state = "<=" if result.converged else "above"
        result.message = (f"relative residual {state} {tol:g} after at most {result.n_iter} "
                          f"iterations ({len(blocks)} column blocks)")
        if warn and not result.converged:
            warn_not_converged(solver, result.n_iter, f"tol={tol:g}", stacklevel=4)
    diverged = [part for part in parts if part.info.get("diverged")]
    if diverged:  # the blocks ran without warnings: say it once for the whole batch
        result.info["diverged"] = True
        result.message = diverged[0].message
        if warn:
            warnings.warn(f"{solver} {diverged[0].message}", ConvergenceWarning, stacklevel=4)
    return result


def gradient_descent(
    W, c, steps, *, x0=None, max_iter=None, tol=None, x_true=None, history=False, warn=True,
) -> SolverResult:
    r"""Gradient descent with a periodic step sequence on :math:`\tfrac12 x^\top W x - c^\top x`.

    :math:`x_{t+1} = x_t + \gamma_{t \bmod T}\,(c - W x_t)`; one matvec per iteration.

    Args:
        W: SPD matrix, sparse matrix, LinearOperator, :class:`NormalOperator` or torch tensor.
        c: right-hand side, shape (n,) or (n, k).
        steps: a positive scalar or a sequence of T steps, repeated periodically.
        x0: starting point (zeros by default).
        max_iter: iterations (default: one period T).
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
    n_iter, tol = _check_budget(max_iter, tol, steps.size)
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
    """The interval given, or :func:`estimate_spectrum`'s (mixed precision and heavy ball)."""
    given = _given_interval(spectrum, lmin, lmax)
    if given is not None:
        return given
    operator = W
    if _is_torch(W) or isinstance(W, NormalOperator):
        operator = spla.LinearOperator(W.shape, matvec=lambda v: _to_numpy(W @ _like(W, v)),
                                       dtype=np.float64)
    estimate = estimate_spectrum(operator, seed=seed)
    if estimate.lmin <= 1e-12 * estimate.lmax:
        raise ValueError(f"W appears singular (estimated lmin {estimate.lmin:.3g}, lmax "
                         f"{estimate.lmax:.3g}); Chebyshev steps need lmin > 0")
    return estimate.lmin, estimate.lmax, estimate.matvecs


def _given_interval(spectrum, lmin, lmax) -> tuple[float, float, int] | None:
    """``(lmin, lmax, matvecs)`` from ``spectrum`` or ``lmin``/``lmax``; None to estimate."""
    if spectrum is not None:
        if not isinstance(spectrum, Spectrum):
            raise TypeError(f"spectrum must be a Spectrum, got {type(spectrum).__name__}")
        return spectrum.lmin, spectrum.lmax, spectrum.matvecs
    if lmin is not None and lmax is not None:
        lmin, lmax = _check_interval(lmin, lmax)
        return lmin, lmax, 0
    if lmin is not None or lmax is not None:
        raise ValueError("give both lmin and lmax, or neither (to estimate them)")
    return None


def _like(W, v):
    operand = W.A if isinstance(W, NormalOperator) else W
    if _is_torch(operand):
        import torch

        return torch.as_tensor(v, dtype=operand.dtype, device=operand.device)
    return v


def _to_numpy(x):
    return x.detach().cpu().numpy().astype(np.float64) if _is_torch(x) else np.asarray(x)


@torch_extensions
def chebyshev_gd(
    W, c, *, M=None, T=None, lmin=None, lmax=None, spectrum=None, order="fractal", x0=None,
    max_iter=None, tol=None, estimate_iter=15, x_true=None, history=False, warn=True, seed=None,
    mixed_precision=False,
) -> SolverResult:
    r"""Chebyshev gradient descent (CHGD), optionally preconditioned.

    .. math::

        x_{t+1} = x_t + \gamma_{t \bmod T}\, M (c - W x_t),

    with the T Chebyshev steps :math:`\gamma_t` of :func:`chebyshev_steps` for an interval
    ``[lmin, lmax]`` holding the spectrum of :math:`M W` (of W without ``M``). One matvec and one
    preconditioner application per step, no inner products within a period.

    **Interval.** Given (``lmin``/``lmax`` or ``spectrum``), it is used as is. Otherwise the
    solve starts with ``estimate_iter`` steps of preconditioned CG whose step lengths give the
    Lanczos Ritz values of :math:`M W` (:mod:`stepsize.chebyshev.preconditioning`); their
    iterate is kept, so the estimate costs no wasted matvecs. ``lmax = 1.1 theta_max`` (PETSc's
    widening) and ``lmin = theta_min``. Ritz values lie inside the spectrum, so ``lmin`` may be
    too high: after each period the residual reduction is compared with the Chebyshev bound, and
    when it falls short by more than a square root (or the residual grew, which restores the
    period's starting point and widens lmax by 1.25) another ``estimate_iter`` CG steps run
    from the current residual, which is then rich in the eigenvectors the interval missed, and
    the interval is widened to their Ritz values. ``info["intervals"]`` lists the intervals.

    **Stopping.** With ``tol``, every column's relative residual
    :math:`\|c - W x\| / \|c\|` (as in ``scipy.sparse.linalg.cg``) is checked once per
    period (every step with ``history=True``), and each period's length is chosen for the
    reduction still needed (:func:`chebyshev_period`, at most 256). Without ``max_iter`` the cap
    is :math:`3 (k_{CG} + \lceil \sqrt\kappa\,\ln(2/\mathrm{tol})/2 \rceil) + 50` for the
    current interval's :math:`\kappa`. Without ``tol`` it runs ``max_iter`` steps (default:
    one period, the paper's CHGD) and reports ``converged=None``.

    With ``mixed_precision=True`` (float64 ``c``, a dense, sparse or torch ``W``, no ``M``; see
    :func:`_mixed_precision_descent`) the periods run in float32 and each is corrected by one
    float64 residual (iterative refinement).

    Args:
        W: SPD matrix (dense, sparse, torch), LinearOperator or :class:`NormalOperator`.
        c: right-hand side, shape (n,) or (n, k).
        M: preconditioner, an SPD approximation of :math:`W^{-1}` given as in scipy's ``cg``
            (:func:`~stepsize.chebyshev.preconditioning.as_preconditioner`): an array, sparse
            matrix, LinearOperator, callable, ``"jacobi"`` or a pyamg ``MultilevelSolver``.
        T: period (default: chosen per period from ``tol``, or 1e-8 without it).
        lmin, lmax, spectrum: the interval of :math:`M W`; estimated when not given.
        order: step order within a period (``"fractal"`` is stable at any T).
        x0: starting point (zeros by default).
        max_iter: cap on iterations (CG estimation steps included).
        tol: relative residual to reach; None runs ``max_iter`` steps.
        estimate_iter: CG steps per estimate (each costs one matvec per column).
        x_true, history, warn, seed: as in :func:`gradient_descent` (``seed`` is used by the
            mixed-precision Lanczos estimate only).
        mixed_precision: float32 periods with float64 refinement.

    Returns:
        :class:`~stepsize.SolverResult` with ``info["matvecs"]`` (estimation included),
        ``info["lmin"]``, ``info["lmax"]`` (the final interval) and ``info["intervals"]``.

    >>> W = np.diag([1.0, 2.0, 4.0])
    >>> r = chebyshev_gd(W, np.ones(3), lmin=1.0, lmax=4.0, T=3, max_iter=9)
    >>> bool(np.allclose(r.x, [1.0, 0.5, 0.25], atol=1e-3))
    True
    >>> A = np.diag(np.linspace(1.0, 100.0, 50))
    >>> r = chebyshev_gd(A, np.ones(50), M="jacobi", tol=1e-10)
    >>> r.converged, r.n_iter
    (True, 1)
    """
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    if T is not None:
        T = check_int(T, "T", low=1)
    if tol is not None:
        tol = check_real(tol, "tol", low=0, low_inclusive=False)
    if max_iter is not None:
        max_iter = check_int(max_iter, "max_iter", low=1)
    check_choice(order, "order", ORDERS)
    if mixed_precision:
        if M is not None:
            raise ValueError("mixed_precision does not take a preconditioner M")
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
            W_low=W_low, lmin=lmin, lmax=lmax, order=order, n_iter=max_iter, tol=tol,
            x_true=x_true, history=history, warn=warn, extra_matvecs=estimation_matvecs)
        result.info["estimation_matvecs"] = estimation_matvecs
        return result
    return _chebyshev_solve("chebyshev_gd", W, c, x0, M=M, T=T, interval=_given_interval(
        spectrum, lmin, lmax), order=order, max_iter=max_iter, tol=tol,
        estimate_iter=estimate_iter, x_true=x_true, history=history, warn=warn)


def _chebyshev_solve(name, W, c, x0, *, M, T, interval, order, max_iter, tol, estimate_iter,
                     x_true, history, warn) -> SolverResult:
    """Shared entry of :func:`chebyshev_gd` and :func:`chebyshev_semi_iterative`."""
    precondition = as_preconditioner(M, W)
    estimate_iter = check_int(estimate_iter, "estimate_iter", low=1)
    # work arrays per iteration: x, r, c and a buffer, plus M r, plus p and W p for estimation
    arrays = 4 + (precondition is not None) + 2 * (interval is None)
    return _in_column_blocks(
        name, _chebyshev_periods, W, c, x0, entry_bytes=arrays * c.dtype.itemsize,
        name=name, precondition=precondition, interval=interval, T=T, order=order,
        estimate_iter=estimate_iter, user_cap=max_iter, n_iter=max_iter or _UNCAPPED, tol=tol,
        x_true=x_true, history=history, warn=warn,
        extra_matvecs=0 if interval is None else interval[2])


_UNCAPPED = 2**62


def _pcg_estimate(W, c, x, r, precondition, steps):
    r"""``steps`` preconditioned CG steps from ``(x, r)``, in place, yielding after each.

    Returns (through ``yield from``) the extreme Ritz values of :math:`M W` over the columns,
    or None when no column had a nonzero residual. Raises ``ValueError`` when
    :math:`r^\top M r < 0` (M not positive definite) or :math:`p^\top W p \le 0` (W not).
    """
    tiny = np.finfo(np.float64).tiny
    z = r if precondition is None else precondition(r)
    rz = _dot_columns(r, z)
    _check_positive(rz, r, z, "M", "r^T M r")
    p = _copy(z)
    alphas, betas = [], []
    for _ in range(steps):
        Wp = W @ p
        pWp = _dot_columns(p, Wp)
        _check_positive(pWp, p, Wp, "W", "p^T W p", strict=True)
        alpha = rz / (pWp + (pWp == 0) * tiny)
        x += alpha * p
        r -= alpha * Wp
        z = r if precondition is None else precondition(r)
        rz_next = _dot_columns(r, z)
        _check_positive(rz_next, r, z, "M", "r^T M r")
        beta = rz_next / (rz + (rz == 0) * tiny)
        p = z + beta * p
        alphas.append(alpha)
        betas.append(beta)
        rz = rz_next
        yield x, r
    return _ritz_interval(_stacked(alphas), _stacked(betas))


def _stacked(values) -> np.ndarray:
    """Per-step scalars or per-column vectors as a (steps, columns) float64 array (one transfer
    from the device for torch)."""
    if values and _is_torch(values[0]):
        import torch

        return _to_numpy(torch.stack([v.reshape(-1) for v in values]))
    return np.asarray(values, dtype=np.float64).reshape(len(values), -1)


def preconditioned_spectrum(W, M=None, *, max_matvecs=15, seed=None) -> Spectrum:
    r"""Ritz interval of :math:`M W` from ``max_matvecs`` preconditioned CG steps.

    CG runs on :math:`W x = b` from a random b, and its step lengths give the Lanczos Ritz values
    (:func:`~stepsize.chebyshev.preconditioning.lanczos_bounds`); as in PETSc's
    ``KSPChebyshevEstEigSet`` the returned ``lmax`` is ``1.1 * theta_max`` and ``lmin`` is
    ``theta_min``, an *overestimate* of the smallest eigenvalue (Ritz values lie inside the
    spectrum): suited to smoothers, which only need lmax, and to :func:`chebyshev_gd`, which
    corrects lmin while solving. For verified bounds use :func:`estimate_spectrum`.

    Args:
        W: SPD operator (as in :func:`chebyshev_gd`).
        M: preconditioner (as in :func:`chebyshev_gd`); None for W itself.
        max_matvecs: CG steps (one W product and one M application each).
        seed: seed of the random right-hand side.

    Returns:
        :class:`~stepsize.chebyshev.Spectrum` with ``method="cg-lanczos"``.

    >>> s = preconditioned_spectrum(np.diag(np.arange(1.0, 11.0)), max_matvecs=10, seed=0)
    >>> round(s.ritz_min, 6), round(s.ritz_max, 6), round(s.lmax, 6)
    (1.0, 10.0, 11.0)
    """
    W, _, _, _ = _validated_system(W, np.zeros(W.shape[0]), None)
    max_matvecs = check_int(max_matvecs, "max_matvecs", low=1)
    b = check_rng(seed).standard_normal(W.shape[0])
    if _is_torch(W):
        b = _like(W, b)
    precondition = as_preconditioner(M, W)
    x, r = b * 0, _copy(b)
    estimate = _pcg_estimate(W, b, x, r, precondition, max_matvecs)
    steps = 0
    try:
        while True:
            next(estimate)
            steps += 1
    except StopIteration as stop:
        ritz = stop.value
    if ritz is None:
        raise ValueError("W has no spectrum to estimate: CG stopped at its first step")
    return Spectrum(ritz[0], LMAX_WIDENING * ritz[1], ritz[0], ritz[1], steps, True,
                    "cg-lanczos")


def _check_positive(values, left, right, name, what, strict=False):
    """Raise when an inner product that must be positive is negative beyond rounding.

    The norms that scale the rounding allowance are computed only when a value is suspect.
    """
    values = (_to_numpy(values) if _is_torch(values) else np.asarray(values)).reshape(-1)
    smallest = values.min()
    if smallest > 0 or (not strict and smallest == 0):
        return
    scale = _column_norms(left.reshape(left.shape[0], -1)) * _column_norms(
        right.reshape(right.shape[0], -1))
    bad = values < -1e-12 * scale
    if strict:  # p != 0 with p^T W p <= 0 (W p may vanish: a singular W)
        bad |= (values <= 0) & (_column_norms(left.reshape(left.shape[0], -1)) > 0)
    if np.any(bad):
        value = float(values[np.argmax(bad)])
        raise ValueError(f"{name} must be symmetric positive definite, but CG met "
                         f"{what} = {value:.3g} ({name} is singular or indefinite)")


def _check_nonsingular(lmin, lmax):
    if not lmin > 1e-13 * lmax:
        raise ValueError(f"W appears singular: the Ritz values of M W reach {lmin:.3g} against "
                         f"{lmax:.3g}; Chebyshev steps need lmin > 0")


def _ritz_interval(alphas, betas) -> tuple[float, float] | None:
    """Extreme Ritz values over the columns, from each column's steps with a nonzero alpha."""
    lows, highs = [], []
    for column in range(alphas.shape[1]):
        valid = int(np.argmin(alphas[:, column] > 0)) if np.any(alphas[:, column] <= 0) else (
            alphas.shape[0])
        if valid:
            low, high = lanczos_bounds(alphas[:valid, column], betas[:valid, column])
            lows.append(low)
            highs.append(high)
    if not lows:
        return None
    return min(lows), max(highs)


def _chebyshev_period_kernel(name, W, c, x, r, precondition, lmin, lmax, T, order):
    """One period of T Chebyshev steps from ``(x, r)``, in place, yielding after each step."""
    if name == "chebyshev_gd":
        gammas = _cast_steps(chebyshev_steps(lmin, lmax, T, order=order), c)
        buffer = r * 0
        for gamma in gammas:
            _axpy(gamma, r if precondition is None else precondition(r), x, buffer)
            r = _residual(W, c, x, r)
            yield x, r
        return
    # three-term recurrence (Golub & Varga 1961) restarted each period; equal to the T-step
    # periodic method at the period's end in exact arithmetic
    theta, delta = (lmax + lmin) / 2, (lmax - lmin) / 2
    z = r if precondition is None else precondition(r)
    d = z / theta
    buffer = r * 0
    if delta == 0:  # one exact step solves a problem with a single eigenvalue
        for _ in range(T):
            x += d
            r = _residual(W, c, x, r)
            d = (r if precondition is None else precondition(r)) / theta
            yield x, r
        return
    sigma = theta / delta
    rho = 1 / sigma
    for _ in range(T):
        x += d
        _axpy(-1.0, W @ d, r, buffer)
        rho_next = 1 / (2 * sigma - rho)
        d *= rho_next * rho
        _axpy(2 * rho_next / delta, r if precondition is None else precondition(r), d, buffer)
        rho = rho_next
        yield x, r


def _chebyshev_periods(W, c, x0, *, name, precondition, interval, T, order, estimate_iter,
                       user_cap, n_iter, tol, x_true, history, warn, extra_matvecs):
    """Kernel of :func:`chebyshev_gd` and :func:`chebyshev_semi_iterative` (inputs checked).

    See :func:`chebyshev_gd` for the estimation, the correction of the interval and the cap.
    """
    c_norms = np.maximum(_column_norms(c.reshape(c.shape[0], -1)), np.finfo(float).tiny)
    intervals = []
    state = {"lmin": None, "lmax": None, "estimated": 0}

    def relative_residual(r):
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.max(_column_norms(r.reshape(r.shape[0], -1)) / c_norms))

    def method():
        x, r = _copy(x0), _residual(W, c, x0, c * 0)
        done = estimated = 0
        if interval is None:
            ritz = yield from _pcg_estimate(W, c, x, r, precondition, estimate_iter)
            done = estimated = state["estimated"] = estimate_iter
            lmin, lmax = (1.0, 1.0) if ritz is None else (ritz[0], LMAX_WIDENING * ritz[1])
            _check_nonsingular(lmin, lmax)
        else:
            lmin, lmax = interval[0], interval[1]
        adaptive = interval is None and tol is not None
        while True:
            state["lmin"], state["lmax"] = lmin, lmax
            intervals.append((lmin, lmax))
            residual = relative_residual(r) if tol is not None else 1.0
            if user_cap is None and tol is not None and done >= _derived_cap(
                    lmin, lmax, tol, estimated):
                return
            period = T
            if period is None:
                reduction = 1e-8 if tol is None else min(max(tol / max(residual, 1e-300), 1e-16),
                                                         0.5)
                period = chebyshev_period(lmin, lmax, reduction)
            if user_cap is not None:
                period = min(period, user_cap - done)
            saved = (_copy(x), _copy(r)) if adaptive else None
            if interval is not None:
                state["before"] = _largest_norm(r)
            kernel = _chebyshev_period_kernel(name, W, c, x, r, precondition, lmin, lmax, period,
                                              order)
            for x, r in kernel:  # noqa: B020 (the kernel updates x and r, maybe rebinding r)
                if history:
                    yield x, r
            if not history:
                yield x, r, period, 0
            done += period
            if interval is not None and _diverged(state, _largest_norm(r)):
                if tol is not None:
                    return  # a given interval that misses the spectrum: more periods only grow
            if user_cap is None and tol is None:  # no tolerance and no cap: one period
                return
            if not adaptive:
                continue
            achieved = relative_residual(r) / max(residual, 1e-300)
            if achieved <= np.sqrt(chebyshev_bound(lmin, lmax, period)):
                continue
            if achieved > 1:  # lmax was too low: undo the period
                x[...] = saved[0]
                r[...] = saved[1]
                lmax *= 1.25
            ritz = yield from _pcg_estimate(W, c, x, r, precondition, estimate_iter)
            done += estimate_iter
            estimated += estimate_iter
            state["estimated"] = estimated
            if ritz is not None:
                lmin, lmax = min(lmin, ritz[0]), max(lmax, LMAX_WIDENING * ritz[1])
                _check_nonsingular(lmin, lmax)

    result = _drive(name, method(), W, c, x0, n_iter=n_iter, tol=tol, x_true=x_true,
                    history=history, warn=warn, extra_matvecs=extra_matvecs)
    if "diverged" in state:
        before, after = state["diverged"]
        detail = (f"the residual norm grew from {before:.3g} to {after:.3g} over one period: "
                  f"the interval [{state['lmin']:.6g}, {state['lmax']:.6g}] does not contain the "
                  f"spectrum of M W (raise lmax, or leave lmin/lmax out to estimate them), or "
                  f"the step order is unstable in this precision")
        result.converged = None if tol is None else False
        result.message = f"diverged: {detail}"
        result.info["diverged"] = True
        if warn:
            warnings.warn(f"{name} diverged: {detail}", ConvergenceWarning, stacklevel=4)
    columns = 1 if c.ndim == 1 else c.shape[1]
    result.info.update(lmin=state["lmin"], lmax=state["lmax"], intervals=intervals,
                       estimation_matvecs=state["estimated"] * columns + extra_matvecs,
                       preconditioned=precondition is not None)
    return result


# Growth of the residual over one period beyond which a given interval is declared wrong: a
# Chebyshev period on an interval holding the spectrum never amplifies the residual (by more
# than the preconditioner's conditioning), while outside the interval it grows exponentially.
_DIVERGENCE_FACTOR = 10.0


def _largest_norm(r) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.max(_column_norms(r.reshape(r.shape[0], -1))))


def _diverged(state, after) -> bool:
    """Record in ``state`` whether the period just run grew the largest residual norm by more
    than ``_DIVERGENCE_FACTOR`` (or made it non-finite); absolute norms, so c = 0 works too."""
    before = state["before"]
    if np.isfinite(after) and after <= _DIVERGENCE_FACTOR * max(before, 1e-300):
        return False
    state.setdefault("diverged", (before, after))
    return True


def _derived_cap(lmin, lmax, tol, estimation_steps) -> int:
    """Default cap with a tolerance: three times what the Chebyshev bound needs, plus 50."""
    needed = np.ceil(np.sqrt(lmax / lmin) * np.log(2 / tol) / 2)
    return int(3 * (estimation_steps + needed) + 50)


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


@torch_extensions
def chebyshev_semi_iterative(
    W, c, *, M=None, lmin=None, lmax=None, spectrum=None, x0=None, max_iter=None, tol=None,
    estimate_iter=15, x_true=None, history=False, warn=True,
) -> SolverResult:
    r"""Chebyshev semi-iterative method (three-term recurrence; Golub & Varga 1961).

    With :math:`\theta = (l_{\max} + l_{\min})/2`, :math:`\delta = (l_{\max} - l_{\min})/2`,
    :math:`\sigma = \theta/\delta`: :math:`\rho_0 = 1/\sigma`, :math:`d_0 = M r_0/\theta`, and

    .. math::

        x_{k+1} = x_k + d_k,\quad r_{k+1} = r_k - W d_k,\quad
        \rho_{k+1} = (2\sigma - \rho_k)^{-1},\quad
        d_{k+1} = \rho_{k+1}\rho_k d_k + \tfrac{2\rho_{k+1}}{\delta} M r_{k+1}.

    The error after k steps is the scaled Chebyshev polynomial of degree k at *every* k, so it
    equals :func:`chebyshev_gd` with period k at t = k, and it has no ordering issue. The
    preconditioner, the interval estimate and its correction, the stopping rule and the cap are
    those of :func:`chebyshev_gd`; with a tolerance the recurrence restarts at each period's end
    (where the residual is checked).

    >>> r = chebyshev_semi_iterative(np.diag([1.0, 2.0, 4.0]), np.ones(3), tol=1e-12)
    >>> bool(np.allclose(r.x, [1.0, 0.5, 0.25]))
    True
    """
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    if tol is not None:
        tol = check_real(tol, "tol", low=0, low_inclusive=False)
    if max_iter is not None:
        max_iter = check_int(max_iter, "max_iter", low=1)
    interval = _given_interval(spectrum, lmin, lmax)
    return _chebyshev_solve("chebyshev_semi_iterative", W, c, x0, M=M,
                            T=None if tol is not None else max_iter, interval=interval,
                            order="natural", max_iter=max_iter, tol=tol,
                            estimate_iter=estimate_iter, x_true=x_true, history=history,
                            warn=warn)


def heavy_ball(
    W, c, *, lmin=None, lmax=None, spectrum=None, x0=None, max_iter=100, tol=None, x_true=None,
    history=False, warn=True, seed=None,
) -> SolverResult:
    r"""Polyak's heavy ball, :math:`x_{k+1} = x_k + \alpha (c - W x_k) + \beta (x_k - x_{k-1})`,
    with the optimal :math:`(\alpha, \beta)` of :func:`heavy_ball_parameters`
    (and :math:`x_{-1} = x_0`)."""
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    lmin, lmax, estimation_matvecs = _spectrum_of(W, spectrum, lmin, lmax, seed)
    n_iter, tol = _check_budget(max_iter, tol, 100)
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


@torch_extensions
def conjugate_gradient(
    W, c, *, M=None, x0=None, max_iter=None, tol=None, x_true=None, history=False, warn=True,
) -> SolverResult:
    r"""(Preconditioned) conjugate gradient, one recurrence per column of ``c`` (the reference).

    Uses two inner products per iteration and no eigenvalue bounds; ``M`` as in
    :func:`chebyshev_gd`. Columns whose residual reaches zero are frozen rather than divided by
    zero. The default cap is 10 n iterations, as in scipy's ``cg``.

    >>> conjugate_gradient(np.diag([1.0, 3.0]), np.ones(2), tol=1e-12).n_iter
    2
    """
    W, c, x0, x_true = _validated_system(W, c, x0, x_true)
    n_iter, tol = _check_budget(max_iter, tol, 10 * W.shape[0])
    precondition = as_preconditioner(M, W)

    def method():
        x, r = _copy(x0), _residual(W, c, x0, c * 0)
        while True:
            yield from _pcg_estimate(W, c, x, r, precondition, _UNCAPPED)

    return _drive("conjugate_gradient", method(), W, c, x0, n_iter=n_iter, tol=tol,
                  x_true=x_true, history=history, warn=warn)
