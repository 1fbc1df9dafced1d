"""Operator properties: firm nonexpansiveness, the Moreau projection, the flat operator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stepsize.prox import (
    MatrixPerspective,
    matrix_perspective,
    project_conjugate_domain,
    prox_matrix_perspective,
)
from stepsize.prox.perspective import _prox


def random_pair(rng, p, scale=1.0):
    B = rng.standard_normal((p, p))
    return scale * (B + B.T) / 2, scale * rng.standard_normal(p)


@pytest.mark.parametrize("p", [5, 60])
def test_firm_nonexpansiveness(p):
    rng = np.random.default_rng(p)
    worst = -math.inf
    for _ in range(30):
        (Xa, ya), (Xb, yb) = random_pair(rng, p), random_pair(rng, p, rng.uniform(0.1, 3))
        Oa, ea = prox_matrix_perspective(Xa, ya, 1.0).x
        Ob, eb = prox_matrix_perspective(Xb, yb, 1.0).x
        moved = np.sum((Oa - Ob) ** 2) + np.sum((ea - eb) ** 2)
        inner = np.sum((Oa - Ob) * (Xa - Xb)) + (ea - eb) @ (ya - yb)
        distance = np.sum((Xa - Xb) ** 2) + np.sum((ya - yb) ** 2)
        worst = max(worst, (moved - inner) / distance)
    assert worst <= 1e-10


@pytest.mark.parametrize("p", [4, 60])
def test_projection_onto_conjugate_domain(p):
    rng = np.random.default_rng(10 + p)
    V, u = random_pair(rng, p, 2.0)
    V_c, u_c = project_conjugate_domain(V, u)
    assert np.linalg.eigvalsh(V_c + 0.5 * np.outer(u_c, u_c))[-1] <= 1e-10
    # obtuse angle with every point of C: <v - Pi(v), c - Pi(v)> <= 0
    for _ in range(30):
        W = rng.standard_normal((p, 2))
        c_u = rng.standard_normal(p)
        c_V = -0.5 * np.outer(c_u, c_u) - W @ W.T
        angle = np.sum((V - V_c) * (c_V - V_c)) + (u - u_c) @ (c_u - u_c)
        assert angle <= 1e-9
    # a point of C is its own projection
    V_in = -0.5 * np.outer(u, u) - np.eye(p)
    V_same, u_same = project_conjugate_domain(V_in, u)
    np.testing.assert_allclose(V_same, V_in, atol=1e-10)
    np.testing.assert_allclose(u_same, u, atol=1e-10)


def test_operator_layout_and_value():
    f = MatrixPerspective(3, sigma=2.0)
    Omega = np.diag([2.0, 1.0, 0.0])
    eta = np.array([2.0, 1.0, 0.0])
    x = f.pack(Omega, eta)
    assert x.shape == (12,) and f.size == 12
    np.testing.assert_array_equal(x[:9], Omega.ravel())
    Omega_back, eta_back = f.unpack(x)
    np.testing.assert_array_equal(Omega_back, Omega)
    np.testing.assert_array_equal(eta_back, eta)
    assert f(x) == pytest.approx(2.0 * matrix_perspective(Omega, eta))
    skew = Omega + np.triu(np.ones((3, 3)), 1)
    assert f(f.pack(skew, eta)) == math.inf
    assert "p=3" in repr(f)


def test_operator_prox_and_moreau_identity():
    rng = np.random.default_rng(11)
    p, sigma, tau = 6, 0.7, 1.9
    f = MatrixPerspective(p, sigma=sigma)
    X, y = random_pair(rng, p)
    x = f.pack(X + np.triu(rng.standard_normal((p, p)), 1), y)  # non-symmetric input
    Omega, eta = prox_matrix_perspective(f.unpack(x)[0], y, tau * sigma, symmetrize=True).x
    np.testing.assert_allclose(f.prox(x, tau), f.pack(Omega, eta), atol=1e-12)
    # PyProximal's Moreau identity: x = prox_{tau f}(x) + tau prox_{f*/tau}(x / tau)
    np.testing.assert_allclose(f.prox(x, tau) + tau * f.proxdual(x / tau, 1 / tau), x, atol=1e-10)
    dual = f.proxdual(x, tau)
    V, u = f.unpack(dual)
    V_sym = 0.5 * (V + V.T)
    assert np.linalg.eigvalsh(V_sym / sigma + 0.5 * np.outer(u, u) / sigma**2)[-1] <= 1e-10


def test_operator_bad_input():
    with pytest.raises(ValueError, match="p"):
        MatrixPerspective(0)
    with pytest.raises(ValueError, match="sigma"):
        MatrixPerspective(2, sigma=0.0)
    f = MatrixPerspective(2)
    with pytest.raises(ValueError, match="x"):
        f.prox(np.ones(5), 1.0)
    with pytest.raises(ValueError, match="tau"):
        f.prox(np.ones(6), 0.0)
    with pytest.raises(ValueError, match="Omega"):
        f.pack(np.eye(3), np.ones(2))


def test_secular_path_on_clusters():
    """Deflation: clustered and repeated eigenvalues of X with y across and inside clusters,
    the secular path (forced through ``_prox``'s seam) against the default (dense) one."""
    rng = np.random.default_rng(12)
    Q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    values = np.repeat([-2.0, -0.5, 0.0, 1e-14, 1.0, 3.0], 5) + 1e-15 * rng.standard_normal(30)
    X = (Q * values) @ Q.T
    y = Q[:, :12] @ rng.standard_normal(12)
    info = _prox(0.5 * (X + X.T), y, 0.8, "newton", 1e-12, 50, secular=True)[2]
    Omega, eta = info.x
    Omega_d, eta_d = prox_matrix_perspective(X, y, 0.8, symmetrize=True).x
    np.testing.assert_allclose(Omega, Omega_d, atol=1e-10)
    np.testing.assert_allclose(eta, eta_d, atol=1e-10)
    assert matrix_perspective(Omega, eta) == pytest.approx(info.certificate, rel=1e-9)
