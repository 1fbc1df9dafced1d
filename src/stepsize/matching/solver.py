"""The projected fixed-point framework and the ``match_graphs`` front door.

Every method iterates

    D_k     = P(grad Z(M_k)),            grad Z(M) = A M B + lam K,
    M_{k+1} = M_k + alpha_k (D_k - M_k),

with a projection ``P`` (softassign, dynamical softassign, Hungarian, doubly stochastic) and a
step rule (fixed, or the adaptive closed-form line search of :mod:`.steps`). The products are
organized so that an iteration costs exactly two sparse-or-dense products: with
``Delta = D - M`` and ``H = A Delta B`` (two products), ``c2 = <Delta, H> / 2`` and the next
gradient is ``grad Z(M_{k+1}) = grad Z(M_k) + alpha_k H``. The objective is tracked the same way,
``Z(M_{k+1}) = Z(M_k) + c1 alpha + c2 alpha^2``. From the barycenter ``M_0 = 11^T / N`` the first
gradient is the rank-one ``(A 1)(1^T B) / N`` (O(n^2), no product).

The solver works on ``A / max|A|`` and ``B / max|B|`` (and ``lam K`` divided by the same overall
scale ``s``): the maximizing permutation of ``<A, P B P^T> + lam <K, P>`` does not change when
the objective is multiplied by ``s > 0``, so every preset returns the same matching for weights
in units of 1e-200 or 1e200 (no overflow, no underflow), and the fixed ``beta`` of ``ga`` and
``softassign`` refers to weights in [-1, 1]. Objective values reported (``objective``,
``history``, ``info``) are in the user's units; ``info["log_scale"]`` is ``log s``.

Graphs of different sizes are padded with isolated dummy nodes to ``N = max(n1, n2)``. The
padding adds constant rows (or columns) to every score matrix, to which Sinkhorn is exactly
invariant (a constant row is a diagonal scaling), so it does not bias softassign.

Presets of :func:`match_graphs` (``METHODS``):

========  ======================================  ==================  ==========================
method    projection                              step                reference
========  ======================================  ==================  ==========================
apfp      dyn. softassign, beta = 10 sqrt(N);     adaptive            Shen, Niu, Zhu (default)
          restarted with the adaptive softassign
          if it stops at a soft fixed point
asm       adaptive softassign (beta from 1,       adaptive            Shen, Niu, Zhu, CVPR 2024
          doubled until epsilon = 1 holds)
ga        softassign, beta 0.5 -> 10 (x1.075)     fixed 1             Gold & Rangarajan 1996
ipfp      Hungarian                               adaptive            Leordeanu et al. 2009
dspfp     doubly stochastic projection            fixed 0.5           Lu, Huang, Liu 2016
========  ======================================  ==================  ==========================

apfp and asm end every start with IPFP iterations (``polish``) from their last iterate when it is
not yet a matching (one up to 100 nodes, at most 30 above), then, up to 100 nodes, with a
pairwise-exchange local search (``two_opt``): QAPLIB n <= 50, one start, mean gap 6.8% -> 5.3%
and five starts 3.3% -> 2.9%, in less time than the 30 IPFP steps took (docs/matching.md).

Directed graphs and the QAP (``maximize=False``, scipy's minimization) use the exact gradient
``1/2 (A M B^T + A^T M B)`` (two more products when both graphs are directed); ``n_init``
starts, stall restarts and ``seeds`` are described in :func:`projected_fixed_point`.

A soft fixed point (apfp): the iteration converged with a mean row maximum of ``X`` below 1/2,
which happens when a few large scores (the hubs of a power-law graph) set the range of the
dynamical softassign and every other row stays nearly uniform. The restart runs the same
iteration from the same start with the adaptive softassign (``epsilon = restart_epsilon``) and
the matching with the higher objective is returned.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from stepsize._progress import progress_bar
from stepsize._results import ConvergenceWarning, SolverResult, warn_not_converged
from stepsize._validation import (
    check_array,
    check_choice,
    check_int,
    check_progress,
    check_real,
    check_rng,
    describe,
)
from stepsize.matching.graphs import as_adjacency
from stepsize.matching.objective import assignment_objective
from stepsize.matching.projections import (
    _FLOAT32_FROM,
    DYNAMICAL_SCALES,
    SinkhornResult,
    _adaptive_softassign,
    _broadcast_work,
    _by_columns,
    _by_rows,
    _doubly_stochastic_projection,
    _dynamical_width,
    _hungarian_columns,
    _largest,
    _least,
    _permutation_matrix,
    _refuse_meta,
    _row_maxima,
    _sinkhorn,
)
from stepsize.matching.steps import StepRule, adaptive_step, fixed_step

__all__ = [
    "ADAPTIVE_BETA_MAX",
    "AUTO_BETA",
    "INNER_TOL_FACTOR",
    "METHODS",
    "MatchingOptions",
    "PROJECTIONS",
    "MatchingResult",
    "match_graphs",
    "projected_fixed_point",
]

PROJECTIONS = ("dynamical_softassign", "softassign", "hungarian", "doubly_stochastic")
_SOFTASSIGNS = ("dynamical_softassign", "softassign")

# Cap of the adaptive softassign's inverse temperature on range-normalized scores: resolves score
# differences of 1e-7 of the range, past which softassign is the Hungarian projection.
ADAPTIVE_BETA_MAX = 1e7

# The loosest Sinkhorn tolerance of apfp is INNER_TOL_FACTOR * inner_tol (0.1 by default):
# the first projections, far from the fixed point, need no precision, since the adaptive step
# is an exact line search along whatever direction they give. It cut QAPLIB's Sinkhorn
# iterations 4x at equal accuracy on the benchmark families (docs/matching.md); asm keeps a
# fixed tolerance (its doubling test reads the entropy of P: mean accuracy 0.657 -> 0.587).
INNER_TOL_FACTOR = 100.0
# ... below this many nodes: from 1000 up the products dominate, and the outer iteration that a
# loose early direction adds costs more than the Sinkhorn iterations it saves (sparse n = 2000:
# 5 outer iterations instead of 4; n = 10,000: 6 instead of 4, 127 s of CPU instead of 83).
_LOOSE_INNER_BELOW = 1000
# Up to _INEXACT_MAX_N nodes, where a Sinkhorn scaling is a few numpy calls' overhead, such a
# loose projection also stops after at most _INEXACT_MAX_ITER scalings (inner_max_iter None,
# the default; else _INNER_MAX_ITER, or the inner_max_iter given). A projection that needs more
# is one whose kernel the hubs of a graph make nearly degenerate (slow, sublinear scaling): on
# the real networks of docs/matching.md (n <= 77) 53 of 439 projections took the 100 allowed
# and half of all scalings; at 30, mean accuracy 0.854 -> 0.859 in 0.85x the time, the
# benchmark families at n <= 100 unchanged. Above, the outer iterations it adds cost more:
# power-law pairs take more iterations from 150 nodes, and at 500 nodes (seed 0, rewiring
# 0.05) 35 instead of 9, at accuracy 0.03 instead of 1.0.
_INEXACT_MAX_N = 100
_INEXACT_MAX_ITER = 30
_INNER_MAX_ITER = 100

# Randomized starts tried, one after the other, when the kept run has stalled (the default of
# the stall_restarts option).
_STALL_RESTARTS = 3

@dataclass(frozen=True)
class MatchingOptions:
    """The iteration options of :func:`projected_fixed_point`, with its defaults.

    The presets of ``METHODS`` are instances; ``match_graphs(A, B, method=name, **options)``
    runs ``METHODS[name].replaced(**options)``, and ``projected_fixed_point(A, B,
    options=...)`` takes one (its keyword overrides are fields too).

    Fields:
        projection: ``"dynamical_softassign"``, ``"softassign"``, ``"hungarian"`` or
            ``"doubly_stochastic"``.
        step: ``"adaptive"`` (exact line search, monotone), a fixed ``alpha`` in (0, 1], or a
            callable ``(c1, c2) -> alpha``.
        lam: weight of the node affinity ``K``.
        beta: softassign inverse temperature at iteration 0, or ``"auto"`` (``10 sqrt(N)``).
        scale: dynamical softassign normalization, ``"range"`` (default) or ``"max"``.
        beta_growth, beta_max: ``beta_k = min(beta beta_growth**k, beta_max)`` (GA).
        epsilon: adaptive softassign (ASM) relative error bound at every iteration, or None.
        restart_epsilon: rerun a soft fixed point with this ``epsilon``; keep the better.
        init: ``"barycenter"``, ``"randomized"`` or an n1 x n2 array (the first start).
        max_iter, tol: cap on iterations; stop at ``alpha ||D - M|| / ||M|| < tol``.
        inner_tol, inner_max_iter: Sinkhorn (or doubly stochastic projection) stopping rule;
            ``inner_max_iter=None`` (default): 100, or 30 for inexact projections up to 100
            nodes (below).
        inner_tol_factor: the inner tolerance of iteration ``k`` is the last relative change
            ``alpha ||D - M|| / ||M||`` clipped to ``[inner_tol, inner_tol_factor inner_tol]``
            (loose far from the fixed point, where the exact line search needs no precise
            direction); 1: ``inner_tol`` throughout. apfp: ``INNER_TOL_FACTOR = 100``, below
            1000 nodes (above, the products dominate and the tolerance stays ``inner_tol``).
            Up to 100 nodes such inexact projections stop after at most 30 scalings unless
            ``inner_max_iter`` is given.
        polish: at most this many IPFP sharpening iterations for a run not yet a matching
            (stopped after 5 without a better discrete iterate).
        two_opt: end every start (up to 100 nodes) with a pairwise-exchange local search
            from its matching (best-improvement swaps to a local optimum; apfp and asm).
        stagnation: also stop a softassign run with the adaptive step, as converged, when its
            objective rose by at most 1% of its total rise over 5 iterations (4 up to 100
            nodes; the adaptive softassign: 3% over 3); ``message`` says so. apfp's runs from
            the barycenter on sparse graphs (at most half the node pairs joined) up to 50 nodes
            also stop once the Hungarian rounding of the iterate is the same for 2 iterates
            and maximizes the linearization at itself. False: only ``tol`` and ``max_iter``
            stop it.
        history: keep the relaxed objective of every iterate in ``history``.
        stall_restarts: randomized starts tried when the kept run has stalled (0: none).
        float32_from: Sinkhorn kernels with at least this many rows are float32 (half the
            memory traffic; tolerances >= 1e-6 and kernels with no entry below exp(-80) only).
        memory_limit: bytes the N x N work arrays may take, checked before any exists (a
            ``MemoryError`` naming the largest N that fits); None: 80% of ``MemAvailable``.

    >>> METHODS["apfp"].replaced(max_iter=20).max_iter, METHODS["apfp"].polish
    (20, 30)
    """

    projection: str = "dynamical_softassign"
    step: Any = "adaptive"
    lam: float = 1.0
    beta: Any = "auto"
    scale: str = "range"
    beta_growth: float = 1.0
    beta_max: float = math.inf
    epsilon: float | None = None
    restart_epsilon: float | None = None
    init: Any = "barycenter"
    max_iter: int = 100
    tol: float = 1e-3
    inner_tol: float = 1e-3
    inner_tol_factor: float = 1.0
    inner_max_iter: int | None = None
    polish: int = 0
    two_opt: bool = False
    stagnation: bool = True
    history: bool = False
    stall_restarts: int = _STALL_RESTARTS
    float32_from: int = _FLOAT32_FROM
    memory_limit: float | None = None

    def replaced(self, **options) -> MatchingOptions:
        """A copy with ``options`` changed; an unknown name is a TypeError listing the fields."""
        if not options:
            return self  # frozen: the same options
        names = _field_names(type(self))
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"unexpected option(s) {', '.join(unknown)}; options are "
                            f"{', '.join(names)}")
        return replace(self, **options)

    def as_dict(self) -> dict[str, Any]:
        """The options as keywords of :func:`projected_fixed_point` (values not copied)."""
        return {name: getattr(self, name) for name in _field_names(type(self))}


@functools.cache
def _field_names(kind) -> tuple[str, ...]:
    return tuple(item.name for item in fields(kind))


METHODS: dict[str, MatchingOptions] = {
    "apfp": MatchingOptions(projection="dynamical_softassign", step="adaptive", beta="auto",
                            restart_epsilon=1.0, beta_max=ADAPTIVE_BETA_MAX, polish=30,
                            inner_tol_factor=INNER_TOL_FACTOR, two_opt=True),
    "asm": MatchingOptions(projection="dynamical_softassign", step="adaptive", beta=1.0,
                           epsilon=1.0, beta_max=ADAPTIVE_BETA_MAX, polish=30, two_opt=True),
    "ga": MatchingOptions(projection="softassign", step=1.0, beta=0.5, beta_growth=1.075,
                          beta_max=10.0),
    "ipfp": MatchingOptions(projection="hungarian", step="adaptive"),
    "dspfp": MatchingOptions(projection="doubly_stochastic", step=0.5),
}

# beta="auto" is AUTO_BETA * sqrt(N) on the range-normalized scores: the per-size optimum of the
# beta sweep of experiment E3 (docs/matching.md) grows about like sqrt(N).
AUTO_BETA = 10.0

# A softassign run that stops with a mean row maximum of X below this is a soft fixed point.
_SOFT_ROW_MAX = 0.5

# Below this fraction of nonzeros the products use scipy.sparse, above it dense BLAS.
_SPARSE_DENSITY = 0.05

# Dense N x N float64 arrays the iteration holds (M, gradient, direction, curvature).
_WORK_ARRAYS = 4
# The share of the available memory a problem may take (the rest: inputs, LAP copies, others).
_MEMORY_FRACTION = 0.8
# Work arrays below this many bytes are not checked against MemAvailable (a file read).
_SMALL_BYTES = 1 << 26

# The products A X B run in blocks of rows of about this many entries (the intermediate A X).
_BLOCK_ENTRIES = 1 << 20


@dataclass
class MatchingResult(SolverResult):
    """Outcome of a graph matching solver.

    Attributes:
        x: the relaxed matching matrix (n1 x n2) at the last iterate; also ``X``.
        n_iter: outer iterations performed.
        converged: whether the relative change ``alpha ||Delta|| / ||M||`` fell below ``tol``
            (or the adaptive step stalled at ``alpha = 0``, a fixed point of the method).
        history: ``Z(M_k)`` of the relaxed iterates, ``k = 0..n_iter``, when requested.
        message: reason for stopping.
        info: per-iteration ``alpha``, ``c1``, ``c2``, ``beta`` and ``inner_iterations``
            (Sinkhorn or projection rounds), plus ``relaxed_objective`` and ``rounding``.
        col_ind: node i of A matches node ``col_ind[i]`` of B (-1: unmatched, when A has more
            nodes than B), as in ``scipy.optimize.quadratic_assignment``.
        objective: ``Z`` of that 0/1 matching.
        method: the preset name, or ``"custom"`` for :func:`projected_fixed_point`.
    """

    col_ind: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    objective: float = float("nan")
    method: str = "custom"

    @property
    def X(self) -> np.ndarray:  # noqa: N802 - the paper's and the contract's name
        """The relaxed matching matrix (alias of ``x``)."""
        return self.x


def _pad(matrix, size: int, sparse: bool):
    n = matrix.shape[0]
    if sparse:
        matrix = sp.csr_array(matrix)
        if n == size:
            return matrix
        indptr = np.concatenate([matrix.indptr, np.full(size - n, matrix.indptr[-1])])
        return sp.csr_array((matrix.data, matrix.indices, indptr), shape=(size, size))
    padded = np.zeros((size, size))
    padded[:n, :n] = matrix.toarray() if sp.issparse(matrix) else matrix
    return padded


def _nonzeros(matrix) -> int:
    return int(matrix.nnz) if sp.issparse(matrix) else int(np.count_nonzero(matrix))


def _initial_matrix(init, n1: int, n2: int, size: int, rng) -> np.ndarray:
    if isinstance(init, str):
        check_choice(init, "init", ("barycenter", "randomized"))
        if init == "barycenter":
            return np.full((size, size), 1.0 / size)
        # FAQ's randomized start: halfway between the barycenter and a random doubly
        # stochastic matrix (in place: at most two N x N arrays at once).
        noise = _sinkhorn(np.log(rng.uniform(size=(size, size))), 1e-10, 10_000).P
        noise += 1.0 / size
        noise *= 0.5
        return noise
    start = check_array(init, "init", shape=(n1, n2))
    padded = np.zeros((size, size))
    padded[:n1, :n2] = start
    return padded


def _softassign(grad, beta, settings, n1, n2, warm, buffer, tol) -> SinkhornResult:
    """Softassign of ``grad`` into ``buffer`` to the row-sum tolerance ``tol``: dynamical
    (scaled by the real block) or plain, adaptive or not."""
    # The scale comes from the real block: the zero rows or columns of the padding are constant
    # (Sinkhorn ignores them) but would inflate the range.
    width = (_dynamical_width(grad[:n1, :n2], settings.scale)
             if settings.projection == "dynamical_softassign" else 1.0)
    if width == 0.0:
        buffer.fill(1.0 / grad.shape[0])
        return SinkhornResult(buffer, 0, True, error=0.0, beta=beta)
    max_iter = settings.inner_max_iter
    if settings.epsilon is None:
        np.multiply(grad, beta / width, out=buffer)
        out = _sinkhorn(buffer, tol, max_iter, warm, settings.float32_from)
        out.beta = beta  # set, not dataclasses.replace: a copy per projection at small n
        return out
    return _adaptive_softassign(grad, width, beta, settings.epsilon, settings.beta_max, tol,
                                max_iter, warm, buffer, settings.float32_from)


def _step_rule(step) -> StepRule:
    if isinstance(step, str):
        check_choice(step, "step", ("adaptive",))
        return adaptive_step
    if callable(step):
        # a progress bar's counter (progress_options) wraps a rule checked already
        return step if hasattr(step, "_stepsize_counted") else _checked_rule(step)
    return fixed_step(check_real(step, "step", low=0, high=1, low_inclusive=False))


@contextmanager
def progress_options(options: dict, progress, desc: str):
    """``options`` whose step rule advances a progress bar once per outer iteration.

    ``progress``: None (a bar when stderr is a terminal), True or False. The bar counts the
    iterations of every start and restart; with no bar shown, ``options`` is unchanged.
    """
    progress = check_progress(progress)
    if progress is False or (progress is None and not sys.stderr.isatty()):
        yield options  # no bar (and no tqdm object: a few hundred microseconds per call)
        return
    with progress_bar(total=None, progress=progress, unit=" it", desc=desc) as bar:
        if bar.disable:
            yield options
            return
        rule = _step_rule(options.get("step", "adaptive"))

        def counting(c1: float, c2: float) -> float:
            bar.update(1)
            return rule(c1, c2)

        counting._stepsize_counted = rule  # the counted rule (_adaptive)
        yield {**options, "step": counting}


def _adaptive(rule: StepRule) -> bool:
    """Whether ``rule`` is :func:`adaptive_step`, itself or counted by a progress bar."""
    return getattr(rule, "_stepsize_counted", rule) is adaptive_step


def _checked_rule(rule: StepRule) -> StepRule:
    """A user's step rule whose every ``alpha`` is checked to lie in [0, 1]."""

    def checked(c1: float, c2: float) -> float:
        alpha = rule(c1, c2)
        try:
            value = float(alpha)
        except (TypeError, ValueError):
            raise TypeError(
                f"step (a callable) must return a number, got {describe(alpha)}"
            ) from None
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise ValueError(f"step (a callable) returned alpha = {value!r}; it must be in [0, 1]")
        return value

    return checked


