"""Projections of a score matrix onto (relaxed) assignments.

* :func:`sinkhorn`: the doubly stochastic scaling of ``exp(S)``, computed in the log domain
  (stabilized scaling: the exponent never exceeds 0, potentials are absorbed before the scaling
  vectors overflow), with a tolerance and an iteration cap.
* :func:`softassign`: ``sinkhorn(beta X)`` with a fixed ``beta`` (Gold & Rangarajan).
* :func:`dynamical_softassign`: ``sinkhorn(beta X / (max X - min X))``; the effective inverse
  temperature follows the scale of the score matrix at every call, so one
  ``beta`` serves every graph size and weight unit (Shen, Niu, Zhu; see docs/matching.md for the
  reading implemented).
* :func:`softassign_transition`: the Hadamard-equipped identity
  ``S_{beta + delta}(X) = sinkhorn(S_beta(X) o exp(delta X))`` used to raise ``beta`` from a
  previous softassign (Shen, Niu, Zhu, CVPR 2024).
* :func:`adaptive_softassign`: softassign whose ``beta`` is doubled through the Hadamard power
  ``S_{2 beta}(X) = sinkhorn(S_beta(X) o S_beta(X))`` until its entropic error bound
  (:func:`softassign_gap_bound`) is within a relative tolerance of the assignment value (Shen,
  Niu, Zhu, CVPR 2024; the rule implemented is derived in docs/matching.md).
* :func:`hungarian`: the discrete maximizer of ``<X, P>`` over permutations (IPFP, FAQ).
* :func:`doubly_stochastic_projection`: the Euclidean-type projection onto doubly stochastic
  matrices by Zass-Shashua alternating projections (DSPFP, Lu et al. 2016).

All functions take a square matrix; rectangular problems are padded by the solver. From 1000
rows up the Sinkhorn kernel is float32 (half the memory traffic of its matrix-vector products,
in the input buffer's own memory); the returned ``P`` is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import entr

from stepsize._results import SolverResult
from stepsize._validation import (
    check_array,
    check_choice,
    check_int,
    check_real,
    check_square,
    describe,
)

__all__ = [
    "DYNAMICAL_SCALES",
    "SinkhornResult",
    "adaptive_softassign",
    "doubly_stochastic_projection",
    "dynamical_softassign",
    "hungarian",
    "sinkhorn",
    "softassign",
    "softassign_gap_bound",
    "softassign_transition",
]

# Scaling vectors are absorbed into the log potentials before they leave this range, so the
# kernel exp(S - f - g) and the products K v never overflow or underflow to zero everywhere.
_ABSORB_BOUND = 1e100
_ABSORB_LOW = 1.0 / _ABSORB_BOUND
# The float32 kernel (from _FLOAT32_FROM rows: half the memory traffic of the matrix-vector
# products, which are the cost of a scaling at large n) absorbs from 1e30 and re-centres a
# warm-started column below exp(-80) (float32 underflows below about exp(-103)).
_FLOAT32_FROM = 1000
# The smallest row-sum tolerance given to the float32 kernel (its error stalls near 6e-8).
_FLOAT32_TOL = 1e-6
_ABSORB_LOW_32 = 1e-30
_UNDERFLOW_LOG_32 = -80.0
# ... and only for a kernel with no entry below exp(_FLOAT32_MIN_LOG) once centred: float32
# flushes entries below about exp(-103) to zero (and computes slowly with subnormals from
# exp(-87)), which changes what the scaling converges to wherever large scalings make those
# entries count (the nearly degenerate kernels of hubs: on the power-law pair at n = 5000
# every projection of apfp's first run, 100 scalings each, and its first run 45 outer
# iterations instead of 9). Such a kernel is scaled in float64, as below float32_from rows.
_FLOAT32_MIN_LOG = _UNDERFLOW_LOG_32
# The reductions without ndarray.min's Python wrapper (it dominates at n <= 100).
_min, _max = np.minimum.reduce, np.maximum.reduce


# Up to this many entries argmin / argmax and a read are faster than the reductions (2x at
# 34 x 34; from about 300 x 300 the reductions are, by 20-70%, on strided blocks more).
_ARG_REDUCE_MAX = 64 * 64


_ROW_ARGMAX_MAX_N = 200


def _least(vector: np.ndarray):
    """The smallest entry of a 1-D (or contiguous) array: ``argmin`` and one read, a quarter
    of ``np.minimum.reduce``'s call overhead at n <= 100 (the same value, NaN included)."""
    return vector.flat[vector.argmin()]


