r"""How a solve runs, whatever the method: the iteration driver, column blocks, divergence
detection, and float32 periods refined in float64.

A method is a generator that performs one operator application per iteration and yields the
new iterate and residual; :func:`drive` records the history, checks the tolerance, counts
matvecs and builds the :class:`~stepsize.SolverResult`. :func:`in_column_blocks` runs a kernel
(a method wrapped with :func:`drive`) on a sparse batch block by block, which keeps the work
arrays in cache. :class:`DivergenceMonitor` notices a given interval that misses the spectrum.
:func:`mixed_precision_descent` is the float32 kernel of ``chebyshev_gd`` with
``ChebyshevOptions(mixed_precision=True)``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from stepsize._results import ConvergenceWarning, SolverResult, warn_not_converged
from stepsize.chebyshev._backend import (
    axpy,
    cast_steps,
    column_norms,
    copy,
    is_torch,
    largest_norm,
    residual,
)
from stepsize.chebyshev.steps import chebyshev_period, chebyshev_steps

__all__ = [
    "BLOCK_BYTES",
    "DivergenceMonitor",
    "DriveOptions",
    "drive",
    "in_column_blocks",
    "mixed_precision_descent",
    "periodic_descent",
]


@dataclass(frozen=True)
class DriveOptions:
    """How :func:`drive` runs a method, set once by the public solver.

    Attributes:
        name: the solver's name, for messages and warnings.
        n_iter: the iteration cap.
        tol: every column's relative residual to reach; None tests nothing.
        x_true: the solution; the history then records the relative error.
        history: record the relative residual (or error) after each yield.
        warn: warn with :class:`~stepsize.ConvergenceWarning` when ``tol`` is not met.
        extra_matvecs: operator applications spent before the iteration (a spectrum estimate),
            added once to ``info["matvecs"]``.
    """

    name: str
    n_iter: int
    tol: float | None
    x_true: object = None
    history: bool = False
    warn: bool = True
    extra_matvecs: int = 0


def drive(method: Iterator, W, c, x0, options: DriveOptions,
          info: dict | None = None) -> SolverResult:
    """Run ``method`` for at most ``options.n_iter`` iterations, recording the error or residual.

    The history holds :math:`\\|X_t - X^\\star\\|_F / \\|X_0 - X^\\star\\|_F` when ``x_true`` is
    given, else :math:`\\|c - W X_t\\|_F / \\|c - W X_0\\|_F`, for t = 0..n_iter (with x0 = 0 these
    are the relative error and residual). Convergence means every column's relative residual
    :math:`\\|c - W x\\| / \\|c\\|` is at most ``tol``. Matvecs count the method's
    operator applications per column (the initial residual included). A method yields ``(x, r)``
    after each iteration, or ``(x, r, steps, extra)`` after ``steps`` iterations that also spent
    ``extra`` operator applications per column (then the history has one entry per yield).
    """
    tol, x_true = options.tol, options.x_true
    columns = 1 if c.ndim == 1 else c.shape[1]
    c_norms = np.maximum(column_norms(c.reshape(c.shape[0], -1)), np.finfo(float).tiny)

    def frobenius(X):
        return float(np.linalg.norm(column_norms(X.reshape(X.shape[0], -1))))

    trace = None
    if options.history:  # the initial residual costs one extra matvec, spent only for the history
        initial = frobenius(c - W @ x0) if x_true is None else frobenius(x0 - x_true)
        initial = max(initial, np.finfo(float).tiny)
        trace = [1.0]

    converged, iterations, extra = False, 0, 0
    for x, r, *counts in method:
        steps, products = counts or (1, 0)
        iterations += steps
        extra += products
        if options.history:
            trace.append((frobenius(r) if x_true is None else frobenius(x - x_true)) / initial)
        if tol is not None and np.all(column_norms(r.reshape(r.shape[0], -1)) / c_norms <= tol):
            converged = True
            break
        if iterations >= options.n_iter:
            break
    converged, message = _verdict(options, converged, iterations)
    details = {"matvecs": (iterations + 1 + extra) * columns + options.extra_matvecs,
               **(info or {})}
    return SolverResult(x=x, n_iter=iterations, converged=converged, history=trace,
                        message=message, info=details)


def _verdict(options: DriveOptions, converged: bool, iterations: int) -> tuple[bool | None, str]:
    """``converged`` (None when no tolerance was tested) and the message; warns on a miss."""
    tol = options.tol
    if tol is None:
        return None, f"ran {iterations} iterations (no tolerance tested)"
    if converged:
        return True, f"relative residual <= {tol:g} after {iterations} iterations"
    if options.warn:
        warn_not_converged(options.name, iterations, f"tol={tol:g}", stacklevel=5)
    return False, f"relative residual above {tol:g} after {iterations} iterations"


# Sparse products with many right-hand sides are bandwidth-bound: the (n, k) iterates of a 10^4 x
# 256 batch (20 MB each) fall out of cache between passes. Solving blocks of columns whose
# per-iteration working set stays within this budget is 2x to 4x faster per column on a 2-D grid
# (docs/chebyshev.md; on that grid 32 float64 or 64 float32 columns beat both halving and
# doubling the block). Dense W is not split: its own reads dominate, and a GEMM over all columns
# reads it once per iteration.
BLOCK_BYTES = 12 * 2**20

Kernel = Callable[[object, object, object, DriveOptions], SolverResult]


def column_blocks(W, c, history: bool, entry_bytes: int,
                  block_bytes: int = BLOCK_BYTES) -> list[slice] | None:
    """Column slices for a sparse, batched, history-free solve; None to solve in one piece.

    ``entry_bytes`` is what one entry of a column costs per iteration over all work arrays.
    """
    if history or not (sp.issparse(W) and isinstance(c, np.ndarray) and c.ndim == 2):
        return None
    width = max(8, 2 ** int(np.log2(max(block_bytes // (entry_bytes * c.shape[0]), 1))))
    if width >= c.shape[1]:
        return None
    return [slice(j, j + width) for j in range(0, c.shape[1], width)]


def in_column_blocks(kernel: Kernel, W, c, x0, options: DriveOptions, *, entry_bytes: int,
                     block_bytes: int = BLOCK_BYTES) -> SolverResult:
    """Run ``kernel(W, c, x0, options)`` on the whole batch or block by block
    (:func:`column_blocks`).

    Columns are independent in every method here, so blocks are exact: the merged result has
    ``x`` stacked, ``n_iter`` the largest block's, ``converged`` when every block converged, and
    the matvecs of all blocks plus ``extra_matvecs`` (the shared spectrum estimate) once.
    """
    blocks = column_blocks(W, c, options.history, entry_bytes, block_bytes)
    if blocks is None:
        return kernel(W, c, x0, options)
    quiet = dataclasses.replace(options, history=False, warn=False, extra_matvecs=0)
    parts = [kernel(W, np.ascontiguousarray(c[:, b]), np.ascontiguousarray(x0[:, b]), quiet)
             for b in blocks]
    # read before parts[0] becomes the merged result and its message is rewritten
    diverged = [part.message for part in parts if part.info.get("diverged")]
    result = parts[0]
    result.x = np.hstack([part.x for part in parts])
    result.n_iter = max(part.n_iter for part in parts)
    tol = options.tol
    result.converged = None if tol is None else all(part.converged for part in parts)
    result.info["matvecs"] = sum(part.info["matvecs"] for part in parts) + options.extra_matvecs
    result.info["column_blocks"] = len(blocks)
    if tol is not None:
        state = "<=" if result.converged else "above"
        result.message = (f"relative residual {state} {tol:g} after at most {result.n_iter} "
                          f"iterations ({len(blocks)} column blocks)")
    if diverged:  # the blocks ran without warnings: say it once for the whole batch
        result.info["diverged"] = True
        result.message = diverged[0]
        if options.warn:
            warnings.warn(f"{options.name} {diverged[0]}", ConvergenceWarning, stacklevel=4)
    elif options.warn and result.converged is False:
        warn_not_converged(options.name, result.n_iter, f"tol={tol:g}", stacklevel=4)
    return result


# Growth of the residual over one period beyond which a given interval is declared wrong: a
# Chebyshev period on an interval holding the spectrum never amplifies the residual (by more
# than the preconditioner's conditioning), while outside the interval it grows exponentially.
DIVERGENCE_FACTOR = 10.0


class DivergenceMonitor:
    """Compares the largest residual norm before and after each period (absolute norms, so
    c = 0 works too) and keeps the first growth beyond ``DIVERGENCE_FACTOR``."""

    def __init__(self):
        self.before = None
        self.growth = None  # (before, after) of the first divergent period

    def start(self, r) -> None:
        self.before = largest_norm(r)

    def diverged(self, r) -> bool:
        """Whether the period just run grew the norm too much (or made it non-finite)."""
        after = largest_norm(r)
        if np.isfinite(after) and after <= DIVERGENCE_FACTOR * max(self.before, 1e-300):
            return False
        if self.growth is None:
            self.growth = (self.before, after)
        return True

    def report(self, result: SolverResult, options: DriveOptions, lmin, lmax) -> None:
        """Mark ``result`` as diverged (message, ``info``, a warning) if a period diverged."""
        if self.growth is None:
            return
        before, after = self.growth
        detail = (f"the residual norm grew from {before:.3g} to {after:.3g} over one period: "
                  f"the interval [{lmin:.6g}, {lmax:.6g}] does not contain the "
                  f"spectrum of M W (raise lmax, or leave lmin/lmax out to estimate them), or "
                  f"the step order is unstable in this precision")
        result.converged = None if options.tol is None else False
        result.message = f"diverged: {detail}"
        result.info["diverged"] = True
        if options.warn:
            warnings.warn(f"{options.name} diverged: {detail}", ConvergenceWarning, stacklevel=5)


def periodic_descent(W, c, x0, options: DriveOptions, *, steps) -> SolverResult:
    """The GD kernel of :func:`~stepsize.chebyshev.gradient_descent` (inputs already checked)."""
    gammas = cast_steps(steps, c)

    def method():
        x, r = copy(x0), c - W @ x0
        buffer = r * 0
        t = 0
        while True:
            axpy(gammas[t % len(gammas)], r, x, buffer)
            r = residual(W, c, x, r)
            t += 1
            yield x, r

    return drive(method(), W, c, x0, options, info={"steps": steps})


# What one float32 period can reduce the float64 residual by: the float32 copy of W and the
# float32 recurrence perturb the correction by about kappa * eps32 relative (measured by
# examples/chebyshev_mixed_precision.py: 1.4e-6 to 7.8e-6 at kappa 30, 1.0e-4 to 4.4e-4 at kappa
# 1000 whatever the period aimed at), so a period aims at no less than max(1e-5, 2 kappa eps32):
# lower targets only add steps.
# Above kappa 1e5 float32 cannot resolve the system and refinement would stall.
FLOAT32_REDUCTION_FLOOR = 1e-5
MIXED_PRECISION_MAX_KAPPA = 1e5


def mixed_precision_descent(W, c, x0, options: DriveOptions, *, W_low, lmin, lmax,
                            order) -> SolverResult:
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
    Inputs are checked by ``chebyshev_gd``. ``options.n_iter`` caps the float32 steps; it is
    checked after each period, so the last period may run past it.
    """
    target = 1e-8 if options.tol is None else options.tol
    floor = max(FLOAT32_REDUCTION_FLOOR, 2 * (lmax / lmin) * float(np.finfo(np.float32).eps))
    c_norms = np.maximum(column_norms(c.reshape(c.shape[0], -1)), np.finfo(float).tiny)

    def method():
        x, r = copy(x0), c - W @ x0
        while True:
            worst = float(np.max(column_norms(r.reshape(r.shape[0], -1)) / c_norms))
            reduction = min(max(target / max(worst, np.finfo(float).tiny), floor), 0.5)
            steps = chebyshev_steps(lmin, lmax, chebyshev_period(lmin, lmax, reduction), order)
            rhs = r.float() if is_torch(r) else r.astype(np.float32)
            gammas = cast_steps(steps, rhs)
            d = rhs * 0
            inner, buffer = copy(rhs), rhs * 0
            for gamma in gammas:
                axpy(gamma, inner, d, buffer)
                inner = residual(W_low, rhs, d, inner)
            x += d.double() if is_torch(d) else d
            r = residual(W, c, x, r)
            yield x, r, len(steps), 1  # one float64 residual per period

    return drive(method(), W, c, x0, options,
                 info={"lmin": lmin, "lmax": lmax, "order": order, "mixed_precision": True})
