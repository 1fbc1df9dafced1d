"""The speed measures of issue 17 (item 5): what they change, in numbers (no timings)."""

from pathlib import Path

import numpy as np
import pytest

from stepsize._results import ConvergenceWarning
from stepsize.matching import METHODS, match_graphs, matching_accuracy, projected_fixed_point
from stepsize.matching.generators import kb_pair, network_pair
from stepsize.matching.projections import _sinkhorn
from stepsize.matching.qaplib import read_qaplib, read_qaplib_solutions
from stepsize.matching.solver import _swap_gains, _two_opt

DATA = Path(__file__).parent / "data"


def test_apfp_sinkhorn_tolerance_follows_the_outer_change():
    """inner_tol_factor=100 (apfp): the same matching with fewer Sinkhorn iterations."""
    A, B, truth = network_pair(300, rewire=0.05, seed=0)
    fixed = match_graphs(A, B, inner_tol_factor=1)
    loose = match_graphs(A, B)
    # Measured: accuracy 1.0 and Z = 1124 both, 373 Sinkhorn iterations in 9 outer ones
    # instead of 700 in 7; the first projection stops at the row error 0.1 after 68 iterations
    # (fixed: the cap, 100), and the last ones run at the final tolerance 1e-3 (the run only
    # converges after a step at that tolerance).
    assert loose.objective == fixed.objective == 1124.0
    assert matching_accuracy(loose.col_ind, truth) == matching_accuracy(fixed.col_ind, truth) == 1
    assert sum(loose.info["inner_iterations"]) <= 0.6 * sum(fixed.info["inner_iterations"])
    assert fixed.info["inner_iterations"][0] == 100 > loose.info["inner_iterations"][0]
    A, B, truth = kb_pair(200, density=1.0, noise=0.1, seed=0)
    dense = match_graphs(A, B)
    assert dense.objective == pytest.approx(match_graphs(A, B, inner_tol_factor=1).objective,
                                            rel=1e-12)  # measured 6632.7846 both
    assert matching_accuracy(dense.col_ind, truth) == 1.0
    # The plain iteration and asm keep a fixed tolerance.
    assert METHODS["asm"].inner_tol_factor == 1.0
    with pytest.warns(ConvergenceWarning, match="did not converge in 3 iterations"):
        plain = projected_fixed_point(A, B, max_iter=3)
        same = projected_fixed_point(A, B, max_iter=3, inner_tol_factor=1.0)
    assert plain.info["inner_iterations"] == same.info["inner_iterations"]


def test_polish_stops_after_five_steps_without_a_better_discrete_iterate():
    instance = read_qaplib(DATA / "nug12.dat")
    best = read_qaplib_solutions(DATA / "solutions.csv")["nug12"]
    result = match_graphs(instance.A, instance.B, maximize=False, two_opt=False)
    polish = result.info["polish"]
    # Measured: 6 of the 30 allowed IPFP steps (one better iterate, then 5 without), kept;
    # 808 = best known 578 + 39.8% (594 after 23 polish steps from the near-barycenter iterate
    # where a zero step after a loose projection used to stop the run).
    assert polish["kept"] and polish["n_iter"] == 6
    assert result.objective == 808.0 and best == 578.0
    # apfp's default polishes once (the 2-opt search follows): 1 IPFP step, then 3 exchanges,
    # 802 -> 618 (gap 6.9%); the internal (normalized, halved, negated) gain is 1.84.
    default = match_graphs(instance.A, instance.B, maximize=False)
    assert default.info["polish"]["n_iter"] == 1
    assert default.info["two_opt"]["swaps"] == 3 and default.objective == 618.0
    assert default.info["two_opt"]["gain"] == pytest.approx(1.84, rel=1e-12)
    # Where the polish runs, apfp does not restart the soft first run (polish=0 does, when the
    # 2-opt search does not follow either).
    assert "restart" not in result.info
    assert "restart" in match_graphs(instance.A, instance.B, maximize=False, polish=0,
                                     two_opt=False, stall_restarts=0).info
    assert "restart" not in match_graphs(instance.A, instance.B, maximize=False, polish=0).info