def _largest(vector: np.ndarray):
    """The largest entry (see :func:`_least`)."""
    return vector.flat[vector.argmax()]

# exp underflows to 0 below about -745; a warm-started column is re-centred below this.
_UNDERFLOW_LOG = -600.0
# The float64 loop tests the row error and the absorption bound after the first two
# iterations and then every _CHECK_EVERY-th (the tests are half of an iteration's numpy calls
# at n <= 100). Between tests a scaling grows by at most about n^2 per iteration, far inside
# the 1e208 left between _ABSORB_BOUND and float64's overflow; float32 tests every iteration.
_CHECK_EVERY = 4

DYNAMICAL_SCALES = ("range", "max")


@dataclass
class SinkhornResult(SolverResult):
    """A doubly stochastic matrix and how it was obtained (a :class:`SolverResult`).

    Attributes:
        x: the (approximately) doubly stochastic matrix, ``P = diag(e^f) exp(S) diag(e^g)``
            with the potentials folded in; also ``P``.
        n_iter: scaling (or projection) iterations performed.
        converged: whether ``max |row sums - 1|`` fell below the tolerance (column sums are
            exact after each column update).
        message: why it stopped.
        error: the final row-sum error.
        column_potential: ``g`` with ``P = diag(r) exp(S) diag(exp(g))`` for some ``r``: the
            column log scaling, which warm-starts the next, similar problem.
        beta: the inverse temperature reached by :func:`adaptive_softassign` (else None).
    """

    error: float = float("nan")
    column_potential: np.ndarray | None = None
    beta: float | None = None

    def __post_init__(self):
        if not self.message:
            self.message = ("row and column sums within tol of 1" if self.converged else
                            f"stopped at max_iter = {self.n_iter} with error {self.error:.3g}")

    @property
    def P(self) -> np.ndarray:  # noqa: N802 - the papers' name
        """The doubly stochastic matrix (alias of ``x``)."""
        return self.x


def _result(P, n_iter, converged, error, column_potential=None, beta=None) -> SinkhornResult:
    return SinkhornResult(P, n_iter, bool(converged), error=float(error),
                          column_potential=column_potential, beta=beta)


