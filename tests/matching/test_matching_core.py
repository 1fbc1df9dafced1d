"""Objective, step rules and projections of stepsize.matching against closed forms and scipy."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment, quadratic_assignment
from scipy.special import logsumexp

from stepsize.matching import (
    adaptive_softassign,
    adaptive_step,
    assignment_objective,
    doubly_stochastic_projection,
    dynamical_softassign,
    edge_correctness,
    fixed_step,
    gradient,
    hungarian,
    line_search_coefficients,
    matching_accuracy,
    objective,
    score_matching,
    sinkhorn,
    softassign,
    softassign_gap_bound,
    softassign_transition,
)
from stepsize.matching.generators import kb_pair


def _symmetric(n, rng):
    upper = np.triu(rng.uniform(size=(n, n)), 1)
    return upper + upper.T


def _random_doubly_stochastic(n, rng):
    return sinkhorn(np.log(rng.uniform(size=(n, n))), tol=1e-12).P


def test_objective_matches_scipy_qap_convention():
    rng = np.random.default_rng(0)
    A, B = _symmetric(8, rng), _symmetric(8, rng)
    result = quadratic_assignment(A, B, options={"maximize": True})
    # Z = 1/2 tr(P^T A P B) with P[i, col_ind[i]] = 1 equals half of scipy's fun.
    P = np.zeros((8, 8))
    P[np.arange(8), result.col_ind] = 1
    assert objective(A, B, P) == pytest.approx(result.fun / 2, rel=1e-12)
    assert assignment_objective(A, B, result.col_ind) == pytest.approx(result.fun / 2, rel=1e-12)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    A, B = _symmetric(5, rng), _symmetric(6, rng)
    K = rng.normal(size=(5, 6))
    M = rng.uniform(size=(5, 6))
    grad = gradient(A, B, M, K, lam=0.7)
    step = 1e-6
    numeric = np.zeros_like(M)
    for i, j in itertools.product(range(5), range(6)):
        E = np.zeros_like(M)
        E[i, j] = step
        numeric[i, j] = (objective(A, B, M + E, K, 0.7) - objective(A, B, M - E, K, 0.7)) / (
            2 * step
        )
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_sparse_and_dense_objective_agree():
    A, B, truth = kb_pair(30, density=0.2, noise=0.05, seed=3)
    As, Bs = sp.csr_array(A), sp.csr_array(B)
    rng = np.random.default_rng(0)
    col = rng.permutation(30)
    assert assignment_objective(As, Bs, col) == pytest.approx(assignment_objective(A, B, col))
    M = _random_doubly_stochastic(30, rng)
    assert objective(As, Bs, M) == pytest.approx(objective(A, B, M))


def test_scorer_on_ground_truth():
    A, B, truth = kb_pair(20, density=0.3, seed=2)
    score = score_matching(A, B, truth, truth=truth)
    assert score.accuracy == 1.0
    assert score.objective_ratio == 1.0
    assert score.edge_correctness == 1.0
    wrong = np.roll(truth, 1)
    assert matching_accuracy(wrong, truth) == 0.0
    assert edge_correctness(A, B, wrong) < 1.0


def test_line_search_coefficients_are_exact():
    rng = np.random.default_rng(4)
    A, B = _symmetric(7, rng), _symmetric(7, rng) - 0.5
    K = rng.normal(size=(7, 7))
    M = _random_doubly_stochastic(7, rng)
    D = _random_doubly_stochastic(7, rng)
    c1, c2 = line_search_coefficients(gradient(A, B, M, K), D - M, A @ (D - M) @ B)
    for alpha in (0.0, 0.3, 1.0, 1.7):
        exact = objective(A, B, M + alpha * (D - M), K) - objective(A, B, M, K)
        assert c1 * alpha + c2 * alpha**2 == pytest.approx(exact, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_adaptive_step_equals_brute_force_line_search(seed):
    rng = np.random.default_rng(seed)
    c1, c2 = rng.normal(size=2) * rng.choice([0.1, 1.0, 10.0], size=2)
    grid = np.linspace(0, 1, 100_001)
    values = c1 * grid + c2 * grid**2
    alpha = adaptive_step(c1, c2)
    assert 0.0 <= alpha <= 1.0
    assert c1 * alpha + c2 * alpha**2 >= values.max() - 1e-12
    assert abs(alpha - grid[np.argmax(values)]) <= 1e-5


def test_adaptive_step_closed_form_cases():
    assert adaptive_step(2.0, 0.0) == 1.0  # c2 >= 0 and ascent: the end point
    assert adaptive_step(1.0, 3.0) == 1.0
    assert adaptive_step(-5.0, 1.0) == 0.0  # convex but g(1) < 0
    assert adaptive_step(1.0, -2.0) == 0.25  # -c1 / (2 c2)
    assert adaptive_step(3.0, -1.0) == 1.0  # clipped at 1
    assert fixed_step(0.5)(100.0, -1e9) == 0.5
    with pytest.raises(ValueError, match="alpha"):
        fixed_step(0.0)


def test_sinkhorn_matches_log_domain_reference():
    rng = np.random.default_rng(5)
    S = rng.normal(size=(6, 6)) * 3
    out = sinkhorn(S, tol=1e-12, max_iter=10_000)
    assert out.converged
    # Independent reference: plain log-domain Sinkhorn with scipy's logsumexp.
    f, g = np.zeros(6), np.zeros(6)
    for _ in range(5000):
        f = -logsumexp(S + g[None, :], axis=1)
        g = -logsumexp(S + f[:, None], axis=0)
    np.testing.assert_allclose(out.P, np.exp(S + f[:, None] + g[None, :]), atol=1e-10)
    np.testing.assert_allclose(out.P.sum(axis=0), 1, atol=1e-12)
    np.testing.assert_allclose(out.P.sum(axis=1), 1, atol=1e-11)


@pytest.mark.parametrize("beta", [1.0, 1e3, 1e6, 1e12])
def test_softassign_never_overflows(beta):
    rng = np.random.default_rng(6)
    X = rng.uniform(size=(40, 40)) * 1e4  # exp(beta X) overflows float64 for every beta here
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        out = softassign(X, beta, tol=1e-6, max_iter=300)
    assert np.all(np.isfinite(out.P)) and out.P.min() >= 0
    np.testing.assert_allclose(out.P.sum(axis=0), 1, atol=1e-9)  # columns exact
    row_error = np.max(np.abs(out.P.sum(axis=1) - 1))
    assert out.error == pytest.approx(row_error, abs=1e-12)
    assert out.converged == (row_error < 1e-6)


@pytest.mark.parametrize("beta", [1e2, 1e6, 1e12])
def test_softassign_tends_to_hungarian(beta):
    rng = np.random.default_rng(12)
    perm = rng.permutation(30)
    X = 1e4 * (np.eye(30)[perm] + 0.5 * rng.uniform(size=(30, 30)))
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        out = softassign(X, beta, tol=1e-9)
    assert out.converged
    np.testing.assert_allclose(out.P, hungarian(X), atol=1e-9)


def test_softassign_gap_bound():
    rng = np.random.default_rng(7)
    X = rng.uniform(size=(30, 30))
    optimum = np.sum(X * hungarian(X))
    for beta in (1.0, 10.0, 100.0):
        gap = optimum - np.sum(X * softassign(X, beta, tol=1e-10).P)
        assert -1e-8 <= gap <= 30 * np.log(30) / beta


def test_entropic_gap_bound_is_valid_and_tighter_than_n_log_n():
    rng = np.random.default_rng(14)
    X = rng.uniform(size=(30, 30))
    optimum = np.sum(X * hungarian(X))
    for beta in (1.0, 10.0, 100.0, 1000.0):
        P = softassign(X, beta, tol=1e-12, max_iter=100_000).P
        bound = softassign_gap_bound(P, beta)
        assert optimum - np.sum(X * P) <= bound + 1e-9
        assert bound <= 30 * np.log(30) / beta


@pytest.mark.parametrize("epsilon", [1.0, 0.1])
def test_adaptive_softassign_is_the_smallest_certified_doubling(epsilon):
    rng = np.random.default_rng(15)
    X = rng.uniform(size=(40, 40))
    out = adaptive_softassign(X, 0.5, epsilon=epsilon, tol=1e-12, max_iter=100_000)
    # The Hadamard-power warm starts reproduce the cold softassign at the reached beta.
    cold = softassign(X, out.beta, tol=1e-12, max_iter=100_000).P
    assert np.max(np.abs(out.P - cold)) < 1e-8
    doublings = np.log2(out.beta / 0.5)
    assert doublings == round(doublings) and doublings >= 1

    def certified(beta):
        P = softassign(X, beta, tol=1e-12, max_iter=100_000).P
        return softassign_gap_bound(P, beta) <= epsilon * (np.sum(X * P) - X.mean() * 40)

    assert certified(out.beta) and not certified(out.beta / 2)
    # The certificate: the LAP optimum is within (1 + epsilon) of the ascent over uniform.
    optimum = np.sum(X * hungarian(X))
    assert optimum - X.mean() * 40 <= (1 + epsilon) * (np.sum(X * out.P) - X.mean() * 40)


def test_adaptive_softassign_stops_at_beta_max_and_on_permutations():
    X = np.eye(5)
    capped = adaptive_softassign(X, 1.0, epsilon=1e-9, beta_max=8.0)
    assert capped.beta == 8.0
    # exp(-1000) = 0: the softassign is the permutation itself (entropy 0), no doubling helps.
    exact = adaptive_softassign(1000 * X, 1.0, epsilon=1e-300, beta_max=1e9)
    np.testing.assert_array_equal(exact.P, np.eye(5))
    assert exact.beta == 1.0
    with pytest.raises(ValueError, match="epsilon"):
        adaptive_softassign(X, 1.0, epsilon=0.0)
    with pytest.raises(ValueError, match="beta_max"):
        adaptive_softassign(X, 2.0, beta_max=1.0)


def test_dynamical_softassign_is_scale_and_shift_invariant():
    rng = np.random.default_rng(8)
    X = rng.uniform(size=(25, 25))
    base = dynamical_softassign(X, 50, tol=1e-10).P
    for scale, shift in ((1e-6, 0.0), (1e8, -3e9), (37.0, 5.0)):
        np.testing.assert_allclose(
            dynamical_softassign(scale * X + shift, 50, tol=1e-10).P, base, atol=1e-8
        )
    # It is softassign with beta / (max X - min X).
    np.testing.assert_allclose(
        base, softassign(X, 50 / np.ptp(X), tol=1e-10).P, atol=1e-8
    )
    # "max" normalization is scale but not shift invariant.
    by_max = dynamical_softassign(X, 50, scale="max", tol=1e-10).P
    np.testing.assert_allclose(by_max, softassign(X, 50 / X.max(), tol=1e-10).P, atol=1e-8)
    assert np.abs(dynamical_softassign(X + 10, 50, scale="max", tol=1e-10).P - by_max).max() > 0.1
    np.testing.assert_allclose(dynamical_softassign(np.ones((3, 3)), 5).P, np.full((3, 3), 1 / 3))


def test_hadamard_transition_and_power_identities():
    rng = np.random.default_rng(9)
    X = rng.uniform(size=(12, 12))
    low = softassign(X, 4.0, tol=1e-13, max_iter=100_000).P
    high = softassign(X, 10.0, tol=1e-13, max_iter=100_000).P
    up = softassign_transition(low, X, 6.0, tol=1e-13, max_iter=100_000).P
    assert np.max(np.abs(up - high)) < 1e-8
    # Hadamard power: S_{k beta} = sinkhorn(S_beta^k), here k = 2.5.
    power = sinkhorn(2.5 * np.log(low), tol=1e-13, max_iter=100_000).P
    assert np.max(np.abs(power - high)) < 1e-8


def test_hungarian_matches_linear_sum_assignment():
    rng = np.random.default_rng(10)
    for _ in range(20):
        X = rng.normal(size=(15, 15))
        rows, cols = linear_sum_assignment(X, maximize=True)
        assert np.sum(X * hungarian(X)) == pytest.approx(X[rows, cols].sum())
    # Row-argmax permutation shortcut.
    X = np.eye(4)[[2, 0, 3, 1]] * 5 + rng.uniform(size=(4, 4))
    np.testing.assert_array_equal(hungarian(X), np.eye(4)[[2, 0, 3, 1]])


def test_doubly_stochastic_projection():
    rng = np.random.default_rng(11)
    Y = rng.normal(size=(20, 20))
    P = doubly_stochastic_projection(Y, tol=1e-9, max_iter=10_000).P
    assert P.min() >= 0
    np.testing.assert_allclose(P.sum(axis=0), 1, atol=1e-8)
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-8)
    # A doubly stochastic matrix is its own projection.
    D = _random_doubly_stochastic(20, rng)
    np.testing.assert_allclose(doubly_stochastic_projection(D).P, D, atol=1e-9)


def test_projection_argument_checks():
    with pytest.raises(ValueError, match="beta"):
        softassign(np.eye(3), -1.0)
    with pytest.raises(ValueError, match="X must be a square matrix"):
        dynamical_softassign(np.ones((2, 3)), 1.0)
    with pytest.raises(ValueError, match="X must be finite"):
        hungarian(np.array([[np.nan, 0], [0, 1.0]]))
    with pytest.raises(ValueError, match="scale"):
        dynamical_softassign(np.eye(2), 1.0, scale="median")
    with pytest.raises(ValueError, match="previous must have positive entries"):
        softassign_transition(np.eye(2), np.eye(2), 1.0)


def test_warm_started_sinkhorn_matches_cold_start():
    from stepsize.matching.projections import _sinkhorn

    rng = np.random.default_rng(13)
    S = 40 * rng.uniform(size=(30, 30))
    cold = _sinkhorn(S.copy(), 1e-10, 100_000)
    warm = _sinkhorn(S.copy(), 1e-10, 100_000, warm=cold.column_potential)
    np.testing.assert_allclose(warm.P, cold.P, atol=1e-9)
    assert warm.n_iter <= 2 < cold.n_iter
    # The potential reproduces P: P = diag(r) exp(S) diag(exp(g)) for some r.
    scaled = np.exp(S + cold.column_potential[None, :])
    np.testing.assert_allclose(scaled / scaled.sum(axis=1, keepdims=True), cold.P, atol=1e-9)


def test_softassign_gap_bound_bad_input():
    with pytest.raises(ValueError, match="beta"):
        softassign_gap_bound(np.full((2, 2), 0.5), 0.0)
    with pytest.raises(ValueError, match="nonnegative"):
        softassign_gap_bound(np.array([[1.5, -0.5], [-0.5, 1.5]]), 1.0)
    with pytest.raises(ValueError, match="P"):
        softassign_gap_bound(np.ones((2, 3)) / 3, 1.0)


@pytest.mark.parametrize("n", [7, 40])
def test_float32_kernel_agrees_with_float64(n):
    from stepsize.matching import match_graphs
    from stepsize.matching.generators import network_pair
    from stepsize.matching.projections import _sinkhorn

    rng = np.random.default_rng(n)
    S = rng.normal(size=(n, n)) * 3
    reference = sinkhorn(S, tol=1e-4)
    A, B, truth = network_pair(n * 5, rewire=0.05, seed=1)
    expected = match_graphs(A, B)
    single = _sinkhorn(S.copy(), 1e-4, 1000, float32_from=1)  # the large-n path, at small n
    assert single.P.dtype == np.float64 and single.converged and reference.converged
    # float64 tests its error every 4th iteration, float32 at every one (measured: 20 vs 17,
    # 24 vs 23); both are within their tolerance of the exact scaling (measured 3.9e-5, 4.6e-5).
    assert abs(single.n_iter - reference.n_iter) <= 3
    exact = sinkhorn(S, tol=1e-12).P
    np.testing.assert_allclose(single.P, exact, rtol=0, atol=1e-4)
    np.testing.assert_allclose(reference.P, exact, rtol=0, atol=1e-4)
    np.testing.assert_allclose(single.P.sum(axis=1), 1.0, atol=1e-4)
    result = match_graphs(A, B, float32_from=1)
    np.testing.assert_array_equal(result.col_ind, expected.col_ind)
    assert result.objective == expected.objective


def test_float32_kernel_refused_where_it_would_flush_entries():
    """A kernel with entries below exp(-80) once centred is scaled in float64 even from
    float32_from rows (float32 flushed them to zero: apfp's first run on the n = 5000
    power-law pair took 45 outer iterations instead of 9)."""
    from stepsize.matching.projections import _sinkhorn

    S = np.random.default_rng(0).normal(size=(40, 40)) * 60  # entries down to about exp(-400)
    single = _sinkhorn(S.copy(), 1e-3, 100, float32_from=1)
    double = _sinkhorn(S.copy(), 1e-3, 100)
    np.testing.assert_array_equal(single.P, double.P)
    assert single.n_iter == double.n_iter


def test_tight_tolerance_at_large_n_uses_float64():
    """From 1000 rows the kernel is float32 only for tolerances it can meet (found by review:
    tol=1e-9 ran to max_iter at n = 1000 and stopped at a row-sum error of 6e-8)."""
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(1000, 1000))
    result = sinkhorn(np.log(X), tol=1e-9)
    assert result.converged and result.error < 1e-9 and result.n_iter < 20
    assert np.abs(result.P.sum(axis=1) - 1).max() < 1e-9
