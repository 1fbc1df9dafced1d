"""match_lawler: the Lawler QAP in pygmtools' layout (issue 17, item 4)."""

import functools
import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from stepsize import ConvergenceWarning
from stepsize.matching import (
    METHODS,
    FactorizedAffinity,
    match_graphs,
    match_lawler,
    matching_accuracy,
    projected_fixed_point,
)
from stepsize.matching.generators import kb_pair, outlier_pair


def _value(K, col_ind):
    """vec(X)^T K vec(X), column-major vec, straight from the definition."""
    n1, n2 = len(col_ind), K.shape[0] // len(col_ind)
    X = np.zeros((n1, n2))
    rows = np.flatnonzero(np.asarray(col_ind) >= 0)
    X[rows, np.asarray(col_ind)[rows]] = 1.0
    v = X.reshape(-1, order="F")
    return float(v @ K @ v)


def test_kronecker_affinity_gives_the_koopmans_beckmann_matching():
    A, B, truth = kb_pair(15, density=0.5, noise=0.05, seed=2)
    K = np.kron(B, A)
    lawler = match_lawler(K, 15, 15)
    graphs = match_graphs(A, B)
    np.testing.assert_array_equal(lawler.col_ind, graphs.col_ind)
    assert matching_accuracy(lawler.col_ind, truth) == 1.0
    assert lawler.objective == pytest.approx(2 * graphs.objective, rel=1e-12)
    assert lawler.objective == pytest.approx(_value(K, lawler.col_ind), rel=1e-12)
    sparse = match_lawler(sp.csr_array(K), 15, 15)
    np.testing.assert_array_equal(sparse.col_ind, lawler.col_ind)


def test_different_sizes_are_padded_like_the_plain_iteration():
    big, _, _ = kb_pair(9, density=0.6, noise=0.0, seed=6)
    keep = np.array([7, 2, 5, 0, 3, 8])
    A = big[np.ix_(keep, keep)]
    result = match_lawler(np.kron(big, A), 6, 9)
    # Naive padding, as projected_fixed_point does (match_graphs centers the smaller graph).
    padded = projected_fixed_point(A, big, options=METHODS["apfp"], two_opt=False)
    np.testing.assert_array_equal(result.col_ind, padded.col_ind)
    assert result.X.shape == (6, 9) and len(set(result.col_ind)) == 6
    # The maximization prefers a denser embedding to the planted one (5.75 vs 5.42).
    assert result.objective >= _value(np.kron(big, A), keep)


@pytest.mark.parametrize("maximize", [True, False])
def test_asymmetric_affinity_near_brute_force(maximize):
    gaps = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        K = rng.normal(size=(25, 25))  # 5 x 5 nodes, asymmetric, with a diagonal
        values = [_value(K, p) for p in itertools.permutations(range(5))]
        best = max(values) if maximize else min(values)
        result = match_lawler(K, 5, 5, maximize=maximize, n_init=3, seed=seed)
        assert result.objective == pytest.approx(_value(K, result.col_ind), rel=1e-12)
        gaps.append(abs(result.objective - best) / abs(best))
    # Measured: the optimum on 3 (maximize; 4 with a fixed Sinkhorn tolerance,
    # inner_tol_factor=1) and 5 (minimize) of 6 instances; the worst gaps, relative to an
    # optimum near 0 for these zero-mean affinities, 0.32 and 0.24.
    assert sum(g < 1e-12 for g in gaps) >= (3 if maximize else 5) and max(gaps) <= 0.35


def _pygm_instance(pygm, inliers, outliers, seed):
    """RRWM's synthetic protocol: outlier_pair and pygmtools' Gaussian edge affinity."""
    affinity = functools.partial(pygm.utils.gaussian_aff_fn, sigma=0.15)
    A, B, truth = outlier_pair(inliers, outliers, deformation=0.05, seed=seed)
    edges_a, edges_b = np.argwhere(A), np.argwhere(B)
    weights_a, weights_b = A[tuple(edges_a.T)][:, None], B[tuple(edges_b.T)][:, None]
    K = pygm.utils.build_aff_mat(None, weights_a, edges_a, None, weights_b, edges_b,
                                 edge_aff_fn=affinity)
    edge = affinity(weights_a[None], weights_b[None])[0]  # pygmtools' functions are batched
    factorized = FactorizedAffinity(edge, edges_a, edges_b, n1=A.shape[0], n2=B.shape[0])
    return K, factorized, truth