def _sinkhorn(
    log_kernel: np.ndarray, tol: float, max_iter: int, warm: np.ndarray | None = None,
    float32_from: int = _FLOAT32_FROM,
) -> SinkhornResult:
    """Log-stabilized Sinkhorn scaling of ``exp(log_kernel)``; overwrites ``log_kernel``.

    ``warm``: column log potentials of a previous, similar problem to start from. From
    ``float32_from`` rows up, and for tolerances float32 can meet (``tol >= _FLOAT32_TOL``;
    its row sums stall near 6e-8), the kernel is float32, stored in the first half of
    ``log_kernel``'s own memory (no other n x n array), and ``P`` is written back as float64;
    only where no centred entry lies below ``exp(_FLOAT32_MIN_LOG)`` (none flushed to zero).
    """
    n = log_kernel.shape[0]
    single = n >= float32_from and tol >= _FLOAT32_TOL and log_kernel.flags.c_contiguous
    work = _broadcast_work(log_kernel, single)
    potential = _centred(log_kernel, warm, single, work)
    if single and _least(log_kernel) < _FLOAT32_MIN_LOG:
        single = False  # entries float32 would flush to zero: the float64 kernel
    kernel = _exp_single(log_kernel) if single else np.exp(log_kernel, out=log_kernel)
    low = _ABSORB_LOW_32 if single else _ABSORB_LOW
    # Preallocated vectors and out= arguments: at n <= 100 the loop is numpy call overhead.
    vectors = np.empty((4, n), kernel.dtype)
    u, v, row, kernel_v = vectors
    sums = vectors[2:].reshape(-1)  # row and kernel_v, tested for absorption by one argmin
    v.fill(1.0)
    np.dot(kernel, v, out=kernel_v)
    error = np.inf
    iteration = 0
    every = 1 if single else _CHECK_EVERY
    for iteration in range(1, max_iter + 1):
        test = iteration <= 3 or iteration % every == 1 or every == 1
        if iteration > 1 and test:
            error = _row_error(u, kernel_v, row)
            if error < tol:
                iteration -= 1
                break
        np.reciprocal(kernel_v, out=u)
        np.dot(u, kernel, out=row)
        np.reciprocal(row, out=v)
        np.dot(kernel, v, out=kernel_v)
        if test and _least(sums) < low:
            # Fold the scalings into the kernel before u = 1 / (K v) or v overflows; its
            # entries become those of the current doubly stochastic estimate, hence <= 1.
            _scaled_rows_columns(kernel, u, v, work)
            potential = potential + np.log(v)
            u.fill(1.0)
            v.fill(1.0)
            np.dot(kernel, v, out=kernel_v)
    else:
        error = _row_error(u, kernel_v, row)
    if single:
        _scale_back(kernel, u, v, log_kernel)
    else:
        _scaled_rows_columns(kernel, u, v, work)
    return _result(log_kernel, iteration, error < tol, error,
                   potential + np.log(v, dtype=np.float64))


# Up to this many rows the broadcasting updates of an n x n matrix by a vector (a row or
# column scaling, a potential) write the vector into an n x n work array (``work[...] = v``)
# and apply the ufunc to two contiguous matrices: at n = 34 about 1.5 us instead of 6 us for
# numpy's broadcasting ufunc loop (one inner loop per row); the same values, bit for bit.
_BROADCAST_WORK_MAX_N = 200


def _broadcast_work(matrix: np.ndarray, single: bool = False) -> np.ndarray | None:
    """An n x n scratch array for :func:`_by_rows` and :func:`_by_columns` up to
    ``_BROADCAST_WORK_MAX_N`` rows (float64 kernels); else None (numpy broadcasts)."""
    if single or matrix.shape[0] > _BROADCAST_WORK_MAX_N or not matrix.flags.c_contiguous:
        return None
    return np.empty_like(matrix)


def _by_rows(ufunc, matrix: np.ndarray, vector: np.ndarray, work) -> None:
    """``matrix[i, j] = ufunc(matrix[i, j], vector[j])`` in place (through ``work`` if any)."""
    if work is None:
        ufunc(matrix, vector[None, :], out=matrix)
        return
    work[...] = vector
    ufunc(matrix, work, out=matrix)


def _by_columns(ufunc, matrix: np.ndarray, vector: np.ndarray, work) -> None:
    """``matrix[i, j] = ufunc(matrix[i, j], vector[i])`` in place (through ``work`` if any)."""
    if work is None:
        ufunc(matrix, vector[:, None], out=matrix)
        return
    work[...] = vector[:, None]
    ufunc(matrix, work, out=matrix)


def _scaled_rows_columns(kernel: np.ndarray, u: np.ndarray, v: np.ndarray, work) -> None:
    """``kernel <- diag(u) kernel diag(v)`` in place (rows first, as before: the same values)."""
    _by_columns(np.multiply, kernel, u, work)
    _by_rows(np.multiply, kernel, v, work)


