"""Issue 17: the QAP as scipy defines it, directed graphs, restarts, seeds, stalls, QAPLIB."""

import itertools
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from scipy.optimize import quadratic_assignment

from stepsize import ConvergenceWarning
from stepsize.matching import (
    assignment_objective,
    gradient,
    match_graphs,
    matching_accuracy,
    objective,
)
from stepsize.matching.qaplib import read_qaplib, read_qaplib_solutions

DATA = Path(__file__).parent / "data"
BEST = read_qaplib_solutions(DATA / "solutions.csv")


def _qap_value(A, B, col_ind):
    """scipy's objective, fun = trace(A^T P B P^T), straight from its definition."""
    P = np.eye(len(col_ind))[col_ind]
    return float(np.trace(A.T @ P @ B @ P.T))


def _random_qap(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, n)), rng.uniform(size=(n, n))  # asymmetric, full diagonals


def _all_values(A, B):
    """``sum_ij A[i, j] B[p(i), p(j)]`` for every permutation p (brute force)."""
    n = A.shape[0]
    perms = np.array(list(itertools.permutations(range(n))))
    return np.einsum("ij,pij->p", A, B[perms[:, :, None], perms[:, None, :]])


def test_gradient_is_exact_for_directed_graphs_with_self_loops():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(5, 5)), rng.normal(size=(4, 4))
    K, M = rng.normal(size=(5, 4)), rng.uniform(size=(5, 4))
    assert objective(A, B, M, K, 0.7) == pytest.approx(
        0.5 * np.sum(A * (M @ B @ M.T)) + 0.7 * np.sum(K * M), rel=1e-12)
    step = 1e-6
    numeric = np.zeros_like(M)
    for index in np.ndindex(M.shape):
        shift = np.zeros_like(M)
        shift[index] = step
        numeric[index] = (objective(A, B, M + shift, K, 0.7)
                          - objective(A, B, M - shift, K, 0.7)) / (2 * step)
    np.testing.assert_allclose(gradient(A, B, M, K, 0.7), numeric, rtol=1e-7, atol=1e-8)


