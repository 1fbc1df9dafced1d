"""The matrix perspective prox against the oracle values of the research note and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

import stepsize.prox.perspective as perspective
from stepsize import ConvergenceWarning
from stepsize.prox import (
    kkt_residuals,
    matrix_perspective,
    prox_matrix_perspective,
)
from stepsize.prox.perspective import _prox, check_pair

# Won's regression instance (MatrixPerspective.jl test/runtests.jl, research note section 4)
AUTHOR_X = np.diag([1.0, 0.0, -1.0])
AUTHOR_Y = np.array([1.0, 2.0, 0.0])
AUTHOR_OMEGA = np.array(
    [
        [1.066944081426201, 0.2111491993644736, 0.0],
        [0.2111491993644736, 0.6659884405376072, 0.0],
        [0.0, 0.0, 0.0],
    ]
)
AUTHOR_ETA = np.array([0.6340926854346827, 0.845886972140417, 0.0])
AUTHOR_ROOT = 0.39586583682156734


def secular_prox(X, y, sigma, *, method="newton", symmetrize=False):
    """The prox with the secular solver forced at every size (``_prox``'s ``secular`` seam)."""
    X, y = check_pair(X, y, symmetrize=symmetrize)
    max_iter = 50 if method == "newton" else 200
    return _prox(X, y, float(sigma), method, 1e-12, max_iter, secular=True)[2]


@pytest.fixture(params=["default", "secular"])
def path(request):
    """The prox to test: the public function's default dispatch, or the secular path forced."""
    return prox_matrix_perspective if request.param == "default" else secular_prox


def random_instance(rng, p, scale=1.0):
    B = rng.standard_normal((p, p))
    return scale * (B + B.T) / 2, scale * rng.standard_normal(p)


def dense_reference(X, y, sigma):
    """The prox by brute force: bisection on h with a full eigh of M(t) per evaluation."""
    p = y.size
    M = np.zeros((p + 1, p + 1))
    M[:p, :p] = X
    M[:p, p] = M[p, :p] = y / math.sqrt(2)

    def h(t):
        M[p, p] = -t
        w, V = np.linalg.eigh(M)
        return float(np.sum(np.maximum(-w, 0) * V[p] ** 2)) - sigma

    low = sigma / 2 - (np.sum(X**2) + y @ y) / (2 * sigma)
    high = sigma
    if h(high) > 1e-14 * sigma:
        for _ in range(200):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if h(mid) < 0 else (low, mid)
    M[p, p] = -high
    w, V = np.linalg.eigh(M)
    S = (V * np.maximum(w, 0)) @ V.T
    return S[:p, :p], math.sqrt(2) * S[:p, p]


def scalar_prox(omega, eta, sigma):
    """Combettes-Mueller: prox of sigma eta^2 / (2 omega) by the cubic (research note 5.3)."""
    if omega + eta**2 / (2 * sigma) <= 0:
        return 0.0, 0.0
    roots = np.roots([sigma / 2, 0.0, sigma + omega, -abs(eta)])
    s = max(r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0)
    return omega + sigma * s**2 / 2, eta - sigma * s * np.sign(eta)


def test_author_instance_to_1e12(path):
    info = path(AUTHOR_X, AUTHOR_Y, 1.0)
    Omega, eta = info.x
    np.testing.assert_allclose(Omega, AUTHOR_OMEGA, rtol=0, atol=1e-12)
    np.testing.assert_allclose(eta, AUTHOR_ETA, rtol=0, atol=1e-12)
    assert info.root == pytest.approx(AUTHOR_ROOT, abs=1e-12)
    assert info.certificate == pytest.approx(1 - AUTHOR_ROOT, abs=1e-12)
    assert matrix_perspective(Omega, eta) == pytest.approx(info.certificate, abs=1e-12)
    assert info.converged and info.n_newton <= 8 and not info.zero_region
    assert info.rank == 2


def test_zero_region_returns_zero(path):
    info = path(-10 * np.eye(3), AUTHOR_Y, 1.0)
    Omega, eta = info.x
    assert info.zero_region and info.n_iter == 0
    assert not Omega.any() and not eta.any()


@pytest.mark.parametrize("shift", [-1e-12, 1e-12])
def test_zero_region_boundary(path, shift):
    y = np.array([1.0, -2.0, 0.5])
    sigma = 0.7
    X = -np.outer(y, y) / (2 * sigma) + shift * np.eye(3)
    Omega, eta = path(X, y, sigma).x
    assert np.abs(Omega).max() <= 1e-10 and np.abs(eta).max() <= 1e-10


def test_y_zero_gives_psd_part(path):
    rng = np.random.default_rng(1)
    X, _ = random_instance(rng, 6)
    w, V = np.linalg.eigh(X)
    Omega, eta = path(X, np.zeros(6), 2.0).x
    np.testing.assert_allclose(Omega, (V * np.maximum(w, 0)) @ V.T, atol=1e-12)
    assert not eta.any()


@pytest.mark.parametrize("seed", range(6))
def test_scalar_case_matches_cubic(path, seed):
    rng = np.random.default_rng(seed)
    omega, eta, sigma = rng.normal(0, 2), rng.normal(0, 2), 10 ** rng.uniform(-2, 2)
    Omega, eta_out = path([[omega]], [eta], sigma).x
    expected = scalar_prox(omega, eta, sigma)
    assert Omega[0, 0] == pytest.approx(expected[0], rel=1e-10, abs=1e-12)
    assert eta_out[0] == pytest.approx(expected[1], rel=1e-10, abs=1e-12)


def test_diagonal_input_decouples(path):
    diagonal = np.array([0.8, -0.3, 2.0, 0.0])
    y = np.array([1.5, 0.0, 0.0, 0.0])
    Omega, eta = path(np.diag(diagonal), y, 0.9).x
    first = scalar_prox(diagonal[0], y[0], 0.9)
    expected = np.diag(np.r_[first[0], np.maximum(diagonal[1:], 0)])
    np.testing.assert_allclose(Omega, expected, atol=1e-12)
    np.testing.assert_allclose(eta, [first[1], 0, 0, 0], atol=1e-12)


@pytest.mark.parametrize("p", [2, 7, 30, 60])
@pytest.mark.parametrize("sigma", [0.1, 1.0, 10.0])
def test_matches_dense_reference(path, p, sigma):
    rng = np.random.default_rng(p)
    X, y = random_instance(rng, p)
    Omega, eta = path(X, y, sigma).x
    Omega_ref, eta_ref = dense_reference(X, y, sigma)
    np.testing.assert_allclose(Omega, Omega_ref, atol=1e-9 * max(1, np.abs(Omega_ref).max()))
    np.testing.assert_allclose(eta, eta_ref, atol=1e-9 * max(1, np.abs(eta_ref).max()))


def test_orthogonal_equivariance(path):
    rng = np.random.default_rng(3)
    X, y = random_instance(rng, 9)
    Q, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    Omega, eta = path(X, y, 1.3).x
    Omega_q, eta_q = path(Q @ X @ Q.T, Q @ y, 1.3, symmetrize=True).x
    np.testing.assert_allclose(Omega_q, Q @ Omega @ Q.T, atol=1e-11)
    np.testing.assert_allclose(eta_q, Q @ eta, atol=1e-11)


@pytest.mark.parametrize("factor", [1e-3, 7.0, 1e3])
def test_positive_homogeneity(path, factor):
    rng = np.random.default_rng(4)
    X, y = random_instance(rng, 8)
    Omega, eta = path(X, y, 0.5).x
    Omega_c, eta_c = path(factor * X, factor * y, 0.5 * factor).x
    np.testing.assert_allclose(Omega_c, factor * Omega, rtol=1e-10, atol=1e-12 * factor)
    np.testing.assert_allclose(eta_c, factor * eta, rtol=1e-10, atol=1e-12 * factor)


@pytest.mark.parametrize("p", [10, 100, 300])
def test_kkt_residuals_and_certificate(path, p):
    rng = np.random.default_rng(p)
    X, y = random_instance(rng, p)
    info = path(X, y, 1.0)
    Omega, eta = info.x
    residuals = kkt_residuals(X, y, 1.0, Omega, eta)
    assert residuals.max <= 1e-9
    assert matrix_perspective(Omega, eta) == pytest.approx(info.certificate, rel=1e-9)
    assert info.n_newton + info.n_bisection <= 8


def test_bisection_agrees_with_newton(path):
    rng = np.random.default_rng(5)
    X, y = random_instance(rng, 60)
    info = path(X, y, 2.0)
    Omega, eta = info.x
    info_b = path(X, y, 2.0, method="bisection")
    Omega_b, eta_b = info_b.x
    assert info_b.n_newton == 0 and info_b.n_bisection > info.n_iter
    np.testing.assert_allclose(Omega_b, Omega, atol=1e-10)
    np.testing.assert_allclose(eta_b, eta, atol=1e-10)


@pytest.mark.parametrize("kind", ["secular", "dense"])
def test_derivative_matches_finite_difference(kind):
    rng = np.random.default_rng(6)
    X, y = random_instance(rng, 12)
    h = (
        perspective._SecularRootFunction(X, y)
        if kind == "secular"
        else perspective._DenseRootFunction(X, y)
    )
    t, step = 0.3, 1e-6
    _, slope, _ = h(t)
    assert slope == pytest.approx((h(t + step)[0] - h(t - step)[0]) / (2 * step), rel=1e-6)


def test_iteration_cap_warns():
    rng = np.random.default_rng(7)
    X, y = random_instance(rng, 20)
    with pytest.warns(ConvergenceWarning):
        info = prox_matrix_perspective(X, y, 1.0, method="bisection", max_iter=3)
    assert not info.converged


HARD = {
    "repeated eigenvalues": (np.diag([2.0, 2.0, 2.0, -1.0, -1.0, 0.5]), np.r_[1, -1, 0, 0, 0, 0.0]),
    "y orthogonal to an eigenspace": (np.diag([3.0, 3.0, 1.0, 1.0]), np.array([0, 0, 1.0, -2])),
    "rank one X": (np.outer([1.0, 2, 3, 4], [1.0, 2, 3, 4]), np.array([0.1, 0, 0, 0])),
    "negative X, large y": (-np.eye(5), 10 * np.ones(5)),
}


@pytest.mark.parametrize("name", sorted(HARD))
@pytest.mark.parametrize("sigma", [1e-6, 1e-2, 1.0, 1e2, 1e6])
def test_hard_inputs_have_certificates(path, name, sigma):
    X, y = HARD[name]
    info = path(X, y, sigma)
    Omega, eta = info.x
    assert np.all(np.isfinite(Omega)) and np.all(np.isfinite(eta)) and info.converged
    assert kkt_residuals(X, y, sigma, Omega, eta).max <= 1e-8
    # Newton on log(1 + h): at most 9 steps here (Newton on h took up to 24, at sigma = 1e-6)
    assert info.n_newton + info.n_bisection <= 10


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
@pytest.mark.parametrize("sigma", [1e-6, 1.0, 1e6])
def test_ill_scaled_inputs(path, scale, sigma):
    rng = np.random.default_rng(8)
    X, y = random_instance(rng, 40, scale)
    info = path(X, y, sigma)
    Omega, eta = info.x
    assert np.all(np.isfinite(Omega)) and info.converged
    size = max(scale, sigma)
    # at ||X|| / sigma = 1e12 the eigenvalues of M(t*) span 12 orders of magnitude, and this
    # prox and the brute-force reference (both right to rounding) agree to 1.5e-9 * size on
    # this machine's BLAS, not 1e-9
    tolerance = 1e-9 if scale / sigma <= 1e6 else 1e-8
    Omega_ref, eta_ref = dense_reference(X, y, sigma)
    np.testing.assert_allclose(Omega, Omega_ref, rtol=0, atol=tolerance * size)
    np.testing.assert_allclose(eta, eta_ref, rtol=0, atol=tolerance * size)
    if scale / sigma <= 1e6:
        # at ||X|| / sigma = 1e12 the duals (X - Omega) / sigma carry rounding errors of
        # relative size eps * 1e12, so the residuals measure the arithmetic, not the prox
        assert kkt_residuals(X, y, sigma, Omega, eta).max <= 1e-8


def test_matrix_perspective_values():
    rng = np.random.default_rng(9)
    B = rng.standard_normal((5, 5))
    Omega = B @ B.T + 0.1 * np.eye(5)
    eta = rng.standard_normal(5)
    assert matrix_perspective(Omega, eta) == pytest.approx(0.5 * eta @ np.linalg.solve(Omega, eta))
    singular = np.diag([2.0, 0.5, 0.0])
    assert matrix_perspective(singular, [2.0, 1.0, 0.0]) == pytest.approx(1.0 + 1.0)
    assert matrix_perspective(singular, [2.0, 1.0, 1e-3]) == math.inf
    assert matrix_perspective(np.diag([1.0, -1e-3]), [1.0, 0.0]) == math.inf
    assert matrix_perspective(np.zeros((2, 2)), np.zeros(2)) == 0.0


@pytest.mark.parametrize(
    ("X", "y", "sigma", "match"),
    [
        (np.ones((2, 3)), np.ones(2), 1.0, "square"),
        (np.array([[1.0, 2.0], [0.0, 1.0]]), np.ones(2), 1.0, "symmetric"),
        (np.eye(2), np.ones(3), 1.0, "length 2"),
        (np.eye(2), np.ones(2), 0.0, "sigma"),
        (np.eye(2), np.ones(2), -1.0, "sigma"),
        (np.eye(2), np.ones(2), math.inf, "sigma"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), np.ones(2), 1.0, "finite"),
        (np.eye(2), np.array([1.0, np.inf]), 1.0, "finite"),
        (np.zeros((0, 0)), np.zeros(0), 1.0, "empty"),
        (np.ones(3), np.ones(3), 1.0, "dimensions"),
    ],
)
def test_bad_input_raises(X, y, sigma, match):
    with pytest.raises(ValueError, match=match):
        prox_matrix_perspective(X, y, sigma)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="method"):
        prox_matrix_perspective(np.eye(2), np.ones(2), 1.0, method="admm")
    with pytest.raises(ValueError, match="tol"):
        prox_matrix_perspective(np.eye(2), np.ones(2), 1.0, tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        prox_matrix_perspective(np.eye(2), np.ones(2), 1.0, max_iter=0)
    with pytest.raises(TypeError, match="sigma"):
        prox_matrix_perspective(np.eye(2), np.ones(2), "1")


def test_symmetrize_on_request():
    X = np.array([[1.0, 2.0], [0.0, 1.0]])
    Omega, eta = prox_matrix_perspective(X, np.ones(2), 1.0, symmetrize=True).x
    Omega_ref, eta_ref = prox_matrix_perspective(0.5 * (X + X.T), np.ones(2), 1.0).x
    np.testing.assert_array_equal(Omega, Omega_ref)
    np.testing.assert_array_equal(eta, eta_ref)


# the multi-column function phi(Omega, H) = 1/2 tr(H^T Omega^+ H), y a p x k matrix


@pytest.mark.parametrize("sigma", [1e-3, 0.5, 2.0, 1e3])
def test_matrix_eta_with_one_column_is_the_vector_prox(sigma):
    rng = np.random.default_rng(11)
    X, y = random_instance(rng, 7)
    vector = prox_matrix_perspective(X, y, sigma)
    matrix = prox_matrix_perspective(X, y[:, None], sigma)
    assert matrix.eta.shape == (7, 1) and matrix.root.shape == (1, 1)
    size = max(1.0, np.abs(vector.Omega).max())
    np.testing.assert_allclose(matrix.Omega, vector.Omega, rtol=0, atol=1e-11 * size)
    np.testing.assert_allclose(matrix.eta[:, 0], vector.eta, rtol=0, atol=1e-11 * size)
    assert matrix.root[0, 0] == pytest.approx(vector.root, rel=1e-10, abs=1e-12 * sigma)
    assert matrix.converged and matrix.n_iter <= 15


@pytest.mark.parametrize("sigma", [1e4, 2e5, 1e6, 1e10, 1e20, 1e100])
def test_matrix_eta_at_large_sigma_keeps_relative_accuracy(sigma):
    """Found by review: the lifted matrix's eigensolver lost Omega's relative accuracy when sigma
    dwarfs the data (Omega_22 = 6.8e-5 instead of 2 at sigma = 1e20, reported converged).
    Relative to the vector prox (k = 1), with Omega and H of size data and data^2 / sigma."""
    rng = np.random.default_rng(11)
    X, y = random_instance(rng, 5)
    vector = prox_matrix_perspective(X, y, sigma)
    matrix = prox_matrix_perspective(X, y[:, None], sigma)
    assert matrix.converged
    np.testing.assert_allclose(matrix.Omega, vector.Omega, rtol=0,
                               atol=1e-10 * np.abs(vector.Omega).max())
    np.testing.assert_allclose(matrix.eta[:, 0], vector.eta, rtol=0,
                               atol=1e-10 * np.abs(vector.eta).max())
    two = prox_matrix_perspective(2 * np.eye(3), np.ones((3, 2)), sigma)
    np.testing.assert_allclose(np.diag(two.Omega), 2.0, rtol=2.0 / sigma + 1e-9)  # 2 + O(1/sigma)


def test_matrix_eta_at_tiny_sigma_does_not_claim_convergence():
    """Found by review: sigma = 1e-300 returned converged=True with ||grad G|| / sigma ~ 1e291."""
    rng = np.random.default_rng(1)
    X, _ = random_instance(rng, 4)
    Y = rng.standard_normal((4, 2))
    with pytest.warns(ConvergenceWarning):
        result = prox_matrix_perspective(X, Y, 1e-300)
    assert result.converged is False


@pytest.mark.parametrize(("p", "k", "sigma"), [(4, 2, 0.3), (6, 3, 1.0), (5, 5, 4.0)])
def test_matrix_eta_optimality_and_rotation(p, k, sigma):
    rng = np.random.default_rng(p * k)
    X, _ = random_instance(rng, p)
    Y = rng.standard_normal((p, k))
    result = prox_matrix_perspective(X, Y, sigma)
    Omega, H = result.x
    # Moreau: (X - Omega, Y - H) / sigma lies in C = {(A, B): A + B B^T / 2 <= 0}, and
    # Fenchel-Young holds with equality: sigma phi(Omega, H) = <Omega, X - Omega> + <H, Y - H>
    A, B = (X - Omega) / sigma, (Y - H) / sigma
    assert np.linalg.eigvalsh(A + 0.5 * B @ B.T)[-1] <= 1e-10
    assert np.linalg.eigvalsh(Omega)[0] >= -1e-12
    inner = np.sum(Omega * (X - Omega)) + np.sum(H * (Y - H))
    assert sigma * result.certificate == pytest.approx(inner, rel=1e-9, abs=1e-12)
    phi = 0.5 * np.trace(H.T @ np.linalg.pinv(Omega, rcond=1e-12, hermitian=True) @ H)
    assert result.certificate == pytest.approx(phi, rel=1e-9)
    # phi is invariant under H -> H R (R orthogonal, k x k), so the prox is equivariant
    R, _ = np.linalg.qr(rng.standard_normal((k, k)))
    rotated = prox_matrix_perspective(X, Y @ R, sigma)
    np.testing.assert_allclose(rotated.Omega, Omega, rtol=0, atol=1e-10)
    np.testing.assert_allclose(rotated.eta, H @ R, rtol=0, atol=1e-10)
    # column by column the vector prox is a different (wrong) answer: Omega is shared
    by_column = prox_matrix_perspective(X, Y[:, 0], sigma).Omega
    assert np.abs(by_column - Omega).max() > 1e-3


def test_matrix_eta_zero_region_and_bad_input():
    result = prox_matrix_perspective(-10 * np.eye(3), np.ones((3, 2)), 0.5)
    assert result.zero_region and not result.Omega.any() and not result.eta.any()
    assert result.certificate == 0.0
    with pytest.raises(ValueError, match=r"3 x k matrix"):
        prox_matrix_perspective(np.eye(3), np.ones((2, 2)), 1.0)
    with pytest.raises(ValueError, match="empty"):
        prox_matrix_perspective(np.eye(3), np.ones((3, 0)), 1.0)
    with pytest.raises(ValueError, match="method"):
        prox_matrix_perspective(np.eye(3), np.ones((3, 2)), 1.0, method="bisection")
