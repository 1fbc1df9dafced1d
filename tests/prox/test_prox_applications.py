"""The matrix scaled lasso and pseudolikelihood graph selection: CVXPY (Clarabel), closed forms,
homogeneity, and the p = 1 perspective prox they use."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stepsize.prox.perspective import _prox
from stepsize.prox.pseudolikelihood import (
    _scalar_perspective_prox,
    pseudolikelihood_graph,
    pseudolikelihood_objective,
)
from stepsize.prox.regression import matrix_scaled_lasso, matrix_scaled_lasso_objective


def regression(seed, n, d, k):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    coef = np.zeros((d, k))
    coef[:2] = rng.standard_normal((2, k))
    noise = np.linalg.cholesky(0.5 * np.ones((k, k)) + 0.5 * np.eye(k))
    return X, X @ coef + rng.standard_normal((n, k)) @ noise.T


def chain_data(seed, p, n):
    rng = np.random.default_rng(seed)
    chain = np.eye(p) + 0.4 * (np.eye(p, k=1) + np.eye(p, k=-1))
    return rng.multivariate_normal(np.zeros(p), np.linalg.inv(chain), size=n)


def test_scaled_lasso_matches_cvxpy_perspective_form():
    pytest.importorskip("cvxpy")
    from stepsize._reference.cvxpy_prox import cvxpy_matrix_scaled_lasso

    X, Y = regression(0, 24, 6, 3)
    lam = 0.15
    result = matrix_scaled_lasso(X, Y, lam)
    coef_cvx, Omega_cvx, value_cvx = cvxpy_matrix_scaled_lasso(X, Y, lam)
    assert result.converged and result.duality_gap <= 1e-8 * result.objective
    assert result.objective == pytest.approx(value_cvx, rel=1e-7)
    assert result.objective <= value_cvx + 1e-10
    np.testing.assert_allclose(result.coef, coef_cvx, atol=1e-3)
    np.testing.assert_allclose(result.noise_scale, Omega_cvx, atol=1e-3)
    joint = matrix_scaled_lasso_objective(result.coef, result.noise_scale, X, Y, lam)
    assert joint == pytest.approx(result.objective, rel=1e-10)


def test_one_response_is_the_scaled_lasso():
    """k = 1: Sun and Zhang's ``|r|^2/(2 n s) + s/2 + lam |b|_1`` with ``s = |r| / sqrt(n)``."""
    cp = pytest.importorskip("cvxpy")
    X, Y = regression(1, 30, 8, 1)
    y, lam = Y[:, 0], 0.1
    result = matrix_scaled_lasso(X, y, lam)
    b, s = cp.Variable(8), cp.Variable()
    objective = cp.quad_over_lin(y - X @ b, s) / (2 * 30) + s / 2 + lam * cp.norm1(b)
    value = cp.Problem(cp.Minimize(objective)).solve(solver=cp.CLARABEL)
    assert result.objective == pytest.approx(value, rel=1e-7)
    residual = np.linalg.norm(y - X @ result.coef[:, 0])
    assert result.noise_scale[0, 0] == pytest.approx(residual / math.sqrt(30), rel=1e-12)
    np.testing.assert_allclose(result.coef[:, 0], b.value, atol=1e-4)


def test_scaled_lasso_zero_threshold_and_homogeneity():
    """``B = 0`` exactly when ``lam >= ||X^T polar(Y)||_max / sqrt(n)`` (the dual certificate of
    ``B = 0``); ``B`` scales with the responses at a fixed ``lam`` (no noise level in it)."""
    X, Y = regression(2, 40, 5, 2)
    left, _, right = np.linalg.svd(Y, full_matrices=False)
    threshold = float(np.max(np.abs(X.T @ (left @ right)))) / math.sqrt(40)
    assert np.all(matrix_scaled_lasso(X, Y, 1.01 * threshold).coef == 0)
    assert np.any(matrix_scaled_lasso(X, Y, 0.95 * threshold).coef != 0)
    base = matrix_scaled_lasso(X, Y, 0.1, tol=1e-10)
    scaled = matrix_scaled_lasso(X, 1e3 * Y, 0.1, tol=1e-10)
    np.testing.assert_allclose(scaled.coef / 1e3, base.coef, atol=1e-6)
    np.testing.assert_allclose(scaled.noise_scale / 1e3, base.noise_scale, rtol=1e-6)


