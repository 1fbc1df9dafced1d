"""Spectrum estimation: intervals checked against eigvalsh/eigsh, the matvec cap, scale extremes,
and clear errors for zero, singular and indefinite W."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st

from stepsize._reference.instances import gaussian_gram
from stepsize.chebyshev import estimate_spectrum, marchenko_pastur_edges
from stepsize.chebyshev.spectrum import _cholesky_certificate, _kw_epsilon

pyamg = pytest.importorskip("pyamg")


class CountingOperator(spla.LinearOperator):
    """Counts every column W is applied to, whatever route scipy takes."""

    def __init__(self, W):
        super().__init__(dtype=np.float64, shape=W.shape)
        self.W = W
        self.calls = 0

    def _matvec(self, x):
        self.calls += 1
        return self.W @ np.ravel(x)

    def _matmat(self, X):
        self.calls += X.shape[1]
        return self.W @ X


def _extremes(W):
    dense = W.toarray() if sp.issparse(W) else np.asarray(W)
    eigenvalues = np.linalg.eigvalsh(dense)
    return eigenvalues[0], eigenvalues[-1]


def _assert_contains(estimate, low, high):
    assert estimate.lmin <= low and estimate.lmax >= high, (estimate, low, high)
    assert np.isfinite(estimate.lmax) and estimate.lmin > 0


def _pyamg_matrix(name):
    if name == "poisson":
        return pyamg.gallery.poisson((30, 30), format="csr")
    if name == "elasticity":
        return pyamg.gallery.linear_elasticity((20, 20))[0].tocsr()
    return pyamg.gallery.load_example(name)["A"].tocsr()


def test_lanczos_bounds_contain_spectrum_with_safety():
    W = gaussian_gram(300, 600, 12)
    low, high = _extremes(W)
    estimate = estimate_spectrum(W, seed=0)
    assert estimate.converged and estimate.method == "lanczos"
    # n <= max_exact_size: the Lanczos lower end is proven by a Cholesky factorization
    assert (estimate.lmin_method, estimate.lmax_method) == ("cholesky", "lanczos")
    _assert_contains(estimate, low, high)
    # safety (1.05) times (1 + tol) at most, at each end (tol = 1e-3)
    assert 1.05 <= estimate.lmax / high <= 1.05 * 1.001
    assert 1.05 <= low / estimate.lmin <= 1.05 / 0.999
    assert estimate.ritz_max == pytest.approx(high, rel=1e-6)
    assert estimate.lmax_failure_probability < 1e-4
    assert 0 < estimate.matvecs < 300
    assert estimate.kappa == pytest.approx(estimate.lmax / estimate.lmin)
    # the same run on an operator: nothing to factorize, the lower end is the Lanczos estimate
    operator = estimate_spectrum(spla.aslinearoperator(W), seed=0)
    assert (operator.lmin_method, operator.lmax_method) == ("lanczos", "lanczos")
    assert operator.lmin == pytest.approx(estimate.lmin, rel=1e-9)
    assert operator.matvecs == estimate.matvecs


def test_large_sparse_lower_end_is_the_lanczos_estimate():
    W = _pyamg_matrix("poisson")
    low, high = _extremes(W)
    # as if n exceeded max_exact_size: no factorization; Gershgorin's lower bound is 0 here
    estimate = estimate_spectrum(W, max_exact_size=0, seed=0)
    assert (estimate.lmin_method, estimate.lmax_method) == ("lanczos", "gershgorin")
    _assert_contains(estimate, low, high)
    assert low / estimate.lmin < 1.07


def test_positive_gershgorin_lower_bound_is_preferred_when_unproven():
    # diagonally dominant: min_i (2 w_ii - sum_j |w_ij|) = 3 - 1 = 2 > 0, a proven bound
    W = sp.diags([np.full(2999, -0.5), np.full(3000, 3.0), np.full(2999, -0.5)], [-1, 0, 1])
    estimate = estimate_spectrum(W, seed=0)
    assert estimate.lmin_method == "gershgorin" and estimate.lmin == pytest.approx(2.0, rel=1e-12)
    assert estimate.lmin <= 3.0 - np.cos(np.pi / 3001)  # the exact smallest eigenvalue


def test_exact_method_and_safety_one():
    W = np.diag([0.5, 1.0, 2.0, 8.0])
    estimate = estimate_spectrum(W, method="exact", safety=1.0)
    assert (estimate.lmin, estimate.lmax, estimate.matvecs) == (0.5, 8.0, 0)
    assert (estimate.lmin_method, estimate.lmax_method) == ("exact", "exact")


def test_sparse_and_linear_operator_agree():
    rng = np.random.default_rng(3)
    A = sp.random(400, 400, density=0.02, random_state=3)
    W = (A @ A.T + 0.5 * sp.eye(400)).tocsr()
    low, high = _extremes(W)
    for source in (W, spla.aslinearoperator(W)):
        estimate = estimate_spectrum(source, seed=rng.integers(100))
        _assert_contains(estimate, low, high)
        assert estimate.lmax / high < 1.07 and low / estimate.lmin < 1.07


# issue 12: ARPACK spent 1.2 million matvecs and returned lmin = 0.952 against 1e-6
LOG_SPACED = sp.diags(np.logspace(-6, 0, 2000))


def test_log_spaced_diagonal_falls_back_to_eigvalsh_after_the_cap():
    estimate = estimate_spectrum(LOG_SPACED, seed=0)
    _assert_contains(estimate, 1e-6, 1.0)
    assert estimate.lmin == pytest.approx(1e-6 / 1.05, rel=1e-9)
    assert (estimate.method, estimate.lmin_method, estimate.converged) == ("exact", "exact", False)
    assert estimate.matvecs == 300


def test_log_spaced_diagonal_beyond_the_exact_size_uses_gershgorin():
    # Gershgorin's discs are exact for a diagonal
    big = estimate_spectrum(sp.diags(np.logspace(-6, 0, 5000)), seed=0)
    assert (big.lmin, big.lmax, big.lmin_method, big.matvecs) == (1e-6, 1.0, "gershgorin", 300)


def test_log_spaced_diagonal_as_an_operator_fails_clearly_within_the_cap():
    # nothing can verify the lower end of an operator within the cap: a clear error
    operator = CountingOperator(LOG_SPACED)
    with pytest.raises(ValueError, match="lower end .* could not be verified within "
                                         "max_iter=300"):
        estimate_spectrum(operator, seed=0)
    assert operator.calls == 300


@pytest.mark.parametrize("name", ["poisson", "elasticity", "airfoil", "bar", "knot",
                                  "local_disc_galerkin_diffusion", "unit_cube"])
def test_pyamg_matrices_are_contained(name):
    W = _pyamg_matrix(name)
    low, high = _extremes(W)
    for source in (W, CountingOperator(W)):
        estimate = estimate_spectrum(source, seed=1)
        _assert_contains(estimate, low, high)
        assert estimate.converged and estimate.matvecs <= 300
        assert estimate.lmax / high < 1.4 and low / estimate.lmin < 1.1
        # an explicit matrix this small gets its lower end proven by a sparse LDL^T
        assert estimate.lmin_method == ("cholesky" if source is W else "lanczos")
    # the largest end also against ARPACK
    assert high == pytest.approx(spla.eigsh(W, k=1, which="LA")[0][0], rel=1e-8)


def test_poisson_upper_end_is_gershgorin():
    W = _pyamg_matrix("poisson")
    estimate = estimate_spectrum(W, seed=0)
    assert (estimate.lmax_method, estimate.lmax_failure_probability) == ("gershgorin", 0.0)
    # the row sums 4 + 1 + 1 + 1 + 1 are exact; the bound keeps a rounding margin of 6 eps
    assert 8.0 <= estimate.lmax <= 8.0 * (1 + 6 * np.finfo(float).eps)


@pytest.mark.parametrize("seed", range(4))
def test_random_dense_spd_is_contained(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    W = (Q * np.geomspace(10.0 ** -rng.uniform(0, 4), 1.0, n)) @ Q.T
    W = (W + W.T) / 2
    low, high = _extremes(W)
    _assert_contains(estimate_spectrum(W, seed=seed), low, high)
    _assert_contains(estimate_spectrum(spla.aslinearoperator(W), seed=seed), low, high)


@pytest.mark.parametrize("cap", [1, 5, 12, 40, 120])
def test_matvec_cap_is_respected(cap):
    W = _pyamg_matrix("poisson")
    low, high = _extremes(W)
    operator = CountingOperator(W)
    try:
        estimate = estimate_spectrum(operator, max_iter=cap, seed=0)
    except ValueError as error:
        assert f"max_iter={cap}" in str(error)
    else:
        _assert_contains(estimate, low, high)
        assert estimate.matvecs == operator.calls
    assert operator.calls <= cap
    # the explicit matrix falls back to eigvalsh (n = 900), spending no more products
    explicit = estimate_spectrum(W, max_iter=cap, seed=0)
    _assert_contains(explicit, low, high)
    assert explicit.matvecs <= cap


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_cholesky_certificate_proves_only_true_lower_bounds(kind):
    W = _pyamg_matrix("airfoil")
    W = W.toarray() if kind == "dense" else W
    low, high = _extremes(W)
    # below lambda_min: proven, minus the rounding margin 2 (n + 1) eps ||W||
    proven = _cholesky_certificate(W, 0.9 * low * 1.05, 1.05, high)
    margin = 2 * (W.shape[0] + 1) * np.finfo(float).eps * high
    assert proven == pytest.approx(0.9 * low - margin, rel=1e-12)
    # above lambda_min: W - sigma I is indefinite, nothing is proven
    assert _cholesky_certificate(W, 1.01 * low * 1.05, 1.05, high) is None
    assert _cholesky_certificate(W, 0.0, 1.05, high) is None


def test_probabilistic_upper_bound_formula():
    # epsilon_k = (ln(1.648 sqrt(n) / delta) / (2j - 1))^2 with j = k - 1 products
    assert _kw_epsilon(10_000, 50, 1e-4) == pytest.approx((np.log(1.648e6) / 97) ** 2)
    assert _kw_epsilon(10_000, 1, 1e-4) == np.inf
    W = gaussian_gram(300, 600, 12)
    low, high = _extremes(W)
    few = estimate_spectrum(spla.aslinearoperator(W), max_iter=20, max_exact_size=0, seed=0,
                            tol=0.5)
    assert few.lmax_method == "lanczos" and few.lmax >= high
    assert few.lmax >= few.ritz_max / (1 - _kw_epsilon(300, 20, 1e-4)) * (1 - 1e-12)


@pytest.mark.parametrize("factor", [2.0**1000, 2.0**-1000, 1e300, 1e-300])
@pytest.mark.parametrize("kind", ["dense", "sparse", "operator"])
def test_scale_extremes_are_homogeneous(factor, kind):
    W = gaussian_gram(120, 240, 3)
    convert = {"dense": np.asarray, "sparse": sp.csr_array,
               "operator": spla.aslinearoperator}[kind]
    reference = estimate_spectrum(convert(W), seed=0)
    scaled = estimate_spectrum(convert(W * factor), seed=0)
    low, high = _extremes(W)
    _assert_contains(scaled, low * factor, high * factor)
    assert scaled.lmin == pytest.approx(reference.lmin * factor, rel=1e-9)
    assert scaled.lmax == pytest.approx(reference.lmax * factor, rel=1e-9)
    if kind != "operator" and factor in (2.0**1000, 2.0**-1000):
        # a power of two changes nothing but the exponent
        assert (scaled.lmin, scaled.lmax) == (reference.lmin * factor, reference.lmax * factor)


def test_sparse_laplacian_scaled_to_extremes():
    W = _pyamg_matrix("poisson")
    low, high = _extremes(W)
    for factor in (1e300, 1e-300):
        _assert_contains(estimate_spectrum(W * factor, seed=0), low * factor, high * factor)


def test_unrepresentable_spectrum_is_refused():
    W = np.diag([1e308, 1.5e308, 1.7e308, 1.0e308])
    estimate = estimate_spectrum(W, safety=1.0)
    assert estimate.lmax_method == "gershgorin"
    assert 1.7e308 <= estimate.lmax <= 1.7e308 * (1 + 8 * np.finfo(float).eps)
    # Gershgorin carries no safety factor, so the default is representable too
    assert estimate_spectrum(W).lmax == estimate.lmax
    # lambda_max = 1.9e308 exceeds float64 although every entry is finite
    with pytest.raises(ValueError, match="float64 range"):
        estimate_spectrum(1e308 * np.array([[1.0, 0.9], [0.9, 1.0]]))


def _graph_laplacian(grid):
    adjacency = -sp.triu(pyamg.gallery.poisson((grid, grid), format="csr"), 1)
    adjacency = adjacency + adjacency.T
    return sp.csr_array(sp.diags(np.asarray(adjacency.sum(axis=1)).ravel()) - adjacency)


@pytest.mark.parametrize("W, match", [
    (np.zeros((5, 5)), "W is the zero matrix"),
    (sp.csr_array((6, 6)), "W is the zero matrix"),
    (spla.aslinearoperator(np.zeros((6, 6))), "W appears to be the zero operator"),
    (np.diag([0.0, 1.0, 2.0]), "W is singular"),
    (np.diag([0.0, 1.0, 2.0, 3.0, 5.0, 7.0]), "W is singular"),
    (_graph_laplacian(8).toarray(), "W is singular"),
    (_graph_laplacian(50), "W is singular"),
    (spla.aslinearoperator(_graph_laplacian(50)), "W is singular"),
    (np.diag([-1.0, 1.0, 2.0, 3.0]), "W must be positive semidefinite"),
    (sp.diags(np.linspace(-1.0, 2.0, 3000)), "W must be positive semidefinite"),
    (spla.aslinearoperator(-_graph_laplacian(20)), "W must be positive semidefinite"),
])
def test_zero_singular_and_indefinite_W_are_clear_errors(W, match):
    with pytest.raises(ValueError, match=match):
        estimate_spectrum(W, seed=0)


def test_non_finite_products_are_refused():
    nan_operator = spla.LinearOperator((4, 4), matvec=lambda v: np.full(4, np.nan))
    with pytest.raises(ValueError, match="W @ v is not finite"):
        estimate_spectrum(nan_operator, seed=0)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 60),
    log_condition=st.floats(0.0, 9.0),
    log_scale=st.floats(-290.0, 290.0),
    cap=st.integers(1, 120),
    kind=st.sampled_from(["dense", "sparse", "operator", "rotated"]),
    exact_size=st.sampled_from([0, 2000]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_interval_contains_spectrum_or_fails_clearly(n, log_condition, log_scale, cap,
                                                             kind, exact_size, seed):
    rng = np.random.default_rng(seed)
    eigenvalues = 10.0 ** (log_scale - rng.uniform(0, log_condition, n))
    if kind == "rotated":
        Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        W = (Q * eigenvalues) @ Q.T
        W = (W + W.T) / 2
        low, high = _extremes(W)
    else:
        W = {"dense": np.diag, "sparse": sp.diags,
             "operator": lambda d: spla.aslinearoperator(sp.diags(d))}[kind](eigenvalues)
        low, high = eigenvalues.min(), eigenvalues.max()
    try:
        estimate = estimate_spectrum(W, max_iter=cap, max_exact_size=exact_size, seed=seed)
    except ValueError as error:
        assert "W" in str(error) or "max_iter" in str(error)
    else:
        _assert_contains(estimate, low, high)
        assert estimate.matvecs <= cap
        if kind != "operator" and exact_size:
            # explicit and small: the lower end is proven, never the bare estimate
            assert estimate.lmin_method in ("exact", "cholesky", "gershgorin")


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
    (np.eye(3) * (1 + 1j), TypeError, "W must be a real matrix"),
    (sp.csr_array(np.eye(3) * (1 + 1j)), TypeError, "W must be a real matrix"),
    (spla.LinearOperator((3, 3), matvec=lambda v: v, dtype=complex), TypeError,
     "W must be a real operator"),
])
def test_bad_operators(W, error, match):
    with pytest.raises(error, match=match):
        estimate_spectrum(W, method="exact" if not isinstance(W, spla.LinearOperator) else
                          "lanczos")


@pytest.mark.parametrize("options, match", [
    ({"safety": 0.9}, "safety"), ({"method": "power"}, "method"), ({"tol": 1.0}, "tol"),
    ({"tol": 0.0}, "tol"), ({"max_iter": 0}, "max_iter"),
    ({"max_exact_size": -1}, "max_exact_size"), ({"failure_probability": 0.0},
                                                  "failure_probability"),
])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        estimate_spectrum(np.eye(4), **options)


def test_exact_needs_an_explicit_matrix():
    with pytest.raises(ValueError, match="LinearOperator"):
        estimate_spectrum(spla.aslinearoperator(np.eye(5)), method="exact")


def test_normal_operator_is_estimated_as_an_operator():
    from stepsize.chebyshev import normal_equations

    A = np.random.default_rng(0).standard_normal((60, 20))
    W, _ = normal_equations(A, np.ones(60))
    estimate = estimate_spectrum(W, seed=0)
    eigenvalues = np.linalg.eigvalsh(A.T @ A)
    assert estimate.lmin <= eigenvalues[0] and estimate.lmax >= eigenvalues[-1]


def test_spectrum_x_follows_its_bounds():
    """Review finding: Spectrum is a mutable SolverResult; setting lmin left x stale."""
    spectrum = estimate_spectrum(np.diag([1.0, 2.0, 5.0]), method="exact")
    assert spectrum.x == (spectrum.lmin, spectrum.lmax)
    assert spectrum.lmin <= 1.0 and spectrum.lmax >= 5.0  # the exact ends, widened
    spectrum.lmin = 0.5
    assert spectrum.x == (0.5, spectrum.lmax) and spectrum.kappa == spectrum.lmax / 0.5
