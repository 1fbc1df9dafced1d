"""The batched prox against single calls, on mixed stacks, and its input checks."""

from __future__ import annotations

import numpy as np
import pytest

from stepsize.prox import prox_matrix_perspective


def stack(rng, b, p):
    B = rng.standard_normal((b, p, p))
    return (B + B.transpose(0, 2, 1)) / 2, rng.standard_normal((b, p))


@pytest.mark.parametrize("p", [1, 5, 10])
def test_matches_single_calls(p):
    rng = np.random.default_rng(p)
    X, y = stack(rng, 60, p)
    sigma = 10 ** rng.uniform(-1, 1, 60)
    result = prox_matrix_perspective(X, y, sigma)
    Omega, eta = result.x
    assert Omega.shape == (60, p, p) and eta.shape == (60, p)
    assert result.converged and result.info["converged"].all()
    assert result.n_iter == result.info["n_iter"].max() <= 10
    assert result.info["single_calls"] == 0 or p == 1  # p = 1: some draws have ratio < 1/16
    for k in range(60):
        single = prox_matrix_perspective(X[k], y[k], sigma[k])
        np.testing.assert_allclose(Omega[k], single.Omega, rtol=0, atol=1e-11)
        np.testing.assert_allclose(eta[k], single.eta, rtol=0, atol=1e-11)
        # the per-problem certificates are the single prox's
        assert result.certificate[k] == pytest.approx(single.certificate, rel=1e-9, abs=1e-12)
        assert result.root[k] == pytest.approx(single.root, rel=1e-9, abs=1e-12)
        assert result.rank[k] == single.rank


def test_mixed_stack_zero_region_and_extreme_ratios():
    rng = np.random.default_rng(7)
    X, y = stack(rng, 8, 4)
    X[1] = -10 * np.eye(4)  # zero region
    y[1] = np.ones(4)
    X[2], y[2] = 1e-30 * X[2], 1e-30 * y[2]  # ratio 1e-30: handed to the single prox
    X[3], y[3] = 1e30 * X[3], 1e30 * y[3]  # ratio 1e30
    y[4] = 0.0  # t* = sigma: (Pi_+(X), 0)
    X[5] = np.diag([0.0, 0.0, 0.323, 1.496])  # zero eigenvalues, tiny y there
    y[5] = [-2.55e-7, 8.98e-8, -0.0764, -1.96]
    result = prox_matrix_perspective(X, y, 0.5)
    Omega, eta = result.x
    assert result.zero_region[1] and not Omega[1].any() and not eta[1].any()
    assert result.zero_region.sum() == 1 and result.info["single_calls"] == 2
    for k in range(8):
        Omega_k, eta_k = prox_matrix_perspective(X[k], y[k], 0.5).x
        size = max(1.0, np.abs(X[k]).max())
        np.testing.assert_allclose(Omega[k], Omega_k, rtol=0, atol=1e-11 * size)
        np.testing.assert_allclose(eta[k], eta_k, rtol=0, atol=1e-11 * size)


def test_scalar_and_vector_sigma_agree_and_symmetrize():
    rng = np.random.default_rng(8)
    X, y = stack(rng, 5, 3)
    a = prox_matrix_perspective(X, y, 0.7).x
    b = prox_matrix_perspective(X, y, np.full(5, 0.7)).x
    np.testing.assert_array_equal(a[0], b[0])
    skew = X + np.triu(np.ones((3, 3)), 1)
    c = prox_matrix_perspective(skew, y, 0.7, symmetrize=True).x
    d = prox_matrix_perspective(0.5 * (skew + skew.transpose(0, 2, 1)), y, 0.7).x
    np.testing.assert_allclose(c[0], d[0], atol=1e-15)


def test_stack_of_matrix_eta_problems():
    rng = np.random.default_rng(10)
    X, _ = stack(rng, 4, 3)
    Y = rng.standard_normal((4, 3, 2))
    sigma = np.array([0.3, 1.0, 3.0, 0.7])
    result = prox_matrix_perspective(X, Y, sigma)
    assert result.Omega.shape == (4, 3, 3) and result.eta.shape == (4, 3, 2)
    assert result.root.shape == (4, 2, 2) and result.certificate.shape == (4,)
    for k in range(4):
        single = prox_matrix_perspective(X[k], Y[k], sigma[k])
        np.testing.assert_array_equal(result.Omega[k], single.Omega)
        np.testing.assert_array_equal(result.eta[k], single.eta)
        assert result.info["n_iter"][k] == single.n_iter


def test_bisection_on_a_stack_is_single_calls():
    rng = np.random.default_rng(9)
    X, y = stack(rng, 3, 4)
    result = prox_matrix_perspective(X, y, 0.6, method="bisection")
    assert result.info["single_calls"] == 3 and result.method == "bisection"
    for k in range(3):
        single = prox_matrix_perspective(X[k], y[k], 0.6, method="bisection")
        np.testing.assert_array_equal(result.Omega[k], single.Omega)
        assert result.info["n_iter"][k] == single.n_iter


@pytest.mark.parametrize(
    ("X", "y", "sigma", "match"),
    [
        (np.zeros((2, 3, 3)), np.zeros((2, 4)), 1.0, r"y must have shape \(2, 3\)"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3)), 1.0, "square"),
        (np.zeros((3, 3)), np.zeros((1, 3)), 1.0, r"3 x k matrix"),
        (np.zeros((2, 3, 3)), np.zeros((2, 4, 2)), 1.0, r"y must have shape \(2, 3\) or"),
        (np.zeros((2, 3, 3)), np.zeros((3, 3)), 1.0, r"y must have shape \(2, 3\)"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), np.ones(3), r"sigma must be a number or"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), np.array([1.0, 0.0]), r"sigma\[1\]"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), -1.0, "sigma"),
        (np.triu(np.ones((2, 3, 3))), np.zeros((2, 3)), 1.0, r"X\[0\] is not"),
        (np.full((1, 2, 2), np.nan), np.zeros((1, 2)), 1.0, "finite"),
        # issue 13's bad input: mismatched stacks and matrix-eta shapes
        (np.zeros((2, 3, 3)), np.zeros(3), 1.0, r"y must have shape \(2, 3\) or \(2, 3, k\)"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3, 2, 1)), 1.0, r"y must have shape \(2, 3\) or"),
        (np.zeros((2, 3, 3)), np.zeros((3, 3, 2)), 1.0, r"got \(3, 3, 2\)"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3, 0)), 1.0, r"y must not be empty"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3, 2)), np.ones(3), r"sigma must be a number or"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3, 2)), np.array([1.0, -1.0]), r"sigma\[1\]"),
        (np.eye(3), np.zeros((4, 2)), 1.0, r"y must be a vector of length 3 or a 3 x k"),
        (np.eye(3), np.zeros((3, 2, 2)), 1.0, r"y must be a vector \(p,\) or a p x k matrix"),
        (np.eye(3), np.full((3, 2), np.nan), 1.0, r"y must be finite"),
        (np.zeros((0, 3, 3)), np.zeros((0, 3)), 1.0, r"X must not be empty"),
    ],
)
def test_bad_input(X, y, sigma, match):
    with pytest.raises(ValueError, match=match):
        prox_matrix_perspective(X, y, sigma)
