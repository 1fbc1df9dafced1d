"""The Lawler QAP ``max_X vec(X)^T K vec(X)``: explicit or factorized affinities, outliers.

``K`` is an ``n1 n2 x n1 n2`` affinity in pygmtools' layout (column-major ``vec``: entry
``(i + a n1, j + b n1)`` scores matching node i of graph 1 to node a of graph 2 together with j
to b; node affinities on the diagonal). :func:`match_lawler` runs the projected fixed-point
iteration of :mod:`.solver` with the gradient ``sym(K) vec(X)``, ``sym(K) = (K + K^T) / 2``.

**Factorized affinities** (Zhou & De la Torre, factorized graph matching). When the affinity
comes from node and edge features, with edge lists ``E1`` (m1 directed edges ``i -> j``) and
``E2`` (m2 edges ``a -> b``), node-edge incidences ``G`` (start) and ``H`` (end),

    K = diag(vec(Kp)) + (G2 kron G1) diag(vec(Kq)) (H2 kron H1)^T,

with ``Kp`` (n1 x n2) the node affinity and ``Kq`` (m1 x m2) the edge affinity: ``K[(i, a),
(j, b)] = Kq[i -> j, a -> b]``, exactly what ``pygmtools.utils.build_aff_mat`` builds for
distinct edges without self-loops. :class:`FactorizedAffinity` never forms ``K``: with
``X[E1_end, E2_end]`` the m1 x m2 matrix of ``X`` at the edges' end points,

    K vec(X)   = vec(Kp o X + G1 (Kq o X[E1_end, E2_end]) G2^T),
    K^T vec(X) = vec(Kp o X + H1 (Kq o X[E1_start, E2_start]) H2^T),

O(m1 m2 + n1 n2) time and memory instead of ``(n1 n2)^2``.

**Outliers** (``unmatched=c``): both graphs get dummy nodes, ``N = n1 + n2``, and leaving a
node unmatched scores ``c`` (in the units of ``vec(X)^T K vec(X)``): the objective becomes
``vec(X)^T K vec(X) + c (u1 + u2)`` with ``u1``, ``u2`` the unmatched nodes of each graph,
the dummy-node form of slack rows and columns (Gold & Rangarajan).

Reference: Lawler, "The quadratic assignment problem", Management Science 9 (1963); Zhou &
De la Torre, "Factorized graph matching", CVPR 2012 and TPAMI 38 (2016); Shen, Niu, Zhu,
arXiv:2208.08233 (2022); Wang et al., "Pygmtools", JMLR 25 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from stepsize._validation import (
    check_array,
    check_choice,
    check_finite,
    check_int,
    check_real,
    check_rng,
    describe,
)
from stepsize.matching.solver import (
    METHODS,
    MatchingResult,
    _check_graph_input,
    _check_memory,
    _check_settings,
    _max_abs,
    _Problem,
    _rescale,
    _run_starts,
    _to_user_units,
    _work_arrays,
    progress_options,
)

__all__ = ["LAWLER_AUTO_BETA", "FactorizedAffinity", "match_lawler"]

# beta="auto" of match_lawler is LAWLER_AUTO_BETA * sqrt(N): on pygmtools' Gaussian edge
# affinities with outliers (RRWM's protocol) 3-4 sqrt(N) recovered every inlier where the
# 10 sqrt(N) of match_graphs lost 14 points (sweep in docs/matching.md).
LAWLER_AUTO_BETA = 4.0

_OPTIONS = ("projection", "step", "beta", "scale", "beta_growth", "beta_max", "epsilon",
            "restart_epsilon", "max_iter", "tol", "inner_tol", "inner_tol_factor", "inner_max_iter",
            "polish", "stall_restarts", "float32_from", "memory_limit")


def _check_edges(edges, name: str, n: int | None, source: str = "") -> tuple[np.ndarray, int]:
    """``(edges as intp, node count)``; ``source`` says where a given ``n`` came from."""
    pairs = np.asarray(edges)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (m, 2) array of (start, end) nodes, "
                         f"got shape {pairs.shape}")
    if pairs.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer node indices, got dtype {pairs.dtype}")
    pairs = pairs.astype(np.intp)
    if pairs.min() < 0:
        raise ValueError(f"{name}: node {int(pairs.min())} is negative (nodes are 0, 1, ...)")
    if n is not None and pairs.max() >= n:
        raise ValueError(f"{name}: node {int(pairs.max())} is out of range [0, {n}){source}")
    return pairs, int(pairs.max()) + 1 if n is None else n


def _reverse(edges: np.ndarray, n: int) -> np.ndarray | None:
    """``r`` with ``edges[r[e]] = reversed(edges[e])``; None without every reverse, or with a
    repeated edge."""
    keys = edges[:, 0] * n + edges[:, 1]
    order = np.argsort(keys)
    if np.any(np.diff(keys[order]) == 0):
        return None
    wanted = edges[:, 1] * n + edges[:, 0]
    where = np.minimum(np.searchsorted(keys[order], wanted), keys.size - 1)
    if not np.array_equal(keys[order][where], wanted):
        return None
    return order[where]


def _incidence(nodes: np.ndarray, n: int) -> sp.csr_array:
    """``G[i, e] = 1`` when edge ``e`` has node ``i`` at this end (n x m, sparse)."""
    m = nodes.size
    return sp.csr_array((np.ones(m), (nodes, np.arange(m))), shape=(n, m))


class FactorizedAffinity:
    """A Lawler affinity ``K = diag(vec(Kp)) + (G2 kron G1) diag(vec(Kq)) (H2 kron H1)^T``.

    Stores the node affinity ``Kp`` (n1 x n2), the edge affinity ``Kq`` (m1 x m2) and the edge
    lists; products with ``K`` and ``K^T`` cost ``O(m1 m2 + n1 n2)`` and ``K`` itself (``(n1
    n2)^2`` entries) is never formed (module docstring). Pass it to :func:`match_lawler` as
    ``K``. ``toarray()`` builds the explicit ``K`` (pygmtools' layout) for small checks.

    Args:
        edge_affinity: ``Kq``, shape (m1, m2): entry ``[e, f]`` scores matching edge ``e`` of
            graph 1 to edge ``f`` of graph 2.
        edges1, edges2: (m1, 2) and (m2, 2) integer arrays of directed edges ``(start, end)``
            (list both directions for an undirected graph), pygmtools' ``connectivity``.
        node_affinity: ``Kp``, shape (n1, n2), or None (zero).
        n1, n2: node counts (default: from ``node_affinity``, else the largest node index + 1).

    Attributes:
        symmetric: whether ``K = K^T`` is known from the factors (every edge listed in both
            directions, once, and ``Kq[e, f] = Kq[reverse e, reverse f]``): then
            ``sym(K) vec(X)`` costs one product instead of two.

    >>> edges = np.array([[0, 1], [1, 0], [1, 2], [2, 1]])      # the path 0 - 1 - 2
    >>> K = FactorizedAffinity(np.eye(4), edges, edges)
    >>> K.shape, float(K.toarray()[1 + 1 * 3, 2 + 2 * 3])      # Kq[1 -> 2, 1 -> 2]
    ((9, 9), 1.0)
    >>> X = np.arange(9.0).reshape(3, 3)
    >>> bool(np.allclose(K.matvec(X).ravel(order="F"), K.toarray() @ X.ravel(order="F")))
    True

    Reference: Zhou & De la Torre, "Factorized graph matching", CVPR 2012.
    """

    def __init__(self, edge_affinity, edges1, edges2, node_affinity=None, *,
                 n1: int | None = None, n2: int | None = None):
        sources = [" (n1)", " (n2)"]
        if node_affinity is not None:
            node_affinity = check_array(node_affinity, "node_affinity", ndim=2)
            for k, given in enumerate((n1, n2)):
                if given is None:
                    sources[k] = (f" (n{k + 1} = node_affinity.shape[{k}], node_affinity of "
                                  f"shape {node_affinity.shape})")
            n1 = node_affinity.shape[0] if n1 is None else n1
            n2 = node_affinity.shape[1] if n2 is None else n2
        n1 = None if n1 is None else check_int(n1, "n1", low=1)
        n2 = None if n2 is None else check_int(n2, "n2", low=1)
        self.edges1, self.n1 = _check_edges(edges1, "edges1", n1, sources[0])
        self.edges2, self.n2 = _check_edges(edges2, "edges2", n2, sources[1])
        self.edge_affinity = check_array(
            edge_affinity, "edge_affinity", shape=(len(self.edges1), len(self.edges2)))
        self.node_affinity = (None if node_affinity is None else check_array(
            node_affinity, "node_affinity", shape=(self.n1, self.n2)))
        self._start = (_incidence(self.edges1[:, 0], self.n1),
                       _incidence(self.edges2[:, 0], self.n2))
        self._end = (_incidence(self.edges1[:, 1], self.n1),
                     _incidence(self.edges2[:, 1], self.n2))
        reverse1, reverse2 = _reverse(self.edges1, self.n1), _reverse(self.edges2, self.n2)
        self.symmetric = bool(
            reverse1 is not None and reverse2 is not None
            and np.array_equal(self.edge_affinity,
                               self.edge_affinity.take(reverse1, 0).take(reverse2, 1)))

    @property
    def shape(self) -> tuple[int, int]:
        size = self.n1 * self.n2
        return size, size

    def _product(self, X: np.ndarray, gather: int, scatter) -> np.ndarray:
        gathered = X.take(self.edges1[:, gather], 0).take(self.edges2[:, gather], 1)
        gathered *= self.edge_affinity
        out = np.asarray(scatter[0] @ gathered @ scatter[1].T)
        if self.node_affinity is not None:
            out += self.node_affinity * X
        return out

    def matvec(self, X) -> np.ndarray:
        """``K vec(X)`` as an n1 x n2 matrix: ``Kp o X + G1 (Kq o X[E1_end, E2_end]) G2^T``."""
        return self._product(np.asarray(X, dtype=np.float64), 1, self._start)

    def rmatvec(self, X) -> np.ndarray:
        """``K^T vec(X)`` as an n1 x n2 matrix: ``Kp o X + H1 (Kq o X[E1_start, E2_start])
        H2^T``."""
        return self._product(np.asarray(X, dtype=np.float64), 0, self._end)

    def max_abs(self) -> float:
        """``max(max|Kp|, max|Kq|)``: a bound of ``max|K|`` for distinct edges."""
        node = 0.0 if self.node_affinity is None else _max_abs(self.node_affinity)
        return max(node, _max_abs(self.edge_affinity))

    def toarray(self) -> np.ndarray:
        """The explicit ``K`` (pygmtools' layout): ``(n1 n2)^2`` floats, for small problems."""
        n1 = self.n1
        K = np.zeros(self.shape)
        (i, j), (a, b) = self.edges1.T, self.edges2.T
        np.add.at(K, ((a[None, :] * n1 + i[:, None]), (b[None, :] * n1 + j[:, None])),
                  self.edge_affinity)
        if self.node_affinity is not None:
            K[np.diag_indices_from(K)] += self.node_affinity.ravel(order="F")
        return K

    def __repr__(self) -> str:
        return (f"FactorizedAffinity(n1={self.n1}, n2={self.n2}, m1={len(self.edges1)}, "
                f"m2={len(self.edges2)})")


@dataclass
class _LawlerTerm:
    """The quadratic term of the internal maximization and the scorer of 0/1 matchings.

    ``product(X)``: ``factor sym(K) vec(X)`` on the real block; ``value(col_ind)``: ``vec(X)^T K
    vec(X)`` in the user's units; ``slack``: the internal score of one unmatched node.
    """

    product: Callable[[np.ndarray], np.ndarray]
    value: Callable[[np.ndarray], float]
    factor: float
    n2: int
    zero: bool = False
    slack: float = 0.0

    def score(self, col_ind: np.ndarray) -> float:
        """The internal objective ``Z_int`` of the 0/1 matching ``col_ind``."""
        matched = int(np.count_nonzero(col_ind >= 0))
        unmatched = col_ind.size - matched + self.n2 - matched
        return 0.5 * self.factor * self.value(col_ind) + self.slack * unmatched


def _explicit_term(K, n1: int, n2: int, sign: float) -> _LawlerTerm:
    symmetric = (K + K.T) * 0.5
    scale = _max_abs(symmetric)
    factor = sign / scale if scale > 0 else sign
    symmetric = symmetric * factor

    def product(X):
        vector = symmetric @ X.reshape(-1, order="F")
        return np.asarray(vector).reshape(n1, n2, order="F")

    def value(col_ind):
        rows = np.flatnonzero(col_ind >= 0)
        index = col_ind[rows] * n1 + rows
        block = K[index][:, index] if sp.issparse(K) else K[np.ix_(index, index)]
        return float(block.sum())

    return _LawlerTerm(product, value, factor, n2, scale == 0)


def _factorized_term(K: FactorizedAffinity, sign: float) -> _LawlerTerm:
    scale = K.max_abs()
    factor = sign / scale if scale > 0 else sign

    def value(col_ind):
        rows = np.flatnonzero(col_ind >= 0)
        X = np.zeros((K.n1, K.n2))
        X[rows, col_ind[rows]] = 1.0
        return float(np.vdot(X, K.matvec(X)))

    def product(X):
        if K.symmetric:
            return factor * K.matvec(X)
        return (0.5 * factor) * (K.matvec(X) + K.rmatvec(X))

    return _LawlerTerm(product, value, factor, K.n2, scale == 0)


def _checked_affinity(K, n1: int, n2: int):
    """``K`` as a csr_array, an ndarray or a :class:`FactorizedAffinity` of the right size."""
    size = n1 * n2
    if isinstance(K, FactorizedAffinity):
        if (K.n1, K.n2) != (n1, n2):
            raise ValueError(f"K (a FactorizedAffinity) has n1, n2 = {K.n1}, {K.n2}; "
                             f"match_lawler got n1, n2 = {n1}, {n2}")
        return K
    _check_graph_input(K, "K")
    if sp.issparse(K):
        K = sp.csr_array(K, dtype=np.float64)
        check_finite(K.data, "K")
    else:
        K = check_array(K, "K", ndim=2)
    if K.shape != (size, size):
        raise ValueError(f"K must have shape (n1 n2, n1 n2) = ({size}, {size}), got {K.shape}")
    return K


def _lawler_settings(method: str, options: dict, n1: int, n2: int, slack: bool):
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"match_lawler got unexpected option(s) {', '.join(unknown)}; "
                        f"options are {', '.join(_OPTIONS)}")
    settings = {key: value for key, value in METHODS[method].replaced(**options).as_dict().items()
                if key in _OPTIONS}
    size = n1 + n2 if slack else max(n1, n2)
    if isinstance(settings["beta"], str):
        check_choice(settings["beta"], "beta", ("auto",))
        settings["beta"] = LAWLER_AUTO_BETA * math.sqrt(size)
    return _check_settings(**settings, size=size)


def _checked_unmatched(unmatched, maximize) -> float | None:
    if not isinstance(maximize, (bool, np.bool_)):
        raise TypeError(f"maximize must be True or False, got {describe(maximize)}")
    if unmatched is None:
        return None
    unmatched = check_real(unmatched, "unmatched")
    if not maximize:
        raise ValueError("unmatched (dummy nodes) needs maximize=True; negate K and "
                         "unmatched to minimize")
    return unmatched


def _check_lawler_memory(K, n1: int, n2: int, unmatched, n_init: int, settings,
                         restart_epsilon) -> None:
    """The iteration's N x N work arrays (and the slack nodes' score) and a dense K's
    symmetrized copy, before either exists."""
    size = n1 + n2 if unmatched is not None else max(n1, n2)
    arrays = _work_arrays(settings, restart_epsilon, n_init) + (unmatched is not None)
    _check_memory(size, arrays, settings.memory_limit)
    if not (sp.issparse(K) or isinstance(K, FactorizedAffinity)):
        _check_memory(n1 * n2, 1, settings.memory_limit)


def match_lawler(
    K,
    n1: int,
    n2: int,
    *,
    method: str = "apfp",
    maximize: bool = True,
    unmatched: float | None = None,
    n_init: int = 1,
    seed=None,
    init="barycenter",
    history: bool = False,
    progress: bool | None = None,
    **options,
) -> MatchingResult:
    """Solve the Lawler QAP ``max_X vec(X)^T K vec(X)`` by projected fixed points.

    ``K`` (``n1 n2 x n1 n2``, pygmtools' layout, module docstring) is dense, scipy sparse or a
    :class:`FactorizedAffinity` (never formed); a ``pygmtools.utils.build_aff_mat`` affinity
    passes unchanged, and ``K = kron(B, A)`` gives ``tr(X^T A X B)``, twice the
    Koopmans-Beckmann ``Z`` of :func:`match_graphs`. The iteration is that of
    :func:`projected_fixed_point` with the gradient ``sym(K) vec(X)`` (one product per step)
    on ``K / max|K|``: same presets, starts, stall restarts and sharpening, except that
    ``beta="auto"`` is ``LAWLER_AUTO_BETA sqrt(N) = 4 sqrt(N)``. Without ``unmatched``,
    graphs of different sizes are padded with dummy nodes (``col_ind = -1``) and every node of
    the smaller graph is matched; with ``unmatched=c`` any node may stay unmatched at a score
    ``c`` each, maximizing ``vec(X)^T K vec(X) + c (u1 + u2)`` (module docstring).

    Args:
        K: affinity, shape ``(n1 n2, n1 n2)``, real and finite; or a FactorizedAffinity.
        n1, n2: node counts of the two graphs.
        method: a preset of ``METHODS`` (default ``"apfp"``).
        maximize: maximize (default) or minimize ``vec(X)^T K vec(X)``.
        unmatched: the score of leaving a node unmatched (dummy nodes; maximize only), or None.
        n_init, seed, init, history: as in :func:`projected_fixed_point` (``init``: a string).
        progress: as in :func:`match_graphs`.
        **options: iteration options overriding the preset (``max_iter``, ``tol``, ``beta``,
            ``step``, ``polish``, ...).

    Returns:
        A :class:`MatchingResult`; ``objective`` is ``vec(X)^T K vec(X)`` of the 0/1 matching
        (no 1/2, no ``unmatched`` bonus), ``info["start_objectives"]`` every start's,
        ``info["unmatched"]`` the unmatched nodes of graph 1 and 2.

    Raises:
        ValueError, TypeError: naming the argument: ``K`` not of shape ``(n1 n2, n1 n2)``,
            complex or non-finite, ``n1`` or ``n2`` < 1, an unknown option.

    >>> rng = np.random.default_rng(1)
    >>> A = rng.uniform(size=(8, 8)); A = A + A.T
    >>> perm = rng.permutation(8)
    >>> B = A[np.ix_(perm, perm)]
    >>> result = match_lawler(np.kron(B, A), 8, 8)
    >>> bool(np.all(perm[result.col_ind] == np.arange(8)))
    True
    >>> bool(np.isclose(result.objective, np.sum(A * B[np.ix_(result.col_ind, result.col_ind)])))
    True

    Reference: Lawler (1963); Zhou & De la Torre (2012); Shen, Niu, Zhu, arXiv:2208.08233.
    """
    method = check_choice(method, "method", METHODS)
    n1, n2 = check_int(n1, "n1", low=1), check_int(n2, "n2", low=1)
    K = _checked_affinity(K, n1, n2)
    unmatched = _checked_unmatched(unmatched, maximize)
    n_init = check_int(n_init, "n_init", low=1)
    check_choice(init, "init", ("barycenter", "randomized"))
    step = options.get("step", METHODS[method].step)
    _check_lawler_memory(K, n1, n2, unmatched, n_init,
                         *_lawler_settings(method, options, n1, n2, unmatched is not None))
    sign = 1.0 if maximize else -1.0
    term = (_factorized_term(K, sign) if isinstance(K, FactorizedAffinity)
            else _explicit_term(K, n1, n2, sign))
    problem = _lawler_problem(term, n1, n2, unmatched, sp.issparse(K))
    with progress_options({**options, "step": step}, progress, f"match_lawler ({method})"
                          ) as options:
        settings, restart_epsilon = _lawler_settings(method, options, n1, n2,
                                                     unmatched is not None)
        result = _run_starts(problem, settings, init, check_rng(seed), n_init, restart_epsilon,
                             term.zero and unmatched is None)
    return _report(result, term, method, maximize, history)


def _lawler_problem(term: _LawlerTerm, n1: int, n2: int, unmatched, sparse: bool) -> _Problem:
    """The padded problem; with ``unmatched``, ``N = n1 + n2`` and the dummy blocks' score."""
    if unmatched is None:
        return _Problem(None, None, None, None, None, None, n1, n2, sparse, term)
    size = n1 + n2
    term.slack = 0.5 * abs(term.factor) * unmatched
    linear = np.zeros((size, size))
    linear[:n1, n2:] = term.slack  # node i of graph 1 unmatched
    linear[n1:, :n2] = term.slack  # node a of graph 2 unmatched
    return _Problem(None, None, None, None, None, linear, n1, n2, sparse, term, size)


def _report(result: MatchingResult, term: _LawlerTerm, method: str, maximize: bool,
            history: bool) -> MatchingResult:
    """Objectives in the user's units: ``vec(X)^T K vec(X)`` (no 1/2)."""
    log_scale = -math.log(abs(term.factor))
    _to_user_units(result, log_scale)
    info = result.info
    for start in info["starts"]:
        start["objective"] = term.value(start.pop("col_ind"))
    info["start_objectives"] = [start["objective"] for start in info["starts"]]
    info["maximize"] = maximize
    matched = int(np.count_nonzero(result.col_ind >= 0))
    info["unmatched"] = (result.col_ind.size - matched, term.n2 - matched)
    result.objective = term.value(result.col_ind)
    sign = 2.0 if maximize else -2.0
    result.history = ([sign * _rescale(value, log_scale) for value in result.history]
                      if history else None)
    result.method = method
    return result

