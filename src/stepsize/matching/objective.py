"""The Koopmans-Beckmann matching objective, its gradient, and one scorer for every method.

For graphs with weighted adjacencies ``A`` (n1 x n1) and ``B`` (n2 x n2), directed (asymmetric)
or not, with or without self-loops (diagonals), a node affinity ``K`` (n1 x n2) and a weight
``lam``, the objective of a (relaxed) matching ``M`` (n1 x n2, ``M[i, j]`` = node i of A matched
to node j of B) is

    Z(M) = 1/2 <A, M B M^T> + lam <K, M>,
    grad Z(M) = 1/2 (A M B^T + A^T M B) + lam K.

For symmetric ``A`` and ``B`` this is ``1/2 tr(M^T A M B) + lam tr(M^T K)`` with gradient
``A M B + lam K``; when only one of them is symmetric the other may be replaced by its symmetric
part ``(B + B^T) / 2`` without changing ``Z``. Nothing here symmetrizes the input, though: the
general formula is exact for every pair.

For a permutation ``M``, ``<A, M B M^T> = sum_ik A[i, k] B[s(i), s(k)]`` with ``s = col_ind``,
which is the objective ``fun`` of ``scipy.optimize.quadratic_assignment(A, B)`` (minimized by
default, maximized with ``options={"maximize": True}``): ``Z = fun / 2`` when ``K`` is absent.

Reference: Shen, Niu, Zhu, "Dynamical softassign and adaptive parameter tuning for graph
matching", arXiv:2208.08233 (2022), section 2; Lu, Huang, Liu, "A fast projected fixed-point
algorithm for large graph matching", Pattern Recognition 60 (2016).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from stepsize.matching.projections import _refuse_meta

__all__ = [
    "MatchScore",
    "assignment_objective",
    "edge_correctness",
    "matching_accuracy",
    "objective",
    "gradient",
    "score_matching",
]


def _no_meta(**arguments) -> None:
    """Refuse meta-device tensors among the named arguments (they have no data to read)."""
    for name, value in arguments.items():
        _refuse_meta(value, name)


def _inner(X, Y) -> float:
    """Frobenius inner product <X, Y> for dense or sparse operands."""
    if sp.issparse(X):
        return float(X.multiply(Y).sum())
    if sp.issparse(Y):
        return float(Y.multiply(X).sum())
    return float(np.vdot(X, Y))


def _is_symmetric(matrix) -> bool:
    if sp.issparse(matrix):
        return (abs(matrix - matrix.T) > 0).nnz == 0
    matrix = np.asarray(matrix)
    return bool(np.array_equal(matrix, matrix.T))


def _quadratic_gradient(A, B, M):
    """``1/2 (A M B^T + A^T M B)``: ``A M B`` when both are symmetric."""
    if _is_symmetric(A) and _is_symmetric(B):
        return np.asarray((A @ M) @ B)
    return 0.5 * (np.asarray((A @ M) @ B.T) + np.asarray((A.T @ M) @ B))


def gradient(A, B, M: np.ndarray, K: np.ndarray | None = None, lam: float = 1.0) -> np.ndarray:
    """The gradient ``1/2 (A M B^T + A^T M B) + lam K`` of :func:`objective`.

    For symmetric ``A`` and ``B`` it is ``A M B + lam K``.

    Args:
        A: adjacency of the first graph, dense or sparse (n1 x n1), directed or not.
        B: adjacency of the second graph, dense or sparse (n2 x n2).
        M: matching matrix (n1 x n2).
        K: optional node affinity (n1 x n2).
        lam: weight of the node term.

    Returns:
        The n1 x n2 dense gradient.

    >>> A = np.array([[0., 1.], [1., 0.]])
    >>> gradient(A, A, np.eye(2)).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    >>> arc = np.array([[0., 1.], [0., 0.]])          # one arc 0 -> 1
    >>> gradient(arc, arc, np.eye(2)).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
    """
    _no_meta(A=A, B=B, M=M, K=K)
    product = _quadratic_gradient(A, B, M)
    if K is not None:
        product = product + lam * np.asarray(K)
    return product


def objective(A, B, M: np.ndarray, K: np.ndarray | None = None, lam: float = 1.0) -> float:
    """``Z(M) = 1/2 <A, M B M^T> + lam <K, M>`` for a relaxed or discrete matching ``M``.

    Args:
        A, B, M, K, lam: as in :func:`gradient`.

    Returns:
        The objective value (float); ``1/2 tr(M^T A M B) + lam tr(M^T K)`` for symmetric graphs.

    >>> A = np.array([[0., 2.], [2., 0.]])
    >>> objective(A, A, np.eye(2))
    4.0
    >>> arc = np.array([[0., 1.], [0., 0.]])
    >>> objective(arc, arc, np.eye(2)), objective(arc, arc, np.eye(2)[::-1])
    (0.5, 0.0)
    """
    _no_meta(A=A, B=B, M=M, K=K)
    value = 0.5 * _inner(M, _quadratic_gradient(A, B, M))
    if K is not None:
        value += lam * _inner(M, np.asarray(K))
    return value


def _permuted_block(B, col_ind: np.ndarray):
    """``B[col_ind][:, col_ind]`` for dense or sparse ``B``."""
    if sp.issparse(B):
        B = sp.csr_array(B)
        return B[col_ind][:, col_ind]
    # take along each axis: the same entries as B[np.ix_(c, c)], without ix_'s Python cost
    # (it dominated this function at n <= 50).
    return np.asarray(B).take(col_ind, axis=0).take(col_ind, axis=1)


def _matched(col_ind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(col_ind >= 0)
    return rows, col_ind[rows]


def assignment_objective(A, B, col_ind, K: np.ndarray | None = None, lam: float = 1.0) -> float:
    """:func:`objective` of the 0/1 matching ``M[i, col_ind[i]] = 1`` in O(n^2) (or O(nnz)).

    ``1/2 sum_ik A[i, k] B[col_ind[i], col_ind[k]] + lam sum_i K[i, col_ind[i]]``, for directed
    graphs too: half of ``scipy.optimize.quadratic_assignment``'s ``fun`` without ``K``.
    Entries ``col_ind[i] = -1`` mark nodes of A left unmatched (when A has more nodes than B).

    >>> A = np.array([[0., 2.], [2., 0.]])
    >>> assignment_objective(A, A, [1, 0])
    4.0
    """
    _no_meta(A=A, B=B, col_ind=col_ind, K=K)
    col_ind = np.asarray(col_ind, dtype=np.intp)
    rows, cols = _matched(col_ind)
    if rows.size == (A.shape[0] if hasattr(A, "shape") else len(A)):  # all matched: A as is
        block_a = A
    else:
        block_a = (A[rows][:, rows] if sp.issparse(A)
                   else np.asarray(A).take(rows, axis=0).take(rows, axis=1))
    value = 0.5 * _inner(block_a, _permuted_block(B, cols))
    if K is not None:
        value += lam * float(np.asarray(K)[rows, cols].sum())
    return value


def matching_accuracy(col_ind, truth) -> float:
    """Fraction of nodes of A with a ground-truth partner that are matched to it.

    ``truth[i] = -1`` marks an outlier of A (no partner); it is not counted.

    >>> matching_accuracy([0, 2, 1], [0, 1, 2])
    0.3333333333333333
    """
    _no_meta(col_ind=col_ind, truth=truth)
    col_ind = np.asarray(col_ind)
    truth = np.asarray(truth)
    inliers = truth >= 0
    if not inliers.any():
        return float("nan")
    return float(np.mean(col_ind[inliers] == truth[inliers]))


def edge_correctness(A, B, col_ind) -> float:
    """Fraction of the edges of A mapped onto edges of B (weights ignored).

    ``EC = |{(i, k) in E_A : (s(i), s(k)) in E_B}| / |E_A|``, the network-alignment score used by
    Shen et al. and most alignment papers. Self-loops count as edges.

    >>> A = np.array([[0., 1., 0.], [1., 0., 1.], [0., 1., 0.]])
    >>> edge_correctness(A, A, [2, 1, 0])
    1.0
    """
    _no_meta(A=A, B=B, col_ind=col_ind)
    col_ind = np.asarray(col_ind, dtype=np.intp)
    support_a = sp.csr_array(A) != 0
    total = support_a.sum()
    if total == 0:
        return float("nan")
    rows, cols = _matched(col_ind)
    block_a = support_a[rows][:, rows]
    block_b = sp.csr_array(_permuted_block(sp.csr_array(B) != 0, cols))
    return float(block_a.multiply(block_b).sum() / total)


@dataclass(frozen=True)
class MatchScore:
    """Scores of one matching under the common scorer.

    Attributes:
        objective: Z of the 0/1 matching.
        objective_ratio: Z / Z(ground truth), or NaN without a ground truth.
        accuracy: fraction of inliers matched to their true partner (NaN without ground truth).
        edge_correctness: fraction of edges of A preserved.
    """

    objective: float
    objective_ratio: float
    accuracy: float
    edge_correctness: float


def score_matching(A, B, col_ind, K=None, lam: float = 1.0, truth=None) -> MatchScore:
    """Score a matching ``col_ind`` of A into B, optionally against a ground truth.

    Every method in the experiments and the benchmark is scored by this one function.

    Args:
        A, B: symmetric adjacencies (dense or sparse).
        col_ind: node i of A is matched to node ``col_ind[i]`` of B (-1: unmatched).
        K, lam: the node term of the objective.
        truth: ground-truth ``col_ind`` (-1 for outliers of A), or None.

    Returns:
        A :class:`MatchScore`.

    >>> A = np.array([[0., 1.], [1., 0.]])
    >>> score_matching(A, A, [1, 0], truth=[0, 1]).accuracy
    0.0
    """
    value = assignment_objective(A, B, col_ind, K, lam)
    if truth is None:
        return MatchScore(value, float("nan"), float("nan"), edge_correctness(A, B, col_ind))
    reference = assignment_objective(A, B, truth, K, lam)
    ratio = value / reference if reference != 0 else float("nan")
    return MatchScore(
        value, ratio, matching_accuracy(col_ind, truth), edge_correctness(A, B, col_ind)
    )