def _centred(log_kernel: np.ndarray, warm: np.ndarray | None, single: bool,
             work: np.ndarray | None = None) -> np.ndarray:
    """Add ``warm`` and shift ``log_kernel`` in place so that its exponential neither overflows
    nor underflows; the column potential of the shifted kernel.

    The potentials start at the row maxima, then the column maxima of what is left, so the
    kernel lies in (0, 1] with a 1 in every row and every column: no row or column underflows
    (a warm start keeps its column potentials except where a column would underflow).
    """
    if warm is not None:
        _by_rows(np.add, log_kernel, warm, work)
    _by_columns(np.subtract, log_kernel, _row_maxima(log_kernel), work)
    floor = _UNDERFLOW_LOG_32 if single else _UNDERFLOW_LOG
    if warm is not None and work is not None and _least(log_kernel) >= floor:
        # Every entry, hence every column maximum, is above the floor: every column is kept
        # (what the column maxima below would find, without their reduction).
        return warm
    top = _max(log_kernel, axis=0)  # the column maxima, each <= 0
    if warm is None:
        g = np.negative(top, out=top)
    else:
        if not _least(top) < floor:  # the common case: every column kept (no n x n pass)
            return warm
        g = np.where(top < floor, -top, 0.0)
    _by_rows(np.add, log_kernel, g, work)
    return g if warm is None else warm + g


def _row_maxima(matrix: np.ndarray) -> np.ndarray:
    """The row maxima: up to 200 x 200 (C-contiguous) the entries at the row argmax, 1.4-3x
    faster than ``np.maximum.reduce(axis=1)`` from 15 to 200 rows (the same values)."""
    n, m = matrix.shape
    if n > _ROW_ARGMAX_MAX_N or not matrix.flags.c_contiguous:
        return _max(matrix, axis=1)
    return matrix.reshape(-1)[matrix.argmax(axis=1) + np.arange(0, n * m, m)]


def _exp_single(log_kernel: np.ndarray) -> np.ndarray:
    """``exp(log_kernel)`` as float32 in the first half of ``log_kernel``'s memory.

    Row ``i`` of the float32 view overlaps float64 rows ``i // 2`` (and ``i // 2 + 1`` when
    ``n`` is odd), read before it, so a forward sweep row by row never overwrites an unread
    entry (row 0, which overlaps itself, numpy buffers).
    """
    n = log_kernel.shape[0]
    kernel = log_kernel.reshape(-1).view(np.float32)[: n * n].reshape(n, n)
    for i in range(n):
        np.exp(log_kernel[i], out=kernel[i], casting="same_kind")
    return kernel


def _scale_back(kernel: np.ndarray, u, v, out: np.ndarray) -> None:
    """``out = diag(u) kernel diag(v)`` in float64, from the float32 ``kernel`` sharing
    ``out``'s memory: a backward sweep, since float64 row ``i`` covers float32 rows ``2i`` and
    ``2i + 1``, already read."""
    for i in range(kernel.shape[0] - 1, -1, -1):
        np.multiply(kernel[i], v, out=out[i], casting="same_kind")
        out[i] *= u[i]


def _row_error(u: np.ndarray, kernel_v: np.ndarray, out: np.ndarray) -> float:
    """``max |u o (K v) - 1|``, the row-sum error (columns are exact after each update)."""
    np.multiply(u, kernel_v, out=out)
    return float(max(_largest(out) - 1.0, 1.0 - _least(out)))


def _refuse_meta(value, name: str):
    """Refuse a torch tensor on the meta device (shape only, no data) before it is read."""
    if getattr(value, "is_meta", False):
        raise ValueError(
            f"{name} is a tensor on the meta device (it has no data), got {describe(value)}"
        )
    return value


def _check_scores(X, name: str) -> np.ndarray:
    return check_square(check_array(_refuse_meta(X, name), name, ndim=2), name)


def sinkhorn(S, *, tol: float = 1e-6, max_iter: int = 1000) -> SinkhornResult:
    """Doubly stochastic scaling of ``exp(S)`` in the log domain.

    Finds vectors ``f, g`` with ``P = exp(S + f 1^T + 1 g^T)`` doubly stochastic; ``P`` is the
    maximizer of ``<S, P> + H(P)`` over doubly stochastic matrices (``H`` = entropy). The kernel
    is formed as ``exp(S - rowmax - colmax) <= 1`` and the scalings are absorbed into the
    potentials before they reach 1e100, so any finite ``S`` works (no overflow, no 0/0).

    Args:
        S: square score matrix (log kernel).
        tol: stop when ``max_i |sum_j P_ij - 1| < tol`` (columns are exact).
        max_iter: cap on scaling iterations.

    Returns:
        A :class:`SinkhornResult`.

    >>> out = sinkhorn(np.array([[2.0, 0.0], [0.0, 2.0]]))
    >>> np.round(out.P, 4).tolist()
    [[0.8808, 0.1192], [0.1192, 0.8808]]

    Reference: Sinkhorn (1964); Schmitzer, "Stabilized sparse scaling algorithms for entropy
    regularized transport problems", SIAM J. Sci. Comput. 41 (2019).
    """
    S = _check_scores(S, "S")
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    return _sinkhorn(np.array(S, dtype=np.float64), tol, max_iter)


