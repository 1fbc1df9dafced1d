"""``X = Q Z diag(a) Z^T Q^T`` with the back-transformation ``Q`` kept as Householder reflectors.

``dsyevd`` reduces ``X`` to a tridiagonal ``T = Q^T X Q`` (``dsytrd``), solves ``T = Z diag(a)
Z^T`` by divide and conquer (``dstedc``) and forms ``U = Q Z`` (``dormtr``, ``2 p^3`` flops,
about half of its time at p = 2000: 1.3 s in all, 0.67 s for the first two steps). The prox
needs ``U`` only through ``U^T y`` and the product ``U V`` with the ``r <= (p + 1) / 2``
eigenvectors of one side of the arrowhead, so it runs the first two steps here (``dstevd`` is
``dstedc`` on a tridiagonal) and applies ``Q`` to the ``r`` columns of ``Z V`` instead of the
``p`` columns of ``Z``: the same eigenvalues (the same LAPACK calls), ``2 p^2 (p - r)`` fewer
flops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dormqr as _ormqr
from scipy.linalg.lapack import dstevd as _stevd
from scipy.linalg.lapack import dsytrd as _sytrd
from scipy.linalg.lapack import dsytrd_lwork as _sytrd_lwork


@dataclass
class Reflectors:
    """``Q = diag(1, H_1 ... H_{p-1})`` of ``dsytrd`` (lower), laid out for ``dormqr`` on all
    ``p`` rows: ``H_i`` (unit entry at row ``i + 1``, 0-based) is reflector ``i + 1`` of
    ``factors``, whose column ``i + 1`` is column ``i`` of the reduced matrix, after a first
    reflector with ``tau = 0`` (the identity). One contiguous copy, made once: ``dormqr`` on
    the ``p - 1`` trailing rows would copy the strided factors and the rows on every call."""

    factors: np.ndarray
    tau: np.ndarray

    @classmethod
    def from_sytrd(cls, reduced: np.ndarray, tau: np.ndarray) -> Reflectors:
        p = reduced.shape[0]
        factors = np.empty((p, p), order="F")
        factors[:, 0] = 0.0
        factors[:, 1:] = reduced[:, : p - 1]
        return cls(factors, np.concatenate(([0.0], tau)))

    def apply(self, matrix: np.ndarray, transpose: bool = False) -> np.ndarray:
        """``Q @ matrix`` (``Q^T @ matrix`` with ``transpose``) for a p x k ``matrix``.
        Overwrites ``matrix`` when it is a Fortran-ordered float array (else works on a copy)."""
        out = np.asfortranarray(matrix, dtype=float)
        if self.tau.size <= 1 or out.shape[1] == 0:
            return out
        trans = b"T" if transpose else b"N"
        _, work, status = _ormqr(b"L", trans, self.factors, self.tau, out, -1)
        _check(status, "dormqr")
        lwork = max(int(work[0]), out.shape[1], 1)
        product, _, status = _ormqr(b"L", trans, self.factors, self.tau, out, lwork,
                                    overwrite_c=1)
        _check(status, "dormqr")
        return product


def tridiagonal_eigh(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, Reflectors]:
    """``(a, Z, Q)`` with ``X = Q Z diag(a) Z^T Q^T``, ``a`` ascending, for a symmetric ``X``."""
    p = X.shape[0]
    if p == 1:
        return X[0].astype(float), np.ones((1, 1)), Reflectors(np.zeros((1, 1)), np.zeros(1))
    work, status = _sytrd_lwork(p, lower=1)
    _check(status, "dsytrd")
    # X is symmetric: its transpose is the same matrix in Fortran order (no copy for the call)
    reduced, diagonal, offdiagonal, tau, status = _sytrd(
        X.T, lower=1, lwork=max(int(work), p)
    )
    _check(status, "dsytrd")
    a, Z, status = _stevd(diagonal, offdiagonal, compute_v=1, overwrite_d=1, overwrite_e=1)
    _check(status, "dstevd")
    return a, Z, Reflectors.from_sytrd(reduced, tau)


def _check(status: int, routine: str) -> None:
    if status != 0:
        raise np.linalg.LinAlgError(f"{routine} failed with info = {status}")
