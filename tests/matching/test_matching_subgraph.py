"""Subgraph matching by centered padding (``matching._subgraph``): the centered objective, its
optimum on planted induced subgraphs (brute force), and recovery where naive padding fails."""

import itertools

import numpy as np
import pytest

from stepsize.matching import METHODS, assignment_objective, projected_fixed_point, sinkhorn
from stepsize.matching._subgraph import SUBGRAPH_RELAXATIONS, match_subgraph, mean_weight
from stepsize.matching.generators import subgraph_pair


def _naive(A, B):
    """apfp with naive padding (``match_graphs`` before it sent different sizes here)."""
    return projected_fixed_point(A, B, seed=0, options=METHODS["apfp"])


def _induced(B, col_ind):
    rows = col_ind[col_ind >= 0]
    block = B[np.ix_(rows, rows)]
    return float(block.sum() - np.trace(block))


def test_the_planted_copy_maximizes_the_centered_objective_by_brute_force():
    # Every injective map of a 5-node induced subgraph into a 7-node graph (2520 of them):
    # the planted one (and its automorphic images) maximize Z_c = Z - c/2 (induced weight),
    # and the matcher finds that maximum; naive Z has other maximizers.
    A, B, keep = subgraph_pair(5, 7, density=0.5, seed=3)
    c = mean_weight(B)
    maps = [np.array(m) for m in itertools.permutations(range(7), 5)]
    centered = [assignment_objective(A, B, m) - 0.5 * c * _induced(B, m) for m in maps]
    naive = [assignment_objective(A, B, m) for m in maps]
    best = max(centered)
    assert best == pytest.approx(assignment_objective(A, B, keep) - 0.5 * c * _induced(B, keep))
    assert best == pytest.approx((1 - c) * A.sum() / 2)  # (1 - c) |E_A|
    winners = [m for m, value in zip(maps, centered) if value > best - 1e-12]
    assert all(np.array_equal(B[np.ix_(m, m)], A) for m in winners)
    assert sum(value > max(naive) - 1e-12 for value in naive) > len(winners)
    result = match_subgraph(A, B, seed=0)
    assert result.info["centered_objective"] == pytest.approx(best)


def test_the_reported_objectives_are_the_closed_forms():
    A, B, _ = subgraph_pair(20, 30, density=0.2, seed=1)
    result = match_subgraph(A, B, seed=0)
    c = result.info["center"]
    assert c == pytest.approx(mean_weight(B)) and c == pytest.approx(B.sum() / (30 * 29))
    assert result.objective == pytest.approx(assignment_objective(A, B, result.col_ind))
    assert result.info["centered_objective"] == pytest.approx(
        result.objective - 0.5 * c * _induced(B, result.col_ind))
    runs = result.info["relaxations"]
    assert len(runs) == len(SUBGRAPH_RELAXATIONS) and sum(r["kept"] for r in runs) == 1
    assert max(r["centered_objective"] for r in runs) == result.info["centered_objective"]
    assert result.n_iter == sum(r["n_iter"] for r in runs)
    assert [r["center"] for r in runs] == pytest.approx([c, 1.5 * c, c, 1.5 * c])


@pytest.mark.parametrize("seed", [1, 9])
def test_centering_finds_the_subgraph_where_naive_padding_does_not(seed):
    # The case, a 30-node induced subgraph of G(40, 0.15) (seeds of the benchmark):
    # seed 1: naive padding 0.133 (0.1 with up to 100 Sinkhorn scalings per projection, before
    # apfp's inexact projections stopped at 30), centered 1.0 with one relaxation; seed 9:
    # naive 0.0, one relaxation 0.0, the four of the default 1.0 (measured).
    A, B, keep = subgraph_pair(30, 40, density=0.15, seed=seed)
    naive = _naive(A, B)
    one = match_subgraph(A, B, relaxations=1, seed=0)
    four = match_subgraph(A, B, seed=0)
    assert np.mean(naive.col_ind == keep) <= 0.14
    np.testing.assert_array_equal(four.col_ind, keep)
    if seed == 1:
        np.testing.assert_array_equal(one.col_ind, keep)
    else:
        assert np.mean(one.col_ind == keep) == 0.0
        assert four.info["centered_objective"] > one.info["centered_objective"]