def _check_graph_input(value, name: str):
    """Refuse what :func:`as_adjacency` would turn into a raw error or a silent cast."""
    _refuse_meta(value, name)
    if sp.issparse(value) and np.iscomplexobj(value.data):
        raise TypeError(f"{name} must be real, got complex {describe(value)}")
    if hasattr(value, "edges") and hasattr(value, "is_directed"):  # a networkx graph
        for *_, weight in value.edges(data="weight", default=1.0):
            if np.iscomplexobj(weight):
                raise TypeError(f"{name} must have real edge weights, got {weight!r}")
    return value


def _max_abs(matrix) -> float:
    if sp.issparse(matrix):
        return float(np.max(np.abs(matrix.data))) if matrix.nnz else 0.0
    # max |a| = max(max a, -min a), without the n x n |matrix| (the same value)
    return abs(max(float(_largest(matrix)), -float(_least(matrix))))


def _normalize(A, B, K, lam: float, maxima=None):
    """Factors ``(a, b, lam K / s, log s)`` of the normalized problem ``(A / a, B / b, ...)``.

    ``a = max|A|``; ``b = max|B| s / (max|A| max|B|)``; ``s = max(max|A| max|B|, |lam| max|K|)``,
    formed in logarithms, so weights near the ends of the float64 range neither overflow nor
    underflow. ``Z`` of the normalized problem is ``Z / s``; without a node term ``s = a b``.
    Zero matrices get the factor 1. ``maxima``: ``(max|A|, max|B|)`` when already known.
    """
    a, b = maxima or (_max_abs(A), _max_abs(B))
    log_quadratic = math.log(a) + math.log(b) if a > 0 and b > 0 else -math.inf
    k = _max_abs(K) if K is not None and lam != 0.0 else 0.0
    log_linear = math.log(abs(lam)) + math.log(k) if k > 0 else -math.inf
    log_scale = max(log_quadratic, log_linear)
    if log_scale == -math.inf:  # everything is zero
        return 1.0, 1.0, None, 0.0
    if log_quadratic != log_scale and b > 0:
        # divide by b, then by s / (a b) < 1 (inf when the quadratic term underflows entirely)
        ratio = log_quadratic - log_scale
        b = b / math.exp(ratio) if ratio > -700.0 else math.inf
    linear = None
    if k > 0:
        linear = (K / k) * math.copysign(math.exp(log_linear - log_scale), lam)
    return a or 1.0, b or 1.0, linear, log_scale


def _scaled(padded, factor: float, sparse: bool):
    """``padded / factor``, in place for the dense copy made by :func:`_pad`."""
    if factor == 1.0:
        return padded
    if sparse:
        return padded / factor
    padded /= factor
    return padded


def _rescale(value: float, log_scale: float) -> float:
    """``value * exp(log_scale)``, rounded to +-inf or 0 outside the float64 range."""
    if log_scale == 0.0 or value == 0.0 or not math.isfinite(value):
        return value
    if abs(log_scale) < 700.0:
        return value * math.exp(log_scale)
    exponent = math.log(abs(value)) + log_scale
    magnitude = math.inf if exponent > 709.78 else math.exp(exponent)
    return math.copysign(magnitude, value)


def _user_objective(A, B, K, lam: float, col_ind: np.ndarray, maximize: bool) -> float:
    """The objective of the 0/1 matching ``col_ind`` in the user's units and convention.

    ``maximize``: ``Z = 1/2 <A, P B P^T> + lam <K, P>``; else scipy's ``fun``,
    ``<A, P B P^T> + lam <K, P>``.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        quadratic = assignment_objective(A, B, col_ind)
        linear = 0.0
        if K is not None and lam != 0.0:
            rows = np.flatnonzero(col_ind >= 0)
            linear = lam * float(np.asarray(K)[rows, col_ind[rows]].sum())
        return (quadratic if maximize else 2.0 * quadratic) + linear


def _from_internal(value: float, maximize: bool) -> float:
    """A value of the internal maximization ``Z_int`` in the user's convention."""
    return value if maximize else -2.0 * value