def test_scaled_lasso_bad_input():
    X, Y = regression(3, 10, 3, 2)
    with pytest.raises(ValueError, match="Y"):
        matrix_scaled_lasso(X, Y[:5], 0.1)
    with pytest.raises(ValueError, match="lam"):
        matrix_scaled_lasso(X, Y, -1.0)
    with pytest.raises(ValueError, match="max_iter"):
        matrix_scaled_lasso(X, Y, 0.1, max_iter=0)
    with pytest.raises(ValueError, match="coef"):
        matrix_scaled_lasso_objective(np.zeros((2, 2)), np.eye(2), X, Y, 0.1)
    assert matrix_scaled_lasso_objective(np.zeros((3, 2)), -np.eye(2), X, Y, 0.1) == math.inf


def test_scalar_perspective_prox_is_the_p1_matrix_prox():
    """Along each column, the prox of ``|v|^2 / (2 a)`` is Won's prox at p = 1 of ``(a, |v|)``,
    zero region and ``v = 0`` included."""
    rng = np.random.default_rng(4)
    a = np.concatenate([3 * rng.standard_normal(60), [-1.0, 2.0, -3.0, 0.0]])
    V = rng.standard_normal((4, 64)) * rng.exponential(1.0, 64)
    V[:, -3] = 0.0  # a = 2, v = 0: (2, 0)
    V[:, -2] = [0.1, 0.0, 0.0, 0.0]  # a = -3: deep in the zero region
    for sigma in (0.5, 2.0):
        w, U = _scalar_perspective_prox(a, V, sigma)
        for i in range(64):
            norm = np.linalg.norm(V[:, i])
            Omega, eta, _ = _prox(np.array([[a[i]]]), np.array([norm]), sigma, "newton", 1e-14, 50)
            assert w[i] == pytest.approx(Omega[0, 0], abs=1e-12 * max(1.0, abs(a[i])))
            assert np.linalg.norm(U[:, i]) == pytest.approx(eta[0], abs=1e-12 * max(1.0, norm))
            assert float(U[:, i] @ V[:, i]) >= 0.0  # along v
    assert w[-3] == 2.0 and np.all(U[:, -3] == 0) and w[-2] == 0.0


@pytest.mark.parametrize("method", ["reduced", "pdhg"])
def test_pseudolikelihood_matches_cvxpy(method):
    pytest.importorskip("cvxpy")
    from stepsize._reference.cvxpy_prox import cvxpy_pseudolikelihood

    data = 3.0 * chain_data(5, 6, 18) + 10.0
    lam = 0.1
    result = pseudolikelihood_graph(data, lam, method=method)
    Omega_cvx, value_cvx = cvxpy_pseudolikelihood(data, lam)
    assert result.converged
    if method == "reduced":
        assert result.info["kkt_residual"] <= 1e-8
    assert result.objective == pytest.approx(value_cvx, rel=1e-7)
    assert result.objective <= value_cvx + 1e-10
    np.testing.assert_allclose(result.precision, Omega_cvx, atol=1e-3)
    centred = data - data.mean(axis=0)
    direct = pseudolikelihood_objective(result.precision, centred.T @ centred / 18, lam)
    assert direct == pytest.approx(result.objective, rel=1e-12)
    # the history is in the user's units (the data's scale undone): it ends at the objective
    assert result.history[-1] == pytest.approx(result.objective, rel=1e-4)


def test_pseudolikelihood_on_diabetes_features_matches_cvxpy():
    """The correlated diabetes features (condition number of S about 470; PDHG needed 2 s):
    the reduced method's objective at or below Clarabel's, its KKT residual at rounding."""
    pytest.importorskip("cvxpy")
    datasets = pytest.importorskip("sklearn.datasets")
    from stepsize._reference.cvxpy_prox import cvxpy_pseudolikelihood

    data = datasets.load_diabetes().data
    data = data / data.std(axis=0)
    lam = 0.3 * math.sqrt(math.log(10) / data.shape[0])
    result = pseudolikelihood_graph(data, lam, tol=1e-12)
    Omega_cvx, value_cvx = cvxpy_pseudolikelihood(data, lam)
    assert result.converged and result.info["kkt_residual"] <= 1e-12
    assert result.objective == pytest.approx(value_cvx, rel=1e-7)
    assert result.objective <= value_cvx + 1e-12
    np.testing.assert_allclose(result.precision, Omega_cvx, atol=1e-4 * np.abs(Omega_cvx).max())


