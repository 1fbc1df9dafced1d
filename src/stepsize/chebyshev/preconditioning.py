r"""Preconditioners and the Lanczos estimate of the preconditioned spectrum.

A preconditioner :math:`M \approx W^{-1}` (SPD) turns Chebyshev steps on :math:`W x = c` into

.. math::

    x_{t+1} = x_t + \gamma_t\, M (c - W x_t),

whose error polynomial acts on the spectrum of :math:`M W`, which is real and positive because
:math:`M W` is self-adjoint in the :math:`M^{-1}` inner product. Its extreme eigenvalues are
estimated the way PETSc's ``KSPChebyshevEstEigSet`` does, from a few preconditioned CG steps:
CG's step lengths :math:`\alpha_j` and :math:`\beta_j` are the entries of the Lanczos
tridiagonal matrix of :math:`M W`,

.. math::

    T_{jj} = \frac{1}{\alpha_j} + \frac{\beta_{j-1}}{\alpha_{j-1}},\qquad
    T_{j,j+1} = T_{j+1,j} = \frac{\sqrt{\beta_j}}{\alpha_j},

so the Ritz values come for free, and the CG steps that produced them have already reduced the
error: :func:`stepsize.chebyshev.chebyshev_gd` keeps their iterate as its starting point.
Ritz values lie inside the spectrum: :math:`\theta_{\max}` approaches :math:`\lambda_{\max}` from
below within a few steps, :math:`\theta_{\min}` approaches :math:`\lambda_{\min}` from above more
slowly. The interval is therefore widened upward only, ``lmax = 1.1 * theta_max`` as in PETSc
(underestimating lmax makes the Chebyshev polynomial grow outside the interval), and the lower end
is corrected while solving when the observed residual reduction falls short of the bound
(:func:`stepsize.chebyshev.solvers.chebyshev_gd`).

References: Golub & Van Loan, *Matrix Computations*, 4th ed., Sec. 11.3.5 (CG and Lanczos);
PETSc ``KSPCHEBYSHEV``; Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., Sec. 12.3.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize._validation import check_symmetric, describe
from stepsize.chebyshev._backend import is_torch as _is_torch

__all__ = ["LMAX_WIDENING", "as_preconditioner", "lanczos_bounds"]

# PETSc's default upper transform for estimated Chebyshev intervals (KSPChebyshevEstEigSet
# b = 1.1): a 10% overestimate of lmax costs little, an underestimate makes the iteration grow.
LMAX_WIDENING = 1.1


def _is_multilevel_solver(value) -> bool:
    return hasattr(value, "aspreconditioner") and hasattr(value, "levels")


def _diagonal(W):
    if _is_torch(W):
        import torch

        return torch.diagonal(W)
    if isinstance(W, np.ndarray) or sp.issparse(W):
        return W.diagonal()
    raise TypeError(f"M='jacobi' needs the entries of W (a dense, sparse or torch matrix), got "
                    f"{type(W).__name__}; pass M as an operator instead")


def _jacobi(W) -> Callable:
    diagonal = _diagonal(W)
    smallest = float(diagonal.min())
    if not smallest > 0:
        raise ValueError(f"M='jacobi' needs a positive diagonal of W (an SPD W has one), got "
                         f"min W[i, i] = {smallest:.3g}")
    inverse = 1 / diagonal

    def apply(r):
        return r * (inverse[:, None] if r.ndim == 2 else inverse)

    return apply


def _operator(M, n: int) -> Callable:
    if M.shape != (n, n):
        raise ValueError(f"M must have the shape of W ({n}, {n}), got {tuple(M.shape)}")

    def apply(r):
        z = M.matmat(r) if r.ndim == 2 else M.matvec(r)
        return np.asarray(z, dtype=r.dtype).reshape(r.shape)

    return apply


def _matrix(M, n: int) -> Callable:
    if sp.issparse(M):
        M = sp.csr_array(M)
        finite = np.all(np.isfinite(M.data))
    else:
        M = np.asarray(M)
        if M.ndim != 2:
            raise ValueError(f"M must be a matrix, got shape {M.shape}")
        finite = np.all(np.isfinite(M))
    if M.dtype.kind not in "fiu":
        raise TypeError(f"M must be a real matrix, got dtype {M.dtype}")
    if M.shape != (n, n):
        raise ValueError(f"M must have the shape of W ({n}, {n}), got {M.shape}")
    if not finite:
        raise ValueError("M must be finite, but it has NaN or infinite entries")
    check_symmetric(M, "M", rtol=1e-8)
    if not np.all(M.diagonal() > 0):
        raise ValueError(f"M must be positive definite, but its diagonal has min "
                         f"{M.diagonal().min():.3g}")
    return lambda r: np.asarray(M @ r, dtype=r.dtype)


def _tensor(M, n: int) -> Callable:
    import torch

    if M.ndim != 2 or tuple(M.shape) != (n, n):
        raise ValueError(f"M must have the shape of W ({n}, {n}), got {tuple(M.shape)}")
    if not bool(torch.isfinite(M).all()):
        raise ValueError("M must be finite, but it has NaN or infinite entries")
    return lambda r: M.to(r.dtype) @ r


def _callable(M) -> Callable:
    def apply(r):
        z = M(r)
        if tuple(getattr(z, "shape", ())) != tuple(r.shape):
            raise ValueError(f"M(r) must return an array shaped like r {tuple(r.shape)}, got "
                             f"{describe(z)}")
        return z

    return apply


def as_preconditioner(M, W) -> Callable | None:
    """The map ``r -> M r`` for a preconditioner given as in ``scipy.sparse.linalg.cg``.

    Args:
        M: None (no preconditioner), ``"jacobi"`` (the inverse diagonal of W), a dense or sparse
            SPD matrix, a ``LinearOperator``, a pyamg ``MultilevelSolver`` (one V-cycle through
            its ``aspreconditioner()``), a torch tensor (with a torch W) or a callable taking and
            returning arrays shaped like the right-hand side, (n,) or (n, k).
        W: the system's operator (for the shape and, with ``"jacobi"``, its diagonal).

    Returns:
        None for no preconditioner, else a function applying M to an (n,) or (n, k) array of the
        type of the right-hand side. Positive definiteness of an operator M is checked while it
        is used (a non-positive :math:`r^\\top M r` raises ``ValueError``).

    >>> apply = as_preconditioner("jacobi", np.diag([2.0, 4.0]))
    >>> apply(np.ones(2)).tolist()
    [0.5, 0.25]
    """
    n = W.shape[0]
    if M is None:
        return None
    if isinstance(M, str):
        if M != "jacobi":
            raise ValueError(f"M must be 'jacobi' when given as a string, got {M!r}")
        return _jacobi(W)
    torch_system = _is_torch(W)
    if _is_torch(M):
        if not torch_system:
            raise TypeError("M is a torch tensor but W is not; pass both as torch tensors")
        return _tensor(M, n)
    if _is_multilevel_solver(M):
        M = M.aspreconditioner(cycle="V")
    if isinstance(M, spla.LinearOperator):
        if torch_system:
            raise TypeError("M is a LinearOperator but W is a torch tensor; pass a callable")
        return _operator(M, n)
    if isinstance(M, np.ndarray) or sp.issparse(M):
        if torch_system:
            raise TypeError("M is a numpy/scipy matrix but W is a torch tensor")
        return _matrix(M, n)
    if callable(M):
        return _callable(M)
    raise TypeError(f"M must be None, 'jacobi', a matrix, a LinearOperator, a pyamg "
                    f"MultilevelSolver or a callable, got {type(M).__name__}")


def lanczos_bounds(alphas: np.ndarray, betas: np.ndarray) -> tuple[float, float]:
    r"""Extreme Ritz values of :math:`M W` from the step lengths of preconditioned CG.

    Args:
        alphas: CG's :math:`\alpha_0..\alpha_{k-1}` (positive).
        betas: CG's :math:`\beta_0..\beta_{k-2}` (nonnegative; a trailing
            :math:`\beta_{k-1}` is ignored).

    Returns:
        ``(theta_min, theta_max)``, the extreme eigenvalues of the k x k Lanczos matrix.

    For CG on :math:`\mathrm{diag}(1, 3)` from :math:`r_0 = (1, 1)`, two steps span the whole
    space and the Ritz values are the eigenvalues:

    >>> [round(v, 12) for v in lanczos_bounds(np.array([0.5, 2 / 3]), np.array([0.25]))]
    [1.0, 3.0]
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    k = alphas.size
    betas = np.asarray(betas, dtype=np.float64)[: k - 1]
    diagonal = 1 / alphas
    diagonal[1:] += betas / alphas[:-1]
    if k == 1:
        return float(diagonal[0]), float(diagonal[0])
    off = np.sqrt(betas) / alphas[:-1]
    values = sla.eigvalsh_tridiagonal(diagonal, off)
    return float(values[0]), float(values[-1])
