"""Preconditioned Chebyshev solves, the CG-Lanczos estimate, torch gradients and batches."""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize import ConvergenceWarning
from stepsize.chebyshev import (
    ChebyshevOptions,
    as_preconditioner,
    chebyshev_gd,
    chebyshev_semi_iterative,
    conjugate_gradient,
    preconditioned_spectrum,
)
from stepsize.chebyshev.preconditioning import lanczos_bounds

pyamg = pytest.importorskip("pyamg")


def _poisson(shape):
    return sp.csr_array(pyamg.gallery.poisson(shape)).astype(np.float64)


def _scipy_cg_iterations(A, b, M, rtol=1e-8):
    count = [0]
    x, info = spla.cg(A, b, rtol=rtol, maxiter=10_000, M=M,
                      callback=lambda _: count.__setitem__(0, count[0] + 1))
    assert info == 0
    return count[0]


def _relative_residual(A, x, b):
    return np.linalg.norm(b - A @ x) / np.linalg.norm(b)


def test_lanczos_bounds_are_the_eigenvalues_after_n_cg_steps():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    eigenvalues = np.geomspace(0.5, 40.0, 12)
    W = (Q * eigenvalues) @ Q.T
    W = (W + W.T) / 2
    spectrum = preconditioned_spectrum(W, max_iter=12, seed=1)
    assert spectrum.ritz_min == pytest.approx(0.5, rel=1e-8)
    assert spectrum.ritz_max == pytest.approx(40.0, rel=1e-8)
    assert spectrum.lmax == pytest.approx(44.0, rel=1e-8)
    assert spectrum.matvecs == 12
    assert (spectrum.converged, spectrum.method) == (None, "cg-lanczos")  # nothing tested
    # the Jacobi-preconditioned interval is that of D^{-1/2} W D^{-1/2}
    d = 1 / np.sqrt(np.diag(W))
    exact = np.linalg.eigvalsh(W * d[:, None] * d[None, :])
    jacobi = preconditioned_spectrum(W, M="jacobi", max_iter=12, seed=1)
    assert jacobi.ritz_min == pytest.approx(exact[0], rel=1e-7)
    assert jacobi.ritz_max == pytest.approx(exact[-1], rel=1e-7)
    assert lanczos_bounds(np.array([0.25]), np.array([])) == (4.0, 4.0)


@pytest.mark.parametrize("kind", ["dense", "sparse", "operator", "callable", "jacobi", "amg"])
def test_every_form_of_m_solves_like_scipy_pcg(kind):
    A = _poisson((24, 24))
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    inverse_diagonal = 1 / A.diagonal()
    ml = pyamg.smoothed_aggregation_solver(A)
    ours = {"dense": np.diag(inverse_diagonal), "sparse": sp.diags(inverse_diagonal),
            "operator": spla.LinearOperator(A.shape, matvec=lambda v: inverse_diagonal * v),
            "callable": lambda r: r * (inverse_diagonal[:, None] if r.ndim == 2
                                       else inverse_diagonal),
            "jacobi": "jacobi", "amg": ml}[kind]
    theirs = ml.aspreconditioner() if kind == "amg" else sp.diags(inverse_diagonal)
    result = chebyshev_gd(A, b, M=ours, tol=1e-8)
    assert result.converged and result.info["preconditioned"]
    assert _relative_residual(A, result.x, b) <= 1e-8
    iterations = _scipy_cg_iterations(A, b, theirs)
    # CG's iterations plus its initial residual against all of ours, estimation included
    ratio = result.info["matvecs"] / (iterations + 1)
    assert ratio <= (1.2 if kind == "amg" else 2.2), ratio
    np.testing.assert_allclose(result.x, spla.spsolve(A.tocsc(), b), rtol=1e-6, atol=1e-7)


def test_amg_preconditioned_chebyshev_needs_few_matvecs_on_3d_poisson():
    A = _poisson((15, 15, 15))
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    ml = pyamg.smoothed_aggregation_solver(A)
    for solver in (chebyshev_gd, chebyshev_semi_iterative):
        result = solver(A, b, M=ml, tol=1e-8)
        assert result.converged and _relative_residual(A, result.x, b) <= 1e-8
        assert result.info["matvecs"] <= 1.5 * (_scipy_cg_iterations(A, b, ml.aspreconditioner())
                                                + 1)


def test_tol_without_cap_iterates_to_convergence_on_ill_conditioned_system():
    # kappa = 1e4: one default period (<= 256 steps) cannot reach 1e-10; the derived cap can
    W = sp.diags(np.geomspace(1e-4, 1.0, 400)).tocsr()
    b = np.ones(400)
    result = chebyshev_gd(W, b, tol=1e-10)
    assert result.converged and result.n_iter > 256
    assert _relative_residual(W, result.x, b) <= 1e-10
    assert result.info["lmin"] <= 1.5e-4  # corrected from the Ritz value while solving
    assert len(result.info["intervals"]) >= 2


