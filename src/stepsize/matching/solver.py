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

A soft fixed point (apfp): the iteration converged with a mean row maximum of ``X`` below 1/2,
which happens when a few large scores (the hubs of a power-law graph) set the range of the
dynamical softassign and every other row stays nearly uniform. The restart runs the same
iteration from the same start with the adaptive softassign (``epsilon = restart_epsilon``) and
the matching with the higher objective is returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from stepsize._results import SolverResult, warn_not_converged
from stepsize._validation import (
    check_array,
    check_choice,
    check_int,
    check_real,
    check_rng,
    describe,
)
from stepsize.matching.graphs import as_adjacency
from stepsize.matching.objective import assignment_objective
from stepsize.matching.projections import (
    DYNAMICAL_SCALES,
    SinkhornResult,
    _adaptive_softassign,
    _doubly_stochastic_projection,
    _dynamical_width,
    _hungarian_columns,
    _permutation_matrix,
    _refuse_meta,
    _sinkhorn,
)
from stepsize.matching.steps import StepRule, adaptive_step, fixed_step

__all__ = [
    "ADAPTIVE_BETA_MAX",
    "AUTO_BETA",
    "METHODS",
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

METHODS: dict[str, dict[str, Any]] = {
    "apfp": {
        "projection": "dynamical_softassign",
        "step": "adaptive",
        "beta": "auto",
        "restart_epsilon": 1.0,
        "beta_max": ADAPTIVE_BETA_MAX,
    },
    "asm": {
        "projection": "dynamical_softassign",
        "step": "adaptive",
        "beta": 1.0,
        "epsilon": 1.0,
        "beta_max": ADAPTIVE_BETA_MAX,
    },
    "ga": {
        "projection": "softassign",
        "step": 1.0,
        "beta": 0.5,
        "beta_growth": 1.075,
        "beta_max": 10.0,
    },
    "ipfp": {"projection": "hungarian", "step": "adaptive"},
    "dspfp": {"projection": "doubly_stochastic", "step": 0.5},
}

# beta="auto" is AUTO_BETA * sqrt(N) on the range-normalized scores: the per-size optimum of the
# beta sweep of experiment E3 (docs/matching.md) grows about like sqrt(N).
AUTO_BETA = 10.0

# A softassign run that stops with a mean row maximum of X below this is a soft fixed point.
_SOFT_ROW_MAX = 0.5

# Below this fraction of nonzeros the products use scipy.sparse, above it dense BLAS.
_SPARSE_DENSITY = 0.05


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
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    return np.pad(dense, ((0, size - n), (0, size - n)))


def _nonzeros(matrix) -> int:
    return int(matrix.nnz) if sp.issparse(matrix) else int(np.count_nonzero(matrix))


def _initial_matrix(init, n1: int, n2: int, size: int, rng) -> np.ndarray:
    if isinstance(init, str):
        check_choice(init, "init", ("barycenter", "randomized"))
        barycenter = np.full((size, size), 1.0 / size)
        if init == "barycenter":
            return barycenter
        # FAQ's randomized start: halfway between the barycenter and a random doubly
        # stochastic matrix.
        noise = _sinkhorn(np.log(rng.uniform(size=(size, size))), 1e-10, 10_000).P
        return 0.5 * (barycenter + noise)
    start = check_array(init, "init", shape=(n1, n2))
    padded = np.zeros((size, size))
    padded[:n1, :n2] = start
    return padded


def _softassign(grad, beta, settings, n1, n2, warm) -> SinkhornResult:
    """Softassign of ``grad``: dynamical (scaled by the real block) or plain, adaptive or not."""
    # The scale comes from the real block: the zero rows or columns of the padding are constant
    # (Sinkhorn ignores them) but would inflate the range.
    width = (_dynamical_width(grad[:n1, :n2], settings.scale)
             if settings.projection == "dynamical_softassign" else 1.0)
    if width == 0.0:
        size = grad.shape[0]
        return SinkhornResult(np.full((size, size), 1.0 / size), 0, True, 0.0, None, beta)
    tol, max_iter = settings.inner_tol, settings.inner_max_iter
    if settings.epsilon is None:
        return replace(_sinkhorn(grad * (beta / width), tol, max_iter, warm), beta=beta)
    return _adaptive_softassign(grad, width, beta, settings.epsilon, settings.beta_max, tol,
                                max_iter, warm)


def _step_rule(step) -> StepRule:
    if isinstance(step, str):
        check_choice(step, "step", ("adaptive",))
        return adaptive_step
    if callable(step):
        return _checked_rule(step)
    return fixed_step(check_real(step, "step", low=0, high=1, low_inclusive=False))


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
    return float(np.max(np.abs(matrix)))


def _normalize(A, B, K, lam: float):
    """Factors ``(a, b, lam K / s, log s)`` of the normalized problem ``(A / a, B / b, ...)``.

    ``a = max|A|``; ``b = max|B| s / (max|A| max|B|)``; ``s = max(max|A| max|B|, |lam| max|K|)``,
    formed in logarithms, so weights near the ends of the float64 range neither overflow nor
    underflow. ``Z`` of the normalized problem is ``Z / s``; without a node term ``s = a b``.
    Zero matrices get the factor 1.
    """
    a, b = _max_abs(A), _max_abs(B)
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


def _to_user_units(result: MatchingResult, log_scale: float, A, B, K, lam: float) -> None:
    """Report the objective values of a run on the normalized problem in the user's units."""
    info = result.info
    info["normalized_objective"] = result.objective
    info["log_scale"] = log_scale
    if log_scale == 0.0:
        return
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        result.objective = assignment_objective(A, B, result.col_ind, K, lam)
    if not math.isfinite(result.objective):  # the true value is beyond float64: its sign
        result.objective = _rescale(info["normalized_objective"], log_scale)
    result.history = [_rescale(value, log_scale) for value in result.history]
    for key in ("c1", "c2"):
        info[key] = [_rescale(value, log_scale) for value in info[key]]
    info["relaxed_objective"] = _rescale(info["relaxed_objective"], log_scale)
    if "restart" in info:
        restart = info["restart"]
        restart["first_objective"] = _rescale(restart["first_objective"], log_scale)


def projected_fixed_point(
    A,
    B,
    K=None,
    *,
    projection: str = "dynamical_softassign",
    step="adaptive",
    lam: float = 1.0,
    beta="auto",
    scale: str = "range",
    beta_growth: float = 1.0,
    beta_max: float = math.inf,
    epsilon: float | None = None,
    restart_epsilon: float | None = None,
    init="barycenter",
    seed=None,
    max_iter: int = 100,
    tol: float = 1e-3,
    inner_tol: float = 1e-3,
    inner_max_iter: int = 100,
    history: bool = False,
) -> MatchingResult:
    """Maximize ``Z(M) = 1/2 tr(M^T A M B) + lam tr(M^T K)`` by projected fixed-point steps.

    Iterates ``M <- M + alpha_k (P(A M B + lam K) - M)`` from ``init`` and rounds the last
    iterate to a matching with the Hungarian algorithm. With a discrete projection (Hungarian)
    the best discrete iterate ``D_k`` is kept when it scores higher, as IPFP does. Each iteration
    costs two products with A and B (sparse or dense) plus the projection.

    Args:
        A: symmetric adjacency of graph 1 (n1 x n1): ndarray, scipy.sparse or networkx graph.
        B: symmetric adjacency of graph 2 (n2 x n2), same kinds.
        K: optional node affinity (n1 x n2); the node term is ``lam tr(M^T K)``.
        projection: ``"dynamical_softassign"``, ``"softassign"``, ``"hungarian"`` or
            ``"doubly_stochastic"``.
        step: ``"adaptive"`` (closed-form line search, monotone), a fixed ``alpha`` in (0, 1],
            or a callable ``(c1, c2) -> alpha``.
        lam: weight of the node term.
        beta: inverse temperature of the (dynamical) softassign at iteration 0, or ``"auto"``
            (``10 sqrt(N)``, ``N = max(n1, n2)``, the size rule of the dynamical softassign).
        scale: normalization of the dynamical softassign, ``"range"`` (``max - min`` of the
            gradient, default) or ``"max"`` (``max |gradient|``).
        beta_growth: ``beta_k = min(beta * beta_growth**k, beta_max)`` (GA's annealing).
        beta_max: cap of the annealed (or adaptive) ``beta``.
        epsilon: adaptive softassign (ASM): at every iteration ``beta`` is doubled through the
            Hadamard power until the softassign ``D`` of the gradient ``G`` certifies
            ``<G, Q - U> <= (1 + epsilon) <G, D - U>`` for every permutation ``Q``
            (``U = 11^T / N``; see :func:`~stepsize.matching.adaptive_softassign`); the reached
            ``beta`` carries over to the next iteration. Needs a finite ``beta_max``. None
            (default): ``beta`` follows ``beta_growth`` only.
        restart_epsilon: when the softassign iteration (``epsilon=None``) converges to a soft
            fixed point (mean row maximum of ``X`` below 1/2), run it again from ``init`` with
            ``epsilon=restart_epsilon`` and keep the matching with the higher objective
            (``info["restart"]`` says which; ``n_iter`` counts both runs, ``history`` and
            ``info`` are the kept run's). None (default): no restart.
        init: ``"barycenter"`` (``11^T / N``), ``"randomized"`` (FAQ's random start, uses
            ``seed``) or an n1 x n2 array.
        seed: int or ``numpy.random.Generator`` for ``init="randomized"``.
        max_iter: cap on outer iterations.
        tol: stop when ``alpha ||D - M||_F / ||M_{k+1}||_F < tol``.
        inner_tol, inner_max_iter: Sinkhorn (row-sum error) or doubly stochastic projection
            tolerance and cap. The cap of 100 binds only near convergence, where softassign at a
            large beta scales slowly and the direction needs no precision: the step stays exact
            (and monotone) for any ``D``, and the final rounding is a Hungarian step.
        history: store ``Z(M_k)`` for every iterate in ``result.history``.

    The iteration runs on the normalized problem of the module docstring (``A / max|A|``, ...),
    so the matching does not depend on the units of the weights; ``beta`` (fixed or annealed)
    applies to the normalized scores. ``objective``, ``history`` and the ``c1``, ``c2`` and
    ``relaxed_objective`` of ``info`` are in the user's units (``+-inf`` or 0 where that value
    is outside the float64 range; ``info["normalized_objective"]`` is always finite).

    Returns:
        A :class:`MatchingResult`.

    Raises:
        ValueError, TypeError: naming the argument, for a bad value (``step`` outside (0, 1],
            a meta-device tensor, complex or non-finite weights, ...).

    >>> A = np.array([[0, 3, 1], [3, 0, 2], [1, 2, 0]], dtype=float)
    >>> B = A[np.ix_([2, 0, 1], [2, 0, 1])]
    >>> projected_fixed_point(A, B).col_ind.tolist()
    [1, 2, 0]

    Reference: Shen, Niu, Zhu, "Dynamical softassign and adaptive parameter tuning for graph
    matching", arXiv:2208.08233 (2022).
    """
    A, _ = as_adjacency(_check_graph_input(A, "A"), "A")
    B, _ = as_adjacency(_check_graph_input(B, "B"), "B")
    n1, n2 = A.shape[0], B.shape[0]
    if K is not None:
        K = check_array(_check_graph_input(K, "K"), "K", shape=(n1, n2))
    projection = check_choice(projection, "projection", PROJECTIONS)
    rule = _step_rule(step)
    lam = check_real(lam, "lam")
    size = max(n1, n2)
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
    rng = check_rng(seed)
    max_iter = check_int(max_iter, "max_iter", low=0)
    tol = check_real(tol, "tol", low=0)
    inner_tol = check_real(inner_tol, "inner_tol", low=0, low_inclusive=False)
    inner_max_iter = check_int(inner_max_iter, "inner_max_iter", low=1)

    if not isinstance(init, str):
        init = _check_graph_input(init, "init")

    sparse = (_nonzeros(A) + _nonzeros(B)) / (n1 * n1 + n2 * n2) < _SPARSE_DENSITY
    a, b, node_term, log_scale = _normalize(A, B, K, lam)
    linear = None
    if node_term is not None:
        linear = np.zeros((size, size))
        linear[:n1, :n2] = node_term
    problem = _Problem(node_term, _scaled(_pad(A, size, sparse), a, sparse),
                       _scaled(_pad(B, size, sparse), b, sparse), linear, n1, n2, sparse)
    settings = _Settings(projection, rule, beta, scale, beta_growth, beta_max, epsilon,
                         max_iter, tol, inner_tol, inner_max_iter)
    start = _initial_matrix(init, n1, n2, size, rng)
    barycenter = isinstance(init, str) and init == "barycenter"
    result = _iterate(problem, settings, start.copy(), barycenter)
    if (restart_epsilon is not None and epsilon is None and projection in _SOFTASSIGNS
            and result.converged and result.info["mean_row_max"] < _SOFT_ROW_MAX):
        again = _iterate(problem, replace(settings, epsilon=restart_epsilon), start, barycenter)
        first = result
        result = again if again.objective > first.objective else first
        result.info["restart"] = {
            "kept": "restart" if result is again else "first",
            "first_objective": first.objective,
            "first_n_iter": first.n_iter,
        }
        result.n_iter = first.n_iter + again.n_iter
    if not result.converged and max_iter > 0:
        warn_not_converged(f"projected_fixed_point ({projection})", result.n_iter)
    _to_user_units(result, log_scale, A, B, K, lam)
    if not history:
        result.history = None
    return result


@dataclass(frozen=True)
class _Problem:
    """Validated inputs of one matching problem, normalized and padded to ``N = max(n1, n2)``.

    ``K`` is the normalized node term ``lam K / s`` (None without one).
    """

    K: np.ndarray | None
    A_pad: Any
    B_pad: Any
    linear: np.ndarray | None
    n1: int
    n2: int
    sparse: bool


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


def _iterate(problem: _Problem, settings: _Settings, M: np.ndarray, barycenter: bool):
    """The projected fixed-point loop from ``M`` (updated in place) and the final rounding."""
    A_pad, B_pad, linear = problem.A_pad, problem.B_pad, problem.linear
    n1, n2, size = problem.n1, problem.n2, M.shape[0]
    if barycenter:
        row_sums = np.asarray(A_pad.sum(axis=1)).ravel()
        col_sums = np.asarray(B_pad.sum(axis=0)).ravel()
        quadratic = np.outer(row_sums, col_sums / size)
    else:
        quadratic = np.asarray((A_pad @ M) @ B_pad)
    grad = quadratic if linear is None else quadratic + linear
    value = 0.5 * float(np.vdot(M, quadratic))
    if linear is not None:
        value += float(np.vdot(M, linear))

    trace = {"alpha": [], "c1": [], "c2": [], "beta": [], "inner_iterations": []}
    objectives = [value]
    best_discrete = (-math.inf, None)
    # Sinkhorn column potentials carried from one projection to the next: successive
    # gradients are close, so the previous scaling is a good start.
    potential = None
    converged, message = False, f"reached max_iter = {settings.max_iter}"
    iteration = 0
    beta_k = settings.beta
    for iteration in range(1, settings.max_iter + 1):
        if iteration > 1:
            beta_k = min(beta_k * settings.beta_growth, settings.beta_max)
        columns = None
        if settings.projection in _SOFTASSIGNS:
            out = _softassign(grad, beta_k, settings, n1, n2, potential)
            direction, inner, potential = out.P, out.n_iter, out.column_potential
            beta_k = out.beta
        elif settings.projection == "hungarian":
            columns = _hungarian_columns(grad)
            direction, inner = _permutation_matrix(columns), 1
        else:
            direction, inner = _doubly_stochastic_projection(grad, settings.inner_tol,
                                                             settings.inner_max_iter)
        direction -= M
        # The only two products of the iteration: H = A Delta B.
        curvature = np.asarray((A_pad @ direction) @ B_pad)
        c1 = float(np.vdot(direction, grad))
        c2 = 0.5 * float(np.vdot(direction, curvature))
        if columns is not None and value + c1 + c2 > best_discrete[0]:
            best_discrete = (value + c1 + c2, columns)
        alpha = float(settings.rule(c1, c2))
        for key, item in zip(trace, (alpha, c1, c2, beta_k, inner)):
            trace[key].append(item)
        change = alpha * float(np.linalg.norm(direction))
        if alpha != 0.0:
            M += alpha * direction
            quadratic += alpha * curvature
            grad = quadratic if linear is None else quadratic + linear
            value += alpha * c1 + alpha * alpha * c2
        objectives.append(value)
        if alpha == 0.0:
            converged, message = True, "the step size is 0: no ascent along the projection"
            break
        if change <= settings.tol * float(np.linalg.norm(M)):
            converged, message = True, f"relative change below tol = {settings.tol:g}"
            break

    # The padding is zero, so the objective of the padded matrices is that of the real blocks.
    A, B, K, lam = A_pad, B_pad, problem.K, 1.0
    rounded = _hungarian_columns(M)
    rounding = "hungarian"
    if best_discrete[1] is not None:
        candidates = [_to_col_ind(rounded, n1, n2), _to_col_ind(best_discrete[1], n1, n2)]
        scores = [assignment_objective(A, B, c, K, lam) for c in candidates]
        pick = int(np.argmax(scores))
        col_ind, objective_value = candidates[pick], scores[pick]
        rounding = ("hungarian", "best_discrete_iterate")[pick]
    else:
        col_ind = _to_col_ind(rounded, n1, n2)
        objective_value = assignment_objective(A, B, col_ind, K, lam)
    info = {
        **trace,
        "relaxed_objective": value,
        "rounding": rounding,
        "sparse": problem.sparse,
        # Over the padded columns too: a node of A sent to a dummy node is not soft.
        "mean_row_max": float(M[:n1].max(axis=1).mean()),
    }
    return MatchingResult(
        x=M[:n1, :n2],
        n_iter=iteration,
        converged=converged,
        history=objectives,
        message=message,
        info=info,
        col_ind=col_ind,
        objective=objective_value,
    )


def _to_col_ind(columns: np.ndarray, n1: int, n2: int) -> np.ndarray:
    col_ind = np.asarray(columns[:n1], dtype=np.intp).copy()
    col_ind[col_ind >= n2] = -1
    return col_ind


def match_graphs(A, B, K=None, *, method: str = "apfp", seed=None, **options) -> MatchingResult:
    """Match the nodes of two undirected weighted graphs.

    Maximizes ``Z(M) = 1/2 tr(M^T A M B) + lam tr(M^T K)`` with one of the presets of
    ``METHODS`` (see the module docstring), run by :func:`projected_fixed_point`. The default
    ``"apfp"`` is the paper's adaptive projected fixed-point method with dynamical softassign:
    monotone in ``Z``, two products per iteration, robust to graph size and weight units, and
    restarted with the adaptive softassign of ``"asm"`` when it stops at a soft fixed point.

    Args:
        A: graph 1: symmetric ndarray, scipy.sparse matrix or undirected networkx graph (nodes
            in ``list(G.nodes)`` order).
        B: graph 2, same kinds; its size may differ from A's.
        K: optional node affinity (n1 x n2).
        method: ``"apfp"`` (default), ``"asm"``, ``"ga"``, ``"ipfp"`` or ``"dspfp"``.
        seed: int or Generator, used by ``init="randomized"``.
        **options: any keyword of :func:`projected_fixed_point` overriding the preset
            (``beta``, ``step``, ``max_iter``, ``tol``, ``lam``, ``init``, ``history``, ...).

    Returns:
        A :class:`MatchingResult` with ``col_ind``, ``X``, ``objective``, ``n_iter``,
        ``converged``.

    >>> rng = np.random.default_rng(0)
    >>> A = rng.uniform(size=(30, 30)); A = np.triu(A, 1) + np.triu(A, 1).T
    >>> perm = rng.permutation(30)
    >>> B = A[np.ix_(perm, perm)]            # node perm[j] of A is node j of B
    >>> result = match_graphs(A, B, seed=0)
    >>> bool(np.all(perm[result.col_ind] == np.arange(30)))
    True

    Reference: Shen, Niu, Zhu, "Dynamical softassign and adaptive parameter tuning for graph
    matching", arXiv:2208.08233 (2022); Shen, Niu, Zhu, "Adaptive softassign via
    Hadamard-equipped Sinkhorn", CVPR 2024.
    """
    method = check_choice(method, "method", METHODS)
    settings = {**METHODS[method], **options}
    result = projected_fixed_point(A, B, K, seed=seed, **settings)
    result.method = method
    return result
