"""The batched prox against single calls, on mixed stacks, and its input checks."""

from __future__ import annotations

import numpy as np
import pytest

from stepsize.prox import prox_matrix_perspective, prox_matrix_perspective_batch


def stack(rng, b, p):
    B = rng.standard_normal((b, p, p))
    return (B + B.transpose(0, 2, 1)) / 2, rng.standard_normal((b, p))


@pytest.mark.parametrize("p", [1, 5, 10])
def test_matches_single_calls(p):
    rng = np.random.default_rng(p)
    X, y = stack(rng, 60, p)
    sigma = 10 ** rng.uniform(-1, 1, 60)
    Omega, eta, info = prox_matrix_perspective_batch(X, y, sigma, return_info=True)
    assert info.iterations.max() <= 10
    assert info.single_calls == 0 or p == 1  # p = 1: some draws have ratio < 1/16
    for k in range(60):
        Omega_k, eta_k = prox_matrix_perspective(X[k], y[k], sigma[k])
        np.testing.assert_allclose(Omega[k], Omega_k, rtol=0, atol=1e-11)
        np.testing.assert_allclose(eta[k], eta_k, rtol=0, atol=1e-11)


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
    Omega, eta, info = prox_matrix_perspective_batch(X, y, 0.5, return_info=True)
    assert info.zero_region[1] and not Omega[1].any() and not eta[1].any()
    assert info.single_calls == 2
    for k in range(8):
        Omega_k, eta_k = prox_matrix_perspective(X[k], y[k], 0.5)
        size = max(1.0, np.abs(X[k]).max())
        np.testing.assert_allclose(Omega[k], Omega_k, rtol=0, atol=1e-11 * size)
        np.testing.assert_allclose(eta[k], eta_k, rtol=0, atol=1e-11 * size)


def test_scalar_and_vector_sigma_agree_and_symmetrize():
    rng = np.random.default_rng(8)
    X, y = stack(rng, 5, 3)
    a = prox_matrix_perspective_batch(X, y, 0.7)
    b = prox_matrix_perspective_batch(X, y, np.full(5, 0.7))
    np.testing.assert_array_equal(a[0], b[0])
    skew = X + np.triu(np.ones((3, 3)), 1)
    c = prox_matrix_perspective_batch(skew, y, 0.7, symmetrize=True)
    d = prox_matrix_perspective_batch(0.5 * (skew + skew.transpose(0, 2, 1)), y, 0.7)
    np.testing.assert_allclose(c[0], d[0], atol=1e-15)


@pytest.mark.parametrize(
    ("X", "y", "sigma", "match"),
    [
        (np.zeros((2, 3, 3)), np.zeros((2, 4)), 1.0, r"y must have shape \(2, 3\)"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3)), 1.0, "square"),
        (np.zeros((3, 3)), np.zeros((1, 3)), 1.0, "dimensions"),
        (np.zeros((2, 3, 3)), np.zeros((3, 3)), 1.0, r"y must have shape \(2, 3\)"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), np.ones(3), r"sigma must be a number or"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), np.array([1.0, 0.0]), r"sigma\[1\]"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), -1.0, "sigma"),
        (np.triu(np.ones((2, 3, 3))), np.zeros((2, 3)), 1.0, r"X\[0\] is not"),
        (np.full((1, 2, 2), np.nan), np.zeros((1, 2)), 1.0, "finite"),
    ],
)
def test_bad_input(X, y, sigma, match):
    with pytest.raises(ValueError, match=match):
        prox_matrix_perspective_batch(X, y, sigma)