def test_pygmtools_affinity_with_outliers():
    pygm = pytest.importorskip("pygmtools")
    pygm.set_backend("numpy")
    ours, rrwm = [], []
    for seed in (2,):  # a pair where beta = 10 sqrt(N) lost inliers
        K, factorized, truth = _pygm_instance(pygm, 20, 10, seed)
        result = match_lawler(K, 30, 30)
        reference = pygm.hungarian(pygm.rrwm(K, 30, 30)).argmax(axis=1)
        assert result.objective == pytest.approx(_value(K, result.col_ind), rel=1e-12)
        # The factorized affinity takes the same path to the same matching.
        assert factorized.symmetric  # undirected: one product per step
        np.testing.assert_allclose(factorized.toarray(), K, rtol=0, atol=1e-12)
        again = match_lawler(factorized, 30, 30)
        np.testing.assert_array_equal(again.col_ind, result.col_ind)
        assert again.objective == pytest.approx(result.objective, rel=1e-12)
        ours.append(matching_accuracy(result.col_ind, truth))
        rrwm.append(matching_accuracy(reference, truth))
    # Measured: apfp 1.0 (0.3 with beta = 10 sqrt(N)), RRWM 1.0.
    assert ours == [1.0] and np.mean(ours) >= np.mean(rrwm)


def test_factorized_products_equal_the_explicit_affinity():
    rng = np.random.default_rng(0)
    n1, n2 = 7, 9
    edges1 = np.argwhere(np.triu(rng.uniform(size=(n1, n1)) < 0.5, 1))
    edges1 = np.concatenate([edges1, edges1[:, ::-1], [[3, 3]]])  # both directions, a loop
    edges2 = np.argwhere(rng.uniform(size=(n2, n2)) < 0.4)       # directed, loops included
    node, edge = rng.normal(size=(n1, n2)), rng.normal(size=(len(edges1), len(edges2)))
    K = FactorizedAffinity(edge, edges1, edges2, node)
    assert not K.symmetric
    # The explicit K from its definition, entry by entry (edges summed, node term added).
    explicit = np.zeros((n1 * n2, n1 * n2))
    for e, (i, j) in enumerate(edges1):
        for f, (a, b) in enumerate(edges2):
            explicit[i + a * n1, j + b * n1] += edge[e, f]
    explicit[np.diag_indices_from(explicit)] += node.ravel(order="F")
    np.testing.assert_allclose(K.toarray(), explicit, rtol=0, atol=1e-12)
    for _ in range(3):
        X = rng.normal(size=(n1, n2))
        vec = X.ravel(order="F")
        np.testing.assert_allclose(K.matvec(X).ravel(order="F"), explicit @ vec, atol=1e-12)
        np.testing.assert_allclose(K.rmatvec(X).ravel(order="F"), explicit.T @ vec,
                                   atol=1e-12)
    result = match_lawler(K, n1, n2, n_init=2, seed=0)
    dense = match_lawler(explicit, n1, n2, n_init=2, seed=0)
    assert result.objective == pytest.approx(_value(explicit, result.col_ind), rel=1e-12)
    assert result.objective == pytest.approx(dense.objective, rel=1e-9)


def test_factorized_affinity_equals_pygmtools_build_aff_mat():
    pygm = pytest.importorskip("pygmtools")
    pygm.set_backend("numpy")
    rng = np.random.default_rng(3)
    edges1 = np.argwhere(~np.eye(5, dtype=bool) & (rng.uniform(size=(5, 5)) < 0.6))
    edges2 = np.argwhere(~np.eye(6, dtype=bool) & (rng.uniform(size=(6, 6)) < 0.6))
    feat1, feat2 = rng.uniform(size=(len(edges1), 2)), rng.uniform(size=(len(edges2), 2))
    node1, node2 = rng.uniform(size=(5, 3)), rng.uniform(size=(6, 3))

    def gauss(one, two):  # pygmtools' affinity functions take batches
        return pygm.utils.gaussian_aff_fn(one[None], two[None])[0]

    K = pygm.utils.build_aff_mat(node1, feat1, edges1, node2, feat2, edges2,
                                 node_aff_fn=pygm.utils.gaussian_aff_fn,
                                 edge_aff_fn=pygm.utils.gaussian_aff_fn)
    ours = FactorizedAffinity(gauss(feat1, feat2), edges1, edges2, gauss(node1, node2))
    np.testing.assert_allclose(ours.toarray(), K, rtol=0, atol=1e-12)


def _partial_optimum(K, n1, n2, unmatched):
    """max of vec(X)^T K vec(X) + unmatched (u1 + u2) over partial matchings, brute force."""
    best = -np.inf
    for k in range(min(n1, n2) + 1):
        for rows in itertools.combinations(range(n1), k):
            for cols in itertools.permutations(range(n2), k):
                col_ind = np.full(n1, -1)
                col_ind[list(rows)] = cols
                best = max(best, _value(K, col_ind) + unmatched * (n1 + n2 - 2 * k))
    return best