def softassign(X, beta: float, *, tol: float = 1e-6, max_iter: int = 1000) -> SinkhornResult:
    """Softassign ``S_beta(X) = sinkhorn(beta X)`` with a fixed inverse temperature.

    ``S_beta(X)`` maximizes ``<X, P> + H(P) / beta`` over doubly stochastic ``P``, so
    ``max_P <X, P> - <X, S_beta(X)> <= n log(n) / beta``: it tends to the Hungarian solution as
    ``beta`` grows. The scale of ``X`` matters: ``beta`` must be chosen for the size and weight
    units of the graphs (the pitfall :func:`dynamical_softassign` removes).

    Args:
        X: square score matrix (e.g. the gradient ``A M B + lam K``).
        beta: inverse temperature, > 0.
        tol, max_iter: Sinkhorn stopping rule.

    Returns:
        A :class:`SinkhornResult`.

    >>> np.round(softassign(np.array([[1.0, 0.0], [0.0, 1.0]]), 50).P, 6).tolist()
    [[1.0, 0.0], [0.0, 1.0]]

    Reference: Gold & Rangarajan, "A graduated assignment algorithm for graph matching",
    IEEE TPAMI 18 (1996).
    """
    X = _check_scores(X, "X")
    beta = check_real(beta, "beta", low=0, low_inclusive=False)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    return _sinkhorn(beta * X, tol, max_iter)


def dynamical_softassign(
    X, beta: float, *, scale: str = "range", tol: float = 1e-6, max_iter: int = 1000
) -> SinkhornResult:
    """Dynamical softassign ``sinkhorn(beta X / s(X))``, ``s(X) = max X - min X``.

    The inverse temperature applied to ``X`` is ``beta / s(X)``: it is recomputed from every
    score matrix, so the exponent spans exactly ``[0, beta]`` (before the Sinkhorn shift)
    whatever the graph size or the weight units, and the output is invariant to ``X -> c X + d``
    for ``c > 0``. Since Sinkhorn ignores constant shifts, the range is the scale that matters;
    ``scale="max"`` uses ``max |X|`` instead (the normalization of the authors' FRAM code), which
    is not shift invariant and goes flat on dense graphs, whose scores share a large offset.
    A constant matrix gives the uniform matrix ``11^T / n``.

    Args:
        X: square score matrix.
        beta: inverse temperature on the normalized scores, > 0.
        scale: ``"range"`` (default) or ``"max"``.
        tol, max_iter: Sinkhorn stopping rule.

    Returns:
        A :class:`SinkhornResult`.

    >>> a = dynamical_softassign(np.array([[3.0, 1.0], [1.0, 3.0]]), 5).P
    >>> b = dynamical_softassign(np.array([[3e6, 1e6], [1e6, 3e6]]) + 7.0, 5).P
    >>> bool(np.allclose(a, b))
    True

    Reference: Shen, Niu, Zhu, "Dynamical softassign and adaptive parameter tuning for graph
    matching", arXiv:2208.08233 v1 (2022); docs/matching.md says which reading is implemented.
    """
    X = _check_scores(X, "X")
    beta = check_real(beta, "beta", low=0, low_inclusive=False)
    scale = check_choice(scale, "scale", DYNAMICAL_SCALES)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    return _dynamical_softassign(X, beta, scale, tol, max_iter)


