"""Spectrum estimation: safe bounds against eigvalsh, sparse and LinearOperator inputs."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize import ConvergenceWarning
from stepsize.chebyshev import estimate_spectrum, marchenko_pastur_edges
from stepsize.experiments._instances import gaussian_gram


def test_lanczos_bounds_contain_spectrum_with_safety():
    W = gaussian_gram(300, 600, 12)
    exact = np.linalg.eigvalsh(W)
    estimate = estimate_spectrum(W, seed=0)
    assert estimate.converged
    assert estimate.lmax >= exact[-1] and estimate.lmin <= exact[0]
    assert estimate.lmax == pytest.approx(exact[-1] * 1.05, rel=1e-3)
    assert estimate.lmin == pytest.approx(exact[0] / 1.05, rel=1e-3)
    assert estimate.ritz_max == pytest.approx(exact[-1], rel=1e-6)
    assert 0 < estimate.matvecs < 300
    assert estimate.kappa == pytest.approx(estimate.lmax / estimate.lmin)


def test_exact_method_and_safety_one():
    W = np.diag([0.5, 1.0, 2.0, 8.0])
    estimate = estimate_spectrum(W, method="exact", safety=1.0)
    assert (estimate.lmin, estimate.lmax, estimate.matvecs) == (0.5, 8.0, 0)


def test_sparse_and_linear_operator_agree():
    rng = np.random.default_rng(3)
    A = sp.random(400, 400, density=0.02, random_state=3)
    W = (A @ A.T + 0.5 * sp.eye(400)).tocsr()
    exact = np.linalg.eigvalsh(W.toarray())
    operator = spla.aslinearoperator(W)
    for source in (W, operator):
        estimate = estimate_spectrum(source, seed=rng.integers(100))
        assert estimate.lmin <= exact[0] <= exact[-1] <= estimate.lmax
        assert estimate.lmax / exact[-1] < 1.06 and exact[0] / estimate.lmin < 1.06


def test_non_convergence_warns_and_returns_safe_upper_bound():
    W = gaussian_gram(200, 400, 5)
    exact = np.linalg.eigvalsh(W)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimate = estimate_spectrum(W, maxiter=1, tol=1e-14, seed=0)
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught)
    assert not estimate.converged
    assert estimate.lmax >= exact[-1]


def test_marchenko_pastur_edges():
    low, high = marchenko_pastur_edges(300, 600, 1 / 300)
    assert low == pytest.approx((np.sqrt(2) - 1) ** 2) and high == pytest.approx(
        (np.sqrt(2) + 1) ** 2)
    assert marchenko_pastur_edges(300, 450, 1 / 300) == pytest.approx((0.0505, 4.9495), abs=1e-4)


@pytest.mark.parametrize("W, error, match", [
    (np.ones((3, 4)), ValueError, "square"),
    (np.array([[1.0, 2.0], [0.0, 1.0]]), ValueError, "symmetric"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), ValueError, "finite"),
    (np.diag([-1.0, 1.0, 2.0, 3.0]), ValueError, "semidefinite"),
    ("abc", TypeError, "W"),
])
def test_bad_operators(W, error, match):
    with pytest.raises(error, match=match):
        estimate_spectrum(W, method="exact")


def test_bad_options():
    with pytest.raises(ValueError, match="safety"):
        estimate_spectrum(np.eye(4), safety=0.9)
    with pytest.raises(ValueError, match="method"):
        estimate_spectrum(np.eye(4), method="power")
    with pytest.raises(ValueError, match="LinearOperator"):
        estimate_spectrum(spla.aslinearoperator(np.eye(5)), method="exact")