def test_the_larger_graph_first_leaves_the_extra_nodes_unmatched():
    A, B, keep = subgraph_pair(30, 40, density=0.15, seed=0)
    result = match_subgraph(B, A, seed=0)  # B (40 nodes) first: A is centered by B's density
    assert result.col_ind.shape == (40,) and np.sum(result.col_ind == -1) == 10
    np.testing.assert_array_equal(result.col_ind[keep], np.arange(30))
    assert result.info["center"] == pytest.approx(mean_weight(B))


def test_center_zero_is_naive_padding():
    A, B, _ = subgraph_pair(15, 20, density=0.3, seed=2)
    ours = match_subgraph(A, B, center=0.0, relaxations=1, seed=0)
    reference = _naive(A, B)
    np.testing.assert_array_equal(ours.col_ind, reference.col_ind)
    assert ours.objective == pytest.approx(reference.objective)


def test_padding_is_a_rectangular_sinkhorn_with_a_slack_row():
    # The padded softassign restricted to the real rows equals the scaling of the n1 x n2
    # kernel to row sums 1 and column sums 1 with one slack row of mass n2 - n1 (uniform
    # kernel): the iteration gains nothing from a rectangular projection, only the objective
    # can change the answer.
    rng = np.random.default_rng(4)
    n1, n2 = 6, 9
    scores = rng.normal(size=(n1, n2))
    padded = np.zeros((n2, n2))
    padded[:n1] = scores
    ours = sinkhorn(padded, tol=1e-13, max_iter=10_000).P[:n1]
    kernel = np.vstack([np.exp(scores), np.ones((1, n2))])
    mass = np.r_[np.ones(n1), n2 - n1]
    v = np.ones(n2)
    for _ in range(5000):
        u = mass / (kernel @ v)
        v = 1.0 / (kernel.T @ u)
    rectangular = (u[:, None] * kernel * v[None, :])[:n1]
    np.testing.assert_allclose(ours, rectangular, atol=1e-10)
    np.testing.assert_allclose(rectangular.sum(axis=1), 1.0, atol=1e-10)
    assert np.all(rectangular.sum(axis=0) <= 1.0 + 1e-10)


def test_bad_arguments_name_themselves():
    A, B, _ = subgraph_pair(5, 7, density=0.5, seed=0)
    with pytest.raises(ValueError, match="center"):
        match_subgraph(A, B, center="density")
    with pytest.raises(ValueError, match="center"):
        match_subgraph(A, B, center=float("nan"))
    for bad in (0, len(SUBGRAPH_RELAXATIONS) + 1):
        with pytest.raises(ValueError, match="relaxations"):
            match_subgraph(A, B, relaxations=bad)
    with pytest.raises(ValueError, match="method"):
        match_subgraph(A, B, method="faq")


def test_different_sizes_reads_every_kind_of_graph():
    import networkx as nx
    import scipy.sparse as sp

    from stepsize.matching._subgraph import different_sizes

    assert different_sizes(np.zeros((3, 3)), sp.csr_array(np.eye(4)))
    assert not different_sizes(nx.path_graph(5), np.zeros((5, 5)))
    assert different_sizes(np.zeros((2, 3, 3)), np.zeros((2, 4, 4)))  # batches: n = last axis
    assert not different_sizes(3.0, np.zeros((4, 4)))  # unreadable: the matcher reports it



def test_subgraph_pair_is_an_induced_subgraph_and_checks_its_input():
    A, B, keep = subgraph_pair(30, 40, density=0.15, seed=0)
    assert np.array_equal(A, B[np.ix_(keep, keep)]) and len(set(keep.tolist())) == 30
    assert np.array_equal(B, B.T) and not B.diagonal().any()
    assert abs(B[np.triu_indices(40, 1)].mean() - 0.15) < 0.03  # 780 Bernoulli(0.15) draws
    with pytest.raises(ValueError, match="n1 must be <= 40"):
        subgraph_pair(41, 40)
    with pytest.raises(ValueError, match="density must be"):
        subgraph_pair(3, 4, density=1.5)