def _check_seeds(seeds, n1: int, n2: int) -> np.ndarray | None:
    """``seeds`` as an (m, 2) integer array of distinct, in-range pairs (scipy's partial_match)."""
    if seeds is None:
        return None
    pairs = np.asarray(seeds)
    if pairs.size == 0:
        return None
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(
            f"seeds must be an (m, 2) array of pairs (node of A, node of B), as scipy's "
            f"partial_match, got shape {pairs.shape}"
        )
    if pairs.dtype.kind not in "iu":
        raise TypeError(f"seeds must hold integer node indices, got dtype {pairs.dtype}")
    pairs = pairs.astype(np.intp)
    for column, name, n in ((0, "A", n1), (1, "B", n2)):
        nodes = pairs[:, column]
        bad = nodes[(nodes < 0) | (nodes >= n)]
        if bad.size:
            raise ValueError(f"seeds: node {int(bad[0])} of {name} is out of range [0, {n})")
        values, counts = np.unique(nodes, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(
                f"seeds: node {int(values[np.argmax(counts > 1)])} of {name} is seeded twice"
            )
    return pairs


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def _block(matrix, rows: np.ndarray, cols: np.ndarray):
    if sp.issparse(matrix):
        return sp.csr_array(matrix)[rows][:, cols]
    return matrix[np.ix_(rows, cols)]


def _internal_problem(A, B, K, lam: float, maximize: bool, seeds: np.ndarray | None):
    """The maximization actually solved, on the nodes not fixed by ``seeds``.

    ``Z_int(X) = 1/2 <A_f, X B_f X^T> + <L, X>``, with ``A_int = A`` (``-A`` to minimize) and
    ``L = lam K`` (``-lam K / 2``); each seed pair ``(s, t)`` adds the linear term of its edges
    to the free nodes, ``1/2 (A_int[s, f]^T B[t, g] + A_int[f, s] B[g, t]^T)``, as
    ``partial_match`` does in scipy's FAQ. Returns ``(A_f, B_f, L, free_a, free_b)``.
    """
    n1, n2 = A.shape[0], B.shape[0]
    A_int = A if maximize else -A
    linear = None
    if K is not None and lam != 0.0:
        linear = (lam if maximize else -0.5 * lam) * np.asarray(K, dtype=np.float64)
    if seeds is None:
        return A_int, B, linear, np.arange(n1), np.arange(n2)
    seed_a, seed_b = seeds[:, 0], seeds[:, 1]
    free_a = np.setdiff1d(np.arange(n1), seed_a)
    free_b = np.setdiff1d(np.arange(n2), seed_b)
    seeded = 0.5 * (_dense(_block(A_int, seed_a, free_a).T @ _block(B, seed_b, free_b))
                    + _dense(_block(A_int, free_a, seed_a) @ _block(B, free_b, seed_b).T))
    if linear is not None:
        seeded = seeded + linear[np.ix_(free_a, free_b)]
    return (_block(A_int, free_a, free_a), _block(B, free_b, free_b), seeded, free_a, free_b)


def _is_symmetric(matrix) -> bool:
    if sp.issparse(matrix):
        return (abs(matrix - matrix.T) > 0).nnz == 0
    # np.array_equal(matrix, matrix.T) for a square matrix, without its wrappers
    return not (matrix != matrix.T).any()


def _product_operands(A, B):
    """``(A, B, A^T, B^T)`` of the gradient ``1/2 (A M B^T + A^T M B)``, transposes None when
    the gradient is ``A M B``: both symmetric, or one symmetric and the other replaced by its
    symmetric part (``<A, M B M^T> = <A, M (B + B^T)/2 M^T>`` for symmetric ``A``), exactly."""
    symmetric_a, symmetric_b = _is_symmetric(A), _is_symmetric(B)
    if symmetric_a and symmetric_b:
        return A, B, None, None
    if symmetric_a:
        return A, (B + B.T) * 0.5, None, None
    if symmetric_b:
        return (A + A.T) * 0.5, B, None, None
    transpose = (lambda m: sp.csr_array(m.T)) if sp.issparse(A) else (lambda m: m.T.copy())
    return A, B, transpose(A), transpose(B)


def _check_settings(projection, step, beta, scale, beta_growth, beta_max, epsilon,
                    restart_epsilon, max_iter, tol, inner_tol, inner_max_iter, polish,
                    size: int, inner_tol_factor=1.0, stall_restarts=_STALL_RESTARTS,
                    float32_from=_FLOAT32_FROM, memory_limit=None, two_opt=False,
                    stagnation=True):
    """Validate the iteration options once; ``(settings, restart_epsilon)``."""
    projection = check_choice(projection, "projection", PROJECTIONS)
    rule = _step_rule(step)
    if isinstance(beta, str):
        check_choice(beta, "beta", ("auto",))
        beta = AUTO_BETA * math.sqrt(size)
    beta = check_real(beta, "beta", low=0, low_inclusive=False)
    scale = check_choice(scale, "scale", DYNAMICAL_SCALES)
    beta_growth = check_real(beta_growth, "beta_growth", low=1)
    if not (isinstance(beta_max, (int, float)) and beta_max > 0):
        raise ValueError(f"beta_max must be a positive number or inf, got {beta_max!r}")
    epsilon, restart_epsilon = (
        None if value is None else check_real(value, name, low=0, low_inclusive=False)
        for value, name in ((epsilon, "epsilon"), (restart_epsilon, "restart_epsilon"))
    )
    if (epsilon, restart_epsilon) != (None, None) and (
        projection not in _SOFTASSIGNS or math.isinf(beta_max)
    ):
        raise ValueError(
            f"epsilon and restart_epsilon (adaptive softassign) need a softassign projection "
            f"and a finite beta_max, got projection={projection!r}, beta_max={beta_max!r}"
        )
    inner_tol = check_real(inner_tol, "inner_tol", low=0, low_inclusive=False)
    inner_tol_max = inner_tol * check_real(inner_tol_factor, "inner_tol_factor", low=1)
    if size >= _LOOSE_INNER_BELOW:
        inner_tol_max = inner_tol
    if inner_max_iter is None:  # inexact projections at small n: _INEXACT_MAX_ITER scalings
        inexact = inner_tol_max > inner_tol and size <= _INEXACT_MAX_N
        inner_max_iter = _INEXACT_MAX_ITER if inexact else _INNER_MAX_ITER
    inner_max_iter = check_int(inner_max_iter, "inner_max_iter", low=1)
    settings = _Settings(
        projection, rule, beta, scale, beta_growth, beta_max, epsilon,
        check_int(max_iter, "max_iter", low=0), check_real(tol, "tol", low=0), inner_tol,
        inner_max_iter, check_int(polish, "polish", low=0),
        inner_tol_max=inner_tol_max,
        stall_restarts=check_int(stall_restarts, "stall_restarts", low=0),
        float32_from=check_int(float32_from, "float32_from", low=1),
        two_opt=_flag(two_opt, "two_opt"), stagnation=_flag(stagnation, "stagnation"),
        window=_STAGNANT_WINDOW_SMALL if size <= _INEXACT_MAX_N else _STAGNANT_WINDOW,
        settle=_SETTLE_ITERATES if (projection in _SOFTASSIGNS and epsilon is None
                                    and inner_tol_max > inner_tol and size <= _SETTLE_MAX_N) else 0,
        memory_limit=None if memory_limit is None else check_real(
            memory_limit, "memory_limit", low=0, low_inclusive=False))
    return settings, restart_epsilon


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def _settings_of(options: MatchingOptions, size: int):
    """``_check_settings`` of the iteration fields of ``options`` (not lam, init, history);
    remembered for hashable options (the presets: tens of microseconds a call at n <= 50)."""
    if isinstance(options.step, str):  # not a callable (a progress bar's: kept alive)
        known = _PRESET_SETTINGS.get((id(options), size))
        if known is not None and known[0] is options:  # a preset as it is (its fields' types)
            return known[1]
        # The field types are part of the key: 1 == True and 100.0 == 100 must not share a
        # check (two_opt=1 is a TypeError, two_opt=True is not).
        kinds = tuple(type(getattr(options, name)) for name in _field_names(type(options)))
        try:
            settings = _cached_settings(options, kinds, size)
        except TypeError:  # unhashable: an array init (an invalid value raises again below)
            return _checked_settings(options, size)
        if len(_PRESET_SETTINGS) < 256 and any(options is p for p in METHODS.values()):
            _PRESET_SETTINGS[id(options), size] = options, settings
        return settings
    return _checked_settings(options, size)


@functools.lru_cache(maxsize=64)
def _cached_settings(options: MatchingOptions, kinds: tuple, size: int):
    return _checked_settings(options, size)


# (id(preset), size) -> (preset, settings) for the presets of METHODS used unchanged (the
# same object, hence the same fields and types): the key of _cached_settings (the type of
# every field) costs a few percent of a call at 34 nodes. At most 256 sizes are kept.
_PRESET_SETTINGS: dict = {}


def _checked_settings(options: MatchingOptions, size: int):
    chosen = options.as_dict()
    for name in ("lam", "init", "history"):
        del chosen[name]
    return _check_settings(**chosen, size=size)


def projected_fixed_point(
    A, B, K=None, *, maximize: bool = True, n_init: int = 1, seeds=None, seed=None,
    options: MatchingOptions | None = None, **overrides,
) -> MatchingResult:
    """Maximize (or minimize) ``Z(M) = 1/2 <A, M B M^T> + lam <K, M>`` by projected fixed points.

    Iterates ``M <- M + alpha_k (P(grad Z(M)) - M)``, ``grad Z = 1/2 (A M B^T + A^T M B) +
    lam K``, from ``init``; rounds the last iterate (Hungarian) or keeps the best discrete
    iterate. ``maximize=False`` minimizes scipy's ``quadratic_assignment`` objective ``f(P) =
    <A, P B P^T> + lam <K, P>`` (``objective = f``; else ``Z = fun / 2``). Runs on ``A /
    max|A|``, ``B / max|B|``; values are reported in the user's units. Starts, stalls and
    restarts (``converged=False`` and a ``ConvergenceWarning`` when every start stalls),
    sharpening and seeds (scipy's ``partial_match``): the module docstring, docs/matching.md.

    Args:
        A, B: adjacencies (n1 x n1, n2 x n2): ndarray, scipy.sparse or networkx graph.
        K: optional node affinity (n1 x n2), weighted by ``lam``.
        maximize: maximize ``Z`` (default) or minimize ``f`` (the QAP).
        n_init: number of starts, >= 1. seeds: an (m, 2) integer array of known pairs, or None.
        seed: int or Generator for the randomized starts.
        options: a :class:`MatchingOptions` (its fields: ``projection``, ``step``, ``beta``,
            ``max_iter``, ``tol``, ``inner_tol``, ``polish``, ...); None: ``MatchingOptions()``,
            the plain iteration (no preset: no restart, no polish).
        **overrides: fields of ``options`` to change, e.g. ``max_iter=20`` (a TypeError names
            an unknown one).

    Returns:
        A :class:`MatchingResult`.

    Raises:
        ValueError, TypeError: naming the argument; MemoryError: the work arrays do not fit.

    >>> F = np.array([[0, 5, 1], [0, 0, 2], [3, 0, 0]], dtype=float)   # directed flows
    >>> D = np.array([[0, 1, 4], [2, 0, 1], [1, 3, 0]], dtype=float)   # directed distances
    >>> result = projected_fixed_point(F, D, maximize=False, n_init=3, seed=3)
    >>> result.col_ind.tolist(), result.objective, result.info["start_objectives"]
    ([1, 2, 0], 12.0, [13.0, 13.0, 12.0])
    >>> apfp = projected_fixed_point(F, D, maximize=False, n_init=3, seed=3,
    ...                              options=METHODS["apfp"], max_iter=50)  # a preset, changed
    >>> apfp.objective, match_graphs(F, D, maximize=False, n_init=3, seed=3, max_iter=50).objective
    (12.0, 12.0)

    Reference: Shen, Niu, Zhu, arXiv:2208.08233 (2022); Vogelstein et al., PLOS ONE (2015).
    """
    if options is None:
        options = MatchingOptions()
    elif not isinstance(options, MatchingOptions):
        raise TypeError(f"options must be a MatchingOptions, got {describe(options)}")
    options = options.replaced(**overrides)
    A, B, K, seeds, init = _checked_inputs(A, B, K, seeds, options.init)
    n1, n2 = A.shape[0], B.shape[0]
    if not isinstance(maximize, (bool, np.bool_)):
        raise TypeError(f"maximize must be True or False, got {describe(maximize)}")
    n_init, lam = check_int(n_init, "n_init", low=1), check_real(options.lam, "lam")
    settings, restart_epsilon = _settings_of(options, max(n1, n2))
    problem = _internal_problem(A, B, K, lam, bool(maximize), seeds)
    result, log_scale = _solve_free(problem, settings, init, _lazy_rng(seed), n_init,
                                    restart_epsilon)
    return _full_result(result, log_scale, problem, (A, B, K, lam), seeds, bool(maximize),
                        options.history)


def _lazy_rng(seed):
    """``seed`` checked as :func:`check_rng` does, and a function building its Generator when
    first called: a start from the barycenter draws nothing, and seeding a Generator is about
    30 us of a 1 ms call at QAPLIB's sizes."""
    if not (seed is None or isinstance(seed, np.random.Generator) or (
            isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0)):
        check_rng(seed)  # raises, naming seed
    built = []

    def draw() -> np.random.Generator:
        if not built:  # one Generator for every start of the call
            built.append(check_rng(seed))
        return built[0]

    return draw


def _checked_inputs(A, B, K, seeds, init):
    """The graphs as adjacencies, ``K``, ``seeds`` and ``init`` checked (shapes, values)."""
    A, B = _adjacency(A, "A"), _adjacency(B, "B")
    n1, n2 = A.shape[0], B.shape[0]
    if K is not None:
        K = check_array(_check_graph_input(K, "K"), "K", shape=(n1, n2))
    seeds = _check_seeds(seeds, n1, n2)
    if isinstance(init, str):
        check_choice(init, "init", ("barycenter", "randomized"))
    else:
        init = check_array(_check_graph_input(init, "init"), "init", shape=(n1, n2))
    return A, B, K, seeds, init


def _adjacency(value, name: str):
    """``as_adjacency(value, name, directed=True)[0]`` after :func:`_check_graph_input`; a
    non-empty square float64 ndarray with finite entries, which they return unchanged, is
    returned after those checks alone (their wrappers were a tenth of a call at 34 nodes)."""
    if (type(value) is np.ndarray and value.dtype == np.float64 and value.ndim == 2
            and value.shape[0] == value.shape[1] > 0 and np.isfinite(value).all()):
        return value
    return as_adjacency(_check_graph_input(value, name), name, directed=True)[0]


def _solve_free(problem, settings: _Settings, init, rng, n_init: int, restart_epsilon):
    """Solve on the free nodes of ``problem = (A_f, B_f, L, free_a, free_b)``."""
    A_free, B_free, linear, free_a, free_b = problem
    m1, m2 = free_a.size, free_b.size
    if isinstance(init, np.ndarray):
        init = init[np.ix_(free_a, free_b)]
    if m1 > 0 and m2 > 0:
        return _solve(A_free, B_free, linear, settings, init, rng, n_init, restart_epsilon)
    # Every node of one graph is seeded: nothing left to match.
    result = MatchingResult(x=np.zeros((m1, m2)), n_iter=0, converged=True, history=[],
                            message="every node is seeded", info={},
                            col_ind=np.full(m1, -1, dtype=np.intp), objective=0.0)
    result.info.update(normalized_objective=0.0, log_scale=0.0, starts=[],
                       start_objectives=[])
    return result, 0.0


def _full_result(result: MatchingResult, log_scale: float, problem, weights, seeds,
                 maximize: bool, history: bool) -> MatchingResult:
    """Back to the full problem: seeds and free nodes, objectives in the user's convention."""
    A, B, K, lam = weights
    free_a, free_b = problem[3], problem[4]
    n1, n2 = A.shape[0], B.shape[0]
    col_ind = _full_col_ind(result.col_ind, seeds, free_a, free_b, n1)
    if seeds is None:  # every node free: the iterate itself
        X = np.array(result.x)
    else:
        X = np.zeros((n1, n2))
        X[np.ix_(free_a, free_b)] = result.x
    constant = 0.0
    if seeds is not None:
        X[seeds[:, 0], seeds[:, 1]] = 1.0
        constant = _user_objective(A, B, K, lam, _full_col_ind(
            np.full(free_a.size, -1), seeds, free_a, free_b, n1), maximize)
    info = result.info
    objective_value = _user_objective(A, B, K, lam, col_ind, maximize)
    for start in info["starts"]:
        start_col_ind = start.pop("col_ind")
        start["objective"] = (objective_value if start_col_ind is result.col_ind else
                              _user_objective(A, B, K, lam, _full_col_ind(
                                  start_col_ind, seeds, free_a, free_b, n1), maximize))
    info["start_objectives"] = [start["objective"] for start in info["starts"]]
    if not math.isfinite(objective_value) and seeds is None:  # beyond float64: its sign
        objective_value = _from_internal(_rescale(info["normalized_objective"], log_scale),
                                         maximize)
    result.x, result.col_ind, result.objective = X, col_ind, objective_value
    result.history = ([constant + _from_internal(_rescale(value, log_scale), maximize)
                       for value in result.history] if history else None)
    info["maximize"] = maximize
    if seeds is not None:
        info["seeds"] = seeds
    return result


def _full_col_ind(free_col_ind, seeds, free_a, free_b, n1: int) -> np.ndarray:
    if seeds is None and free_a.size == n1 and free_b.size == free_b[-1] + 1:
        return np.array(free_col_ind, dtype=np.intp)  # every node free: the same indices
    col_ind = np.full(n1, -1, dtype=np.intp)
    if seeds is not None:
        col_ind[seeds[:, 0]] = seeds[:, 1]
    col_ind[free_a] = np.where(free_col_ind >= 0, free_b[np.maximum(free_col_ind, 0)], -1)
    return col_ind


# A run stalls at the barycenter when its mean row maximum is within this fraction of the way
# from the barycenter's (1/N) to a permutation's (1).
_UNIFORM_FRACTION = 0.05
# Polish runs whose mean row maximum is below this (not yet a matching), up to this size.
_POLISH_ROW_MAX = 0.95
_POLISH_MAX_N = 1000
# The polish stops after this many IPFP iterations without a better discrete iterate (it keeps
# the best one): on QAPLIB n <= 50 one start, 11.3 polish iterations on average (2 of 67 at 30).
_POLISH_PATIENCE = 5
# Up to this size a soft fixed point is only polished, not restarted (see _run_start): at
# n = 1000 a power-law pair (rewiring 0.05, seed 1) stops near the barycenter, and the polish
# and stall restarts took 2.5 s where the restart took 0.84 s, both accuracy 1.0.
_POLISH_ONLY_N = 200
# Up to this size every start ends with a pairwise-exchange (2-opt) local search from its
# matching: best-improvement swaps, each pass O(N^2) after two N x N products (QAPLIB n <= 50,
# one start: 0.02 s of apfp's 0.18 s; docs/matching.md).
_TWO_OPT_MAX_N = 100
# IPFP polish iterations before the 2-opt search (QAPLIB n <= 50, 5 starts: mean gap 2.59% with
# up to 30, 2.91% with 1, in 0.74x the time; the 3% goal is met within FAQ's time only so).
_POLISH_BEFORE_TWO_OPT = 1


def _uniform_row_max(size: int) -> float:
    """The mean row maximum of ``X`` at or below which a run has stalled at the barycenter."""
    return 1.0 / size + _UNIFORM_FRACTION * (1.0 - 1.0 / size)


def _stall(result: MatchingResult, size: int, projection: str) -> str | None:
    """``"uniform"``, ``"soft"`` or None: how a converged run stopped short of a matching
    (numpy and torch); None for a run that the 2-opt search ended (``info["sharpened_stall"]``
    then says that its relaxation stopped at the barycenter)."""
    if not result.converged:
        return None
    row_max = result.info["mean_row_max"]
    if row_max <= _uniform_row_max(size):
        if "two_opt" in result.info:
            # Sharpened: the polish and the 2-opt search ended it at a pairwise-exchange local
            # optimum of the discrete problem, an answer (FAQ's kind); recorded, not restarted.
            result.info["sharpened_stall"] = "uniform"
            return None
        return "uniform"
    # A soft fixed point that was sharpened (polish) ends at a discrete local optimum; one whose
    # rounding scores at least the relaxed value is a mixture of equally good matchings (ties,
    # isolated nodes). Either is an answer; a rounding that loses value has not decided.
    info = result.info
    if "polish" in info:
        return None
    if (projection in _SOFTASSIGNS and row_max < _SOFT_ROW_MAX
            and result.objective < info["relaxed_objective"]
            - 1e-9 * abs(info["relaxed_objective"])):
        return "soft"
    return None


def _available_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo (Linux), None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_memory(size: int, arrays: int, limit: float | None = None) -> None:
    """Refuse, before any N x N array exists, a problem whose work arrays exceed ``limit``
    bytes (None: 80% of ``MemAvailable``, not read for problems under 64 MiB)."""
    needed = arrays * 8 * size * size
    if limit is None:
        available = None if needed <= _SMALL_BYTES else _available_bytes()
        if available is None:
            return
        limit, what = _MEMORY_FRACTION * available, f"{available / 2**30:.1f} GiB are available"
    else:
        what = f"memory_limit is {limit / 2**30:.1f} GiB"
    if needed > limit:
        raise MemoryError(
            f"matching {size} x {size} needs about {needed / 2**30:.1f} GiB ({arrays} dense "
            f"N x N float64 work arrays, N = {size}) but {what}; at most "
            f"{math.isqrt(int(limit) // (8 * arrays))} nodes fit"
        )


def _work_arrays(settings: _Settings, restart_epsilon, n_init: int) -> int:
    """N x N arrays alive at once besides the graphs: the iteration's, plus one iterate kept
    while the soft restart or the polish runs, plus the best start's while another runs."""
    second = restart_epsilon is not None or settings.polish > 0
    return _WORK_ARRAYS + second + (n_init > 1 or settings.stall_restarts > 0)


def _solve(A, B, linear, settings: _Settings, init, rng, n_init: int, restart_epsilon):
    """Normalize, pad, run every start (and the stall restarts); the best run, ``log s``."""
    n1, n2 = A.shape[0], B.shape[0]
    size = max(n1, n2)
    sparse = (_nonzeros(A) + _nonzeros(B)) / (n1 * n1 + n2 * n2) < _SPARSE_DENSITY
    # The work arrays; the linear term; dense graphs' padded copies.
    _check_memory(size, _work_arrays(settings, restart_epsilon, n_init) + (linear is not None)
                  + (0 if sparse else 2), settings.memory_limit)
    maxima = _max_abs(A), _max_abs(B)
    a, b, node_term, log_scale = _normalize(A, B, linear, 1.0, maxima)
    A_ops, B_ops, A_t, B_t = _product_operands(_scaled(_pad(A, size, sparse), a, sparse),
                                               _scaled(_pad(B, size, sparse), b, sparse))
    padded_linear = None
    if node_term is not None:
        padded_linear = np.zeros((size, size))
        padded_linear[:n1, :n2] = node_term
    problem = _Problem(node_term, A_ops, B_ops, A_t, B_t, padded_linear, n1, n2, sparse)
    # A zero graph (and no linear term) makes every matching optimal: nothing can stall.
    constant = node_term is None and 0.0 in maxima
    result = _run_starts(problem, settings, init, rng, n_init, restart_epsilon, constant)
    _to_user_units(result, log_scale)
    return result, log_scale


def _run_starts(problem, settings: _Settings, init, rng, n_init: int, restart_epsilon,
                constant: bool) -> MatchingResult:
    """Every start (and the stall restarts) on a prepared problem; the best run. ``rng``: a
    Generator, or a function returning one (:func:`_lazy_rng`), called at the first draw."""
    n1, n2 = problem.n1, problem.n2
    size = problem.padded_size
    draw = rng if callable(rng) else (lambda: rng)

    def starts(start_init):
        # The start, then the same start again for a soft restart: rebuilt from the generator's
        # saved state rather than kept (one N x N array less during the run; the state, not a
        # deep copy of the generator: a fifth of a 5-start QAPLIB run's overhead at n <= 50).
        generator = draw()
        state = generator.bit_generator.state
        yield _initial_matrix(start_init, n1, n2, size, generator)
        while True:
            again = np.random.Generator(type(generator.bit_generator)(0))
            again.bit_generator.state = state
            yield _initial_matrix(start_init, n1, n2, size, again)

    def run(start_init, first=False):
        barycenter = isinstance(start_init, str) and start_init == "barycenter"
        make = None if barycenter else functools.partial(next, starts(start_init))
        return _run_start(problem, settings, make, size, _first_only(restart_epsilon, first))

    runs, stalls = [], []
    for k in range(n_init):
        runs.append(run(init if k == 0 else "randomized", k == 0))
        stalls.append(None if constant else _stall(runs[-1], size, settings.projection))
        best = max(range(len(runs)), key=lambda j: runs[j].objective)
        _drop_iterates(runs, best)
    for _ in range(settings.stall_restarts):
        if not _every_stalled(stalls):
            break
        runs.append(run("randomized"))
        stalls.append(_stall(runs[-1], size, settings.projection))
        if runs[-1].objective > runs[best].objective or stalls[best] is not None and (
                stalls[-1] is None and runs[-1].objective >= runs[best].objective):
            best = len(runs) - 1
        _drop_iterates(runs, best)
    result = runs[best]
    result.info["starts"] = [
        {"init": "first" if k == 0 else "randomized", "n_iter": r.n_iter,
         "converged": r.converged, "stall": stall, "col_ind": r.col_ind}
        for k, (r, stall) in enumerate(zip(runs, stalls))
    ]
    result.info["best_start"] = best
    result.info["stall"] = stalls[best]
    result.n_iter = sum(r.n_iter for r in runs)
    what = f"projected_fixed_point ({settings.projection})"
    if _every_stalled(stalls):
        place = ("the barycenter 11^T/N (a fixed point, e.g. when every row sum of a graph is "
                 "equal)" if stalls[best] == "uniform" else "a soft fixed point (mean row "
                 f"maximum {result.info['mean_row_max']:.3g} < {_SOFT_ROW_MAX})")
        result.converged = False
        answer = ("its IPFP polish" if result.info.get("polish", {}).get("kept")
                  else "the rounding of that iterate")
        result.message = (f"stalled at {place}, as every one of {len(runs)} start(s) did, "
                          f"and {answer} is returned")
        warnings.warn(f"{what} {result.message}", ConvergenceWarning, stacklevel=5)
    elif not result.converged and settings.max_iter > 0:
        warn_not_converged(what, result.n_iter, stacklevel=5)
    return result


def _every_stalled(stalls: list) -> bool:
    """Whether every run stalled (numpy and torch): then the stall restarts go on, and the
    result is reported ``converged=False``. Once one run has not stalled, the best objective
    is an answer even if a stalled run's sharpened matching (polish, 2-opt) scores it: its
    restarts stop (esc16j, esc32d, esc32f: 2 starts instead of 4)."""
    return all(stall is not None for stall in stalls)


def _first_only(restart_epsilon, first: bool):
    """The soft-point restart's ``epsilon`` for a start (numpy and torch): the first start
    only. A randomized start is one of several, which the others cover (QAPLIB n <= 50, five
    starts: the same mean gap, 2.91%, in 0.8x the time; bur26 and lipa end every randomized
    start near the barycenter)."""
    return restart_epsilon if first else None


def _drop_iterates(runs: list[MatchingResult], best: int) -> None:
    """Free the iterates of every run but the best (only their objectives are reported)."""
    for k, run in enumerate(runs):
        if k != best:
            run.x = None


def _run_start(problem, settings: _Settings, make_start, size: int, restart_epsilon):
    """One start (``make_start()`` builds it; None: the barycenter), and its
    adaptive-softassign restart from a soft fixed point."""
    barycenter = make_start is None

    def first_iterate():
        return np.full((size, size), 1.0 / size) if barycenter else make_start()

    result = _iterate(problem, settings, first_iterate(), barycenter)
    if _soft_restart(result, settings, restart_epsilon, size, barycenter,
                     problem.lawler is None):
        again = _iterate(problem, replace(settings, epsilon=restart_epsilon), first_iterate(),
                         barycenter)
        first = result
        result = again if again.objective > first.objective else first
        loser = first if result is again else again
        loser.info.pop("_padded", None)
        loser.x = None  # freed before the polish: one N x N array less
        result.info["restart"] = {
            "kept": "restart" if result is again else "first",
            "first_objective": first.objective,
            "first_n_iter": first.n_iter,
        }
        result.n_iter = first.n_iter + again.n_iter
    padded = result.info.pop("_padded")
    exchanges = _exchanges(settings, size, problem.lawler is None)
    if _sharpens(result, settings, padded.shape[0]):
        # Sharpen: IPFP steps (Hungarian directions, exact line search) from the last relaxed
        # iterate, keeping the best discrete iterate, as FAQ polishes from its start.
        sharp = _iterate(problem, _polish_settings(settings, exchanges), padded.copy(), False)
        sharp.info.pop("_padded")
        result.info["polish"] = {"n_iter": sharp.n_iter, "objective": sharp.objective,
                                 "kept": sharp.objective > result.objective}
        if sharp.objective > result.objective:
            result.col_ind, result.objective = sharp.col_ind, sharp.objective
    if exchanges:
        _exchanged(result, _dense(problem.A_pad), _dense(problem.B_pad), problem.linear,
                   problem.n1, problem.n2)
    return result


def _exchanges(settings: _Settings, size: int, quadratic: bool) -> bool:
    """Whether a start ends with the 2-opt search (numpy and torch): ``two_opt``, at most
    ``_TWO_OPT_MAX_N`` nodes, a Koopmans-Beckmann problem (not a Lawler ``K``)."""
    return settings.two_opt and quadratic and size <= _TWO_OPT_MAX_N


@functools.lru_cache(maxsize=64)
def _polish_settings(settings: _Settings, exchanges: bool) -> _Settings:
    """The IPFP polish (numpy and torch): Hungarian directions, exact line search, at most
    ``polish`` iterations (``_POLISH_BEFORE_TWO_OPT`` when the 2-opt search follows, which
    finds what the further IPFP steps found, at a fraction of their LAPs)."""
    steps = min(settings.polish, _POLISH_BEFORE_TWO_OPT) if exchanges else settings.polish
    return replace(settings, projection="hungarian", rule=adaptive_step, epsilon=None,
                   max_iter=steps, patience=_POLISH_PATIENCE)


def _exchanged(result: MatchingResult, A: np.ndarray, B: np.ndarray, linear, n1: int,
               n2: int) -> None:
    """Improve ``result``'s matching by :func:`_two_opt` on the padded internal problem
    (numpy and torch); ``info["two_opt"]`` has the swaps made and the gain."""
    size, col_ind = A.shape[0], result.col_ind
    if n1 == n2 == size:
        perm = col_ind
    else:  # the padded permutation: unmatched and dummy rows take the columns left
        matched = col_ind >= 0
        perm = np.empty(size, dtype=np.intp)
        perm[:n1][matched] = col_ind[matched]
        free_rows = np.concatenate([np.flatnonzero(~matched), np.arange(n1, size)])
        perm[free_rows] = np.setdiff1d(np.arange(size), col_ind[matched])
    perm, swaps, gain = _two_opt(A, B, linear, perm)
    result.info["two_opt"] = {"swaps": swaps, "gain": gain}
    if swaps:
        result.col_ind = _to_col_ind(perm, n1, n2)
        result.objective += gain


def _two_opt(A: np.ndarray, B: np.ndarray, linear, perm: np.ndarray, max_swaps: int = 0):
    """Best-improvement pairwise exchanges for ``Z(p) = 1/2 sum_ij A_ij B_p(i)p(j) + sum_i
    L_i,p(i)`` (maximized): ``(p, swaps, Z(p_out) - Z(p_in))`` at a local maximum (or after
    ``max_swaps``, default ``10 N``). Each pass takes the gains of every exchange from
    :func:`_swap_gains` (doubled, into preallocated arrays); ``M = A C^T + A^T C`` (``C =
    B[p][:, p]``) is formed once and updated by two outer products per exchange: with ``Q`` the
    transposition ``(r s)``, ``A Q C^T = A C^T - (A e_r - A e_s)(C e_r - C e_s)^T``, and the
    columns of ``M Q`` swapped."""
    perm = perm.copy()
    max_swaps = max_swaps or 10 * perm.size
    a = A.diagonal()
    fixed = A + A.T
    spread = _broadcast_work(fixed)
    _by_columns(np.subtract, fixed, a, spread)
    _by_rows(np.subtract, fixed, a, spread)
    C = B.take(perm, axis=0).take(perm, axis=1)  # B[p][:, p]
    before = _exchange_value(A, C, linear, perm)
    M = A @ C.T
    M += A.T @ C
    gains, work = np.empty_like(M), np.empty_like(M)
    threshold = 2e-12 * (abs(before) + 1.0)  # on doubled gains
    swaps = 0
    while swaps < max_swaps:
        _doubled_swap_gains(M, C, fixed, None if linear is None else linear[:, perm], gains,
                            work, spread)
        best = int(gains.argmax())
        r, s = divmod(best, perm.size)
        if not gains[r, s] > threshold:
            break
        np.multiply(np.subtract(A[:, r], A[:, s])[:, None], C[:, r] - C[:, s], out=work)
        M -= work
        np.multiply(np.subtract(A[r], A[s])[:, None], C[r] - C[s], out=work)
        M -= work
        for X in (M, C):
            column = X[:, r].copy()
            X[:, r] = X[:, s]
            X[:, s] = column
        row = C[r].copy()
        C[r] = C[s]
        C[s] = row
        perm[r], perm[s] = perm[s], perm[r]
        swaps += 1
    # No exchange: the same value again, a gain of exactly 0.0.
    return perm, swaps, (_exchange_value(A, C, linear, perm) - before) if swaps else 0.0


def _exchange_value(A: np.ndarray, C: np.ndarray, linear, perm: np.ndarray) -> float:
    value = 0.5 * float(np.vdot(A, C))
    return value if linear is None else value + float(linear[np.arange(perm.size), perm].sum())


def _swap_gains(M: np.ndarray, C: np.ndarray, fixed: np.ndarray, linear_p) -> np.ndarray:
    """``Z(p o (r s)) - Z(p)`` for every pair ``(r, s)``, from ``M = A C^T + A^T C``,
    ``C = B[p][:, p]``, ``linear_p = L[:, p]`` and ``fixed = A + A^T - a_r - a_s``
    (``a`` = diag A):

        1/2 (M + M^T - m_r - m_s + fixed o (C + C^T - c_r - c_s)),

    (``m``, ``c``: the diagonals of ``M``, ``C``), plus ``L_rp(s) + L_sp(r) - L_rp(r) -
    L_sp(s)``: the O(N) exchange gain of the QAP for all pairs at once."""
    gains = _doubled_swap_gains(M, C, fixed, linear_p, np.empty_like(M), np.empty_like(M))
    gains *= 0.5
    return gains


def _doubled_swap_gains(M, C, fixed, linear_p, out: np.ndarray, work: np.ndarray,
                        spread: np.ndarray | None = None) -> np.ndarray:
    """Twice :func:`_swap_gains`, written into ``out`` (``work``: scratch of the same shape;
    ``spread``: another, for the updates by a diagonal, :func:`projections._by_rows`)."""
    m, c = M.diagonal(), C.diagonal()
    gains = np.add(M, M.T, out=out)
    _by_columns(np.subtract, gains, m, spread)
    _by_rows(np.subtract, gains, m, spread)
    both = np.add(C, C.T, out=work)
    _by_columns(np.subtract, both, c, spread)
    _by_rows(np.subtract, both, c, spread)
    both *= fixed
    gains += both
    if linear_p is not None:
        d = linear_p.diagonal()
        terms = np.add(linear_p, linear_p.T, out=work)
        _by_columns(np.subtract, terms, d, spread)
        _by_rows(np.subtract, terms, d, spread)
        terms *= 2.0
        gains += terms
    return gains


def _soft_restart(result: MatchingResult, settings: _Settings, restart_epsilon,
                  size: int, barycenter: bool = False, quadratic: bool = True) -> bool:
    """Whether apfp reruns a converged run with the adaptive softassign (numpy and torch).

    A soft fixed point (mean row maximum below ``_SOFT_ROW_MAX``) is restarted, except up to
    ``_POLISH_ONLY_N`` nodes when the polish runs and the run left the barycenter: there the
    polish alone sharpens it (same mean accuracy on 55 benchmark pairs up to 200 nodes with or
    without the restart, which costs more there); above, its LAPs are dear and a soft first
    run needs the restart. Nor is a run from the barycenter that the barycenter itself ends
    (:func:`_barycenter_fixed`): the restart would start there too and end there. Nor, near
    the barycenter too, a run that the 2-opt search ends (:func:`_exchanges`): the polish and
    the exchanges sharpen it (QAPLIB n <= 50, one start: bur26*, had20, lipa*, wil50 in a
    third of the time, mean gap 5.28% -> 5.39%; five starts unchanged, docs/matching.md).
    """
    row_max = result.info["mean_row_max"]
    polished = _exchanges(settings, size, quadratic) or (
        settings.polish > 0 and size <= _POLISH_ONLY_N and row_max > _uniform_row_max(size))
    return (restart_epsilon is not None and settings.epsilon is None and bool(result.converged)
            and settings.projection in _SOFTASSIGNS and not polished
            and row_max < _SOFT_ROW_MAX and not (barycenter and _barycenter_fixed(result)))


# The first softassign step from the barycenter U rose by at most this share of the objective:
# U is its own projection.
_FIXED_GAIN = 1e-12


def _barycenter_fixed(result: MatchingResult) -> bool:
    """Whether a run from the barycenter ``U = 11^T / N`` stopped at its first step because the
    softassign of the gradient ``G`` there is ``U`` (numpy and torch): ``c1 = <S(G) - U, G>``
    is >= 0 with equality only at ``S(G) = U``, i.e. ``G_ij = f_i + g_j``, and then every
    softassign at every ``beta`` (the adaptive one of apfp's soft-point restart too) returns
    ``U``: the restart would redo this run (QAPLIB's esc* instances: 0.6-0.8 ms each)."""
    c1 = result.info.get("c1", ())
    return (result.n_iter == 1 and len(c1) == 1 and bool(result.history)
            and abs(c1[0]) <= _FIXED_GAIN * (abs(result.history[0]) + 1.0))


def _sharpens(result: MatchingResult, settings: _Settings, size: int) -> bool:
    """Whether the IPFP polish runs after ``result`` (numpy and torch): not yet a matching,
    at most ``_POLISH_MAX_N`` nodes, and not stopped at a settled rounding (a discrete fixed
    point already, :func:`_settled`: on the 36 real-network pairs of docs/matching.md the
    polish after that stop changed 3 matchings, the mean accuracy not at all, 0.870)."""
    return bool(settings.polish) and result.info["mean_row_max"] < _POLISH_ROW_MAX and (
        size <= _POLISH_MAX_N) and result.message != _SETTLED_MESSAGE


def _to_user_units(result: MatchingResult, log_scale: float) -> None:
    """Report the values of a run on the normalized problem in the user's units."""
    info = result.info
    info["normalized_objective"] = result.objective
    info["log_scale"] = log_scale
    result.history = list(result.history)
    if log_scale == 0.0:
        return
    for key in ("c1", "c2"):
        info[key] = [_rescale(value, log_scale) for value in info[key]]
    info["relaxed_objective"] = _rescale(info["relaxed_objective"], log_scale)
    if "restart" in info:
        restart = info["restart"]
        restart["first_objective"] = _rescale(restart["first_objective"], log_scale)


@dataclass(frozen=True)
class _Problem:
    """Validated inputs of one matching problem, normalized and padded to ``N = max(n1, n2)``.

    ``K`` is the normalized linear term (None without one). ``A_T``, ``B_T``: the transposes
    when both graphs are directed (the gradient then has two terms), else None.
    """

    K: np.ndarray | None
    A_pad: Any
    B_pad: Any
    A_T: Any
    B_T: Any
    linear: np.ndarray | None
    n1: int
    n2: int
    sparse: bool
    lawler: Any = None
    size: int = 0

    @property
    def padded_size(self) -> int:
        """``N``: ``max(n1, n2)``, or the size set by the caller (slack nodes)."""
        return self.size or max(self.n1, self.n2)


def _quadratic(problem: _Problem, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``1/2 (A X B^T + A^T X B)`` (``A X B`` without transposes): two or four products.

    Written into ``out`` when given, in blocks of rows past ``_BLOCK_ENTRIES`` entries, so that
    the intermediate ``A X`` never exists whole. Lawler form: the operator's ``sym(K) vec(X)``
    (column-major ``vec`` of the real block).
    """
    if problem.lawler is not None:
        n1, n2 = problem.n1, problem.n2
        out = np.zeros_like(X) if out is None else out
        out[:n1, :n2] = problem.lawler.product(X[:n1, :n2])
        if X.shape != (n1, n2):
            out[n1:] = 0.0
            out[:n1, n2:] = 0.0
        return out
    size = X.shape[0]
    step = max(1, _BLOCK_ENTRIES // size)
    if out is None or step >= size:
        return _rows_product(problem, problem.A_pad, problem.A_T, X)
    for start in range(0, size, step):
        rows = slice(start, min(start + step, size))
        out[rows] = _rows_product(problem, problem.A_pad[rows],
                                  None if problem.A_T is None else problem.A_T[rows], X)
    return out


def _rows_product(problem: _Problem, A_rows, A_T_rows, X: np.ndarray) -> np.ndarray:
    """Rows of ``1/2 (A X B^T + A^T X B)`` (``A X B``) from those rows of ``A`` and ``A^T``."""
    if A_T_rows is None:
        return np.asarray((A_rows @ X) @ problem.B_pad)
    return 0.5 * (np.asarray((A_rows @ X) @ problem.B_T)
                  + np.asarray((A_T_rows @ X) @ problem.B_pad))


def _barycenter_quadratic(problem: _Problem, size: int) -> np.ndarray:
    """``_quadratic`` at ``11^T / N``, a sum of rank-one terms (no product)."""
    if problem.lawler is not None:
        return _quadratic(problem, np.full((size, size), 1.0 / size))
    A, B = problem.A_pad, problem.B_pad
    if problem.A_T is None:
        return _outer(_sums(A, 1), _sums(B, 0) / size)
    return 0.5 * (_outer(_sums(A, 1), _sums(B, 1) / size)
                  + _outer(_sums(A, 0), _sums(B, 0) / size))


def _sums(matrix, axis: int) -> np.ndarray:
    """The row (``axis=1``) or column sums, as ``matrix.sum(axis=axis)`` (dense: its
    reduction without the method's wrappers)."""
    if sp.issparse(matrix):
        return np.asarray(matrix.sum(axis=axis)).ravel()
    return np.add.reduce(matrix, axis=axis)


def _outer(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.outer(x, y)`` (the same products) without numpy's broadcasting loop at small n."""
    out = np.empty((x.size, y.size))
    spread = _broadcast_work(out)
    if spread is None:
        return np.multiply(x[:, None], y, out=out)
    out[...] = x[:, None]
    _by_rows(np.multiply, out, y, spread)
    return out
@dataclass(frozen=True)
class _Settings:
    """Validated options of the iteration (see :func:`projected_fixed_point`)."""

    projection: str
    rule: StepRule
    beta: float
    scale: str
    beta_growth: float
    beta_max: float
    epsilon: float | None
    max_iter: int
    tol: float
    inner_tol: float
    inner_max_iter: int
    polish: int = 0
    # The loosest inner tolerance (the first projection's): inner_tol * inner_tol_factor.
    inner_tol_max: float = 0.0
    # Stop (converged) after this many iterations without a better discrete iterate; 0: never.
    patience: int = 0
    stall_restarts: int = _STALL_RESTARTS
    float32_from: int = _FLOAT32_FROM
    memory_limit: float | None = None
    two_opt: bool = False
    stagnation: bool = True
    # The stagnation window of the dynamical softassign (see _stagnant).
    window: int = 5
    # Stop once the rounding (Hungarian) of M is the same for this many iterates; 0: never.
    settle: int = 0


def _project(grad, beta, settings: _Settings, problem: _Problem, potential, buffer,
             inner_tol: float):
    """``D = P(grad)`` written into ``buffer``: ``(D, inner rounds, column potential, beta,
    Hungarian columns or None, the row-sum error reached or ``inner_tol``)``."""
    if settings.projection in _SOFTASSIGNS:
        out = _softassign(grad, beta, settings, problem.n1, problem.n2, potential, buffer,
                          inner_tol)
        return out.P, out.n_iter, out.column_potential, out.beta, None, out.error
    if settings.projection == "hungarian":
        columns = _hungarian_columns(grad)
        return _permutation_matrix(columns, buffer), 1, None, beta, columns, 0.0
    direction, inner = _doubly_stochastic_projection(grad, inner_tol, settings.inner_max_iter,
                                                     buffer)
    return direction, inner, None, beta, None, inner_tol


def _iterate(problem: _Problem, settings: _Settings, M: np.ndarray, barycenter: bool):
    """The projected fixed-point loop from ``M`` (updated in place) and the final rounding.

    Four N x N arrays live through the loop: ``M``, the gradient, the direction (the
    projection writes into it) and the curvature ``A Delta B`` (five with a linear term); for
    sparse graphs from ``float32_from`` nodes the curvature is float32 (half an N x N array).
    """
    linear = problem.linear
    quadratic = (_barycenter_quadratic(problem, M.shape[0]) if barycenter
                 else _quadratic(problem, M))
    grad = quadratic if linear is None else quadratic + linear
    value = 0.5 * float(np.vdot(M, quadratic))
    if linear is not None:
        value += float(np.vdot(M, linear))
    trace = {"alpha": [], "c1": [], "c2": [], "beta": [], "inner_iterations": []}
    objectives, best_discrete = [value], (-math.inf, None)
    # Sinkhorn column potentials carried from one projection to the next: successive
    # gradients are close, so the previous scaling is a good start.
    single = _single_operands(problem, settings, M.shape[0])
    potential, direction = None, np.empty_like(M)
    curvature = np.empty(M.shape, np.float32 if single is not None else M.dtype)
    converged, message = False, f"reached max_iter = {settings.max_iter}"
    iteration, beta_k, best_iteration = 0, settings.beta, 0
    # The inner tolerance follows the last relative change, from inner_tol_max to inner_tol.
    inner_tol = max(settings.inner_tol, settings.inner_tol_max)
    roundings = {"last": [], "not_fixed": None}  # the Hungarian columns of the last iterates
    rounding = None  # that of M, while M is unchanged
    settle = _settles(settings, barycenter) and problem.lawler is None and _sparse_pair(
        _nonzeros(problem.A_pad), _nonzeros(problem.B_pad), problem.n1, problem.n2)
    for iteration in range(1, settings.max_iter + 1):
        if iteration > 1:
            beta_k = min(beta_k * settings.beta_growth, settings.beta_max)
        direction, inner, potential, beta_k, columns, error = _project(
            grad, beta_k, settings, problem, potential, direction, inner_tol)
        direction -= M
        # The only products of the iteration: H = A Delta B (both directed: the two terms).
        curvature = _curvature(problem, single, direction, curvature)
        c1 = float(np.vdot(direction, grad))
        c2 = 0.5 * _blocked_vdot(direction, curvature)
        if columns is not None and value + c1 + c2 > best_discrete[0]:
            best_discrete, best_iteration = (value + c1 + c2, columns), iteration
        elif settings.patience and iteration - best_iteration >= settings.patience:
            objectives.append(value)
            converged, message = True, f"no better discrete iterate in {settings.patience}"
            break
        alpha = float(settings.rule(c1, c2))
        for key, item in zip(trace, (alpha, c1, c2, beta_k, inner)):
            trace[key].append(item)
        if alpha == 0.0:
            objectives.append(value)
            if _loose(inner_tol, error, settings):  # project again at inner_tol, from M
                inner_tol = settings.inner_tol
                continue
            converged, message = True, "the step size is 0: no ascent along the projection"
            break
        change = alpha * math.sqrt(float(np.vdot(direction, direction)))
        _axpy(alpha, direction, M)
        rounding = None
        _axpy(alpha, curvature, quadratic)
        if linear is not None:
            np.add(quadratic, linear, out=grad)
        value += alpha * c1 + alpha * alpha * c2
        objectives.append(value)
        change /= math.sqrt(float(np.vdot(M, M)))
        if _converged_step(change, inner_tol, error, settings):
            converged, message = True, f"relative change below tol = {settings.tol:g}"
            break
        # Not the first iterate's rounding (_FIRST_ROUNDING). ``rounding``: M's (for _rounded).
        rounding = _hungarian_columns(M) if settle and iteration > 1 else None
        settled = rounding is not None and _settled(
            roundings, rounding, settings, functools.partial(_discrete_fixed, problem))
        if settled or _stagnant(objectives, settings):
            converged, message = True, _SETTLED_MESSAGE if settled else _STAGNANT_MESSAGE
            break
        inner_tol = _next_inner_tol(change, settings)
    del direction, curvature, grad, quadratic  # before the rounding's LAP copies M
    return _rounded(problem, M, best_discrete[1], value, trace, MatchingResult(
        x=M[:problem.n1, :problem.n2], n_iter=iteration, converged=converged,
        history=objectives, message=message, info={}), rounding)


def _single_operands(problem: _Problem, settings: _Settings, size: int) -> _Problem | None:
    """The problem with float32 sparse operands when the products run in float32: sparse
    graphs (no Lawler form) from ``float32_from`` nodes; else None.

    The products ``A Delta B`` are then float32 (a float32 direction and graphs: half the memory
    traffic and twice the SIMD width of float64; measured at n = 10,000, density 0.01: 2.3x
    faster), the curvature is stored as float32, and the direction is rounded to float32.
    """
    if not problem.sparse or problem.lawler is not None or size < settings.float32_from:
        return None

    def single(matrix):
        return None if matrix is None else matrix.astype(np.float32)

    return replace(problem, A_pad=single(problem.A_pad), B_pad=single(problem.B_pad),
                   A_T=single(problem.A_T), B_T=single(problem.B_T))


def _curvature(problem: _Problem, single: _Problem | None, direction: np.ndarray,
               out: np.ndarray) -> np.ndarray:
    """``A Delta B`` (:func:`_quadratic`) into ``out``; with ``single`` (float32 operands,
    float32 ``out``) the direction is rounded to float32 in the first half of its own memory
    for the products and written back as float64 (no other N x N array)."""
    if single is None or not direction.flags.c_contiguous:
        return _quadratic(problem, direction, out)
    narrow = _narrowed(direction)
    result = _quadratic(single, narrow, out)
    if result is not out:
        out[...] = result
    _widened(narrow, direction)
    return out


def _narrowed(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (C-contiguous float64) as float32 in the first half of its memory: float32
    row ``i`` overlaps float64 rows up to ``i // 2 + 1``, read before it in a forward sweep
    (row 0 overlaps itself: numpy buffers)."""
    n, m = matrix.shape
    narrow = matrix.reshape(-1).view(np.float32)[: n * m].reshape(n, m)
    for i in range(n):
        np.copyto(narrow[i], matrix[i], casting="same_kind")
    return narrow


def _widened(narrow: np.ndarray, out: np.ndarray) -> None:
    """Undo :func:`_narrowed`: a backward sweep, float64 row ``i`` covering float32 rows
    ``2i`` and ``2i + 1``, already read (row 0 overlaps itself ahead of its reads: copied)."""
    for i in range(narrow.shape[0] - 1, 0, -1):
        np.copyto(out[i], narrow[i])
    out[0] = narrow[0].copy()


def _blocked_vdot(x: np.ndarray, y: np.ndarray) -> float:
    """``<x, y>``; for a float32 ``y`` by blocks of rows (``np.vdot`` of mixed types would
    convert ``y`` whole)."""
    if x.dtype == y.dtype:
        return float(np.vdot(x, y))
    step = max(1, _BLOCK_ENTRIES // max(1, x.shape[1]))
    return math.fsum(float(np.vdot(x[rows], y[rows].astype(x.dtype)))
                     for rows in (slice(s, s + step) for s in range(0, x.shape[0], step)))


def _converged_step(change: float, requested: float, error: float, settings: _Settings) -> bool:
    """Whether a step of relative change ``change`` ends the iteration (numpy and torch).

    A small step from a loose projection is not a fixed point: convergence is only declared
    for a step whose projection was asked for (``requested``) or reached (``error``, the
    row-sum error) ``inner_tol`` itself; else one more step at ``inner_tol``.
    """
    return change <= settings.tol and not _loose(requested, error, settings)


def _loose(requested: float, error: float, settings: _Settings) -> bool:
    """Whether a projection neither was asked for nor reached ``inner_tol`` (numpy and torch).

    A zero step along such a direction is no fixed point: far from the fixed point a Sinkhorn
    stopped at a loose tolerance (one warm-started round) can point downhill (``c1 + c2 < 0``),
    and stopping there left apfp at the barycenter with ``converged=False`` on every start of
    a 20-node dense pair; the step is retried from the same iterate at ``inner_tol``.
    """
    return min(requested, error) > settings.inner_tol


# A softassign run whose objective rose by at most _STAGNANT_GAIN of its total rise over the
# last _STAGNANT_WINDOW iterations stops (converged): the lipa instances of QAPLIB crept on for
# the 100 allowed iterations at gains of 1e-5 of the objective per step. The adaptive softassign
# (asm, apfp's soft-point restart) stops sooner, at 3% in 3 (QAPLIB n <= 50 one start: 1.36x ->
# 1.27x FAQ's time, same gap; 64 benchmark pairs n = 20-200: apfp's and asm's accuracy
# unchanged, asm 15% faster); the dynamical softassign at that setting lost accuracy on noisy
# geometric pairs. Up to _INEXACT_MAX_N nodes the dynamical softassign's window is 4 (was 5):
# apfp on the real networks of docs/matching.md runs 392 outer iterations instead of 433
# (mean accuracy 0.859 -> 0.858), QAPLIB n <= 50 one start 5.39 -> 5.45% mean gap (median
# 2.26%, five starts 2.91%), the benchmark families' 64 pairs (n <= 200) unchanged; at 500
# nodes a power-law pair at rewiring 0.25 stopped one iteration sooner at accuracy 0.994
# instead of 1.0, so above 100 nodes it stays 5.
_STAGNANT_WINDOW = 5
_STAGNANT_WINDOW_SMALL = 4
_STAGNANT_GAIN = 1e-2
_STAGNANT_WINDOW_ADAPTIVE = 3
_STAGNANT_GAIN_ADAPTIVE = 3e-2
_STAGNANT_MESSAGE = ("the objective rose by at most a small share of its total rise (1% in 5 "
                     "iterations, 4 up to 100 nodes; adaptive softassign: 3% in 3)")


def _stagnant(objectives: list, settings: _Settings) -> bool:
    """Whether a softassign run (adaptive step) has stagnated (numpy and torch):
    ``Z_k - Z_{k-W} <= g (Z_k - Z_0)`` for the window ``W`` (``settings.window``) and the share
    ``g`` above (those of the adaptive softassign when ``epsilon`` is set)."""
    window, gain = ((_STAGNANT_WINDOW_ADAPTIVE, _STAGNANT_GAIN_ADAPTIVE)
                    if settings.epsilon is not None else (settings.window, _STAGNANT_GAIN))
    if (not settings.stagnation or len(objectives) <= window
            or settings.projection not in _SOFTASSIGNS or not _adaptive(settings.rule)):
        return False
    last = objectives[-1]
    return last - objectives[-1 - window] <= gain * (last - objectives[0])


# Up to _SETTLE_MAX_N nodes apfp (its inexact projections, from the barycenter) stops once
# the Hungarian rounding of M is the same for _SETTLE_ITERATES iterates in a row and maximizes
# the linearization at itself (a discrete fixed point, where FAQ stops): the rounding is what
# the run returns (then exchanged), and on the small real networks of docs/matching.md the
# later iterations, the costliest (near-hard projections at the 30-scaling cap), left it
# unchanged or moved it to a worse local optimum: with 2 iterates, 392 -> 235 outer
# iterations, 5219 -> 2929 Sinkhorn scalings, mean accuracy 0.858 -> 0.868 (no graph lower;
# 3 iterates: 0.865). One iterate (the first rounding that is a discrete fixed point; the
# fixed-point test of a rounding found not fixed is not repeated): one projection fewer per
# run, 0.87x the time on those 36 pairs at mean accuracy 0.870 (2 iterates: 0.872, with the
# polish skipped after this stop); the benchmark families' pairs at 20-50 nodes unchanged.
# Without the fixed-point test QAPLIB (n <= 50, one start) lost 0.5
# points of mean gap; with it its gaps are unchanged, and since its dense matrices never
# settled at one but paid a LAP every iteration, only sparse pairs (_sparse_pair) stop so.
# One LAP per iteration (5-15 us at 34 nodes, 80 us at 77, about a projection's cost there,
# where no run stopped sooner), so not above 50 nodes.
_SETTLE_ITERATES = 1
# _FIRST_ROUNDING: the first iterate's rounding is not tested (the softassign of the
# barycenter's rank-one gradient: on the 36 real-network pairs and 96 benchmark pairs up to 50
# nodes it was never a discrete fixed point, and testing it cost a LAP and a product per run).
_SETTLE_MAX_N = 50
_SETTLE_DENSITY = 0.5
_SETTLED_MESSAGE = ("the rounding of the iterate is a discrete fixed point (it maximizes the "
                    "linearization at itself)")


def _discrete_fixed(problem: _Problem, columns: np.ndarray) -> bool:
    """Whether the permutation ``columns`` maximizes the linearization at itself (a fixed
    point of the Hungarian iteration, FAQ's stopping point)."""
    if problem.sparse or problem.lawler is not None:
        G = _quadratic(problem, _permutation_matrix(columns))
    elif problem.A_T is None:  # A P B = A (P B), P B = B[columns]: one product, no P
        G = problem.A_pad @ problem.B_pad.take(columns, axis=0)
    else:
        G = 0.5 * (problem.A_pad @ problem.B_T.take(columns, axis=0)
                   + problem.A_T @ problem.B_pad.take(columns, axis=0))
    return _maximizes(G if problem.linear is None else G + problem.linear, columns)


def _maximizes(G: np.ndarray, columns: np.ndarray) -> bool:
    """Whether ``columns`` maximizes ``<G, P>`` up to rounding (numpy and torch)."""
    rows = np.arange(columns.size)
    mine = float(G[rows, columns].sum())
    tolerance = 1e-12 * max(1.0, abs(mine))
    if _exchange_gains(G, columns, tolerance):
        return False  # what the LAP would find too, without it
    return float(G[rows, _hungarian_columns(G)].sum()) <= mine + tolerance


def _exchange_gains(G: np.ndarray, columns: np.ndarray, tolerance: float) -> bool:
    """Whether exchanging the columns of two rows raises ``<G, P>`` by more than ``tolerance``
    plus ``1e-10 max|G|`` (up to ``_BROADCAST_WORK_MAX_N`` rows; else False): then the best
    assignment beats ``columns`` by more than ``tolerance`` despite the rounding of either sum
    (at most about ``n^2 eps max|G|``), so :func:`_maximizes` is False without the O(n^3) LAP
    (most roundings that the settled-rounding stop tests are not fixed points)."""
    D = G.take(columns, axis=1)  # D[i, k] = G[i, columns[k]]: the assignment on the diagonal
    spread = _broadcast_work(D)
    if spread is None:
        return False
    d = D.diagonal()
    gains = np.add(D, D.T)  # D_ik + D_ki - D_ii - D_kk: the gain of exchanging rows i and k
    _by_columns(np.subtract, gains, d, spread)
    _by_rows(np.subtract, gains, d, spread)
    scale = max(float(_largest(D)), -float(_least(D)))
    return float(_largest(gains)) > tolerance + 1e-10 * scale


def _settles(settings: _Settings, barycenter: bool) -> bool:
    """Whether a run stops once its rounding settles (:func:`_settled`): apfp's runs with the
    adaptive step from the barycenter (a start near a permutation keeps its rounding for the
    first iterates), unless ``stagnation=False`` (numpy and torch)."""
    return (settings.settle > 0 and barycenter and settings.epsilon is None
            and settings.stagnation and _adaptive(settings.rule))


def _sparse_pair(nonzeros_a: int, nonzeros_b: int, n1: int, n2: int) -> bool:
    """Whether both graphs join at most _SETTLE_DENSITY of their node pairs (numpy and torch).

    The settled-rounding stop is for such graphs: on QAPLIB (n <= 50; in every instance one
    matrix, the distances, is denser) roundings settled 128 times on the 67 instances, once
    at a discrete fixed point, and the LAP of every iteration cost about 10% of apfp's time.
    """
    return (nonzeros_a <= _SETTLE_DENSITY * n1 * max(n1 - 1, 1)
            and nonzeros_b <= _SETTLE_DENSITY * n2 * max(n2 - 1, 1))


def _settled(roundings: dict, columns: np.ndarray, settings: _Settings, fixed) -> bool:
    """Append ``columns`` (the Hungarian rounding of the new iterate) to ``roundings["last"]``;
    whether the last ``settings.settle`` are the same and ``fixed(columns)`` (numpy and torch).
    The last rounding found not fixed is remembered (QAPLIB's settle again and again on one
    that is not: 79 of 128 tests)."""
    last = roundings["last"]
    last.append(columns)
    if len(last) > settings.settle:
        del last[0]
    if len(last) < settings.settle or not all(np.array_equal(columns, other)
                                              for other in last[:-1]):
        return False
    known = roundings["not_fixed"]
    if known is not None and not (known != columns).any():  # np.array_equal, same shapes
        return False
    if fixed(columns):
        return True
    roundings["not_fixed"] = columns
    return False


def _next_inner_tol(change: float, settings: _Settings) -> float:
    """The Sinkhorn tolerance of the next projection: the last relative change clipped to
    ``[inner_tol, inner_tol_max]``, and ``inner_tol`` once ``change <= tol``."""
    if change <= settings.tol:
        return settings.inner_tol
    return min(settings.inner_tol_max, max(settings.inner_tol, change))


def _axpy(alpha: float, x: np.ndarray, y: np.ndarray) -> None:
    """``y += alpha x`` without a temporary (``x`` is scaled in place, then added)."""
    x *= alpha
    y += x


def _rounded(problem: _Problem, M, best_columns, value: float, trace: dict,
             result: MatchingResult, columns=None) -> MatchingResult:
    """Round the last iterate (Hungarian, or its ``columns`` when known; or the best discrete
    iterate if it scores more)."""
    # The padding is zero, so the objective of the padded matrices is that of the real blocks
    # (and a symmetric part stands in for a directed graph only where that is exact).
    n1, n2 = problem.n1, problem.n2
    candidates = [_to_col_ind(_hungarian_columns(M) if columns is None else columns, n1, n2)]
    if best_columns is not None:
        candidates.append(_to_col_ind(best_columns, n1, n2))
    scores = [_score(problem, c) for c in candidates]
    pick = max(range(len(scores)), key=scores.__getitem__)  # the first best, as np.argmax
    result.col_ind, result.objective = candidates[pick], scores[pick]
    result.info = {
        **trace,
        "relaxed_objective": value,
        "rounding": ("hungarian", "best_discrete_iterate")[pick],
        "sparse": problem.sparse,
        # Over the padded columns too: a node of A sent to a dummy node is not soft.
        "mean_row_max": float(_row_maxima(M[:n1]).sum()) / n1,
        "_padded": M,
    }
    return result


def _score(problem: _Problem, col_ind: np.ndarray) -> float:
    """The internal objective of a 0/1 matching of the (normalized, padded) problem."""
    if problem.lawler is not None:
        return problem.lawler.score(col_ind)
    if not problem.sparse and col_ind.size == problem.A_pad.shape[0] and col_ind.min() >= 0:
        # Every node matched, dense: assignment_objective's sum without its checks (they cost
        # as much as the sum at n <= 50).
        permuted = problem.B_pad.take(col_ind, axis=0).take(col_ind, axis=1)
        value = 0.5 * float(np.vdot(problem.A_pad, permuted))
        if problem.K is not None:
            value += float(problem.K[np.arange(col_ind.size), col_ind].sum())
        return value
    return assignment_objective(problem.A_pad, problem.B_pad, col_ind, problem.K, 1.0)


def _to_col_ind(columns: np.ndarray, n1: int, n2: int) -> np.ndarray:
    col_ind = np.asarray(columns[:n1], dtype=np.intp).copy()
    col_ind[col_ind >= n2] = -1
    return col_ind


def _routed(A, B, K, method, maximize, n_init, seeds, seed, progress, options):
    """``match_graphs`` for graphs of different sizes (:func:`match_subgraph`) or torch tensors
    (``_torch.match_graphs_torch``); None for the numpy iteration."""
    # Imported here: _subgraph and _torch import this module (and _torch imports torch).
    from stepsize.matching._subgraph import _is_tensor, different_sizes, match_subgraph

    tensors = _is_tensor(A) and _is_tensor(B)
    if (isinstance(maximize, (bool, np.bool_)) and maximize and seeds is None
            and not (tensors and K is not None) and different_sizes(A, B)):
        return match_subgraph(A, B, K, method=method, n_init=n_init, seed=seed,
                              progress=progress, **options)
    if tensors and K is None and seeds is None:
        from stepsize.matching._torch import match_graphs_torch

        return match_graphs_torch(A, B, method=method, maximize=maximize, n_init=n_init,
                                  seed=seed, progress=progress, **options)
    return None


def _with_progress(run, preset: MatchingOptions, progress, desc: str) -> MatchingResult:
    """``run(options=...)`` with ``preset``, its step counted by a progress bar if one is
    shown (:func:`progress_options`); without a bar, ``preset`` itself (no options dict to
    build: a few microseconds of a call at n <= 50)."""
    if check_progress(progress) is False or (progress is None and not sys.stderr.isatty()):
        return run(options=preset)
    with progress_options(plain := preset.as_dict(), progress, desc) as chosen:
        return run(options=_unchanged(preset, plain, chosen))


def _unchanged(preset: MatchingOptions, plain: dict, chosen: dict) -> MatchingOptions:
    """``preset`` itself when no progress bar replaced its step (then its checked settings are
    remembered, :func:`_settings_of`), else the options of ``chosen``."""
    return preset if chosen is plain else MatchingOptions(**chosen)


def match_graphs(A, B, K=None, *, method: str = "apfp", maximize: bool = True, n_init: int = 1,
                 seeds=None, seed=None, progress: bool | None = None, **options) -> MatchingResult:
    """Match the nodes of two weighted graphs, directed or not; or solve a QAP.

    Maximizes ``Z(M) = 1/2 <A, M B M^T> + lam <K, M>`` (``1/2 tr(M^T A M B) + lam tr(M^T K)``
    for undirected graphs), or with ``maximize=False`` minimizes the quadratic assignment
    objective of ``scipy.optimize.quadratic_assignment``, ``f = sum_ik A[i, k] B[col_ind[i],
    col_ind[k]]`` (+ ``lam <K, P>``), with one of the presets of ``METHODS`` (see the module
    docstring), run by :func:`projected_fixed_point`. Asymmetric matrices (directed graphs,
    QAPLIB's) and non-zero diagonals are handled exactly. The default ``"apfp"`` is the paper's
    adaptive projected fixed-point method with dynamical softassign: monotone in ``Z``, two
    products per iteration, robust to graph size and weight units. A run that stalls (at the
    barycenter, or at a soft fixed point) is restarted from random starts, and reported with
    ``converged=False`` and a ``ConvergenceWarning`` if every restart stalls too.

    Graphs of different sizes (``maximize=True``, no ``seeds``) are matched by
    :func:`match_subgraph`'s centered objective, ``Z_c = Z - c/2 (weight the larger graph has
    on the matched nodes)`` (30 nodes in a 40-node G(n, 0.15) graph: accuracy 0.85, against
    0.45 with padding by isolated nodes, which ``maximize=False`` and ``seeds`` still use).
    torch tensors (no ``K`` or ``seeds``) run on their device in their dtype, and a batch
    ``A (b, n1, n1)``, ``B (b, n2, n2)`` gives a list of b results (``_torch``; importing
    :mod:`stepsize.matching` does not import torch).

    Args:
        A: graph 1: ndarray, scipy.sparse matrix or networkx graph, directed or not (nodes in
            ``list(G.nodes)`` order); or a torch tensor (n1, n1), or a batch (b, n1, n1).
        B: graph 2, same kinds (a tensor on A's device with A's dtype); its size may differ
            from A's.
        K: optional node affinity (n1 x n2).
        method: ``"apfp"`` (default), ``"asm"``, ``"ga"``, ``"ipfp"`` or ``"dspfp"``.
        maximize: True (default): graph matching, ``objective = Z`` (half of scipy's ``fun``
            with ``maximize=True``). False: the QAP minimization, ``objective`` = scipy's
            ``fun`` for the returned ``col_ind``.
        n_init: number of starts (>= 1): the barycenter (or ``init``), then randomized doubly
            stochastic starts drawn from ``seed``; the best objective is kept and
            ``info["start_objectives"]`` has each start's.
        seeds: known correspondences as in scipy's ``partial_match``: an (m, 2) integer array
            whose row ``(i, j)`` fixes ``col_ind[i] = j``; None for none.
        seed: int or Generator for the randomized starts.
        progress: a bar counting the iterations on stderr: None (default) when stderr is a
            terminal, True, or False.
        **options: any keyword of :func:`projected_fixed_point` overriding the preset
            (``beta``, ``step``, ``max_iter``, ``tol``, ``lam``, ``init``, ``history``, ...).

    Returns:
        A :class:`MatchingResult` with ``col_ind``, ``X``, ``objective``, ``n_iter``,
        ``converged`` (``X`` a tensor on the input's device for tensors; different sizes add
        ``info["center"]``, ``info["centered_objective"]`` and ``info["relaxations"]``); for a
        batch of tensors, a list of them.

    Raises:
        ValueError: naming the argument: an unknown method, ``n_init < 1``, seeds out of range,
            repeated or not of shape (m, 2), and the checks of :func:`projected_fixed_point`.

    >>> rng = np.random.default_rng(0)
    >>> A = rng.uniform(size=(30, 30)); A = np.triu(A, 1) + np.triu(A, 1).T
    >>> perm = rng.permutation(30)
    >>> B = A[np.ix_(perm, perm)]            # node perm[j] of A is node j of B
    >>> result = match_graphs(A, B, seed=0)
    >>> bool(np.all(perm[result.col_ind] == np.arange(30)))
    True
    >>> F, D = rng.uniform(size=(2, 12, 12))  # a directed QAP, diagonals included
    >>> ours = match_graphs(F, D, maximize=False, n_init=5, seed=0)
    >>> bool(np.isclose(ours.objective, np.sum(F * D[np.ix_(ours.col_ind, ours.col_ind)])))
    True

    Reference: Shen, Niu, Zhu, "Dynamical softassign and adaptive parameter tuning for graph
    matching", arXiv:2208.08233 (2022); Shen, Niu, Zhu, "Adaptive softassign via
    Hadamard-equipped Sinkhorn", CVPR 2024.
    """
    method = check_choice(method, "method", METHODS)
    routed = _routed(A, B, K, method, maximize, n_init, seeds, seed, progress, options)
    if routed is not None:
        return routed
    result = _with_progress(functools.partial(
        projected_fixed_point, A, B, K, maximize=maximize, n_init=n_init, seeds=seeds,
        seed=seed), METHODS[method].replaced(**options), progress, f"match_graphs ({method})")
    result.method = method
    return result