@pytest.mark.filterwarnings("ignore::stepsize.ConvergenceWarning")
@pytest.mark.parametrize("method", ["apfp", "asm", "ipfp", "ga", "dspfp"])
def test_minimization_reports_scipys_objective_for_its_col_ind(method):
    for seed in range(3):
        A, B = _random_qap(15, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = match_graphs(A, B, method=method, maximize=False)
        assert sorted(result.col_ind) == list(range(15))
        assert result.objective == pytest.approx(_qap_value(A, B, result.col_ind), rel=1e-12)
        # and scipy's own fun follows the same definition
        faq = quadratic_assignment(A, B)
        assert faq.fun == pytest.approx(_qap_value(A, B, faq.col_ind), rel=1e-12)
        # maximize=True keeps Z = fun / 2 for directed graphs too
        high = match_graphs(A, B, method=method, maximize=True)
        assert high.objective == pytest.approx(_qap_value(A, B, high.col_ind) / 2, rel=1e-12)


@pytest.mark.filterwarnings("ignore::stepsize.ConvergenceWarning")
def test_minimization_history_is_the_relaxed_qap_objective_and_decreases():
    A, B = _random_qap(12, 3)
    result = match_graphs(A, B, maximize=False, history=True, polish=0, tol=0.0, max_iter=12)
    trace = np.array(result.history)
    assert np.all(np.diff(trace) <= 1e-9 * np.abs(trace).max())
    X = result.X
    assert trace[-1] == pytest.approx(np.sum(A * (X @ B @ X.T)), rel=1e-9)
    assert trace[0] == pytest.approx(A.sum() * B.sum() / 144, rel=1e-12)  # the barycenter


@pytest.mark.parametrize("maximize", [False, True])
def test_near_optimal_against_brute_force_on_tiny_directed_instances(maximize):
    gaps, faq_gaps = [], []
    for n in (6, 7):
        for seed in range(8):
            A, B = _random_qap(n, 100 * n + seed)
            values = _all_values(A, B)
            best = values.max() if maximize else values.min()
            ours = match_graphs(A, B, maximize=maximize)
            value = _qap_value(A, B, ours.col_ind)
            assert np.isclose(values, value, rtol=1e-12).any()
            gaps.append(abs(value - best) / best)
            faq = quadratic_assignment(A, B, options={"maximize": maximize})
            faq_gaps.append(abs(faq.fun - best) / best)
    # Measured: max gap 0.130 (minimize) and 0.051 (maximize), mean 0.023 and 0.012; FAQ
    # from the same barycenter start: mean 0.041 and 0.028.
    assert max(gaps) <= 0.15 and np.mean(gaps) <= 0.03
    assert np.mean(gaps) <= np.mean(faq_gaps)
    # Five starts find at least as good a matching, and often the optimum.
    hits = 0
    for n in (6, 7):
        for seed in range(8):
            A, B = _random_qap(n, 100 * n + seed)
            values = _all_values(A, B)
            best = values.max() if maximize else values.min()
            one = _qap_value(A, B, match_graphs(A, B, maximize=maximize).col_ind)
            five = _qap_value(A, B, match_graphs(A, B, maximize=maximize, n_init=5,
                                                 seed=seed).col_ind)
            assert (five >= one - 1e-12) if maximize else (five <= one + 1e-12)
            hits += abs(five - best) <= 1e-9 * best
    assert hits >= 7  # measured: 8 (minimize) and 9 (maximize) of 16 (one start: 4 and 7)


@pytest.mark.parametrize(("name", "single", "five"), [
    # Measured gaps (%) to the best-known value, one start and five starts (seed 0), with the
    # 2-opt search ending every start (one IPFP polish step before it); before it (polish up to
    # 30 steps): bur26a 0.21 / 0.16, lipa10a 1.90 / 0.0, nug12 39.8 / 0.0, esc16b 0.68 / 0.68.
    # bur26a: 0.21 and 0.21; 0.18 and 0.18 while the first start's near-barycenter run was
    # restarted with the adaptive softassign (now the polish and the 2-opt search end it).
    ("bur26a", 0.22, 0.22),
    ("lipa10a", 0.01, 0.01),  # 0.0 and 0.0 (optimal)
    ("nug12", 7.0, 0.01),    # 6.92 (618; 1 IPFP step: 802, then 3 exchanges) and 0.0
    ("esc16b", 0.01, 0.01),  # 0.0 and 0.0
    ("esc16j", 0.01, 0.01),  # 0.0 and 0.0
])
def test_qaplib_gap_to_the_best_known_value(name, single, five):
    instance = read_qaplib(DATA / f"{name}.dat")
    best = BEST[name]
    one = match_graphs(instance.A, instance.B, maximize=False, seed=0)
    assert one.objective == pytest.approx(_qap_value(instance.A, instance.B, one.col_ind))
    assert one.objective >= best  # best-known values are optimal or near: a check of scoring
    assert 100 * (one.objective - best) / best <= single
    more = match_graphs(instance.A, instance.B, maximize=False, n_init=5, seed=0)
    assert 100 * (more.objective - best) / best <= five
    assert len(more.info["start_objectives"]) >= 5
    assert more.objective == min(more.info["start_objectives"])


def test_esc_instances_stall_at_the_barycenter_and_are_restarted():
    # Every row sum of esc's distance matrix is 17, so the first gradient (A 1)(1^T B) / N is
    # constant along each row and its softassign is the barycenter itself: the old apfp stopped
    # there after one iteration with converged=True.
    instance = read_qaplib(DATA / "esc16j.dat")
    assert np.ptp(instance.B.sum(axis=1)) == 0
    plain = match_graphs(instance.A, instance.B, maximize=False, restart_epsilon=None,
                         polish=0, two_opt=False, seed=0)
    first = plain.info["starts"][0]
    # One iteration: apfp's first projection is asked for a row error of 0.1 only, but the
    # softassign of these constant rows is the barycenter itself (error 0), which meets 1e-3.
    assert first["stall"] == "uniform" and first["n_iter"] == 1
    assert plain.info["stall"] is None and plain.converged  # a random restart succeeded
    assert len(plain.info["starts"]) >= 2
    assert plain.objective < plain.info["start_objectives"][0]
    assert (plain.objective - BEST["esc16j"]) / BEST["esc16j"] <= 0.25  # measured 0.0


def test_a_stall_that_no_restart_fixes_warns_and_is_not_converged():
    instance = read_qaplib(DATA / "esc16b.dat")
    with pytest.warns(ConvergenceWarning, match="stalled at the barycenter"):
        result = match_graphs(instance.A, instance.B, maximize=False, polish=0,
                              stall_restarts=0, two_opt=False)
    assert result.converged is False and "stalled" in result.message
    assert result.info["stall"] == "uniform"
    # With the 2-opt search (apfp's default up to 100 nodes) the same stalled run ends at a
    # pairwise-exchange local optimum: an answer, recorded as sharpened, not restarted.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sharpened = match_graphs(instance.A, instance.B, maximize=False, stall_restarts=0)
    assert sharpened.converged and sharpened.info["stall"] is None
    assert sharpened.info["sharpened_stall"] == "uniform" and sharpened.n_iter == 1
    assert sharpened.objective == BEST["esc16b"] < result.objective  # measured: 292, optimal
    # A zero graph makes every matching optimal: nothing stalls, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trivial = match_graphs(np.zeros((5, 5)), instance.B[:5, :5], maximize=False)
    assert trivial.converged and trivial.objective == 0.0


def test_n_init_keeps_the_best_start_and_reports_every_start():
    A, B = _random_qap(20, 7)
    result = match_graphs(A, B, maximize=False, n_init=4, seed=11)
    starts = result.info["starts"]
    assert len(starts) == len(result.info["start_objectives"]) >= 4
    assert [s["init"] for s in starts[:4]] == ["first", "randomized", "randomized",
                                               "randomized"]
    assert result.objective == min(result.info["start_objectives"])
    assert result.info["start_objectives"][result.info["best_start"]] == result.objective
    for value in result.info["start_objectives"]:
        assert value >= result.objective
    single = match_graphs(A, B, maximize=False)
    assert result.info["start_objectives"][0] == pytest.approx(single.objective)
    again = match_graphs(A, B, maximize=False, n_init=4, seed=11)
    assert again.info["start_objectives"] == result.info["start_objectives"]
    assert result.n_iter == sum(s["n_iter"] for s in starts)


def test_seeds_are_kept_and_agree_with_scipys_partial_match():
    A, B = _random_qap(14, 5)
    seeds = np.array([[0, 3], [5, 5], [9, 1]])
    ours = match_graphs(A, B, maximize=False, seeds=seeds, n_init=3, seed=0)
    np.testing.assert_array_equal(ours.col_ind[seeds[:, 0]], seeds[:, 1])
    assert sorted(ours.col_ind) == list(range(14))
    assert ours.objective == pytest.approx(_qap_value(A, B, ours.col_ind))
    np.testing.assert_array_equal(ours.X[seeds[:, 0], seeds[:, 1]], 1.0)
    # The relaxed history is the full problem's f, seed rows included (different sizes, K).
    rng = np.random.default_rng(0)
    F, D, K = rng.uniform(size=(6, 6)), rng.uniform(size=(8, 8)), rng.uniform(size=(6, 8))
    for maximize in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            run = match_graphs(F, D, K, lam=0.5, maximize=maximize, seeds=[[0, 7], [3, 2]],
                               history=True, polish=0, max_iter=5, tol=0.0)
        X = run.X
        quadratic, linear = np.sum(F * (X @ D @ X.T)), np.sum(K * X)
        expected = 0.5 * quadratic + 0.5 * linear if maximize else quadratic + 0.5 * linear
        assert run.history[-1] == pytest.approx(expected, rel=1e-12)
    faq = quadratic_assignment(A, B, options={"partial_match": seeds})
    np.testing.assert_array_equal(faq.col_ind[seeds[:, 0]], seeds[:, 1])
    # Measured: ours 3.2% below scipy's FAQ with the same seeds.
    assert ours.objective <= faq.fun


def test_seeds_recover_a_planted_directed_matching():
    rng = np.random.default_rng(2)
    n = 40
    A = (rng.uniform(size=(n, n)) < 0.1) * rng.uniform(1, 2, size=(n, n))
    perm = rng.permutation(n)
    B = A[np.ix_(perm, perm)] + 0.3 * (rng.uniform(size=(n, n)) < 0.05)  # noisy copy
    truth = np.argsort(perm)
    seeds = np.c_[np.arange(8), truth[:8]]
    with_seeds = match_graphs(A, B, seeds=seeds)
    np.testing.assert_array_equal(with_seeds.col_ind[:8], truth[:8])
    # Measured: accuracy 1.0 with 8 seeds.
    assert matching_accuracy(with_seeds.col_ind, truth) == 1.0
    everything = match_graphs(A, B, seeds=np.c_[np.arange(n), truth])
    np.testing.assert_array_equal(everything.col_ind, truth)
    assert everything.n_iter == 0


def test_directed_networkx_graphs_are_matched_as_directed():
    # A directed cycle: as undirected graphs every rotation and reflection is an automorphism;
    # directed, the reflections are not. A chord breaks the rotations.
    graph = nx.DiGraph([(i, (i + 1) % 9) for i in range(9)] + [(0, 4)])
    perm = np.random.default_rng(4).permutation(9)
    other = nx.relabel_nodes(graph, {int(perm[j]): j for j in range(9)})
    other = nx.DiGraph(nx.to_numpy_array(other, nodelist=range(9)))
    result = match_graphs(graph, other, method="ipfp", n_init=3, seed=0)
    assert result.objective == pytest.approx(graph.number_of_edges() / 2)
    np.testing.assert_array_equal(result.col_ind, np.argsort(perm))
    A = nx.to_numpy_array(graph)
    assert assignment_objective(A, A.T, np.arange(9)) == 0.0  # reversed arcs do not match


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"n_init": 0}, ValueError, r"^n_init must be >= 1, got 0"),
    ({"seeds": [[0, 1], [0, 2]]}, ValueError, r"^seeds: node 0 of A is seeded twice"),
    ({"seeds": [[0, 1], [1, 1]]}, ValueError, r"^seeds: node 1 of B is seeded twice"),
    ({"seeds": [[0, 4]]}, ValueError, r"^seeds: node 4 of B is out of range \[0, 4\)"),
    ({"seeds": [[-1, 0]]}, ValueError, r"^seeds: node -1 of A is out of range"),
    ({"seeds": [0, 1]}, ValueError, r"^seeds must be an \(m, 2\) array"),
    ({"seeds": [[0.5, 1]]}, TypeError, r"^seeds must hold integer node indices"),
    ({"maximize": None}, TypeError, r"^maximize must be True or False"),
])
def test_bad_restart_and_seed_arguments(kwargs, error, message):
    A = np.arange(16.0).reshape(4, 4)
    with pytest.raises(error, match=message):
        match_graphs(A, A, **kwargs)