def test_underestimated_lmax_is_undone_and_widened():
    # a start whose residual misses the top eigenvector: the 3-step Ritz estimate misses lmax
    eigenvalues = np.concatenate([np.linspace(1.0, 2.0, 50), [30.0]])
    W = np.diag(eigenvalues)
    b = np.ones(51)
    b[-1] = 1e-9
    result = chebyshev_gd(W, b, tol=1e-10, options=ChebyshevOptions(estimate_iter=3))
    assert result.converged and _relative_residual(W, result.x, b) <= 1e-10
    assert result.info["lmax"] >= 30.0


def test_batched_right_hand_sides_and_column_blocks_match_single_solves():
    A = _poisson((20, 20))
    C = np.random.default_rng(2).standard_normal((A.shape[0], 6))
    batched = chebyshev_gd(A, C, M="jacobi", tol=1e-9)
    assert batched.converged
    for j in range(6):
        assert _relative_residual(A, batched.x[:, j], C[:, j]) <= 1e-9
    cg = conjugate_gradient(A, C, M="jacobi", tol=1e-9)
    np.testing.assert_allclose(batched.x, cg.x, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make, error, match", [
    (lambda A: -sp.eye(A.shape[0]), ValueError, "M must be positive definite"),
    (lambda A: np.ones((3, 3)), ValueError, "M must have the shape of W"),
    (lambda A: "ilu", ValueError, "'jacobi'"),
    (lambda A: 3.0, TypeError, "M must be None"),
    (lambda A: lambda r: r[:-1], ValueError, "shaped like r"),
    (lambda A: spla.LinearOperator(A.shape, matvec=lambda v: -v), ValueError,
     "M must be symmetric positive definite"),
])
def test_bad_preconditioner(make, error, match):
    A = _poisson((6, 6))
    with pytest.raises(error, match=match):
        chebyshev_gd(A, np.ones(36), M=make(A), tol=1e-8)