def test_pseudolikelihood_on_an_ill_conditioned_instance():
    """A random instance (p = 7, n = 23, condition number of S 1.5e4) on which L-BFGS-B alone
    took 1688 iterations: rounds of L-BFGS-B and Newton take about 35, at Clarabel's
    objective."""
    pytest.importorskip("cvxpy")
    from stepsize._reference.cvxpy_prox import cvxpy_pseudolikelihood

    rng = np.random.default_rng(3)
    for trial in range(49):  # the 49th draw of this generator
        p = int(rng.integers(2, 9))
        n = int(rng.integers(p + 1, 5 * p))
        data = (rng.standard_normal((n, p)) @ rng.standard_normal((p, p))
                * 10.0 ** rng.uniform(-3, 3) + rng.normal(0, 5, p))
        lam = 10.0 ** rng.uniform(-3, 0.5) * np.trace(np.cov(data.T)) / p if trial % 10 else 0.0
    result = pseudolikelihood_graph(data, lam)
    _, value_cvx = cvxpy_pseudolikelihood(data, lam)
    assert result.converged and result.n_iter <= 60
    assert result.objective == pytest.approx(value_cvx, rel=1e-7)
    assert result.objective <= value_cvx + 1e-9 * abs(value_cvx)


def test_reduced_pseudolikelihood_derivatives():
    """The diagonal eliminated in closed form: ``phi``'s gradient and Hessian against central
    differences, and ``d`` the minimizer of the node terms at fixed off-diagonal entries."""
    from stepsize.prox.pseudolikelihood import _objective, _reduced_hessian, _reduced_value

    rng = np.random.default_rng(9)
    p = 5
    A = rng.standard_normal((20, p))
    S = A.T @ A / 20
    upper = np.triu_indices(p, 1)
    x = 0.3 * rng.standard_normal(upper[0].size)
    state = _reduced_value(x, S, upper, 0.0)
    hessian = _reduced_hessian(S, state, *upper)
    step = 1e-6
    for k in range(x.size):
        e = np.zeros(x.size)
        e[k] = step
        up, down = _reduced_value(x + e, S, upper, 0.0), _reduced_value(x - e, S, upper, 0.0)
        assert (up["value"] - down["value"]) / (2 * step) == pytest.approx(
            state["gradient"][k], abs=1e-7)
        np.testing.assert_allclose(hessian[:, k], (up["gradient"] - down["gradient"]) / (2 * step),
                                   atol=1e-7)
    Omega = np.zeros((p, p))
    Omega[upper] = x
    Omega = Omega + Omega.T + np.diag(state["d"])
    assert _objective(Omega, S, 0.0) == pytest.approx(state["value"], rel=1e-13)
    for i in range(p):  # moving one diagonal entry either way raises the objective
        for change in (-1e-4, 1e-4):
            moved = Omega.copy()
            moved[i, i] += change
            assert _objective(moved, S, 0.0) > state["value"]


def test_pseudolikelihood_without_penalty_is_the_inverse_covariance():
    """Node-wise least squares are the conditionals of ``S^{-1}``, which is symmetric: the
    unpenalized optimum is ``Omega = S^{-1}``."""
    data = chain_data(6, 5, 40)
    inverse = np.linalg.inv(np.cov(data.T, bias=True))
    result = pseudolikelihood_graph(data, 0.0, tol=1e-10, method="pdhg")
    np.testing.assert_allclose(result.precision, inverse, rtol=1e-6, atol=1e-7)
    result = pseudolikelihood_graph(data, 0.0)
    np.testing.assert_allclose(result.precision, inverse, rtol=1e-12, atol=1e-13)
    single = pseudolikelihood_graph(data[:, :1], 0.3)  # one node: 1 / variance, no edges
    assert single.precision[0, 0] == pytest.approx(1 / data[:, 0].var(), rel=1e-14)
    assert single.converged and single.edges == []