@pytest.mark.parametrize("symmetric", [True, False])
def test_swap_gains_equal_the_objective_change_of_every_exchange(symmetric):
    rng = np.random.default_rng(3)
    n = 9
    A, B, L = rng.normal(size=(3, n, n))
    if symmetric:
        A, B = A + A.T, B + B.T
    perm = rng.permutation(n)

    def value(p):  # Z(p) = 1/2 sum_ij A_ij B_p(i)p(j) + sum_i L_i,p(i), diagonals included
        return 0.5 * np.sum(A * B[np.ix_(p, p)]) + L[np.arange(n), p].sum()

    a, C = np.diagonal(A), B[np.ix_(perm, perm)]
    gains = _swap_gains(A @ C.T + A.T @ C, C, A + A.T - a[:, None] - a, L[:, perm])
    for r in range(n):
        for s in range(n):
            swapped = perm.copy()
            swapped[[r, s]] = swapped[[s, r]]
            assert gains[r, s] == pytest.approx(value(swapped) - value(perm), abs=1e-10)
    local, swaps, gain = _two_opt(A, B, L, perm)
    assert swaps > 0 and gain == pytest.approx(value(local) - value(perm), rel=1e-12)
    # A local maximum: no exchange gains (brute force over all pairs).
    for r in range(n):
        for s in range(r + 1, n):
            swapped = local.copy()
            swapped[[r, s]] = swapped[[s, r]]
            assert value(swapped) <= value(local) + 1e-10
    assert _two_opt(A, B, L, local)[1] == 0


def test_two_opt_is_an_option_and_never_lowers_the_objective():
    rng = np.random.default_rng(0)
    for seed in range(5):
        F, D = rng.uniform(size=(2, 15, 15))  # directed QAPs with diagonals
        # The same run and polish (1 IPFP step before the exchanges), with and without them.
        off = match_graphs(F, D, maximize=False, seed=seed, two_opt=False, polish=1)
        on = match_graphs(F, D, maximize=False, seed=seed)
        assert on.objective <= off.objective  # measured: 1-2 swaps on 4 of 5, up to -2%
        assert on.objective == pytest.approx(np.sum(F * D[np.ix_(on.col_ind, on.col_ind)]))
    with pytest.raises(TypeError, match="two_opt"):
        match_graphs(F, D, two_opt=1)
    assert METHODS["apfp"].two_opt and METHODS["asm"].two_opt and not METHODS["ipfp"].two_opt


def test_float64_sinkhorn_tests_its_error_every_fourth_iteration():
    rng = np.random.default_rng(5)
    S = rng.normal(size=(30, 30)) * 4
    out = _sinkhorn(S.copy(), 1e-8, 1000)
    # Tested after iterations 1, 2 and then 4, 8, ...: the count stops on one of those.
    assert out.converged and out.error < 1e-8 and (out.n_iter <= 2 or out.n_iter % 4 == 0)
    np.testing.assert_allclose(out.P.sum(axis=1), 1.0, atol=1e-8)
    np.testing.assert_allclose(out.P.sum(axis=0), 1.0, atol=1e-12)
    # Absorption still keeps huge scores finite between the tests (beta X up to 1e16).
    huge = _sinkhorn(S * 1e15, 1e-6, 200)
    assert np.all(np.isfinite(huge.P))
    np.testing.assert_allclose(huge.P.sum(axis=0), 1.0, atol=1e-12)


def test_new_options_are_validated():
    A = np.ones((4, 4)) - np.eye(4)
    for name, value in (("inner_tol_factor", 0.5), ("stall_restarts", -1), ("float32_from", 0),
                        ("memory_limit", -1.0)):
        with pytest.raises(ValueError, match=name):
            match_graphs(A, A, **{name: value})


def test_a_softassign_run_stops_when_its_objective_stagnates():
    from dataclasses import replace

    from stepsize.matching.solver import _settings_of, _stagnant

    settings, _ = _settings_of(METHODS["apfp"], 20)
    rising = [0.0, 100.0, 100.2, 100.4, 100.6]
    # Window 4 (up to 100 nodes; 5 above), share 1%: Z_4 - Z_0 = 100.6 rose by more than 1% of
    # itself...
    assert not _stagnant(rising, settings)
    # ... one step later Z_5 - Z_1 = 0.7 <= 1% of 100.7: stagnant.
    assert _stagnant([*rising, 100.7], settings)
    assert not _stagnant([*rising, 102.0], settings)  # 2.0 > 1.02
    larger, _ = _settings_of(METHODS["apfp"], 101)
    assert (settings.window, larger.window) == (4, 5)
    assert not _stagnant([*rising, 100.7], larger)  # Z_5 - Z_0 = 100.7: not yet
    assert _stagnant([*rising, 100.7, 100.8], larger)  # Z_6 - Z_1 = 0.8 <= 1.008
    # The adaptive softassign (epsilon set: asm, apfp's restart): 3% in 3 iterations.
    adaptive = replace(settings, epsilon=1.0)
    assert _stagnant([0.0, 100.0, 101.0, 102.0, 103.0], adaptive)  # 3.0 <= 3.09
    assert not _stagnant([0.0, 100.0, 101.0, 102.0, 104.0], adaptive)  # 4.0 > 3.12
    # Not for the Hungarian projection (the polish) or a fixed step.
    assert not _stagnant([*rising, 100.7], replace(settings, projection="hungarian"))
    assert not _stagnant([*rising, 100.7], _settings_of(METHODS["ga"], 20)[0])


