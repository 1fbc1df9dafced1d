"""projected_fixed_point and match_graphs: monotonicity, accuracy, peers, inputs."""

import itertools
import math
import warnings

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import quadratic_assignment

from stepsize import ConvergenceWarning
from stepsize.matching import (
    METHODS,
    MatchingResult,
    assignment_objective,
    match_graphs,
    matching_accuracy,
    objective,
    projected_fixed_point,
)
from stepsize.matching.generators import edm_pair, kb_pair, network_pair, outlier_pair

ADAPTIVE = [name for name, preset in METHODS.items() if preset.step == "adaptive"]


@pytest.mark.filterwarnings("ignore::stepsize.ConvergenceWarning")
@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize(
    "pair",
    [
        lambda: kb_pair(25, density=1.0, noise=0.1, seed=0),
        lambda: kb_pair(25, density=0.2, noise=0.1, seed=1),
        lambda: edm_pair(25, kind="knn", jitter=0.02, seed=2),
        lambda: outlier_pair(15, 6, density=0.5, deformation=0.1, seed=3),
    ],
)
def test_adaptive_variants_are_monotone(method, pair):
    A, B, _ = pair()
    full = match_graphs(A, B, method=method, history=True, tol=0.0, max_iter=15)
    trace = np.array(full.history)
    scale = max(abs(trace).max(), 1.0)
    assert np.all(np.diff(trace) >= -1e-9 * scale)
    # Independent check: Z recomputed from scratch at every iterate equals the tracked value.
    for k in range(1, full.n_iter + 1):
        partial = match_graphs(A, B, method=method, tol=0.0, max_iter=k)
        assert objective(A, B, partial.X) == pytest.approx(trace[k], rel=1e-9, abs=1e-9)