def test_qaplib_benchmark_section_on_the_test_instances():
    pytest.importorskip("threadpoolctl")
    from stepsize.benchmarks.matching import qaplib_benchmark

    out = qaplib_benchmark(DATA, max_n=12, starts=(1, 2), seed=0)
    assert sorted({r["instance"] for r in out["rows"]}) == ["lipa10a", "nug12"]
    by_method = {s["method"]: s for s in out["summary"]}
    assert set(by_method) == {"apfp x1", "scipy faq x1", "apfp x2", "scipy faq x2"}
    for row in out["rows"]:
        best = BEST[row["instance"]]
        assert row["gap"] == pytest.approx(100 * (row["objective"] - best) / best)
        assert row["objective"] >= best
    nug = {r["method"]: r["objective"] for r in out["rows"] if r["instance"] == "nug12"}
    instance = read_qaplib(DATA / "nug12.dat")
    assert nug["scipy faq x1"] == quadratic_assignment(instance.A, instance.B).fun
    assert nug["apfp x2"] <= nug["apfp x1"] and nug["scipy faq x2"] <= nug["scipy faq x1"]
    assert out["table"]["columns"][0] == "method" and len(out["table"]["rows"]) == 4
    # Issue 17's goals per start count; the accuracy part is deterministic (no time asserted).
    # Measured on these two: one start, apfp mean = median gap 3.46% (nug12 6.92%, lipa10a 0)
    # against FAQ's 1.56% (3.11%, 0): not met here; two starts, apfp 0%: within 3%.
    goals = {g["goal"].split(":")[0]: g for g in out["goals"]}
    assert set(goals) == {"one start", "2 starts"}
    assert by_method["apfp x1"]["mean_gap"] == pytest.approx(100 * 40 / 578 / 2)
    assert goals["one start"]["accurate"] is False and goals["2 starts"]["accurate"] is True
    for goal in goals.values():
        assert goal["met"] == (goal["accurate"] and goal["time_ratio"] <= 1.0)


def test_the_stagnation_stop_says_so_and_can_be_turned_off():
    """Review finding: the stagnation stop ended asm on nug12 whatever tol asked, with no way
    to turn it off. It is an option (on by default) and the message names it."""
    instance = read_qaplib(DATA / "nug12.dat")
    stopped = match_graphs(instance.A, instance.B, method="asm", maximize=False, seed=0,
                           tol=1e-14, max_iter=2000)
    assert stopped.converged and stopped.message.startswith("the objective rose by at most")
    full = match_graphs(instance.A, instance.B, method="asm", maximize=False, seed=0,
                        tol=1e-14, max_iter=2000, stagnation=False)
    assert "objective rose" not in full.message and full.n_iter > stopped.n_iter
    with pytest.raises(TypeError, match="stagnation must be True or False"):
        match_graphs(instance.A, instance.B, stagnation="no")