@pytest.mark.parametrize("shape", [(5, 5), (6, 3), (7, 4)])
def test_narrowed_direction_round_trips_through_its_own_memory(shape):
    """The float32 direction of the sparse products lives in the first half of the float64
    array and is written back: exactly the float32 rounding, in the same memory."""
    from stepsize.matching.solver import _blocked_vdot, _narrowed, _widened

    X = np.random.default_rng(shape[0]).normal(size=shape)
    Y = X.copy()
    narrow = _narrowed(Y)
    assert narrow.dtype == np.float32 and np.shares_memory(narrow, Y)
    np.testing.assert_array_equal(narrow, X.astype(np.float32))
    _widened(narrow, Y)
    np.testing.assert_array_equal(Y, X.astype(np.float32).astype(np.float64))
    single = X[::-1].astype(np.float32)
    assert _blocked_vdot(X, single) == pytest.approx(float(np.vdot(X, single.astype(float))),
                                                     rel=1e-13)


@pytest.mark.parametrize("directed", [False, True])
def test_float32_sparse_products_agree_with_float64(monkeypatch, directed):
    """From float32_from nodes (1000 by default) a sparse pair's products A Delta B run in
    float32 (a float32 curvature): the same matching as float64 at small n with the threshold
    lowered (measured: relaxed objectives 295.268355 vs 295.268273, 599.9999999999822 vs
    600.0000002257111; the same iterations)."""
    import scipy.sparse as sp

    from stepsize.matching import solver

    if directed:
        rng = np.random.default_rng(0)
        n = 200
        B = sp.csr_array(sp.random_array((n, n), density=0.03, rng=rng,
                                         data_sampler=lambda size: np.ones(size)))
        truth = rng.permutation(n)
        A = sp.csr_array(B[truth][:, truth])
    else:
        A, B, truth = kb_pair(300, density=0.02, noise=0.05, sparse=True, seed=0)
    calls = []
    narrowed = solver._narrowed
    monkeypatch.setattr(solver, "_narrowed", lambda m: calls.append(m.shape) or narrowed(m))
    double = match_graphs(A, B, seed=0)
    assert not calls  # below float32_from
    single = match_graphs(A, B, seed=0, float32_from=1)
    assert single.info["sparse"] and len(calls) >= single.n_iter - 1 > 0
    assert matching_accuracy(single.col_ind, truth) == matching_accuracy(double.col_ind, truth)
    assert matching_accuracy(single.col_ind, truth) == 1.0
    np.testing.assert_array_equal(single.col_ind, double.col_ind)
    assert single.objective == double.objective and single.n_iter == double.n_iter
    assert single.info["relaxed_objective"] == pytest.approx(double.info["relaxed_objective"],
                                                             rel=1e-6)


def test_inexact_projections_stop_after_30_scalings_unless_inner_max_iter_is_given():
    from stepsize.matching.solver import _settings_of

    # inner_max_iter=None: 30 where apfp's projections are inexact up to 100 nodes, else 100
    # (from 150 nodes the cap cost power-law pairs outer iterations; at 500 one failed).
    assert _settings_of(METHODS["apfp"], 100)[0].inner_max_iter == 30
    assert _settings_of(METHODS["apfp"], 101)[0].inner_max_iter == 100
    assert _settings_of(METHODS["apfp"], 1000)[0].inner_max_iter == 100
    assert _settings_of(METHODS["asm"], 50)[0].inner_max_iter == 100  # a fixed tolerance
    assert _settings_of(METHODS["apfp"].replaced(inner_max_iter=100), 50)[0].inner_max_iter == 100
    # A power-law pair (hubs): projections needing 100 scalings stop at 30, and the planted
    # matching is found either way (measured: 143 scalings in all instead of 289). With
    # stagnation=False: by default the settled rounding ends both runs after 4 iterations and
    # 52 scalings, before a projection reaches the cap.
    A, B, truth = network_pair(50, rewire=0.05, seed=0)
    capped = match_graphs(A, B, seed=0, stagnation=False)
    full = match_graphs(A, B, seed=0, inner_max_iter=100, stagnation=False)
    assert max(capped.info["inner_iterations"]) == 30 and max(full.info["inner_iterations"]) == 100
    assert sum(capped.info["inner_iterations"]) < sum(full.info["inner_iterations"])
    assert matching_accuracy(capped.col_ind, truth) == matching_accuracy(full.col_ind, truth) == 1
