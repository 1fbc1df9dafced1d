"""MatrixPerspective inside PyProximal: its operator calculus, VStack, moreau, and PyProximal's
solvers on a matrix-perspective-regularized least squares against CVXPY."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

pyproximal = pytest.importorskip("pyproximal")
pylops = pytest.importorskip("pylops")

from pyproximal.optimization.primal import (  # noqa: E402
    ADMM,
    AcceleratedProximalGradient,
    ProximalGradient,
)
from pyproximal.optimization.primaldual import PrimalDual  # noqa: E402

from stepsize.prox import MatrixPerspective, prox_matrix_perspective  # noqa: E402
from stepsize.prox.operator import _build  # noqa: E402


def random_flat(rng, f):
    B = rng.standard_normal((f.p, f.p))
    return f.pack((B + B.T) / 2, rng.standard_normal(f.p))


def test_is_a_pyproximal_operator_and_plain_without_it():
    f = MatrixPerspective(3, sigma=0.7)
    assert isinstance(f, pyproximal.ProxOperator) and f.hasgrad is False
    plain_class = _build(use_pyproximal=False)
    assert not issubclass(plain_class, pyproximal.ProxOperator)
    plain = plain_class(3, sigma=0.7)
    for name in ("__call__", "prox", "proxdual", "grad", "pack", "unpack", "postcomposition"):
        assert callable(getattr(plain, name))
    x = random_flat(np.random.default_rng(0), f)
    np.testing.assert_array_equal(plain.prox(x, 1.3), f.prox(x, 1.3))
    np.testing.assert_array_equal(plain.proxdual(x, 1.3), f.proxdual(x, 1.3))
    assert (2 * plain).sigma == pytest.approx(1.4)
    with pytest.raises(ImportError, match="PyProximal"):
        plain.precomposition(2.0, 0.0)


@pytest.mark.parametrize("tau", [1e-6, 0.3, 1.0, 50.0])
def test_moreau_identity_with_pyproximal_utility(tau):
    f = MatrixPerspective(4, sigma=1.5)
    x = random_flat(np.random.default_rng(1), f)
    assert pyproximal.utils.moreau(f, x, tau, tol=1e-10)
    assert pyproximal.utils.moreau(2 * f, x, tau, tol=1e-10)


def test_calculus():
    rng = np.random.default_rng(2)
    f = MatrixPerspective(3, sigma=0.8)
    x, v = random_flat(rng, f), rng.standard_normal(f.size)
    tau = 0.6
    # 2 * f (an int): the same function with twice the weight
    g = 2 * f
    assert isinstance(g, MatrixPerspective) and g.sigma == pytest.approx(1.6)
    np.testing.assert_array_equal(g.prox(x, tau), f.prox(x, 2 * tau))
    assert (f * 3.0).sigma == pytest.approx(2.4)
    # f + v (affine addition): prox_{tau (f + <v, .>)}(x) = prox_{tau f}(x - tau v)
    np.testing.assert_allclose((f + v).prox(x, tau), f.prox(x - tau * v, tau), atol=1e-14)
    # precomposition f(a x + b): (prox_{a^2 tau f}(a x + b) - b) / a, with an int a
    b = rng.standard_normal(f.size)
    expected = (f.prox(2 * x + b, 4 * tau) - b) / 2
    np.testing.assert_allclose(f.precomposition(2, b).prox(x, tau), expected, atol=1e-13)
    # VStack: the prox of a separable sum is the stack of proxes
    w = rng.standard_normal(5)
    stacked = pyproximal.VStack([f, pyproximal.L1(sigma=0.2)], nn=[f.size, 5])
    out = stacked.prox(np.concatenate([x, w]), tau)
    np.testing.assert_allclose(out[: f.size], f.prox(x, tau), atol=1e-15)
    np.testing.assert_allclose(out[f.size :], np.sign(w) * np.maximum(np.abs(w) - 0.12, 0))


def test_shapes_and_dtypes():
    f = MatrixPerspective(3)
    x = random_flat(np.random.default_rng(3), f)
    column = x.astype(np.float32).reshape(-1, 1)
    out = f.prox(column, 0.5)
    assert out.shape == (12, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), f.prox(column.ravel().astype(float), 0.5), rtol=0,
                               atol=1e-7)
    assert f.proxdual(column, 0.5).dtype == np.float32
    assert f.prox(np.arange(12), 0.5).dtype == np.float64  # integers: float64
    assert isinstance(f(column), float)
    with pytest.raises(ValueError, match=r"p\^2 \+ p = 12"):
        f.prox(np.ones(11), 1.0)
    with pytest.raises(ValueError, match="tau"):
        f.prox(x, -1.0)
    with pytest.raises(TypeError, match="x"):
        f.prox(x.astype(complex), 1.0)
    with pytest.raises(ValueError, match="x"):
        f.prox(np.full(12, np.nan), 1.0)


def test_wrong_lengths_raise_naming_x_in_every_method_and_inside_pyproximal():
    """Issue 13's bad input: a vector of the wrong length is a ValueError naming x and the
    expected p^2 + p, from every method and when PyProximal passes a wrong slice."""
    f = MatrixPerspective(3)
    message = r"x must have p\^2 \+ p = 12 entries for p = 3"
    for call in (f, f.grad, f.unpack, lambda v: f.prox(v, 1.0), lambda v: f.proxdual(v, 1.0)):
        for bad in (np.ones(11), np.ones(13), np.ones((3, 3))):
            with pytest.raises(ValueError, match=message):
                call(bad)
    stacked = pyproximal.VStack([f, pyproximal.L1(sigma=0.2)], nn=[11, 6])  # 11, not 12
    with pytest.raises(ValueError, match=message):
        stacked.prox(np.ones(17), 1.0)
    scaled = 2 * f
    with pytest.raises(ValueError, match=message):
        scaled.prox(np.ones(10), 1.0)


def test_grad_in_the_interior_and_error_on_the_boundary():
    rng = np.random.default_rng(4)
    f = MatrixPerspective(3, sigma=1.7)
    G = rng.standard_normal((3, 3))
    x = f.pack(G @ G.T + np.eye(3), rng.standard_normal(3))
    gradient = f.grad(x)
    step = 1e-6
    for i in (0, 4, 10):  # a diagonal entry of Omega, another, an entry of eta
        e = np.zeros(12)
        e[i] = step
        assert gradient[i] == pytest.approx((f(x + e) - f(x - e)) / (2 * step), rel=1e-6)
    # off-diagonal entries: the symmetric direction e_ij + e_ji gets the sum of both entries
    e = np.zeros(12)
    e[1] = e[3] = step
    assert gradient[1] + gradient[3] == pytest.approx((f(x + e) - f(x - e)) / (2 * step),
                                                      rel=1e-6)
    with pytest.raises(ValueError, match="positive definite"):
        f.grad(f.pack(np.diag([1.0, 1.0, 0.0]), np.ones(3)))


@pytest.fixture(scope="module")
def least_squares():
    """min_x 1/2 ||A x - b||^2 + lam phi(x) on the flat layout, p = 3, and CVXPY's optimum."""
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(0)
    p, m, lam = 3, 30, 0.5
    n = p * p + p
    f = MatrixPerspective(p, lam)
    G = rng.standard_normal((p, p))
    A = rng.standard_normal((m, n)) / math.sqrt(m)
    b = A @ f.pack(G @ G.T + 0.5 * np.eye(p), rng.standard_normal(p))
    b += 0.1 * rng.standard_normal(m)
    Omega = cp.Variable((p, p), symmetric=True)
    eta = cp.Variable(p)
    x = cp.hstack([cp.vec(Omega, order="C"), eta])
    # the perspective formulation of _cvxpy_reference: phi = 1/2 matrix_frac(eta, Omega)
    problem = cp.Problem(
        cp.Minimize(0.5 * cp.sum_squares(A @ x - b) + lam * 0.5 * cp.matrix_frac(eta, Omega))
    )
    problem.solve(solver=cp.CLARABEL)

    def objective(x):
        return 0.5 * float(np.sum((A @ x - b) ** 2)) + f(x)

    return f, A, b, objective, float(problem.value)


