"""The matrix perspective function as a PyProximal-style proximal operator on flat vectors.

PyProximal's solvers (``ProximalGradient``, ``ADMM``, ``PrimalDual``, ...) call ``f(x)``,
``f.prox(x, tau)`` and ``f.proxdual(x, tau)`` on one-dimensional arrays. This class implements
that interface (PyProximal itself is not a dependency) on the **flat layout**

    x = [Omega.ravel(order="C"), eta]      (length p^2 + p),

which stores all ``p^2`` entries of ``Omega`` (not a triangle) so that the Euclidean inner
product of flat vectors equals the Frobenius-plus-Euclidean inner product of the pairs, and the
prox in the flat space is the prox of the pairs. The function is ``+inf`` at a non-symmetric
``Omega``; its prox therefore symmetrizes first (``prox(X) = prox(sym(X))`` because the
symmetric matrices form a subspace). Use :meth:`MatrixPerspective.pack` and
:meth:`MatrixPerspective.unpack` to convert.

Reference: Won, NeurIPS 2020; PyProximal's ``ProxOperator`` (``PyLops/pyproximal``).
"""

from __future__ import annotations

import numpy as np

from stepsize._validation import check_array, check_int, check_real
from stepsize.prox.perspective import _prox, check_pair, perspective_value

__all__ = ["MatrixPerspective"]


class MatrixPerspective:
    """``f(Omega, eta) = sigma * phi(Omega, eta)`` with PyProximal's operator interface.

    Args:
        p: the dimension (``Omega`` is p x p).
        sigma: the weight ``sigma > 0`` of the function.

    Methods:
        ``__call__(x)``: the value ``sigma phi`` (``inf`` outside the domain or at a
        non-symmetric ``Omega``).
        ``prox(x, tau)``: ``prox_{tau sigma phi}(x)``.
        ``proxdual(x, tau)``: ``prox_{tau f*}(x)``, the projection onto ``sigma C``
        (``f* = indicator of sigma C``, so ``tau`` does not matter): ``x - prox_{sigma phi}(x)``.

    Example:
        >>> f = MatrixPerspective(3)
        >>> x = f.pack(np.diag([1.0, 0.0, -1.0]), np.array([1.0, 2.0, 0.0]))
        >>> Omega, eta = f.unpack(f.prox(x, 1.0))
        >>> round(float(f(f.prox(x, 1.0))), 6)
        0.604134

    Reference: Won, NeurIPS 2020.
    """

    def __init__(self, p: int, sigma: float = 1.0):
        self.p = check_int(p, "p", low=1)
        self.sigma = check_real(sigma, "sigma", low=0, low_inclusive=False)

    def __repr__(self) -> str:
        return f"MatrixPerspective(p={self.p}, sigma={self.sigma:g})"

    @property
    def size(self) -> int:
        """Length ``p^2 + p`` of the flat vectors."""
        return self.p * self.p + self.p

    def pack(self, Omega, eta) -> np.ndarray:
        """Flat vector ``[Omega.ravel(), eta]`` of a pair."""
        Omega = check_array(Omega, "Omega", shape=(self.p, self.p))
        eta = check_array(eta, "eta", shape=(self.p,))
        return np.concatenate([Omega.ravel(), eta])

    def unpack(self, x) -> tuple[np.ndarray, np.ndarray]:
        """The pair ``(Omega, eta)`` of a flat vector (views into a float64 copy)."""
        x = check_array(x, "x", shape=(self.size,))
        return x[: self.p * self.p].reshape(self.p, self.p), x[self.p * self.p :]

    def __call__(self, x) -> float:
        Omega, eta = self.unpack(x)
        if not np.allclose(Omega, Omega.T, rtol=0, atol=1e-10 * max(1.0, np.abs(Omega).max())):
            return np.inf
        Omega, eta = check_pair(Omega, eta, X_name="Omega", y_name="eta", symmetrize=True)
        return self.sigma * perspective_value(Omega, eta)

    def prox(self, x, tau) -> np.ndarray:
        tau = check_real(tau, "tau", low=0, low_inclusive=False)
        Omega, eta = self.unpack(x)
        X, y = check_pair(Omega, eta, X_name="Omega", y_name="eta", symmetrize=True)
        Omega, eta, _ = _prox(X, y, tau * self.sigma, "newton", 1e-12, 50)
        return np.concatenate([Omega.ravel(), eta])

    def proxdual(self, x, tau) -> np.ndarray:
        check_real(tau, "tau", low=0, low_inclusive=False)
        x = check_array(x, "x", shape=(self.size,))
        return x - self.prox(x, 1.0)