def test_pseudolikelihood_recovers_a_chain_and_bad_input():
    result = pseudolikelihood_graph(chain_data(7, 6, 600), 0.3)
    assert result.edges == [(i, i + 1) for i in range(5)]
    with pytest.raises(ValueError, match="constant"):
        pseudolikelihood_graph(np.ones((10, 3)), 0.1)
    with pytest.raises(ValueError, match="lam"):
        pseudolikelihood_graph(chain_data(8, 3, 10), -0.1)
    with pytest.raises(ValueError, match="method"):
        pseudolikelihood_graph(chain_data(8, 3, 10), 0.1, method="admm")
    with pytest.raises(ValueError, match="samples"):
        pseudolikelihood_graph(np.ones(5), 0.1)
    assert pseudolikelihood_objective(-np.eye(2), np.eye(2), 0.1) == math.inf


def test_benchmark_runs_and_agrees_with_cvxpy():
    """``stepsize bench prox_applications`` on tiny synthetic sizes: every application against
    Clarabel, objective gaps within Clarabel's accuracy."""
    pytest.importorskip("cvxpy")
    pytest.importorskip("sklearn")
    from stepsize._registry import BENCHMARKS

    entry = BENCHMARKS.get("prox_applications")
    tiny = {**entry.quick, "mle_sizes": [6], "mle_shifts": [30.0], "ridge_sizes": [],
            "lasso_sizes": [(12, 4, 2)], "graph_sizes": [4], "ours_repeats": 1,
            "pdhg_max_size": 0, "real_data": False, "scs_lasso_max_n": 0,
            "scs_graph_max_size": 0, "pyproximal_iterations": [400]}
    result = entry.run(tiny, 0)
    problems = [record["problem"] for record in result["records"]]
    assert problems == ["MLE, mean 30x spread", "scaled lasso d = 4, k = 2",
                        "pseudolikelihood, chain, n = 12"]
    assert result["records"][0]["goal"] in ("met", "MISSED", "Clarabel failed",
                                            "met (vs centred)", "MISSED (vs centred)")
    assert result["goal_met"]["rows"] == 1 and "goal" not in result["records"][1]
    # Clarabel on the centred data: the same optimal value as ours
    centred = result["records"][0]["peers"]["CLARABEL, centred data"]
    assert -1e-9 <= centred["gap"] <= 1e-6
    # PyProximal's solvers with MatrixPerspective: on the MLE (PrimalDual, LinearizedADMM,
    # 400 iterations) within 1e-8 of Clarabel (tolerances 1e-12) and of the certified dual
    # Newton, caps met; on the least squares (150 iterations) within 1e-8 of Clarabel
    rows = result["pyproximal"]["rows"]
    assert [row[1].split()[0] for row in rows] == [
        "PrimalDual", "LinearizedADMM", "ProximalGradient", "AcceleratedProximalGradient",
        "ADMM", "PrimalDual"]
    for row in rows[:2]:
        assert abs(row[4]) <= 1e-8 and abs(row[5]) <= 1e-8 and row[6] <= 1e-8
    for row in rows[2:]:
        assert abs(row[4]) <= 1e-8
    # solver_steps re-solves the same instances (the same draws) without the peers
    from stepsize.benchmarks.prox_applications import solver_steps

    steps = solver_steps(tiny, 0)
    assert [(s["problem"], s["size"]) for s in steps] == [
        (r["problem"], r["size"]) for r in result["records"]]
    for step, record in zip(steps, result["records"]):
        assert step["objective"] == pytest.approx(record["objective"], rel=1e-13)
    assert steps[0]["iterations"] <= 10 and abs(steps[0]["certificate"]) <= 1e-8
    for record in result["records"]:
        clarabel = record["peers"]["CLARABEL"]
        if "failed" in clarabel:  # Clarabel fails on some shifted data; ours must not
            assert record["problem"].startswith("MLE, mean")
            continue
        assert -1e-9 <= clarabel["gap"] <= 1e-6 and clarabel["ratio"] > 0
