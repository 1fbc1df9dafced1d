"""Synthetic graph pairs with a known ground truth (the generators of the research note, E1-E5).

Every generator returns ``(A, B, truth)``: symmetric adjacencies and ``truth[i]``, the node of B
that node i of A corresponds to (-1 for an outlier of A). B is a relabelled, perturbed copy of A.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from stepsize._validation import check_choice, check_int, check_real, check_rng

__all__ = ["edm_pair", "kb_pair", "network_pair", "outlier_pair", "subgraph_pair"]


def _symmetric_uniform(n: int, rng) -> np.ndarray:
    upper = np.triu(rng.uniform(size=(n, n)), 1)
    return upper + upper.T


def _symmetric_mask(n: int, density: float, rng) -> np.ndarray:
    upper = np.triu(rng.uniform(size=(n, n)) < density, 1)
    return upper | upper.T


def _symmetric_normal(n: int, rng) -> np.ndarray:
    upper = np.triu(rng.normal(size=(n, n)), 1)
    return upper + upper.T


def _relabel(matrix, rng):
    """``B = P^T matrix P`` for a random permutation; returns (B, truth)."""
    perm = rng.permutation(matrix.shape[0])
    truth = np.argsort(perm)
    if sp.issparse(matrix):
        return sp.csr_array(matrix)[perm][:, perm], truth
    return matrix[np.ix_(perm, perm)], truth


def kb_pair(n: int, *, density: float = 1.0, noise: float = 0.0, sparse: bool = False, seed=None):
    """Weighted random graph and a noisy permuted copy (G-KB of the note).

    ``A`` has U[0, 1] weights on a symmetric Erdos-Renyi mask of the given density; ``B`` is
    ``A + noise E`` (``E`` symmetric N(0, 1) on the existing edges only), relabelled.

    Args:
        n: number of nodes.
        density: edge probability in (0, 1].
        noise: standard deviation of the edge-weight noise.
        sparse: return ``csr_array`` adjacencies.
        seed: int or Generator.

    Returns:
        ``(A, B, truth)``.

    >>> A, B, truth = kb_pair(5, seed=0)
    >>> bool(np.allclose(A, B[np.ix_(truth, truth)]))
    True
    """
    n = check_int(n, "n", low=2)
    density = check_real(density, "density", low=0, high=1, low_inclusive=False)
    noise = check_real(noise, "noise", low=0)
    rng = check_rng(seed)
    mask = _symmetric_mask(n, density, rng) if density < 1 else ~np.eye(n, dtype=bool)
    A = _symmetric_uniform(n, rng) * mask
    noisy = A + noise * _symmetric_normal(n, rng) * mask
    if sparse:
        A, noisy = sp.csr_array(A), sp.csr_array(noisy)
    B, truth = _relabel(noisy, rng)
    return A, B, truth


def edm_pair(n: int, *, kind: str = "edm", jitter: float = 0.0, seed=None):
    """Fully connected geometric graphs of a point set and its rotated, jittered copy (G-EDM).

    Points ``x_i ~ U[0, 1]^2``; the copy is rotated by a random angle, jittered by N(0, jitter^2)
    and relabelled. ``kind``: ``"edm"`` (``A_ij = |x_i - x_j|``), ``"gaussian"``
    (``exp(-d^2 / median(d)^2)`` with zero diagonal), ``"knn"`` (distances on the symmetrized
    8-nearest-neighbour graph) or ``"sparse01"`` (a 0/1 Erdos-Renyi graph, p = 0.1, its
    copy relabelled; the geometry is unused).

    Returns:
        ``(A, B, truth)``.

    >>> A, B, truth = edm_pair(6, seed=1)
    >>> bool(np.allclose(A, B[np.ix_(truth, truth)]))
    True
    """
    n = check_int(n, "n", low=3)
    kind = check_choice(kind, "kind", ("edm", "gaussian", "knn", "sparse01"))
    jitter = check_real(jitter, "jitter", low=0)
    rng = check_rng(seed)
    if kind == "sparse01":
        A = _symmetric_mask(n, 0.1, rng).astype(float)
        B, truth = _relabel(A, rng)
        return A, B, truth
    points = rng.uniform(size=(n, 2))
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ rotation.T + jitter * rng.normal(size=(n, 2))

    def weights(x: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        if kind == "edm":
            return d
        if kind == "gaussian":
            scale = np.median(reference[np.triu_indices(n, 1)])
            return np.exp(-(d**2) / scale**2) - np.eye(n)
        order = np.argsort(reference, axis=1)[:, 1:9]
        mask = np.zeros((n, n), dtype=bool)
        mask[np.repeat(np.arange(n), 8), order.ravel()] = True
        return d * (mask | mask.T)

    reference = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    A = weights(points, reference)
    B, truth = _relabel(weights(moved, reference), rng)
    return A, B, truth


def outlier_pair(
    inliers: int, outliers: int, *, density: float = 1.0, deformation: float = 0.0, seed=None
):
    """The FGM/KerGM synthetic protocol (G-FGM): shared inlier block, outliers, deformation.

    Both graphs have ``inliers + outliers`` nodes with U[0, 1] symmetric edge weights; the
    inlier block of B equals A's plus ``deformation * N(0, 1)`` symmetric noise; outlier rows
    are independent; an edge mask of the given density is applied to each graph (the same on
    the inlier block); B is relabelled.

    Returns:
        ``(A, B, truth)`` with ``truth[i] = -1`` for the outliers of A.

    >>> A, B, truth = outlier_pair(4, 2, seed=0)
    >>> int((truth >= 0).sum())
    4
    """
    inliers = check_int(inliers, "inliers", low=2)
    outliers = check_int(outliers, "outliers", low=0)
    density = check_real(density, "density", low=0, high=1, low_inclusive=False)
    deformation = check_real(deformation, "deformation", low=0)
    rng = check_rng(seed)
    n = inliers + outliers
    A = _symmetric_uniform(n, rng)
    other = _symmetric_uniform(n, rng)
    other[:inliers, :inliers] = A[:inliers, :inliers] + deformation * _symmetric_normal(
        inliers, rng
    )
    if density < 1:
        # One edge mask per graph; the inlier block shares A's, so inlier edges correspond.
        mask = _symmetric_mask(n, density, rng)
        other_mask = _symmetric_mask(n, density, rng)
        other_mask[:inliers, :inliers] = mask[:inliers, :inliers]
        A = A * mask
        other = other * other_mask
    np.fill_diagonal(A, 0.0)
    np.fill_diagonal(other, 0.0)
    B, truth = _relabel(other, rng)
    truth[inliers:] = -1
    return A, B, truth


def network_pair(n: int, *, rewire: float = 0.05, m: int = 4, seed=None):
    """A power-law cluster graph (networkx) and a relabelled copy with rewired edges (G-NET).

    A fraction ``rewire`` of the edges is deleted and the same number of random non-edges is
    added, then the copy is relabelled. Adjacencies are sparse 0/1.

    Returns:
        ``(A, B, truth)`` as ``csr_array``.

    >>> A, B, truth = network_pair(50, rewire=0.0, seed=0)
    >>> bool((A != B[truth][:, truth]).nnz == 0)
    True
    """
    import networkx as nx

    n = check_int(n, "n", low=m + 1)
    rewire = check_real(rewire, "rewire", low=0, high=1)
    rng = check_rng(seed)
    graph = nx.powerlaw_cluster_graph(n, m, 0.1, seed=int(rng.integers(2**31)))
    A = sp.csr_array(nx.to_scipy_sparse_array(graph, nodelist=range(n), format="csr"), dtype=float)
    upper = sp.triu(A, 1).tocoo()
    edges = set(zip(upper.row.tolist(), upper.col.tolist()))
    count = int(round(rewire * len(edges)))
    original = frozenset(edges)
    listed = sorted(edges)
    for index in rng.choice(len(listed), size=count, replace=False):
        edges.discard(listed[index])
    added = 0
    while added < count:
        u, v = sorted(rng.integers(n, size=2).tolist())
        # New edges are non-edges of A, so exactly a fraction `rewire` of the edges differ.
        if u != v and (u, v) not in edges and (u, v) not in original:
            edges.add((u, v))
            added += 1
    rows, cols = np.array(sorted(edges)).T
    upper_b = sp.coo_array((np.ones(rows.size), (rows, cols)), shape=(n, n))
    B, truth = _relabel(sp.csr_array(upper_b + upper_b.T), rng)
    return A, B, truth


def subgraph_pair(n1: int, n2: int, *, density: float = 0.15, seed=None):
    """A graph and one of its induced subgraphs (the subgraph matching of ``match_subgraph``).

    ``B ~ G(n2, density)`` (0/1, undirected, no loops); ``A`` is ``B``'s subgraph induced on
    ``n1`` distinct random nodes, node ``i`` of ``A`` being node ``keep[i]`` of ``B``.

    Returns:
        ``(A, B, keep)``: dense ``A`` (n1 x n1), ``B`` (n2 x n2) and the true ``col_ind``.

    >>> A, B, keep = subgraph_pair(5, 8, density=0.5, seed=0)
    >>> bool((A == B[keep][:, keep]).all()), A.shape, B.shape
    (True, (5, 5), (8, 8))
    """
    n2 = check_int(n2, "n2", low=1)
    n1 = check_int(n1, "n1", low=1, high=n2)
    density = check_real(density, "density", low=0, high=1)
    rng = check_rng(seed)
    upper = np.triu(rng.uniform(size=(n2, n2)) < density, 1)
    B = (upper | upper.T).astype(float)
    keep = rng.choice(n2, size=n1, replace=False)
    return B[np.ix_(keep, keep)], B, keep
