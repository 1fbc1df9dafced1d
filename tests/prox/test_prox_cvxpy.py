"""The prox against CVXPY's SDP (Clarabel), and the Gaussian MLE against CVXPY and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from stepsize.prox import (
    constrained_gaussian_mle,
    gaussian_mle_objective,
    kkt_residuals,
    matrix_perspective,
    prox_matrix_perspective,
    sample_moments,
)

cp = pytest.importorskip("cvxpy")
from stepsize._reference.cvxpy_prox import (  # noqa: E402
    cvxpy_gaussian_mle,
    cvxpy_prox,
    cvxpy_prox_matrix_eta,
)


def prox_objective(X, y, sigma, Omega, eta):
    return (
        sigma * matrix_perspective(Omega, eta)
        + 0.5 * np.sum((Omega - X) ** 2)
        + 0.5 * np.sum((eta - y) ** 2)
    )


@pytest.mark.parametrize(("p", "sigma"), [(3, 0.5), (8, 2.0)])
def test_prox_matches_cvxpy(p, sigma):
    rng = np.random.default_rng(p)
    B = rng.standard_normal((p, p))
    X, y = (B + B.T) / 2, rng.standard_normal(p)
    Omega, eta = prox_matrix_perspective(X, y, sigma).x
    Omega_cvx, eta_cvx, value_cvx = cvxpy_prox(X, y, sigma)
    ours = prox_objective(X, y, sigma, Omega, eta)
    assert abs(ours - value_cvx) <= 1e-7 * max(1.0, abs(value_cvx))
    assert ours <= value_cvx + 1e-9 * max(1.0, abs(value_cvx))
    # the interior-point solution is the less accurate one (research note, pitfall 6)
    assert np.linalg.norm(Omega - Omega_cvx) <= 1e-4 * max(1.0, np.linalg.norm(Omega_cvx))
    assert np.linalg.norm(eta - eta_cvx) <= 1e-4 * max(1.0, np.linalg.norm(eta_cvx))
    assert kkt_residuals(X, y, sigma, Omega, eta).max <= 1e-10


def matrix_eta_objective(X, Y, sigma, Omega, H):
    value = 0.5 * np.trace(H.T @ np.linalg.pinv(Omega, rcond=1e-12, hermitian=True) @ H)
    return sigma * value + 0.5 * np.sum((Omega - X) ** 2) + 0.5 * np.sum((H - Y) ** 2)


@pytest.mark.parametrize(("p", "k", "sigma"), [(3, 2, 0.5), (5, 3, 1.0), (4, 4, 0.2)])
def test_matrix_eta_matches_cvxpy_matrix_frac(p, k, sigma):
    rng = np.random.default_rng(10 * p + k)
    B = rng.standard_normal((p, p))
    X, Y = (B + B.T) / 2, rng.standard_normal((p, k))
    result = prox_matrix_perspective(X, Y, sigma)
    Omega, H = result.x
    assert result.converged and H.shape == (p, k)
    Omega_cvx, H_cvx, value_cvx = cvxpy_prox_matrix_eta(X, Y, sigma)
    ours = matrix_eta_objective(X, Y, sigma, Omega, H)
    # at a rank-deficient optimum Clarabel's reported value undershoots the objective at its own
    # point by up to 2e-6 (relative): ours is compared with both
    theirs = matrix_eta_objective(X, Y, sigma, Omega_cvx, H_cvx)
    assert ours <= theirs + 1e-9 * max(1.0, abs(theirs))
    assert abs(ours - value_cvx) <= 1e-5 * max(1.0, abs(value_cvx))
    assert np.linalg.norm(Omega - Omega_cvx) <= 1e-4 * max(1.0, np.linalg.norm(Omega_cvx))
    assert np.linalg.norm(H - H_cvx) <= 1e-4 * max(1.0, np.linalg.norm(H_cvx))
    # the certificate k sigma - tr T* is phi(Omega*, H*)
    phi = 0.5 * np.trace(H.T @ np.linalg.pinv(Omega, rcond=1e-12, hermitian=True) @ H)
    assert result.certificate == pytest.approx(phi, rel=1e-9)


def test_mle_unconstrained_matches_closed_form():
    rng = np.random.default_rng(0)
    mixing = np.eye(5) + 0.3 * rng.standard_normal((5, 5))
    data = rng.standard_normal((60, 5)) @ mixing + 1.5
    result = constrained_gaussian_mle(data, tol=1e-8)
    covariance = np.cov(data.T, bias=True)
    assert result.converged
    np.testing.assert_allclose(result.covariance, covariance, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.mean, data.mean(axis=0), rtol=0, atol=1e-6)
    second, mean = sample_moments(data)
    Omega = np.linalg.inv(covariance)
    best = gaussian_mle_objective(Omega, Omega @ mean, second, mean)
    assert result.objective == pytest.approx(best, rel=1e-10)


def test_mle_with_caps_matches_cvxpy_on_diabetes():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_diabetes().data
    data = (data - data.mean(axis=0)) / data.std(axis=0)
    caps = np.eye(10)[:4] / np.sqrt(0.8)  # variance of the first 4 features capped at 0.8
    result = constrained_gaussian_mle(data, caps)
    second, mean = sample_moments(data)
    Omega_cvx, eta_cvx, value_cvx = cvxpy_gaussian_mle(second, mean, caps)
    assert result.converged and result.constraint_violation <= 1e-6
    assert abs(result.objective - value_cvx) <= 1e-6 * abs(value_cvx)
    Omega = result.x[0]
    assert np.linalg.norm(Omega - Omega_cvx) <= 1e-3 * np.linalg.norm(Omega_cvx)
    # the caps bind: the capped variances sit at 0.8 instead of the sample value 1
    np.testing.assert_allclose(np.diag(result.covariance)[:4], 0.8, atol=1e-5)


def test_mle_with_caps_matches_cvxpy_synthetic():
    rng = np.random.default_rng(1)
    p = 8
    Sigma = 0.3 * np.ones((p, p)) + 0.7 * np.eye(p)
    data = rng.multivariate_normal(np.full(p, 0.5), Sigma, size=2 * p)
    caps = np.eye(p)[:3]
    result = constrained_gaussian_mle(data, caps)
    second, mean = sample_moments(data)
    _, _, value_cvx = cvxpy_gaussian_mle(second, mean, caps)
    assert result.converged and result.constraint_violation <= 1e-6
    assert abs(result.objective - value_cvx) <= 1e-6 * abs(value_cvx)


def test_mle_bad_input():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="nonsingular"):
        constrained_gaussian_mle(rng.standard_normal((3, 5)))
    with pytest.raises(ValueError, match="caps"):
        constrained_gaussian_mle(rng.standard_normal((30, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="samples"):
        constrained_gaussian_mle(np.ones(5))
    with pytest.raises(ValueError, match="primal_step"):
        constrained_gaussian_mle(rng.standard_normal((30, 3)), primal_step=-1.0)
    assert gaussian_mle_objective(-np.eye(2), np.zeros(2), np.eye(2), np.zeros(2)) == np.inf