def test_fixed_step_one_can_decrease_the_objective():
    # alpha = 1 has no ascent guarantee; with zero-diagonal Gaussian kernels (indefinite
    # curvature) the same projection with a fixed step loses objective on some iterations
    # (measured with projections of up to 100 Sinkhorn scalings, as apfp's were before it
    # stopped its inexact ones at 30).
    drops = 0
    for seed in range(5):
        A, B, _ = edm_pair(30, kind="gaussian", jitter=0.02, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            run = match_graphs(A, B, step=1.0, beta=300.0, history=True, max_iter=30,
                               inner_max_iter=100)
        drops += int(np.any(np.diff(run.history) < -1e-9 * np.abs(run.history).max()))
    assert drops >= 1


@pytest.mark.parametrize("n", [10, 50, 200])
@pytest.mark.parametrize("density", [1.0, 0.2])
def test_apfp_recovers_isomorphism_with_small_noise(n, density):
    for seed in range(2):
        A, B, truth = kb_pair(n, density=density, noise=0.02, seed=seed)
        result = match_graphs(A, B, seed=seed)
        assert isinstance(result, MatchingResult)
        assert result.objective >= assignment_objective(A, B, truth) - 1e-9
        if n >= 50 or density == 1.0:  # 10 nodes, ~9 edges: isolated nodes make ties
            assert matching_accuracy(result.col_ind, truth) == 1.0
        assert result.converged
        assert result.objective == pytest.approx(assignment_objective(A, B, result.col_ind))
        assert result.X.shape == (n, n)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_preset_solves_an_easy_instance(method):
    A, B, truth = kb_pair(30, density=0.5, noise=0.0, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = match_graphs(A, B, method=method)
    assert matching_accuracy(result.col_ind, truth) == 1.0
    assert result.method == method


def test_at_least_as_good_as_scipy_faq_on_small_instances():
    ours, faq = [], []
    for seed in range(10):
        A, B, truth = kb_pair(20, density=0.5, noise=0.1, seed=seed)
        ours.append(match_graphs(A, B).objective)
        faq.append(quadratic_assignment(A, B, options={"maximize": True}).fun / 2)
    assert np.mean(ours) >= np.mean(faq) - 1e-9


def test_matches_brute_force_optimum_on_tiny_graphs():
    hits = faq_hits = 0
    for seed in range(10):
        A, B, _ = kb_pair(7, density=1.0, noise=0.2, seed=seed)
        best = max(
            assignment_objective(A, B, np.array(p)) for p in itertools.permutations(range(7))
        )
        hits += match_graphs(A, B).objective >= best - 1e-9
        faq_hits += quadratic_assignment(A, B, options={"maximize": True}).fun / 2 >= best - 1e-9
    # Measured: 5 of 10 global optima (FAQ: 1 of 10).
    assert hits >= 4 and hits >= faq_hits


def test_asm_preset_recovers_seeded_pairs_with_few_iterations():
    # Measured: accuracy 1.0 on both, in 5 and 4 iterations (apfp: 6 and 7); beta reaches 512
    # on the first pair at the first iteration and stays there.
    A, B, truth = network_pair(300, rewire=0.05, seed=3)
    result = match_graphs(A, B, method="asm", history=True)
    assert result.method == "asm" and result.converged
    assert matching_accuracy(result.col_ind, truth) == 1.0
    assert np.all(np.diff(result.history) >= -1e-9 * max(abs(result.history[-1]), 1.0))
    # beta starts at 1 and only doubles: the trace is non-decreasing powers of two.
    betas = np.array(result.info["beta"])
    assert np.all(np.diff(betas) >= 0) and np.all(np.log2(betas) == np.round(np.log2(betas)))
    assert betas[0] == 512.0
    A, B, truth = kb_pair(200, density=1.0, noise=0.05, seed=4)
    dense = match_graphs(A, B, method="asm")
    assert matching_accuracy(dense.col_ind, truth) == 1.0 and dense.n_iter <= 6


def test_apfp_restarts_from_a_soft_fixed_point_with_the_adaptive_softassign():
    A, B, truth = edm_pair(30, kind="edm", jitter=0.02, seed=1)
    # polish=0: the restart alone (the sharpening is tested in test_matching_qap.py); a fixed
    # Sinkhorn tolerance (inner_tol_factor=1): with apfp's loose early tolerance the restart
    # scores below the first run here (accuracy 0.933 both), and the polish reaches 1.0.
    plain = match_graphs(A, B, restart_epsilon=None, polish=0, inner_tol_factor=1, two_opt=False)
    assert plain.converged and plain.X.max(axis=1).mean() < 0.5  # a soft fixed point
    result = match_graphs(A, B, polish=0, inner_tol_factor=1, two_opt=False)
    restart = result.info["restart"]
    assert restart["first_objective"] == pytest.approx(plain.objective)
    assert restart["first_n_iter"] == plain.n_iter
    # Measured: the restart (adaptive softassign from the barycenter) scores higher and is kept;
    # accuracy 1.0 (the first run: 0.933).
    assert restart["kept"] == "restart" and result.objective > plain.objective
    again = match_graphs(A, B, epsilon=1.0, beta_max=1e7, polish=0, inner_tol_factor=1,
                         two_opt=False)
    assert result.n_iter == plain.n_iter + again.n_iter
    assert result.objective == pytest.approx(again.objective)
    assert matching_accuracy(result.col_ind, truth) == 1.0 > matching_accuracy(plain.col_ind, truth)
    # A sharp fixed point is not restarted.
    A, B, _ = kb_pair(50, density=1.0, noise=0.05, seed=0)
    assert "restart" not in match_graphs(A, B).info


def test_sparse_networkx_and_dense_inputs_agree():
    A, B, truth = kb_pair(60, density=0.1, noise=0.02, seed=5)
    dense = match_graphs(A, B)
    sparse = match_graphs(sp.csr_array(A), sp.coo_matrix(B))
    np.testing.assert_array_equal(dense.col_ind, sparse.col_ind)
    graph_a = nx.from_numpy_array(A)
    graph_b = nx.from_numpy_array(B)
    from_nx = match_graphs(graph_a, graph_b)
    np.testing.assert_array_equal(from_nx.col_ind, dense.col_ind)
    assert matching_accuracy(dense.col_ind, truth) == 1.0


def test_network_graphs_sparse_path():
    A, B, truth = network_pair(300, rewire=0.02, seed=0)
    result = match_graphs(A, B)
    assert result.info["sparse"]
    assert matching_accuracy(result.col_ind, truth) >= 0.9


def test_different_sizes_subgraph():
    # A is an induced subgraph of B: every node of A has a partner.
    big, _, _ = kb_pair(40, density=0.3, noise=0.0, seed=6)
    rng = np.random.default_rng(6)
    keep = rng.choice(40, size=30, replace=False)
    A = big[np.ix_(keep, keep)]
    result = match_graphs(A, big)
    assert result.col_ind.shape == (30,)
    np.testing.assert_array_equal(result.col_ind, keep)
    assert result.X.shape == (30, 40)
    # The other way round, nodes of the larger graph without a partner get -1.
    reverse = match_graphs(big, A)
    assert reverse.col_ind.shape == (40,)
    assert np.sum(reverse.col_ind == -1) == 10
    # Measured: 29 of 30; one node is sent to a dummy column (padding is naive, section 6.3).
    assert np.mean(reverse.col_ind[keep] == np.arange(30)) >= 29 / 30


def test_node_affinity_alone_solves_the_linear_assignment():
    rng = np.random.default_rng(7)
    K = rng.uniform(size=(12, 12))
    zero = np.zeros((12, 12))
    result = match_graphs(zero, zero, K, method="ipfp")
    from scipy.optimize import linear_sum_assignment

    _, cols = linear_sum_assignment(K, maximize=True)
    np.testing.assert_array_equal(result.col_ind, cols)
    assert result.objective == pytest.approx(K[np.arange(12), cols].sum())


def test_node_affinity_helps_symmetric_graphs():
    # A cycle has many automorphisms; features pin the right one.
    A = nx.to_numpy_array(nx.cycle_graph(12))
    perm = np.random.default_rng(8).permutation(12)
    B = A[np.ix_(perm, perm)]
    truth = np.argsort(perm)
    features = np.arange(12.0)
    K = -np.abs(features[:, None] - features[perm][None, :])
    result = match_graphs(A, B, K, lam=1.0)
    assert matching_accuracy(result.col_ind, truth) == 1.0


def test_randomized_start_uses_the_seed():
    A, B, _ = kb_pair(30, density=0.3, noise=0.3, seed=9)
    one = match_graphs(A, B, init="randomized", seed=1)
    again = match_graphs(A, B, init="randomized", seed=1)
    np.testing.assert_array_equal(one.X, again.X)
    other = match_graphs(A, B, init="randomized", seed=2)
    assert not np.array_equal(one.X, other.X)


def test_not_converged_warns_and_flags():
    A, B, _ = kb_pair(30, density=0.3, noise=0.3, seed=10)
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        result = projected_fixed_point(A, B, max_iter=2, tol=0.0)
    assert not result.converged and result.n_iter == 2


def test_bad_inputs():
    A = np.eye(3)
    with pytest.raises(ValueError, match="method must be one of"):
        match_graphs(A, A, method="nope")
    with pytest.raises(ValueError, match="A must be a square matrix"):
        match_graphs(np.ones((2, 3)), A)
    with pytest.raises(ValueError, match="A must be finite"):
        match_graphs(np.full((2, 2), np.nan), A)
    with pytest.raises(ValueError, match="A must be finite"):
        match_graphs(sp.csr_array(np.array([[0, np.inf], [np.inf, 0]])), A)
    with pytest.raises(ValueError, match="K must have shape"):
        match_graphs(A, A, np.ones((3, 2)))
    with pytest.raises(ValueError, match="n_init must be >= 1, got 0"):
        match_graphs(A, A, n_init=0)
    with pytest.raises(TypeError, match="n_init must be an integer"):
        match_graphs(A, A, n_init=2.5)
    with pytest.raises(TypeError, match="maximize must be True or False"):
        match_graphs(A, A, maximize="min")
    with pytest.raises(ValueError, match="at least one node"):
        match_graphs(nx.Graph(), A)
    with pytest.raises(TypeError, match="A must be numeric"):
        match_graphs(np.array([["a"]]), A)
    with pytest.raises(ValueError, match="step must be one of"):
        match_graphs(A, A, step="exact")
    with pytest.raises(ValueError, match="step must be <= 1"):
        match_graphs(A, A, step=1.5)
    with pytest.raises(ValueError, match="projection must be one of"):
        projected_fixed_point(A, A, projection="greedy")
    with pytest.raises(ValueError, match="beta must be"):
        match_graphs(A, A, beta=0)
    with pytest.raises(ValueError, match="epsilon must be"):
        match_graphs(A, A, method="asm", epsilon=-1.0)
    with pytest.raises(ValueError, match="need a softassign projection"):
        match_graphs(A, A, method="ipfp", epsilon=1.0)
    with pytest.raises(ValueError, match="finite beta_max"):
        match_graphs(A, A, beta_max=math.inf)
    with pytest.raises(ValueError, match="init must be one of"):
        match_graphs(A, A, init="identity")
    with pytest.raises(TypeError, match="seed"):
        match_graphs(A, A, init="randomized", seed="x")


def test_memory_is_checked_before_any_dense_array():
    n = 100_000  # a path: 4 N x N float64 work arrays would be 298 GiB
    A = sp.diags([np.ones(n - 1), np.ones(n - 1)], [-1, 1], format="csr")
    # ipfp without stall restarts: the 4 work arrays of one run; 0.8 GiB / 32 bytes: 5181 nodes
    with pytest.raises(MemoryError, match=r"^matching 100000 x 100000 needs about 298\.0 GiB "
                       r"\(4 dense N x N float64 work arrays, N = 100000\) but memory_limit is "
                       r"0\.8 GiB; at most 5181 nodes fit"):
        match_graphs(A, A, method="ipfp", stall_restarts=0, memory_limit=0.8 * 2**30)
    # apfp: + the first run's iterate kept during its soft restart or polish, + the best
    # start's kept during a stall restart: 6 arrays (447 GiB); 8 with dense graphs' copies.
    with pytest.raises(MemoryError, match=r"about 447\.0 GiB \(6 dense N x N float64 work "
                       r"arrays, N = 100000\) but memory_limit is 1\.0 GiB; at most 4729 nodes"):
        match_graphs(A, A, memory_limit=2**30)
    with pytest.raises(MemoryError, match=r"\(8 dense N x N float64 work arrays, N = 3000\)"):
        match_graphs(np.ones((3000, 3000)), np.ones((3000, 3000)), memory_limit=2**20)
    with pytest.raises(ValueError, match="memory_limit"):
        match_graphs(A, A, memory_limit=0)


def test_lawler_memory_is_checked_before_any_dense_array():
    """Found by review: match_lawler had no up-front check (the dense K's symmetrized copy and
    the N x N work arrays)."""
    from stepsize.matching import match_lawler

    K = sp.identity(400 * 400, format="csr")  # sparse: only the work arrays (4.9 MiB for 4)
    # apfp: 4 work arrays, + the iterate kept for the restart or polish, + the best start's
    with pytest.raises(MemoryError, match=r"^matching 400 x 400 needs about 0\.0 GiB \(6 dense"):
        match_lawler(K, 400, 400, memory_limit=2**20)
    with pytest.raises(MemoryError, match=r"\(4 dense N x N float64 work arrays, N = 400\)"):
        match_lawler(K, 400, 400, method="ipfp", stall_restarts=0, memory_limit=2**20)
    with pytest.raises(MemoryError, match=r"\(7 dense N x N float64 work arrays, N = 800\)"):
        match_lawler(K, 400, 400, unmatched=0.1, memory_limit=2**20)
    # N = 20 fits (19.2 kB of work arrays); the dense K's symmetrized copy (1.28 MB) does not
    with pytest.raises(MemoryError, match=r"\(1 dense N x N float64 work arrays, N = 400\)"):
        match_lawler(np.zeros((400, 400)), 20, 20, memory_limit=2**20)


def test_progress_counts_the_iterations(capsys):
    rng = np.random.default_rng(3)
    A = rng.uniform(size=(15, 15))
    A = A + A.T
    B = A[np.ix_(rng.permutation(15), rng.permutation(15))]
    quiet = match_graphs(A, B, seed=0, progress=False)
    assert capsys.readouterr().err == ""
    shown = match_graphs(A, B, seed=0, progress=True)
    assert "match_graphs (apfp):" in capsys.readouterr().err  # tqdm clears it when done
    np.testing.assert_array_equal(quiet.col_ind, shown.col_ind)
    assert quiet.objective == shown.objective
    with pytest.raises(TypeError, match="progress"):
        match_graphs(A, B, progress="yes")


def test_progress_bar_does_not_change_the_run(capsys):
    """A bar counts the iterations through the step rule; the run must stay the adaptive one
    (its stagnation and settled-rounding stops), not become a user step rule's run."""
    rng = np.random.default_rng(5)
    A = nx.to_numpy_array(nx.karate_club_graph(), weight=None)
    edges = np.argwhere(np.triu(A))
    A_noisy = A.copy()
    for i, j in edges[rng.choice(len(edges), 4, replace=False)]:
        A_noisy[i, j] = A_noisy[j, i] = 0.0
    perm = rng.permutation(len(A))
    B = A_noisy[np.ix_(perm, perm)]
    quiet = match_graphs(A, B, progress=False)
    shown = match_graphs(A, B, progress=True)
    counted = capsys.readouterr().err
    assert quiet.n_iter == shown.n_iter and quiet.message == shown.message
    np.testing.assert_array_equal(quiet.col_ind, shown.col_ind)
    assert "match_graphs (apfp):" in counted  # tqdm clears it when done


def test_lawler_progress(capsys):
    from stepsize.matching import match_lawler

    rng = np.random.default_rng(4)
    A = rng.uniform(size=(6, 6))
    A = A + A.T
    quiet = match_lawler(np.kron(A, A), 6, 6, progress=False)
    shown = match_lawler(np.kron(A, A), 6, 6, progress=True)
    assert "match_lawler (apfp):" in capsys.readouterr().err
    np.testing.assert_array_equal(quiet.col_ind, shown.col_ind)


def test_projected_fixed_point_takes_matching_options_and_keyword_overrides():
    """``options=MatchingOptions(...)``, keyword overrides on top, or both give the same run."""
    from stepsize.matching import METHODS, MatchingOptions, projected_fixed_point

    A, B, _ = kb_pair(30, density=0.5, noise=0.1, seed=2)
    preset = METHODS["apfp"]
    by_options = projected_fixed_point(A, B, options=preset.replaced(max_iter=4), history=True)
    by_keywords = projected_fixed_point(A, B, **preset.replaced(max_iter=4, history=True)
                                        .as_dict())
    by_method = match_graphs(A, B, max_iter=4, history=True)
    for other in (by_keywords, by_method):
        assert other.history == by_options.history and other.n_iter == by_options.n_iter
        np.testing.assert_array_equal(other.col_ind, by_options.col_ind)
    assert len(by_options.history) == by_options.n_iter + 1
    # The defaults of MatchingOptions are projected_fixed_point's (no preset).
    plain = projected_fixed_point(A, B, max_iter=3, history=True)
    assert plain.history == projected_fixed_point(A, B, options=MatchingOptions(max_iter=3),
                                                  history=True).history
    assert by_keywords.info["inner_iterations"] == by_options.info["inner_iterations"]
    with pytest.raises(TypeError, match="unexpected option\\(s\\) bogus"):
        match_graphs(np.eye(3), np.eye(3), bogus=1)
    with pytest.raises(TypeError, match="options must be a MatchingOptions"):
        projected_fixed_point(np.eye(3), np.eye(3), options={"max_iter": 3})


def _dense_symmetric_pair():
    """A dense symmetric 20-node pair on which apfp's second projection, loose (tolerance 0.1,
    one warm-started Sinkhorn round), points downhill: ``c1 + c2 < 0``, ``alpha = 0``."""
    W = np.random.default_rng(6).uniform(size=(20, 20))
    A = W + W.T
    perm = np.random.default_rng(0).permutation(20)
    return A, A[np.ix_(perm, perm)], np.argsort(perm)


def test_a_zero_step_after_a_loose_projection_projects_again_at_inner_tol():
    A, B, truth = _dense_symmetric_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = match_graphs(A, B, seed=0, stall_restarts=0)
    alphas = result.info["alpha"]
    # The zero step along the loose direction is not a stop: the next projection is at
    # inner_tol and the iteration goes on from the same iterate, to the planted permutation.
    first_zero = alphas.index(0.0)
    assert first_zero < len(alphas) - 1 and alphas[first_zero + 1] > 0
    assert result.info["c1"][first_zero] + result.info["c2"][first_zero] < 0
    assert result.converged is True and result.info["stall"] is None
    assert result.info["mean_row_max"] > 0.95
    np.testing.assert_array_equal(result.col_ind, truth)
    # With inner_tol throughout (no loose projection) the same matching, no retry needed.
    tight = match_graphs(A, B, seed=0, stall_restarts=0, inner_tol_factor=1.0)
    np.testing.assert_array_equal(tight.col_ind, truth)


def test_apfp_skips_the_soft_restart_when_the_barycenter_is_its_own_projection():
    from stepsize.matching import solver
    from stepsize.matching.projections import adaptive_softassign, sinkhorn

    # A cycle: every row sum of A is 2, so the gradient at the barycenter, outer(A 1, B 1) / N,
    # is f_i + g_j and every softassign of it, at any beta, is the barycenter.
    n = 12
    A = np.roll(np.eye(n), 1, axis=1) + np.roll(np.eye(n), -1, axis=1)
    B = np.random.default_rng(0).uniform(size=(n, n))
    B = B + B.T
    G = np.outer(A.sum(axis=1), B.sum(axis=1)) / n
    for beta in (1.0, 1e3):
        assert np.allclose(sinkhorn(beta * G, tol=1e-12).P, 1.0 / n, atol=1e-9)
    assert np.allclose(adaptive_softassign(G, 1.0).P, 1.0 / n, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = match_graphs(A, B, seed=0, two_opt=False)  # (the 2-opt search: no stall)
        # The first start's first step is 0 from U: no soft restart (it would end there too).
        plain = match_graphs(A, B, seed=0, stall_restarts=0, polish=0, two_opt=False)
    assert plain.n_iter == 1 and plain.info["stall"] == "uniform"
    assert "restart" not in plain.info and "restart" not in result.info
    assert result.info["starts"][0]["stall"] == "uniform"
    # A run that left the barycenter is not such a fixed point.
    moved = match_graphs(B, B, restart_epsilon=None)
    assert moved.n_iter > 1 and not solver._barycenter_fixed(moved)


def test_apfp_stops_once_the_rounding_has_settled_on_sparse_graphs_up_to_50_nodes():
    from stepsize.matching import solver

    # A sparse weighted pair (density 0.2): the Hungarian rounding of M is the planted
    # matching and a discrete fixed point from iteration 2 on; the run stops there, with the
    # same matching as the run that goes on to tol (8 iterations, 154 scalings).
    A, B, truth = kb_pair(30, density=0.2, noise=0.1, seed=0)
    settled = match_graphs(A, B, seed=0)
    full = match_graphs(A, B, seed=0, stagnation=False)
    assert settled.message == solver._SETTLED_MESSAGE and settled.converged
    assert (settled.n_iter, sum(settled.info["inner_iterations"])) == (2, 32)
    assert "polish" not in settled.info  # a discrete fixed point already: no IPFP polish
    assert (full.n_iter, sum(full.info["inner_iterations"])) == (8, 154)
    np.testing.assert_array_equal(settled.col_ind, truth)
    np.testing.assert_array_equal(full.col_ind, truth)
    assert settled.objective == full.objective
    # Not on dense graphs (QAPLIB's distances), above 50 nodes, for asm, or from another start.
    W = np.random.default_rng(6).uniform(size=(20, 20))
    assert match_graphs(W + W.T, W + W.T, seed=0).message != solver._SETTLED_MESSAGE
    assert not solver._sparse_pair(201, 10, 20, 5) and solver._sparse_pair(190, 10, 20, 5)
    assert solver._settings_of(METHODS["apfp"], 50)[0].settle == 1
    assert solver._settings_of(METHODS["apfp"], 51)[0].settle == 0
    assert solver._settings_of(METHODS["asm"], 30)[0].settle == 0
    randomized = match_graphs(A, B, seed=0, init="randomized")
    assert randomized.message != solver._SETTLED_MESSAGE