def _dynamical_width(scores: np.ndarray, scale: str) -> float:
    """The normalization ``s(X)`` of the dynamical softassign: range or max magnitude."""
    if scores.size <= _ARG_REDUCE_MAX:
        high, low = float(_largest(scores)), float(_least(scores))
    else:
        high, low = float(_max(scores, axis=None)), float(_min(scores, axis=None))
    return high - low if scale == "range" else max(high, -low)


def _dynamical_softassign(
    X: np.ndarray, beta: float, scale: str, tol: float, max_iter: int
) -> SinkhornResult:
    width = _dynamical_width(X, scale)
    if width == 0.0:
        n = X.shape[0]
        return _result(np.full((n, n), 1.0 / n), 0, True, 0.0)
    return _sinkhorn(X * (beta / width), tol, max_iter)


def softassign_transition(
    previous: np.ndarray, X, delta_beta: float, *, tol: float = 1e-6, max_iter: int = 1000
) -> SinkhornResult:
    """Raise the inverse temperature of a softassign: ``sinkhorn(S_beta o exp(delta X))``.

    Sinkhorn is invariant to diagonal scalings, ``sinkhorn(D1 E D2) = sinkhorn(E)``, and
    ``S_beta(X) = D1 exp(beta X) D2``; hence ``S_{beta + delta}(X) = sinkhorn(S_beta(X) o
    exp(delta X))`` (``o``: Hadamard product), which warm-starts the larger ``beta`` from the
    previous output instead of forming ``exp((beta + delta) X)``.

    Args:
        previous: ``S_beta(X)``, a doubly stochastic matrix with positive entries.
        X: the score matrix it was computed from.
        delta_beta: increase of the inverse temperature (may be negative).
        tol, max_iter: Sinkhorn stopping rule.

    Returns:
        A :class:`SinkhornResult` for ``S_{beta + delta_beta}(X)``.

    >>> X = np.array([[1.0, 0.2], [0.3, 0.9]])
    >>> up = softassign_transition(softassign(X, 2.0).P, X, 3.0).P
    >>> bool(np.allclose(up, softassign(X, 5.0).P))
    True

    Reference: Shen, Niu, Zhu, "Adaptive softassign via Hadamard-equipped Sinkhorn", CVPR 2024.
    """
    X = _check_scores(X, "X")
    previous = check_array(previous, "previous", shape=X.shape)
    if np.any(previous <= 0):
        raise ValueError("previous must have positive entries (a softassign output)")
    delta_beta = check_real(delta_beta, "delta_beta")
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    return _sinkhorn(np.log(previous) + delta_beta * X, tol, max_iter)


def softassign_gap_bound(P: np.ndarray, beta: float) -> float:
    """``H(P) / beta``: bound on ``max_Q <X, Q> - <X, P>`` when ``P = S_beta(X)`` (entropy ``H``).

    ``S_beta(X)`` maximizes ``<X, Q> + H(Q) / beta`` over doubly stochastic ``Q`` and permutations
    have zero entropy, so ``<X, P> + H(P) / beta >= max_Q <X, Q>``. Tighter than the a priori
    ``n log n / beta``, and computable from ``P`` alone.

    >>> round(softassign_gap_bound(np.full((2, 2), 0.5), 2.0), 6)  # entropy 2 log 2, beta 2
    0.693147
    """
    P = _check_scores(P, "P")
    if np.any(P < 0):
        raise ValueError(f"P must be nonnegative (a softassign), got min {P.min():.3g}")
    return _gap_bound(P, check_real(beta, "beta", low=0, low_inclusive=False))


def _gap_bound(P: np.ndarray, beta: float) -> float:
    return float(entr(P).sum()) / beta


