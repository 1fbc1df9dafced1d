"""Solvers against numpy/scipy references, identities between methods, torch and bad input."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize import ConvergenceWarning
from stepsize._reference.instances import gaussian_gram, gaussian_operator, jacobi_instance
from stepsize.chebyshev import (
    ChebyshevOptions,
    chebyshev_bound,
    chebyshev_gd,
    chebyshev_period,
    chebyshev_psor,
    chebyshev_semi_iterative,
    chebyshev_steps,
    conjugate_gradient,
    estimate_spectrum,
    gradient_descent,
    heavy_ball,
    jacobi_map,
    jacobi_spectrum,
    normal_equations,
    optimal_constant_step,
    psor,
)

MIXED = ChebyshevOptions(mixed_precision=True)


@pytest.fixture(scope="module")
def system():
    W = gaussian_gram(300, 600, 12)
    eigenvalues = np.linalg.eigvalsh(W)
    X = np.random.default_rng(0).standard_normal((300, 400))
    return W, eigenvalues[0], eigenvalues[-1], X


def test_chebyshev_gd_mse_oracle(system):
    W, lmin, lmax, X = system
    result = chebyshev_gd(W, W @ X, lmin=lmin, lmax=lmax, x_true=X, history=True,
                          options=ChebyshevOptions(T=25))
    assert np.mean((result.x - X) ** 2) == pytest.approx(2.45e-8, rel=0.1)
    assert result.n_iter == 25 and len(result.history) == 26 and result.history[0] == 1.0
    assert result.info["matvecs"] == 26 * 400


def test_gd_constant_step_mse_oracle(system):
    W, lmin, lmax, X = system
    result = gradient_descent(W, W @ X, optimal_constant_step(lmin, lmax), max_iter=25)
    assert np.mean((result.x - X) ** 2) == pytest.approx(1.048e-3, rel=0.05)


def test_semi_iterative_equals_chebyshev_gd_at_T(system):
    W, lmin, lmax, X = system
    C = W @ X[:, :20]
    for T in (5, 16, 25):
        chgd = chebyshev_gd(W, C, lmin=lmin, lmax=lmax, options=ChebyshevOptions(T=T))
        semi = chebyshev_semi_iterative(W, C, lmin=lmin, lmax=lmax, max_iter=T)
        np.testing.assert_allclose(semi.x, chgd.x, rtol=0, atol=1e-9)


def test_cg_matches_scipy(system):
    W, _, _, X = system
    c = W @ X[:, 0]
    ours = conjugate_gradient(W, c, max_iter=30)
    reference = spla.cg(W, c, rtol=1e-30, atol=0, maxiter=30)[0]
    np.testing.assert_allclose(ours.x, reference, rtol=1e-8, atol=1e-10)


def test_heavy_ball_rate(system):
    W, lmin, lmax, X = system
    result = heavy_ball(W, W @ X[:, :10], lmin=lmin, lmax=lmax, max_iter=100, x_true=X[:, :10],
                        history=True)
    rate = (result.history[100] / result.history[50]) ** (1 / 50)
    assert rate == pytest.approx(0.6948, abs=0.03)


def test_tolerance_stops_and_converges_to_solve():
    W = gaussian_gram(100, 300, 1)
    c = np.random.default_rng(1).standard_normal(100)
    solution = np.linalg.solve(W, c)
    for solver in (chebyshev_gd, chebyshev_semi_iterative, heavy_ball):
        result = solver(W, c, tol=1e-10, max_iter=2000)
        assert result.converged, solver.__name__
        assert np.linalg.norm(W @ result.x - c) <= 1.0001e-10 * np.linalg.norm(c)
        np.testing.assert_allclose(result.x, solution, rtol=1e-7, atol=1e-8)
    assert conjugate_gradient(W, c, tol=1e-10).converged


def test_estimated_spectrum_counts_matvecs():
    W = gaussian_gram(100, 300, 1)
    result = chebyshev_gd(W, np.ones(100), seed=0, options=ChebyshevOptions(T=16))
    # 15 CG steps estimate the interval (and advance x), then one period of 16 steps; the
    # initial residual is the one further product
    assert (result.info["estimation_matvecs"], result.n_iter) == (15, 15 + 16)
    assert result.info["matvecs"] == 1 + 15 + 16
    assert result.info["lmax"] >= np.linalg.eigvalsh(W)[-1]


def test_non_convergence_warns(system):
    W, lmin, lmax, X = system
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        result = chebyshev_gd(W, W @ X[:, 0], lmin=lmin, lmax=lmax, max_iter=5, tol=1e-12,
                              options=ChebyshevOptions(T=5))
    assert not result.converged


def test_least_squares_through_normal_operator():
    A = gaussian_operator(300, 600, 12)
    X = np.random.default_rng(2).standard_normal((300, 8))
    W, c = normal_equations(A, A @ X)
    result = chebyshev_gd(W, c, max_iter=100, seed=0, options=ChebyshevOptions(T=25))
    np.testing.assert_allclose(result.x, X, atol=1e-8)


def test_sparse_operator_batched():
    A = sp.random(2000, 2000, density=2e-3, random_state=0)
    W = (A @ A.T + sp.eye(2000)).tocsr()
    C = np.random.default_rng(0).standard_normal((2000, 16))
    result = chebyshev_gd(W, C, tol=1e-8, max_iter=2000, seed=0)
    assert result.converged
    reference = spla.splu(W.tocsc()).solve(C)
    np.testing.assert_allclose(result.x, reference, rtol=1e-6, atol=1e-7)


def test_torch_tensors_float32_and_float64(system):
    torch = pytest.importorskip("torch")
    W, lmin, lmax, X = system
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        Wt = torch.tensor(W, dtype=dtype)
        Ct = Wt @ torch.tensor(X[:, :50], dtype=dtype)
        result = chebyshev_gd(Wt, Ct, lmin=lmin, lmax=lmax, options=ChebyshevOptions(T=25))
        assert isinstance(result.x, torch.Tensor) and result.x.dtype == dtype
        numpy_result = chebyshev_gd(W, W @ X[:, :50], lmin=lmin, lmax=lmax,
                                    options=ChebyshevOptions(T=25))
        np.testing.assert_allclose(result.x.double().numpy(), numpy_result.x, atol=tolerance)
    A = torch.tensor(gaussian_operator(300, 600, 12))
    Wn, c = normal_equations(A, A @ torch.tensor(X[:, :4]))
    solved = chebyshev_gd(Wn, c, max_iter=100, seed=0, options=ChebyshevOptions(T=25))
    np.testing.assert_allclose(solved.x.numpy(), X[:, :4], atol=1e-8)


@pytest.mark.parametrize("call, error, match", [
    (lambda W, c: gradient_descent(W, c, [0.1, -0.1]), ValueError, "steps must be positive"),
    (lambda W, c: gradient_descent(W, c[:-1], 0.1), ValueError, "c must have shape"),
    (lambda W, c: gradient_descent(W, c, 0.1, x0=np.zeros(3)), ValueError, "x0"),
    (lambda W, c: gradient_descent(W, c * np.nan, 0.1), ValueError, "c must be finite"),
    (lambda W, c: gradient_descent(W, c, 0.1, max_iter=0), ValueError, "max_iter"),
    (lambda W, c: chebyshev_gd(W, c, lmin=1.0), ValueError, "both lmin and lmax"),
    (lambda W, c: chebyshev_gd(W, c, spectrum=(1, 2)), TypeError, "Spectrum"),
    (lambda W, c: chebyshev_gd(W[:, :-1], c, lmin=1, lmax=2), ValueError, "square"),
    (lambda W, c: chebyshev_gd(W + np.triu(W, 1), c, lmin=1, lmax=2), ValueError, "symmetric"),
    (lambda W, c: chebyshev_gd(np.diag([0.0, 1.0, 2.0, 3.0]), c[:4]), ValueError, "singular"),
    (lambda W, c: gradient_descent(W, c, 0.1, x0=c * np.inf), ValueError, "x0 must be finite"),
    (lambda W, c: gradient_descent(W, c, 0.1, x_true=c[:3]), ValueError, "x_true must have"),
    (lambda W, c: chebyshev_gd(W, c, lmin=1, lmax=2, options=ChebyshevOptions(T=0)), ValueError,
     "T must be >= 1"),
    (lambda W, c: chebyshev_gd(W, c, lmin=1, lmax=2, tol=-1.0), ValueError, "tol"),
])
def test_bad_input(call, error, match):
    W = gaussian_gram(10, 30, 0)
    with pytest.raises(error, match=match):
        call(W, np.ones(10))


def test_torch_operator_checked():
    torch = pytest.importorskip("torch")
    c = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="W must be symmetric"):
        chebyshev_gd(torch.tensor([[2.0, 1.0, 0], [0, 2.0, 0], [0, 0, 1.0]]), c, lmin=1, lmax=3)
    with pytest.raises(ValueError, match="W must be finite"):
        chebyshev_gd(torch.full((3, 3), float("nan")), c, lmin=1, lmax=3)
    with pytest.raises(ValueError, match="W must be a square"):
        chebyshev_gd(torch.ones(3, 2), c, lmin=1, lmax=3)


def test_psor_jacobi_factors_match_note():
    P = jacobi_instance(512, 0)
    spectrum = jacobi_spectrum(P)
    assert spectrum.lmin == pytest.approx(0.676575, abs=1e-4)
    assert spectrum.lmax == pytest.approx(1.921624, abs=1e-4)
    x0 = np.random.default_rng(0).standard_normal((512, 4))
    zero = np.zeros_like(x0)
    f = jacobi_map(P, zero)
    cheb = chebyshev_psor(f, x0, lmin=spectrum.lmin, lmax=spectrum.lmax, T=8, max_iter=24,
                          x_true=zero, history=True)
    constant = psor(f, x0, optimal_constant_step(spectrum.lmin, spectrum.lmax), max_iter=24,
                    x_true=zero, history=True)
    bound = chebyshev_bound(spectrum.lmin, spectrum.lmax, 8)
    assert cheb.history[8] <= bound * 1.0001 and cheb.history[24] <= bound**3 * 1.0001
    assert cheb.history[24] ** (1 / 24) == pytest.approx(0.2783, abs=0.02)
    assert constant.history[24] ** (1 / 24) < 0.4792 + 1e-3
    # Chebyshev-PSOR on a linear Jacobi map is Chebyshev GD on D^-1 P.
    omegas = chebyshev_steps(spectrum.lmin, spectrum.lmax, 8)
    np.testing.assert_allclose(cheb.info["omegas"], omegas)


def test_psor_bad_input():
    with pytest.raises(TypeError, match="fixed_point_map"):
        psor(None, np.ones(3), 1.0)
    with pytest.raises(ValueError, match="omegas"):
        psor(lambda x: x, np.ones(3), [1.0, 0.0])
    with pytest.raises(ValueError, match="returned shape"):
        psor(lambda x: x[:2], np.ones(3), 1.0)
    with pytest.raises(ValueError, match="positive diagonal"):
        jacobi_map(np.array([[0.0, 1.0], [1.0, 0.0]]), np.ones(2))
    with pytest.raises(ValueError, match="q must have"):
        jacobi_map(np.eye(3), np.ones(2))


def _grid_laplacian(grid: int, shift: float):
    one_d = sp.diags([-np.ones(grid - 1), 2 * np.ones(grid), -np.ones(grid - 1)], [-1, 0, 1])
    return sp.csr_array(sp.kronsum(one_d, one_d) + shift * sp.eye(grid * grid))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_mixed_precision_reaches_float64_accuracy(kind):
    rng = np.random.default_rng(3)
    if kind == "dense":
        Q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
        W = (Q * np.geomspace(1e-2, 1.0, 200)) @ Q.T
        W = (W + W.T) / 2
    else:
        W = _grid_laplacian(20, 0.05)
    X = rng.standard_normal((W.shape[0], 12))
    C = W @ X
    spectrum = estimate_spectrum(W, seed=0)
    mixed = chebyshev_gd(W, C, spectrum=spectrum, tol=1e-10, max_iter=5000, history=True,
                         options=MIXED)
    plain = chebyshev_gd(W, C, spectrum=spectrum, tol=1e-10, max_iter=5000)
    assert mixed.converged and mixed.x.dtype == np.float64
    residual = np.linalg.norm(C - W @ mixed.x, axis=0) / np.linalg.norm(C, axis=0)
    assert residual.max() <= 1e-10
    # float32 periods, float64 corrections: float64 accuracy in a few periods
    assert np.linalg.norm(mixed.x - X) / np.linalg.norm(X) < 1e-8
    assert 2 <= len(mixed.history) - 1 <= 4 and mixed.history[-1] <= 1e-10
    assert mixed.n_iter <= 1.2 * plain.n_iter
    periods = len(mixed.history) - 1
    assert mixed.info["matvecs"] == (mixed.n_iter + 1 + periods) * 12 + spectrum.matvecs


def test_mixed_precision_torch():
    torch = pytest.importorskip("torch")
    W = _grid_laplacian(12, 0.1).toarray()
    X = np.random.default_rng(4).standard_normal((144, 3))
    result = chebyshev_gd(torch.tensor(W), torch.tensor(W @ X), tol=1e-11, max_iter=5000, seed=0,
                          options=MIXED)
    assert result.converged and result.x.dtype == torch.float64
    np.testing.assert_allclose(result.x.numpy(), X, atol=1e-9)


def test_sparse_column_blocks_are_exact():
    # n = 2500 and 300 columns: four float64 work arrays of 12 MiB / (32 * 2500) = 157 columns
    # round down to blocks of 128 (128 + 128 + 44); with a history the batch runs in one piece
    W = _grid_laplacian(50, 0.2)
    C = np.random.default_rng(5).standard_normal((2500, 300))
    whole = chebyshev_gd(W, C, lmin=0.2, lmax=8.2, max_iter=48, history=True,
                         options=ChebyshevOptions(T=16))
    blocked = chebyshev_gd(W, C, lmin=0.2, lmax=8.2, max_iter=48, options=ChebyshevOptions(T=16))
    assert blocked.info["column_blocks"] == 3 and "column_blocks" not in whole.info
    np.testing.assert_allclose(blocked.x, whole.x, rtol=0, atol=1e-13)
    assert blocked.info["matvecs"] == whole.info["matvecs"] == 49 * 300
    # mixed precision: four float32 arrays, 12 MiB / (16 * 2500) = 314 columns -> blocks of 256
    solved = chebyshev_gd(W, C, tol=1e-9, max_iter=2000, seed=0, options=MIXED)
    assert solved.converged and solved.info["column_blocks"] == 2
    residual = np.linalg.norm(C - W @ solved.x, axis=0) / np.linalg.norm(C, axis=0)
    assert residual.max() <= 1e-9
    with pytest.warns(ConvergenceWarning):
        chebyshev_gd(W, C, lmin=0.2, lmax=8.2, tol=1e-12, max_iter=3)


def test_column_blocks_follow_the_byte_budget():
    from stepsize.chebyshev._drivers import column_blocks

    W, C = _grid_laplacian(16, 0.2), np.zeros((256, 40))
    # 32 bytes per entry: a 16 * 256 * 32 byte budget holds 16 columns
    assert column_blocks(W, C, False, 32, block_bytes=16 * 256 * 32) == [
        slice(0, 16), slice(16, 32), slice(32, 48)]
    assert column_blocks(W, C, False, 32, block_bytes=4 * 256 * 32)[0] == slice(0, 8)  # >= 8
    assert column_blocks(W, C, False, 32) is None  # 12 MiB holds all 40 columns
    assert column_blocks(W, C, True, 32, block_bytes=1) is None  # a history needs the batch
    assert column_blocks(W.toarray(), C, False, 32, block_bytes=1) is None  # dense: one GEMM


@pytest.mark.parametrize("call, error, match", [
    (lambda W, c: chebyshev_gd(W, c.astype(np.float32), lmin=1, lmax=2, options=MIXED),
     ValueError, "float64"),
    (lambda W, c: chebyshev_gd(spla.aslinearoperator(W), c, lmin=1, lmax=2, options=MIXED),
     TypeError, "mixed_precision needs W"),
    (lambda W, c: chebyshev_gd(W, c, lmin=1, lmax=2,
                               options=ChebyshevOptions(T=8, mixed_precision=True)),
     ValueError, "leave options.T=None"),
    (lambda W, c: chebyshev_gd(W, c, lmin=1e-6, lmax=2, options=MIXED),
     ValueError, "lmax / lmin"),
])
def test_mixed_precision_bad_input(call, error, match):
    W = np.diag(np.linspace(1.0, 2.0, 5))
    with pytest.raises(error, match=match):
        call(W, np.ones(5))


def test_chebyshev_period_reaches_the_reduction():
    for lmin, lmax, reduction in ((1.0, 30.0, 1e-10), (1e-3, 1.0, 1e-6), (1.0, 4.0, 1e-3)):
        T = chebyshev_period(lmin, lmax, reduction)
        assert chebyshev_bound(lmin, lmax, T) <= reduction or T == 256
        assert T == 8 or chebyshev_bound(lmin, lmax, T - 1) > 0.5 * reduction


@pytest.mark.parametrize("args, match", [
    ((0.0, 1.0, 1e-6), "lmin"), ((2.0, 1.0, 1e-6), "lmin must be <= lmax"),
    ((1.0, 2.0, 0.0), "reduction"), ((1.0, 2.0, 1.5), "reduction"),
])
def test_chebyshev_period_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        chebyshev_period(*args)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ChebyshevOptions(order="random"), ValueError, "order must be one of"),
    (lambda: ChebyshevOptions(estimate_iter=0), ValueError, "estimate_iter must be >= 1"),
    (lambda: ChebyshevOptions(T=2.5), TypeError, "T must be an int"),
    (lambda: ChebyshevOptions(mixed_precision="yes"), TypeError, "mixed_precision must be a bool"),
    (lambda: ChebyshevOptions(8), TypeError, "positional"),
    (lambda: chebyshev_gd(np.eye(2), np.ones(2), options={"T": 8}), TypeError,
     "options must be a ChebyshevOptions"),
    (lambda: chebyshev_semi_iterative(np.eye(2), np.ones(2), options=ChebyshevOptions(T=8)),
     ValueError, "options.T is not an option of chebyshev_semi_iterative"),
    (lambda: chebyshev_semi_iterative(np.eye(2), np.ones(2),
                                      options=ChebyshevOptions(order="natural")),
     ValueError, "options.order is not an option"),
    (lambda: chebyshev_semi_iterative(np.eye(2), np.ones(2), options=MIXED),
     ValueError, "options.mixed_precision is not an option"),
])
def test_chebyshev_options_are_validated(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_chebyshev_options_change_the_solve(system):
    """Each field acts: T and order set the steps (the error at t = T meets the bound of T);
    estimate_iter sets the CG steps of the estimate; semi_iterative uses estimate_iter too."""
    W, lmin, lmax, X = system
    C = W @ X[:, :20]
    for T in (4, 9):
        result = chebyshev_gd(W, C, lmin=lmin, lmax=lmax, max_iter=T,
                              options=ChebyshevOptions(T=T, order="natural"))
        error = np.linalg.norm(result.x - X[:, :20]) / np.linalg.norm(X[:, :20])
        assert error <= chebyshev_bound(lmin, lmax, T) * (1 + 1e-9)
        assert error >= 0.3 * chebyshev_bound(lmin, lmax, T)  # not a longer solve
    for solver in (chebyshev_gd, chebyshev_semi_iterative):
        few = solver(W, C[:, 0], tol=1e-8, options=ChebyshevOptions(estimate_iter=4))
        many = solver(W, C[:, 0], tol=1e-8, options=ChebyshevOptions(estimate_iter=30))
        assert few.info["intervals"][0] != many.info["intervals"][0]
        assert few.converged and many.converged
    assert ChebyshevOptions() == ChebyshevOptions(T=None, order="fractal", estimate_iter=15,
                                                  mixed_precision=False)