def test_singular_indefinite_and_complex_systems_are_refused():
    with pytest.raises(ValueError, match="singular"):
        chebyshev_gd(np.diag([0.0, 1.0, 2.0, 3.0]), np.ones(4), tol=1e-8)
    with pytest.raises(ValueError, match="W must be symmetric positive definite"):
        chebyshev_gd(np.diag([-1.0, 1.0, 2.0, 3.0]), np.ones(4), tol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on the way to the error
        with pytest.raises(ValueError, match=r"p\^T W p = 0"):
            chebyshev_gd(np.zeros((5, 5)), np.ones(5), tol=1e-8)
    with pytest.raises(ValueError, match="'jacobi' needs a positive diagonal"):
        chebyshev_gd(np.diag([0.0, 1.0]), np.ones(2), M="jacobi")
    with pytest.raises(TypeError, match="c must be real"):
        chebyshev_gd(np.eye(3), np.ones(3) * (1 + 1j), tol=1e-8)
    with pytest.raises(TypeError, match="needs the entries of W"):
        as_preconditioner("jacobi", spla.aslinearoperator(np.eye(3)))


def test_torch_gradients_match_torch_linalg_solve():
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64, generator=generator))
    W = (Q * torch.linspace(1.0, 30.0, 20, dtype=torch.float64)) @ Q.T
    W = (W + W.T) / 2
    c = torch.randn(20, 2, dtype=torch.float64, generator=generator)
    for solver in (chebyshev_gd, chebyshev_semi_iterative, conjugate_gradient):
        W1, c1 = W.clone().requires_grad_(), c.clone().requires_grad_()
        (solver(W1, c1, tol=1e-12).x ** 3).sum().backward()
        W2, c2 = W.clone().requires_grad_(), c.clone().requires_grad_()
        (torch.linalg.solve(W2, c2) ** 3).sum().backward()
        torch.testing.assert_close(W1.grad, W2.grad, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(c1.grad, c2.grad, rtol=1e-8, atol=1e-10)


def test_torch_batch_of_systems():
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(1)
    A = torch.randn(3, 15, 15, dtype=torch.float64, generator=generator)
    W = A @ A.transpose(1, 2) + 15 * torch.eye(15, dtype=torch.float64)
    c = torch.randn(3, 15, 4, dtype=torch.float64, generator=generator)
    for M in (None, "jacobi"):
        result = chebyshev_gd(W, c, M=M, tol=1e-10)
        assert result.converged and result.x.shape == (3, 15, 4)
        torch.testing.assert_close(result.x, torch.linalg.solve(W, c), rtol=1e-8, atol=1e-9)
    single = chebyshev_gd(W, c[:, :, 0], tol=1e-10).x
    assert single.shape == (3, 15)
    with pytest.raises(ValueError, match="batch W must have shape"):
        chebyshev_gd(W[:, :, :-1], c, tol=1e-8)
    with pytest.raises(ValueError, match="every W in the batch must be symmetric"):
        chebyshev_gd(A, c, tol=1e-8)
    with pytest.raises(ValueError, match="mixed_precision is not supported with a batch W"):
        chebyshev_gd(W, c, tol=1e-8, options=ChebyshevOptions(mixed_precision=True))
    # 15 CG steps (the default) solve these 15-dimensional systems before any Chebyshev period;
    # 4 give an interval from the Ritz values of all 3 spectra (inside them, lmax widened 1.1x)
    assert chebyshev_gd(W, c, tol=1e-10).info["intervals"] == []
    estimated = chebyshev_gd(W, c, tol=1e-10, options=ChebyshevOptions(estimate_iter=4))
    eigenvalues = torch.linalg.eigvalsh(W)
    lmin, lmax = estimated.info["intervals"][0]
    assert float(eigenvalues.min()) <= lmin < lmax <= 1.1 * float(eigenvalues.max())
    assert estimated.converged and estimated.n_iter > 15
    torch.testing.assert_close(estimated.x, torch.linalg.solve(W, c), rtol=1e-8, atol=1e-9)


def test_torch_inputs_refused_clearly():
    torch = pytest.importorskip("torch")
    W = torch.eye(3, dtype=torch.float64) * 2
    c = torch.ones(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="bfloat16"):
        chebyshev_gd(W.bfloat16(), c.bfloat16(), tol=1e-3)
    with pytest.raises(TypeError, match="float16"):
        chebyshev_gd(W.half(), c.half(), tol=1e-3)
    with pytest.raises(TypeError, match="both be torch tensors"):
        chebyshev_gd(W, c.numpy(), tol=1e-8)
    with pytest.raises(ValueError, match="meta device"):
        chebyshev_gd(torch.empty(3, 3, device="meta"), torch.empty(3, device="meta"))
    with pytest.raises(TypeError, match="W must be real"):
        chebyshev_gd(W.to(torch.complex128), c.to(torch.complex128))
    with pytest.raises(TypeError, match="c must be real"):
        chebyshev_gd(W, c.to(torch.complex128))
    with pytest.raises(ValueError, match="share device and dtype"):
        chebyshev_gd(W, c.float(), tol=1e-6)


def test_given_interval_missing_the_spectrum_is_reported_not_returned_as_an_answer():
    A = _poisson((20, 20))  # largest eigenvalue 7.95
    b = np.ones(A.shape[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = chebyshev_gd(A, b, lmin=0.04, lmax=6.0, tol=1e-8, max_iter=3000)
    assert len(caught) == 1 and caught[0].category is ConvergenceWarning  # once, as divergence
    assert re.search(r"diverged: the residual norm grew .*raise lmax", str(caught[0].message))
    assert result.converged is False and result.info["diverged"]
    assert result.n_iter < 3000  # stopped at the first period that grew
    with pytest.warns(ConvergenceWarning, match="diverged"):
        fixed = chebyshev_gd(A, b, lmin=0.04, lmax=6.0, max_iter=300)
    assert fixed.converged is None and fixed.info["diverged"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = chebyshev_gd(A, b, lmin=0.04, lmax=7.96, tol=1e-8)
    assert good.converged and "diverged" not in good.info


def test_column_blocks_without_tolerance_report_converged_none():
    W = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(10_000, 10_000)).tocsr()
    C = np.random.default_rng(0).standard_normal((10_000, 64))
    for solver in (chebyshev_gd, chebyshev_semi_iterative):
        result = solver(W, C, lmin=0.5, lmax=4.5, max_iter=16)
        assert result.info["column_blocks"] >= 2 and result.converged is None


def test_no_gradients_through_a_batch_of_systems():
    torch = pytest.importorskip("torch")
    W = torch.stack([torch.eye(4, dtype=torch.float64) * 2] * 2).requires_grad_()
    with pytest.raises(TypeError, match="gradients through a batch"):
        chebyshev_gd(W, torch.ones(2, 4, dtype=torch.float64), tol=1e-10)


def test_divergence_in_a_column_block_is_reported_for_the_batch():
    W = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(10_000, 10_000)).tocsr()  # spectrum in
    C = np.random.default_rng(0).standard_normal((10_000, 64))                    # (0.5, 4.5)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        result = chebyshev_gd(W, C, lmin=0.5, lmax=3.0, max_iter=200)
    assert result.info["column_blocks"] >= 2 and result.info["diverged"]
    assert result.converged is None and result.message.startswith("diverged")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = chebyshev_gd(W, C, lmin=0.5, lmax=3.0, tol=1e-8, max_iter=2000)
    assert [str(w.message).split(":")[0] for w in caught] == ["chebyshev_gd diverged"]
    assert result.converged is False and result.info["column_blocks"] >= 2
    assert result.message.startswith("diverged: the residual norm grew")