def adaptive_softassign(
    X,
    beta: float,
    *,
    epsilon: float = 1.0,
    beta_max: float = 1e7,
    tol: float = 1e-6,
    max_iter: int = 1000,
) -> SinkhornResult:
    """Softassign at the smallest ``beta 2^j`` whose error bound meets a relative tolerance.

    With ``P_j = S_{beta 2^j}(X)`` and the barycenter ``U = 11^T / n``, ``j`` is the smallest
    integer >= 0 with

        H(P_j) / (beta 2^j) <= epsilon <X, P_j - U>,

    so that ``max_Q <X, Q - U> <= (1 + epsilon) <X, P_j - U>`` over permutations ``Q``
    (:func:`softassign_gap_bound`): the softassign solves the linear assignment problem to a
    relative error ``epsilon``, measured from the uniform assignment (which makes the test
    invariant to ``X -> c X + d`` and to constant rows and columns). Each doubling is the
    Hadamard power ``S_{2 beta}(X) = sinkhorn(S_beta(X) o S_beta(X))``, computed by doubling the
    log potentials of the previous scaling (a warm start) rather than from ``exp(2 beta X)``
    afresh. The doubling stops at ``beta_max``, or when ``P_j`` is a permutation.

    Args:
        X: square score matrix.
        beta: initial inverse temperature, > 0.
        epsilon: relative error bound, > 0.
        beta_max: cap on the inverse temperature.
        tol, max_iter: Sinkhorn stopping rule of every scaling.

    Returns:
        A :class:`SinkhornResult` with ``beta`` the inverse temperature reached.

    >>> X = np.array([[1.0, 0.0, 0.2], [0.1, 1.0, 0.0], [0.0, 0.3, 1.0]])
    >>> out = adaptive_softassign(X, 1.0, epsilon=0.1)
    >>> out.beta, bool(out.P.diagonal().min() > 0.99)
    (8.0, True)

    Reference: Shen, Niu, Zhu, "Adaptive softassign via Hadamard-equipped Sinkhorn", CVPR 2024
    (the error bound is this package's reading; see docs/matching.md).
    """
    X = _check_scores(X, "X")
    beta = check_real(beta, "beta", low=0, low_inclusive=False)
    epsilon = check_real(epsilon, "epsilon", low=0, low_inclusive=False)
    beta_max = check_real(beta_max, "beta_max", low=beta)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    return _adaptive_softassign(X, 1.0, beta, epsilon, beta_max, tol, max_iter)


def _adaptive_softassign(
    X: np.ndarray, width: float, beta: float, epsilon: float, beta_max: float, tol: float,
    max_iter: int, warm: np.ndarray | None = None, buffer: np.ndarray | None = None,
    float32_from: int = _FLOAT32_FROM,
) -> SinkhornResult:
    """The doubling loop on the scores ``X / width`` (``width``: the dynamical scale).

    ``buffer``: an array of X's shape that every scaling overwrites and ``P`` is returned in
    (no other n x n array is allocated); None: a new one.
    """
    uniform_value = float(X.sum()) / X.shape[0] / width
    out = _sinkhorn(_scaled_into(X, beta / width, buffer), tol, max_iter, warm, float32_from)
    iterations = out.n_iter
    while 2.0 * beta <= beta_max:
        bound = _gap_bound(out.P, beta)
        # bound = 0: P is a permutation (the beta -> inf limit); a larger beta changes nothing.
        if bound == 0.0 or bound <= epsilon * (float(np.vdot(X, out.P)) / width - uniform_value):
            break
        beta *= 2.0
        out = _sinkhorn(_scaled_into(X, beta / width, out.P), tol, max_iter,
                        2.0 * out.column_potential, float32_from)
        iterations += out.n_iter
    return _result(out.P, iterations, out.converged, out.error, out.column_potential, beta)


def _scaled_into(X: np.ndarray, factor: float, buffer: np.ndarray | None) -> np.ndarray:
    """``factor X``, written into ``buffer`` when one is given."""
    if buffer is None:
        return X * factor
    return np.multiply(X, factor, out=buffer)


def _row_argmax_assignment(X: np.ndarray) -> np.ndarray | None:
    """The row-wise argmax when it is a permutation (then it solves the assignment exactly)."""
    best = X.argmax(axis=1)  # the method and one argmin, not np.argmax and all(): 2.4x at n = 34
    hit = np.zeros(best.size, dtype=bool)
    hit[best] = True
    return best if hit[hit.argmin()] else None


