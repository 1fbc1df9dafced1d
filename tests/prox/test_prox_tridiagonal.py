"""The eigendecomposition with the back-transformation kept as reflectors (prox/_tridiagonal)."""

import numpy as np
import pytest

from stepsize.prox._tridiagonal import tridiagonal_eigh


@pytest.mark.parametrize("p", [1, 2, 3, 17, 64])
def test_reconstructs_x_and_matches_eigh(p):
    rng = np.random.default_rng(p)
    A = rng.standard_normal((p, p))
    X = A + A.T
    a, Z, Q = tridiagonal_eigh(X)
    U = Q.apply(Z.copy(order="F"))
    # the same eigenvalues as LAPACK's dsyevd (numpy) and an orthogonal U with X = U diag(a) U^T
    np.testing.assert_allclose(a, np.linalg.eigh(X)[0], rtol=0, atol=1e-12 * np.abs(a).max())
    np.testing.assert_allclose(U.T @ U, np.eye(p), rtol=0, atol=1e-13)
    np.testing.assert_allclose((U * a) @ U.T, X, rtol=0, atol=1e-12 * np.abs(X).max())


def test_apply_transpose_inverts_and_leaves_first_row():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((9, 9))
    _, _, Q = tridiagonal_eigh(A + A.T)
    B = rng.standard_normal((9, 4))
    QB = Q.apply(B)
    # Q = diag(1, H_1 ... H_8): the first row is untouched, norms are kept, Q^T undoes Q
    np.testing.assert_array_equal(QB[0], B[0])
    np.testing.assert_allclose(np.linalg.norm(QB, axis=0), np.linalg.norm(B, axis=0), rtol=1e-14)
    assert not np.allclose(QB, B)
    # QB is Fortran-ordered: Q^T is applied in place
    back = Q.apply(QB, transpose=True)
    assert np.shares_memory(back, QB)
    np.testing.assert_allclose(back, B, rtol=0, atol=1e-14)
    # a C-ordered input is not overwritten
    C = rng.standard_normal((9, 3))
    before = C.copy()
    Q.apply(C)
    np.testing.assert_array_equal(C, before)