@pytest.mark.parametrize("solver", ["ProximalGradient", "Accelerated", "ADMM", "PrimalDual"])
def test_pyproximal_solvers_reach_cvxpy(least_squares, solver):
    f, A, b, objective, reference = least_squares
    l2 = pyproximal.L2(Op=pylops.MatrixMult(A), b=b)
    x0 = np.zeros(f.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # AcceleratedProximalGradient's notice
        if solver == "ProximalGradient":  # tau=None: backtracking, tiny trial steps
            x = ProximalGradient(l2, f, x0, tau=None, niter=150)
        elif solver == "Accelerated":
            x = AcceleratedProximalGradient(l2, f, x0, tau=None, niter=150)
        elif solver == "ADMM":
            x = ADMM(l2, f, x0, tau=1.0, niter=150)[1]
        else:
            x = PrimalDual(l2, f, pylops.Identity(f.size), x0, tau=0.9, mu=0.9, niter=150)
    # measured: all four 1.9e-10 below CVXPY's objective (Clarabel stops just above it)
    assert (objective(x) - reference) / abs(reference) <= 1e-8
    assert objective(x) >= reference * (1 - 1e-8)
    Omega, eta = f.unpack(x)
    assert np.linalg.eigvalsh(0.5 * (Omega + Omega.T))[0] >= -1e-10


def test_backtracking_prox_calls_are_the_exact_prox(least_squares):
    """The calls ProximalGradient makes with tau=None are answered by the exact prox."""
    f, A, b, _, _ = least_squares
    calls = []

    class Recording(MatrixPerspective):
        def prox(self, x, tau, **kwargs):
            calls.append((np.array(x), tau))
            return super().prox(x, tau)

    l2 = pyproximal.L2(Op=pylops.MatrixMult(A), b=b)
    ProximalGradient(l2, Recording(f.p, f.sigma), np.zeros(f.size), tau=None, niter=5)
    assert len(calls) >= 5
    for x, tau in calls:
        Omega, eta = f.unpack(x)
        expected = prox_matrix_perspective(Omega, eta, tau * f.sigma, symmetrize=True).x
        np.testing.assert_allclose(f.unpack(f.prox(x, tau))[0], expected[0], atol=1e-15)
