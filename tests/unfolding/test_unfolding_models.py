"""UnfoldedGD / UnfoldedPSOR: forward passes against numpy, operator forms, bad inputs."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

torch = pytest.importorskip("torch")

from stepsize.chebyshev import (  # noqa: E402
    chebyshev_steps,
    contraction_factor,
    expected_squared_error,
    jacobi_spectrum,
)
from stepsize.unfolding import (  # noqa: E402
    CallableOperator,
    DiagonalOperator,
    UnfoldedGD,
    UnfoldedPSOR,
)


def numpy_gd(A, y, steps):
    """Reference: x_{t+1} = x_t + gamma_t A^T (y - A x_t) on columns, x_0 = 0."""
    x = np.zeros(A.shape[1])
    for gamma in steps:
        x = x + gamma * A.T @ (y - A @ x)
    return x


@pytest.fixture
def small_problem():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(12, 7)) / np.sqrt(7)
    Y = rng.normal(size=(4, 12))
    steps = rng.uniform(0.1, 0.6, size=5)
    return A, Y, steps


def test_forward_matches_numpy_iteration(small_problem):
    A, Y, steps = small_problem
    model = UnfoldedGD(5, A, init=steps)
    got = model(torch.as_tensor(Y)).detach().numpy()
    want = np.stack([numpy_gd(A, y, steps) for y in Y])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    single = model(Y[0], n_steps=3).detach().numpy()
    np.testing.assert_allclose(single, numpy_gd(A, Y[0], steps[:3]), rtol=1e-13)
    assert model(Y[0], n_steps=0).abs().max() == 0  # x_0 = 0


def test_steps_enter_through_absolute_value(small_problem):
    A, Y, steps = small_problem
    flipped = UnfoldedGD(5, A, init=-steps)
    np.testing.assert_allclose(flipped.step_sizes.numpy(), steps)
    np.testing.assert_allclose(
        flipped(Y).detach().numpy(), UnfoldedGD(5, A, init=steps)(Y).detach().numpy()
    )


def test_iterates_yield_every_layer(small_problem):
    A, Y, steps = small_problem
    iterates = list(UnfoldedGD(5, A, init=steps).iterates(Y[1]))
    assert len(iterates) == 6
    np.testing.assert_allclose(iterates[2].detach().numpy(), numpy_gd(A, Y[1], steps[:2]))


def test_callable_and_linear_operator_forms_agree_with_dense(small_problem):
    A, Y, steps = small_problem
    At = torch.as_tensor(A)
    forms = [
        A,
        CallableOperator(lambda x: x @ At.T, lambda y: y @ At, A.shape),
        spla.aslinearoperator(A),
    ]
    outputs, gradients = [], []
    for operator in forms:
        model = UnfoldedGD(5, operator, init=steps)
        out = model(Y)
        out.square().sum().backward()
        outputs.append(out.detach().numpy())
        gradients.append(model.steps.grad.numpy())
    for out, grad in zip(outputs[1:], gradients[1:]):
        np.testing.assert_allclose(out, outputs[0], rtol=1e-12)
        np.testing.assert_allclose(grad, gradients[0], rtol=1e-10)


def test_eigenbasis_form_has_the_same_errors_as_the_dense_form(small_problem):
    """With A = U S V^T, the error of the dense run is V times the error of the diagonal run."""
    A, _, steps = small_problem
    _, singular, Vt = np.linalg.svd(A, full_matrices=False)
    x_true = np.random.default_rng(4).normal(size=(3, 7))
    dense = UnfoldedGD(5, A, init=steps)(x_true @ A.T).detach().numpy() - x_true
    diagonal = UnfoldedGD(5, DiagonalOperator(singular**2), init=steps)
    rotated = x_true @ Vt.T
    error = diagonal(rotated * singular).detach().numpy() - rotated
    np.testing.assert_allclose(error @ Vt, dense, atol=1e-13)


def test_chebyshev_init_uses_the_exact_spectrum(notebook_matrix, notebook_eigenvalues):
    model = UnfoldedGD(25, notebook_matrix, init="chebyshev", chebyshev_order="zigzag")
    lmin, lmax = notebook_eigenvalues[0], notebook_eigenvalues[-1]
    np.testing.assert_allclose(lmin, 0.184191, atol=1e-6)  # research note E1
    np.testing.assert_allclose(lmax, 5.678371, atol=1e-6)
    np.testing.assert_allclose(
        model.step_sizes.numpy(), chebyshev_steps(lmin, lmax, 25, "zigzag"), rtol=1e-12
    )  # not 1e-15: the fixture's spectrum is computed with 2 BLAS threads (conftest)
    # rho(Q_25) of the Chebyshev steps: 2.2233e-4 (note E1)
    assert contraction_factor(model.step_sizes.numpy(), notebook_eigenvalues) == pytest.approx(
        2.2233e-4, rel=1e-3
    )


@pytest.mark.parametrize(
    ("order", "low", "high"),
    [("fractal", 2.0e-8, 3.0e-8), ("zigzag", 2.0e-8, 3.0e-8), ("natural", 10.0, np.inf)],
)
def test_float32_dense_chebyshev_ordering(notebook_matrix, order, low, high):
    """Note 8.1: float32, dense seed-12 problem, T = 25: fractal/zig-zag reach ~2.4e-8 (zig-zag
    2.54e-8), natural order diverges (~1.4e3). Bounds are generous around the note's values
    (2000 samples there, 1000 here with another RNG)."""
    model = UnfoldedGD(
        25, torch.as_tensor(notebook_matrix, dtype=torch.float32), init="chebyshev",
        chebyshev_order=order,
    )
    assert model.steps.dtype == torch.float32
    generator = torch.Generator().manual_seed(0)
    x_true = torch.randn(1000, 300, generator=generator)
    with torch.no_grad():
        mse = float((model(model.operator.apply(x_true)) - x_true).square().mean())
    assert low < mse < high


def test_expected_mse_matches_monte_carlo(small_problem):
    A, _, steps = small_problem
    eigenvalues = np.linalg.eigvalsh(A.T @ A)
    x_true = torch.randn(200000, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = UnfoldedGD(5, A, init=steps)
    with torch.no_grad():
        mse = float((model(model.operator.apply(x_true)) - x_true).square().mean())
    # standard error of a mean of 1.4e6 chi-square-like terms: well under 1%
    assert mse == pytest.approx(expected_squared_error(steps, eigenvalues), rel=1e-2)


def test_diagonal_training_loss_equals_unrolled_minibatch_loss(notebook_eigenvalues):
    steps = [2.5, 0.2, 1.0, 0.3, 0.5, 0.4]
    model = UnfoldedGD(6, DiagonalOperator(notebook_eigenvalues), init=steps)
    fast = model._training_loss(50, torch.Generator().manual_seed(7), 6)
    fast.backward()
    fast_grad = model.steps.grad.clone()
    model.steps.grad = None
    x_true = torch.randn(50, 300, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    slow = (model._unroll(model.operator.apply(x_true), 6) - x_true).square().mean()
    slow.backward()
    assert float(fast.detach()) == pytest.approx(float(slow.detach()), rel=1e-12)
    np.testing.assert_allclose(fast_grad.numpy(), model.steps.grad.numpy(), rtol=1e-10)


def test_psor_with_chebyshev_factors_matches_the_error_product():
    """Jacobi PSOR: e_T = prod_k (I - omega_k D^{-1} P) e_0 (x* = 0, as in Jacobi.ipynb)."""
    rng = np.random.default_rng(0)
    M = rng.normal(0, 0.03, size=(64, 64))
    P = np.eye(64) + M.T @ M
    q = np.zeros(64)
    iteration = np.diag(1 / np.diag(P)) @ P
    spectrum = jacobi_spectrum(P)
    omegas = chebyshev_steps(spectrum.lmin, spectrum.lmax, 8)
    np.testing.assert_allclose(
        [spectrum.lmin, spectrum.lmax], np.sort(np.linalg.eigvals(iteration).real)[[0, -1]]
    )
    model = UnfoldedPSOR.jacobi(8, P, q)
    np.testing.assert_allclose(model.omegas.detach().numpy(), omegas)
    x0 = rng.normal(size=64)
    want = x0.copy()
    for omega in np.concatenate([omegas, omegas]):
        want = want - omega * iteration @ want
    got = model(x0, n_steps=16).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.linalg.norm(got) < 1e-6 * np.linalg.norm(x0)  # 1/T_8 per period here is ~1e-5
    plain = UnfoldedPSOR.jacobi(8, P, q, init=1.0)(x0, n_steps=16).detach().numpy()
    assert np.linalg.norm(plain) > 1e3 * np.linalg.norm(got)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: UnfoldedGD(0, np.eye(2)), ValueError, "T must be >= 1"),
        (lambda: UnfoldedGD(2.5, np.eye(2)), TypeError, "T must be an integer"),
        (
            lambda: UnfoldedGD(3, np.array([[1.0, np.nan], [0, 1]])),
            ValueError, "operator must be finite",
        ),
        (lambda: UnfoldedGD(3, np.ones(3)), ValueError, "operator must have 2 dimensions"),
        (lambda: UnfoldedGD(3, np.eye(2), init=[0.1]), ValueError, r"init must have shape \(3,\)"),
        (lambda: UnfoldedGD(3, np.eye(2), init=float("inf")), ValueError, "init must be finite"),
        (lambda: UnfoldedGD(3, np.eye(2), init="cheb"), ValueError, "init must be one of"),
        (lambda: UnfoldedGD(3, np.zeros((2, 2)), init="chebyshev"), ValueError, "definite"),
        (lambda: UnfoldedGD(3, "matrix"), TypeError, "operator must be"),
        (lambda: DiagonalOperator([1.0, -1.0]), ValueError, "eigenvalues must be >= 0"),
        (
            lambda: UnfoldedGD(3, CallableOperator(lambda x: 0 * x, lambda y: 0 * y, (2, 2)),
                               init="chebyshev"),
            ValueError, "positive definite, but its smallest eigenvalue is 0",
        ),
        (lambda: UnfoldedPSOR(2, "f", np.zeros(2)), TypeError, "fixed_point_map must be callable"),
        (
            lambda: UnfoldedPSOR.jacobi(2, -np.eye(2), np.ones(2), init=1.0),
            ValueError, "positive diagonal",
        ),
    ],
)
def test_bad_construction(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    ("y", "n_steps", "match"),
    [
        (np.ones(4), None, r"y must have shape \(3,\) or \(batch, 3\)"),
        (np.ones((2, 4)), None, r"y must have shape"),
        (torch.ones(0, 3), None, "empty batch"),
        (torch.tensor([1.0, float("nan"), 0.0]), None, "y must be finite"),
        (np.ones(3), 3, "n_steps must be <= 2"),
        (np.ones(3), -1, "n_steps must be >= 0"),
    ],
)
def test_bad_forward_inputs(y, n_steps, match):
    model = UnfoldedGD(2, np.ones((3, 2)))
    with pytest.raises(ValueError, match=match):
        model(y, n_steps=n_steps)


def test_psor_rejects_wrong_start_shape():
    model = UnfoldedPSOR(2, lambda x: x, np.zeros(3))
    with pytest.raises(ValueError, match=r"x0 must have shape \(3,\)"):
        model(np.ones(4))


def test_chebyshev_init_of_operators_that_do_not_know_their_spectrum(small_problem):
    """Sparse, LinearOperator and callable operators get the spectrum from their Gram matrix."""
    A, _, _ = small_problem
    want = UnfoldedGD(4, A, init="chebyshev").step_sizes.numpy()
    tensor = torch.as_tensor(A)
    for operator in (spla.aslinearoperator(A),
                     CallableOperator(lambda x: x @ tensor.T, lambda y: y @ tensor, A.shape)):
        got = UnfoldedGD(4, operator, init="chebyshev").step_sizes.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10)
