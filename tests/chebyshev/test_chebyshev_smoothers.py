"""Chebyshev smoother: closed form, pyamg's V-cycle as reference, stability, bad input."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

pyamg = pytest.importorskip("pyamg")
from pyamg.relaxation.chebyshev import chebyshev_polynomial_coefficients  # noqa: E402
from pyamg.relaxation.relaxation import polynomial  # noqa: E402
from pyamg.relaxation.smoothing import change_smoothers  # noqa: E402

from stepsize.chebyshev import chebyshev_steps, preconditioned_spectrum  # noqa: E402
from stepsize.chebyshev.smoothers import attach_smoothers, chebyshev_smoother  # noqa: E402


@pytest.fixture(scope="module")
def scaled_poisson():
    """Poisson 2-D with a varying diagonal (S A S), so Jacobi differs from no preconditioner."""
    scale = sp.diags(np.random.default_rng(3).uniform(0.5, 2.0, 144))
    return sp.csr_array(scale @ pyamg.gallery.poisson((12, 12), format="csr") @ scale)


def _polynomial_error(A, steps, error, jacobi):
    """prod_t (I - gamma_t D^{-1} A) error, through the eigenvectors of D^{-1/2} A D^{-1/2}."""
    dense = A.toarray()
    root = np.sqrt(np.diag(dense)) if jacobi else np.ones(dense.shape[0])
    eigenvalues, vectors = np.linalg.eigh(dense / np.outer(root, root))
    values = np.prod(1 - np.outer(eigenvalues, steps), axis=1)
    return vectors @ (values * (vectors.T @ (root * error))) / root


@pytest.mark.parametrize("preconditioner", ["jacobi", None])
@pytest.mark.parametrize("degree", [1, 3, 5])
def test_one_application_is_the_chebyshev_polynomial(scaled_poisson, preconditioner, degree):
    A = scaled_poisson
    rng = np.random.default_rng(degree)
    x_true, x = rng.standard_normal(144), rng.standard_normal(144)
    b = A @ x_true
    smoother = chebyshev_smoother(A, degree, preconditioner=preconditioner, seed=0)
    expected = x_true + _polynomial_error(A, smoother.steps, x - x_true,
                                          preconditioner == "jacobi")
    assert smoother(A, x, b) is None
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    a, high = smoother.interval
    np.testing.assert_allclose(np.sort(smoother.steps), chebyshev_steps(a, high, degree,
                                                                         "natural"))


def test_zero_start_and_column_vector_match_the_closed_form(scaled_poisson):
    A = scaled_poisson
    b = np.random.default_rng(0).standard_normal((144, 1))
    smoother = chebyshev_smoother(A, 4, spectrum=(0.1, 2.5))
    x = np.zeros((144, 1))
    smoother(A, x, b)  # x = 0 skips the first product: e0 = -x_true
    x_true = spla.spsolve(sp.csc_array(A), b[:, 0])
    expected = x_true + _polynomial_error(A, smoother.steps, -x_true, True)
    np.testing.assert_allclose(x[:, 0], expected, atol=1e-12 * np.abs(expected).max())
    assert smoother.interval == (0.1, 2.5)


def test_interval_follows_pyamg_convention_on_the_estimate(scaled_poisson):
    A = scaled_poisson
    smoother = chebyshev_smoother(A, 3, seed=7)
    estimate = preconditioned_spectrum(A, "jacobi", max_iter=15, seed=7)
    assert smoother.interval == pytest.approx((estimate.ritz_max / 30, 1.1 * estimate.ritz_max))
    dense = A.toarray()
    exact = np.linalg.eigvalsh(dense / np.sqrt(np.outer(np.diag(dense), np.diag(dense))))[-1]
    # 15 CG-Lanczos steps find the top of the spectrum of D^{-1} A from below, to 1e-2
    assert 0.99 * exact < smoother.spectrum.ritz_max <= exact * (1 + 1e-12)
    # a given Spectrum is used through its raw estimate, not its widened lmax
    again = chebyshev_smoother(A, 3, spectrum=estimate, lower=0.1, upper=1.2)
    assert again.interval == pytest.approx((0.1 * estimate.ritz_max, 1.2 * estimate.ritz_max))


def _vcycle_factor(ml, b, cycles=10):
    residuals = []
    ml.solve(b, x0=np.zeros_like(b), tol=1e-300, maxiter=cycles, residuals=residuals)
    residuals = np.asarray(residuals)
    return (residuals[-1] / residuals[0]) ** (1 / cycles), residuals


def test_vcycle_matches_pyamg_chebyshev_smoother():
    A = pyamg.gallery.poisson((64, 64), format="csr")
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    ml = pyamg.smoothed_aggregation_solver(A)
    change_smoothers(ml, ("chebyshev", {"degree": 3}), ("chebyshev", {"degree": 3}))
    pyamg_factor, pyamg_residuals = _vcycle_factor(ml, b)
    # pyamg's interval: [rho/30, 1.1 rho] with rho of A (cached as A.rho), polynomial in A
    intervals = [(level.A.rho / 30, 1.1 * level.A.rho) for level in ml.levels[:-1]]
    assert attach_smoothers(ml, 3, preconditioner=None, spectrum=intervals) is ml
    same_factor, same_residuals = _vcycle_factor(ml, b)
    np.testing.assert_allclose(same_residuals, pyamg_residuals, rtol=1e-9)
    assert 0.3 < pyamg_factor < 0.4
    # the default (Jacobi, own 15-step estimate) converges at least as fast, within 1%
    attach_smoothers(ml, 3, seed=0)
    default_factor, _ = _vcycle_factor(ml, b)
    assert default_factor <= 1.01 * pyamg_factor
    for level in ml.levels[:-1]:
        assert level.presmoother is level.postsmoother
        assert level.presmoother.degree == 3 and level.presmoother.matrix is level.A
    assert ml.symmetric_smoothing is True


def test_jacobi_beats_plain_polynomial_on_a_varying_diagonal():
    # S P S with S spread over [1/10, 10]: a polynomial in A (pyamg's) barely smooths
    spread = np.exp(np.random.default_rng(3).uniform(-np.log(10), np.log(10), 576))
    A = sp.csr_array(sp.diags(spread) @ pyamg.gallery.poisson((24, 24)) @ sp.diags(spread))
    b = np.random.default_rng(1).standard_normal(576)
    factors = {}
    for preconditioner in ("jacobi", None):
        ml = attach_smoothers(pyamg.smoothed_aggregation_solver(A, max_coarse=20), 3,
                              preconditioner=preconditioner, seed=0)
        factors[preconditioner], _ = _vcycle_factor(ml, b)
    ml = pyamg.smoothed_aggregation_solver(A, max_coarse=20, presmoother=("chebyshev", {
        "degree": 3}), postsmoother=("chebyshev", {"degree": 3}))
    factors["pyamg"], _ = _vcycle_factor(ml, b)
    # measured: 0.42 with Jacobi, 0.935 without, 0.935 for pyamg's smoother
    assert factors["jacobi"] < 0.5
    assert factors[None] > 0.9 and factors["pyamg"] > 0.9


@pytest.fixture(scope="module")
def stability_problem():
    A = pyamg.gallery.poisson((24, 24), format="csr")
    eigenvalues, vectors = np.linalg.eigh(A.toarray())
    rho = eigenvalues[-1]
    rng = np.random.default_rng(1)
    x_true, x0 = rng.standard_normal(576), rng.standard_normal(576)
    return A, eigenvalues, vectors, (rho / 30, 1.1 * rho), x_true, x0


def _deviation(problem, degree, apply):
    """||x_after - exact polynomial result|| / ||e0|| for one application."""
    A, eigenvalues, vectors, (a, high), x_true, x0 = problem
    values = np.prod(1 - np.outer(eigenvalues, chebyshev_steps(a, high, degree)), axis=1)
    exact = x_true + vectors @ (values * (vectors.T @ (x0 - x_true)))
    return np.linalg.norm(apply(A @ x_true) - exact) / np.linalg.norm(x0 - x_true)


def _ours(problem, degree, order, dtype=np.float64):
    A, _, _, interval, _, x0 = problem
    smoother = chebyshev_smoother(A.astype(dtype), degree, preconditioner=None,
                                  spectrum=interval, order=order)

    def apply(b):
        x = x0.astype(dtype)
        smoother(smoother.matrix, x, b.astype(dtype))
        return x

    return apply


def _pyamg_monomial(problem, degree):
    A, _, _, (a, high), _, x0 = problem

    def apply(b):
        x = x0.copy()
        polynomial(A, x, b, -chebyshev_polynomial_coefficients(a, high, degree)[:-1])
        return x

    return apply


def test_high_degree_fractal_order_stays_accurate(stability_problem):
    problem = stability_problem
    # measured: fractal 6e-15, natural 2.8e-9, descending 1e-5, pyamg's Horner 67 (float64)
    assert _deviation(problem, 32, _ours(problem, 32, "fractal")) < 1e-13
    assert _deviation(problem, 32, _ours(problem, 32, "natural")) > 1e-10
    assert _deviation(problem, 32, _ours(problem, 32, "descending")) > 1e-7
    assert _deviation(problem, 32, _pyamg_monomial(problem, 32)) > 1.0
    # float32: fractal 3e-6, natural 1.1 (the smoother amplifies instead of smoothing)
    assert _deviation(problem, 32, _ours(problem, 32, "fractal", np.float32)) < 1e-5
    assert _deviation(problem, 32, _ours(problem, 32, "natural", np.float32)) > 0.1
    # at degree 16 pyamg's monomial form already loses 7 digits, the fractal order none
    assert _deviation(problem, 16, _ours(problem, 16, "fractal")) < 1e-13
    assert _deviation(problem, 16, _pyamg_monomial(problem, 16)) > 1e-9


def test_dense_matrix_input():
    dense = pyamg.gallery.poisson((6, 6)).toarray()
    smoother = chebyshev_smoother(dense, 3, spectrum=(0.1, 2.2))
    x_true = np.arange(36.0)
    x = np.zeros(36)
    smoother(dense, x, dense @ x_true)
    expected = x_true + _polynomial_error(sp.csr_array(dense), smoother.steps, -x_true, True)
    np.testing.assert_allclose(x, expected, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize(
    ("A", "kwargs", "error", "match"),
    [
        (np.ones((3, 4)), {}, ValueError, "A must be a square"),
        (np.array([[2.0, 1.0], [0.0, 2.0]]), {}, ValueError, "A must be symmetric"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), {}, ValueError, "A must be finite"),
        (np.eye(2) * (1 + 1j), {}, TypeError, "A must be a real matrix"),
        (np.diag([1.0, 0.0]), {}, ValueError, "positive diagonal"),
        (spla.aslinearoperator(np.eye(2)), {}, TypeError, "LinearOperator"),
        (np.eye(2), {"degree": 0}, ValueError, "degree must be >= 1"),
        (np.eye(2), {"degree": 2.5}, TypeError, "degree must be an integer"),
        (np.eye(2), {"preconditioner": "ilu"}, ValueError, "preconditioner must be"),
        (np.eye(2), {"lower": 1.2}, ValueError, "lower must be < upper"),
        (np.eye(2), {"upper": -1.0}, ValueError, "upper must be > 0"),
        (np.eye(2), {"order": "random"}, ValueError, "order must be one of"),
        (np.eye(2), {"spectrum": (2.0, 1.0)}, ValueError, "lmin must be <= lmax"),
        (np.eye(2), {"spectrum": (0.0, 1.0)}, ValueError, "lmin must be > 0"),
        (np.eye(2), {"spectrum": 3.0}, TypeError, "spectrum must be None"),
        (np.eye(2), {"estimate_iter": 0}, ValueError, "estimate_iter must be >= 1"),
    ],
)
def test_bad_input(A, kwargs, error, match):
    with pytest.raises(error, match=match):
        chebyshev_smoother(A, **kwargs)


def test_bad_calls_and_bad_solver():
    A = sp.csr_array(np.diag([2.0, 3.0]))
    smoother = chebyshev_smoother(A, 2, spectrum=(1.0, 1.5))
    with pytest.raises(ValueError, match="A must be the matrix this smoother was built for"):
        smoother(A.copy(), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="x must be a contiguous float64"):
        smoother(A, np.ones(2, dtype=np.float32), np.ones(2))
    with pytest.raises(TypeError, match="ml must be a pyamg MultilevelSolver"):
        attach_smoothers(A)
    ml = pyamg.smoothed_aggregation_solver(pyamg.gallery.poisson((20, 20), format="csr"),
                                           max_coarse=10)
    with pytest.raises(ValueError, match="one entry per smoothed level"):
        attach_smoothers(ml, spectrum=[(0.1, 2.0)] * len(ml.levels))