def _hungarian_columns(X: np.ndarray) -> np.ndarray:
    # sum_i max_j X_ij bounds every assignment, so a row-argmax permutation is optimal and the
    # O(n^3) LAP is skipped; near convergence of a matching algorithm this is the common case.
    best = _row_argmax_assignment(X)
    if best is not None:
        return best
    rows, cols = linear_sum_assignment(X, maximize=True)
    out = np.empty(X.shape[0], dtype=np.intp)
    out[rows] = cols
    return out


def hungarian(X) -> np.ndarray:
    """The permutation matrix ``P`` maximizing ``<X, P>`` (linear assignment).

    Uses the row-wise argmax when it is already a permutation (it is then optimal, since
    ``sum_i max_j X_ij`` bounds every assignment), else ``scipy.optimize.linear_sum_assignment``.

    Args:
        X: square score matrix.

    Returns:
        The n x n 0/1 float matrix ``P``.

    >>> hungarian(np.array([[1.0, 3.0], [2.0, 4.0]])).tolist()
    [[0.0, 1.0], [1.0, 0.0]]

    Reference: Kuhn (1955); Leordeanu, Hebert, Sukthankar, "An integer projected fixed point
    method for graph matching and MAP inference", NIPS 2009.
    """
    X = _check_scores(X, "X")
    return _permutation_matrix(_hungarian_columns(X))


def _permutation_matrix(columns: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    n = columns.size
    P = np.zeros((n, n)) if out is None else out
    if out is not None:
        P.fill(0.0)
    P[np.arange(n), columns] = 1.0
    return P


def doubly_stochastic_projection(Y, *, tol: float = 1e-6, max_iter: int = 100) -> SinkhornResult:
    """Project ``Y`` onto the doubly stochastic matrices by alternating projections.

    Alternates the exact Euclidean projection onto ``{P : P1 = 1, P^T 1 = 1}``,

        P <- P + (1/n + 1^T P 1 / n^2) 11^T - (1/n) P 11^T - (1/n) 11^T P,

    with the projection onto ``P >= 0`` (clipping), as in Zass & Shashua and DSPFP. Stops when
    the clipped iterate has all row and column sums within ``tol`` of 1, or after ``max_iter``
    rounds (the result is then the last clipped iterate).

    Args:
        Y: square matrix.
        tol: tolerance on row and column sums.
        max_iter: cap on rounds.

    Returns:
        A :class:`SinkhornResult` with the projected n x n matrix as ``x`` (also ``P``),
        ``n_iter`` rounds, ``converged`` and ``error`` (the largest row or column sum error).

    >>> np.round(doubly_stochastic_projection(np.array([[2.0, 0.0], [0.0, 2.0]])).P, 4).tolist()
    [[1.0, 0.0], [0.0, 1.0]]

    Reference: Zass & Shashua, "Doubly stochastic normalization for spectral clustering",
    NIPS 2006; Lu, Huang, Liu, Pattern Recognition 60 (2016).
    """
    Y = _check_scores(Y, "Y")
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    P, rounds = _doubly_stochastic_projection(Y, tol, max_iter)
    error = max(np.max(np.abs(P.sum(axis=1) - 1)), np.max(np.abs(P.sum(axis=0) - 1)))
    return _result(P, rounds, error < tol, error)


def _doubly_stochastic_projection(
    Y: np.ndarray, tol: float, max_iter: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """The projection (in ``out`` when given) and the number of rounds performed."""
    n = Y.shape[0]
    P = np.array(Y, dtype=np.float64) if out is None else out
    if out is not None:
        np.copyto(P, Y)
    rounds = 0
    for rounds in range(max_iter + 1):
        rows = P.sum(axis=1)
        cols = P.sum(axis=0)
        if rounds > 0 and max(np.max(np.abs(rows - 1)), np.max(np.abs(cols - 1))) < tol:
            break
        if rounds == max_iter:
            break
        P += (1.0 / n + rows.sum() / n**2) - rows[:, None] / n - cols[None, :] / n
        np.maximum(P, 0.0, out=P)
    return P, rounds
