"""PyProximal's solvers on the constrained Gaussian MLE, with ``MatrixPerspective`` as the
perspective term, against CVXPY (Clarabel at tight tolerances) and the dual Newton.

The paper's perspective formulation on the flat layout ``x = [vec(Omega), eta]``:

    min_x  -log det Omega + <z, x> + 2 phi(Omega, eta) + sum_i indicator(Omega >= c_i c_i^T),
    z = [vec(S), -2 xbar],

as ``f(x) + g(A x)`` with ``f = -log det Omega + <z, x>``, ``g = VStack([2 phi, cap_1, ...,
cap_m])`` and ``A = [I; R; ...; R]`` (``R`` restricts to ``vec(Omega)``; ``||A||^2 = 1 + m``).
PyProximal has no log-det or PSD-cone operator, so the two below are written here as
``ProxOperator`` subclasses (checked with PyProximal's ``moreau``); the perspective is
``stepsize.prox.MatrixPerspective``, the stacking, the linear operators and the solvers are
PyProximal's and PyLops'.
"""

from __future__ import annotations

import numpy as np
import pytest

pyproximal = pytest.importorskip("pyproximal")
pylops = pytest.importorskip("pylops")
cp = pytest.importorskip("cvxpy")

from pyproximal.optimization.primal import LinearizedADMM  # noqa: E402
from pyproximal.optimization.primaldual import PrimalDual  # noqa: E402

from stepsize.prox import (  # noqa: E402
    MatrixPerspective,
    constrained_gaussian_mle,
    gaussian_mle_objective,
    sample_moments,
)


def _symmetric(x, p):
    Omega = x[: p * p].reshape(p, p)
    return 0.5 * (Omega + Omega.T)


class LogDetLinear(pyproximal.ProxOperator):
    """``f(x) = -log det Omega + <z, x>``; ``prox_{tau f}(x) = (Q diag((d + sqrt(d^2 + 4
    tau)) / 2) Q^T, eta - tau z_eta)`` for ``sym(Omega - tau z_Omega) = Q diag(d) Q^T``."""

    def __init__(self, p, z):
        super().__init__(None, False)
        self.p, self.z = p, z

    def __call__(self, x):
        sign, logdet = np.linalg.slogdet(_symmetric(x, self.p))
        return -logdet + float(self.z @ x) if sign > 0 else np.inf

    def prox(self, x, tau):
        shifted = x - tau * self.z
        d, Q = np.linalg.eigh(_symmetric(shifted, self.p))
        out = shifted.copy()
        out[: self.p**2] = ((Q * (0.5 * (d + np.sqrt(d * d + 4 * tau)))) @ Q.T).ravel()
        return out


class Cap(pyproximal.ProxOperator):
    """The indicator of ``{Omega >= c c^T}`` on ``vec(Omega)``; its prox is the projection
    ``c c^T + Pi_+(sym(Omega) - c c^T)``."""

    def __init__(self, c):
        super().__init__(None, False)
        self.p, self.outer = c.size, np.outer(c, c)

    def __call__(self, x):
        lowest = np.linalg.eigvalsh(_symmetric(x, self.p) - self.outer)[0]
        return 0.0 if lowest >= -1e-10 else np.inf

    def prox(self, x, tau):
        d, Q = np.linalg.eigh(_symmetric(x, self.p) - self.outer)
        return (self.outer + (Q * np.maximum(d, 0.0)) @ Q.T).ravel()


@pytest.fixture(scope="module")
def mle():
    """p = 3, mean about the spread, two binding caps; CVXPY's optimum at tolerances 1e-12."""
    rng = np.random.default_rng(0)
    p, n = 3, 40
    data = rng.standard_normal((n, p)) @ (0.3 * rng.standard_normal((p, p)) + np.eye(p)) + 1.0
    caps = np.eye(p)[:2] / np.sqrt(0.8 * data.var(axis=0)[:2])[:, None]
    second, mean = sample_moments(data)
    Omega, eta = cp.Variable((p, p), symmetric=True), cp.Variable(p)
    objective = (-cp.log_det(Omega) + cp.trace(Omega @ second) - 2 * mean @ eta
                 + cp.matrix_frac(eta, Omega))
    problem = cp.Problem(cp.Minimize(objective), [Omega >> np.outer(c, c) for c in caps])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    size, m = p * p + p, caps.shape[0]
    A = pylops.VStack([pylops.Identity(size)]
                      + [pylops.Restriction(size, np.arange(p * p)) for _ in caps])
    g = pyproximal.VStack([MatrixPerspective(p, 2.0)] + [Cap(c) for c in caps],
                          nn=[size] + [p * p] * m)
    f = LogDetLinear(p, np.concatenate([second.ravel(), -2 * mean]))
    start = np.linalg.inv(second - np.outer(mean, mean))  # the unconstrained MLE
    x0 = np.concatenate([start.ravel(), start @ mean])
    return {"p": p, "data": data, "caps": caps, "second": second, "mean": mean, "f": f,
            "g": g, "A": A, "x0": x0, "reference": float(problem.value), "m": m}


def test_custom_operators_satisfy_moreau(mle):
    rng = np.random.default_rng(1)
    for operator, size in ((mle["f"], 12), (Cap(mle["caps"][0]), 9)):
        for tau in (0.1, 1.0, 7.0):
            x = rng.standard_normal(size)
            assert pyproximal.utils.moreau(operator, x, tau, tol=1e-10)


@pytest.mark.parametrize("solver", ["PrimalDual", "LinearizedADMM"])
def test_pyproximal_solvers_reach_cvxpy_on_the_constrained_mle(mle, solver):
    """Measured (relative to CVXPY's objective): 200 iterations 5.7e-9 (PrimalDual, tau = 1)
    and 4.5e-9 (LinearizedADMM, tau = 3, mu = 0.99) below it, the caps not yet met; 300
    iterations 1e-11; 400 iterations 8e-14 for both (0.7 s per 200 iterations, p = 3)."""
    p, m, caps = mle["p"], mle["m"], mle["caps"]
    if solver == "PrimalDual":
        x = PrimalDual(mle["f"], mle["g"], mle["A"], mle["x0"], tau=1.0,
                       mu=0.99 / (1 + m), niter=400)
    else:  # mu <= tau / ||A||^2
        x = LinearizedADMM(mle["f"], mle["g"], mle["A"], mle["x0"], tau=3.0,
                           mu=0.99 * 3.0 / (1 + m), niter=400)[0]
    Omega, eta = _symmetric(x, p), x[p * p:]
    value = gaussian_mle_objective(Omega, eta, mle["second"], mle["mean"])
    reference = mle["reference"]
    assert abs(value - reference) <= 1e-8 * abs(reference)
    covariance = np.linalg.inv(Omega)
    violation = float(np.max(np.einsum("ip,pq,iq->i", caps, covariance, caps))) - 1.0
    assert violation <= 1e-8
    np.testing.assert_allclose(covariance @ eta, mle["mean"], atol=1e-6)  # mu = xbar
    # the same optimum as the dual Newton (certified gap)
    exact = constrained_gaussian_mle(mle["data"], caps, tol=1e-13)
    assert exact.info["duality_gap"] <= 1e-12
    assert value == pytest.approx(exact.objective, rel=1e-8)
    assert reference == pytest.approx(exact.objective, rel=1e-11)
