"""match_lawler: the Lawler QAP in pygmtools' layout (issue 17, item 4)."""

import functools
import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from stepsize import ConvergenceWarning
from stepsize.matching import match_graphs, match_lawler, matching_accuracy
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


def test_different_sizes_are_padded_like_match_graphs():
    big, _, _ = kb_pair(9, density=0.6, noise=0.0, seed=6)
    keep = np.array([7, 2, 5, 0, 3, 8])
    A = big[np.ix_(keep, keep)]
    result = match_lawler(np.kron(big, A), 6, 9)
    np.testing.assert_array_equal(result.col_ind, match_graphs(A, big).col_ind)
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
    # Measured: the optimum on 4 (maximize) and 5 (minimize) of 6 instances; the worst gaps,
    # relative to an optimum near 0 for these zero-mean affinities, 0.32 and 0.24.
    assert sum(g < 1e-12 for g in gaps) >= 4 and max(gaps) <= 0.35


def test_pygmtools_affinity_with_outliers():
    pygm = pytest.importorskip("pygmtools")
    pygm.set_backend("numpy")
    affinity = functools.partial(pygm.utils.gaussian_aff_fn, sigma=0.15)
    ours, rrwm = [], []
    for seed in range(2):
        A, B, truth = outlier_pair(20, 4, deformation=0.05, seed=seed)
        edges_a, edges_b = np.argwhere(A), np.argwhere(B)
        K = pygm.utils.build_aff_mat(
            None, A[tuple(edges_a.T)][:, None], edges_a, None, B[tuple(edges_b.T)][:, None],
            edges_b, edge_aff_fn=affinity)
        result = match_lawler(K, 24, 24)
        reference = pygm.hungarian(pygm.rrwm(K, 24, 24)).argmax(axis=1)
        assert result.objective == pytest.approx(_value(K, result.col_ind), rel=1e-12)
        ours.append(matching_accuracy(result.col_ind, truth))
        rrwm.append(matching_accuracy(reference, truth))
    # Measured: inlier accuracy 1.0 for both on these two pairs (apfp at 0.1x RRWM's time).
    assert np.mean(ours) >= np.mean(rrwm) == 1.0


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
    assert len(summary) == 10 and len(out["rows"]) == 20
    for count in (0, 3):
        # Our IPFP on pygmtools' own K reaches pygmtools' IPFP objective (same method).
        assert summary[(count, "ours ipfp")]["objective"] == pytest.approx(
            summary[(count, "pygm ipfp")]["objective"], rel=1e-9)
    assert summary[(0, "ours apfp")]["accuracy"] == summary[(0, "pygm rrwm")]["accuracy"] == 1.0