@pytest.mark.parametrize("unmatched", [-50.0, 1.5, 3.0, 50.0])
def test_unmatched_nodes_against_brute_force(unmatched):
    rng = np.random.default_rng(4)
    ratios = []
    for _ in range(12):
        K = rng.uniform(size=(16, 16))
        K = K + K.T  # 4 x 4 nodes, affinities in [0, 2]
        best = _partial_optimum(K, 4, 4, unmatched)
        result = match_lawler(K, 4, 4, unmatched=unmatched, n_init=3, seed=0)
        u1, u2 = result.info["unmatched"]
        assert u1 == np.count_nonzero(result.col_ind < 0) and u1 == u2
        assert result.objective == pytest.approx(_value(K, result.col_ind), rel=1e-12)
        ratios.append((result.objective + unmatched * (u1 + u2)) / best)
        if unmatched < 0:
            assert u1 == 0
    # Measured (ratio to the brute-force optimum over partial matchings): the optimum of all
    # 12 instances at 3 and 50; mean 0.985 / 0.975, min 0.940 / 0.869 at -50 / 1.5, as
    # without dummy nodes (mean 0.985).
    if unmatched >= 3.0:
        np.testing.assert_allclose(ratios, 1.0, rtol=1e-12)
    assert np.mean(ratios) >= 0.97 and min(ratios) >= 0.86


def test_history_and_starts():
    A, B, _ = kb_pair(10, density=1.0, noise=0.3, seed=1)
    K = np.kron(B, A)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = match_lawler(K, 10, 10, n_init=3, seed=0, history=True, max_iter=8,
                              polish=0)
    trace = np.array(result.history)
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace).max())
    X = result.X
    v = X.reshape(-1, order="F")
    assert trace[-1] == pytest.approx(v @ K @ v, rel=1e-9)
    assert len(result.info["start_objectives"]) >= 3
    assert result.objective == max(result.info["start_objectives"])


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: match_lawler(np.eye(6), 2, 2), ValueError,
     r"^K must have shape \(n1 n2, n1 n2\) = \(4, 4\), got \(6, 6\)"),
    (lambda: match_lawler(sp.eye(6), 2, 2), ValueError, r"^K must have shape"),
    (lambda: match_lawler(np.eye(4), 0, 4), ValueError, r"^n1 must be >= 1"),
    (lambda: match_lawler(np.eye(4), 2, 2, lam=1.0), TypeError, r"unexpected option\(s\) lam"),
    (lambda: match_lawler(np.eye(4) * 1j, 2, 2), TypeError, r"^K must be real"),
    (lambda: match_lawler(np.full((4, 4), np.nan), 2, 2), ValueError, r"^K must be finite"),
    (lambda: match_lawler(np.eye(4), 2, 2, n_init=0), ValueError, r"^n_init must be >= 1"),
    (lambda: match_lawler(np.eye(4), 2, 2, method="rrwm"), ValueError, r"^method must be"),
    (lambda: match_lawler(np.eye(4), 2, 2, maximize=False, unmatched=1.0), ValueError,
     r"^unmatched \(dummy nodes\) needs maximize=True"),
    (lambda: match_lawler(FactorizedAffinity(np.eye(2), [[0, 1], [1, 0]], [[0, 1], [1, 0]]),
                          2, 3), ValueError, r"^K \(a FactorizedAffinity\) has n1, n2 = 2, 2"),
    (lambda: FactorizedAffinity(np.eye(2), [[0, 1], [1, 5]], [[0, 1], [1, 0]], n1=3),
     ValueError, r"^edges1: node 5 is out of range \[0, 3\)"),
    (lambda: FactorizedAffinity(np.eye(3), [[0, 1], [1, 0]], [[0, 1], [1, 0]]), ValueError,
     r"^edge_affinity must have shape \(2, 2\)"),
    (lambda: FactorizedAffinity(np.eye(2), [[0.0, 1.0], [1, 0]], [[0, 1], [1, 0]]),
     TypeError, r"^edges1 must hold integer"),
])
def test_bad_lawler_inputs(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_lawler_benchmark_section():
    pytest.importorskip("pygmtools")
    pytest.importorskip("threadpoolctl")
    from stepsize.benchmarks.matching import lawler_benchmark

    out = lawler_benchmark(8, (0, 3), 2, seed=0, repeats=1)
    summary = {(r["outliers"], r["method"]): r for r in out["summary"]}
    assert len(summary) == 12 and len(out["rows"]) == 24
    for count in (0, 3):
        # Our IPFP on pygmtools' own K reaches pygmtools' IPFP objective (same method).
        assert summary[(count, "ours ipfp")]["objective"] == pytest.approx(
            summary[(count, "pygm ipfp")]["objective"], rel=1e-9)
    assert summary[(0, "ours apfp")]["accuracy"] == summary[(0, "pygm rrwm")]["accuracy"] == 1.0
    for count in (0, 3):  # the factorized affinity reaches the same matchings
        assert summary[(count, "ours apfp factorized")]["objective"] == pytest.approx(
            summary[(count, "ours apfp")]["objective"], rel=1e-9)
