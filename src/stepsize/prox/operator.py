"""The matrix perspective function as a PyProximal proximal operator on flat vectors.

PyProximal's solvers (``ProximalGradient``, ``ADMM``, ``PrimalDual``, ...) call ``f(x)``,
``f.prox(x, tau)``, ``f.proxdual(x, tau)`` and sometimes ``f.grad(x)`` on arrays. This module
implements that interface on the **flat layout**

    x = [Omega.ravel(order="C"), eta]      (p^2 + p numbers),

which stores all ``p^2`` entries of ``Omega`` (not a triangle) so that the Euclidean inner
product of flat vectors equals the Frobenius-plus-Euclidean inner product of the pairs, and the
prox in the flat space is the prox of the pairs. An ``x`` of any shape with ``p^2 + p`` entries
(a column ``(p^2 + p, 1)`` for instance) is read in C order, and results come back in the shape
and the floating dtype of ``x`` (float32 in, float32 out; the arithmetic is float64). The
function is ``+inf`` at a non-symmetric ``Omega``; its prox therefore symmetrizes first
(``prox(X) = prox(sym(X))`` because the symmetric matrices form a subspace). Use
:meth:`MatrixPerspective.pack` and :meth:`MatrixPerspective.unpack` to convert.

When PyProximal is installed, ``MatrixPerspective`` is a genuine subclass of
``pyproximal.ProxOperator``: ``2 * f``, ``f + v``, ``f.precomposition(a, b)``, ``f.chain(g)``,
``f.H`` and ``pyproximal.VStack([f, ...])`` work as for PyProximal's own operators. Without it,
it is a plain class with the same ``__call__``, ``prox``, ``proxdual``, ``grad``,
``postcomposition`` (and ``s * f``), ``pack`` and ``unpack``. The class is built on first
access, so importing :mod:`stepsize.prox` does not import PyProximal.

Reference: Won, NeurIPS 2020; PyProximal's ``ProxOperator`` (``PyLops/pyproximal``).
"""

from __future__ import annotations

import numbers

import numpy as np

from stepsize._validation import check_finite, check_int, check_real
from stepsize.prox.perspective import _prox, check_pair, perspective_value

__all__ = ["MatrixPerspective"]  # noqa: F822 (built on first access, see __getattr__)


class _MatrixPerspectiveMethods:
    """``f(Omega, eta) = sigma * phi(Omega, eta)`` with PyProximal's operator interface.

    Args:
        p: the dimension (``Omega`` is p x p; flat vectors have ``p^2 + p`` entries).
        sigma: the weight ``sigma > 0`` of the function.

    Methods:
        ``__call__(x)``: the value ``sigma phi`` (``inf`` outside the domain or at a
        non-symmetric ``Omega``).
        ``prox(x, tau)``: ``prox_{tau sigma phi}(x)``.
        ``proxdual(x, tau)``: ``prox_{tau f*}(x)``, the projection onto ``sigma C`` (``f*`` is
        the indicator of ``sigma C``, ``C = {(V, u): V + u u^T / 2 <= 0}``, so ``tau`` does not
        matter): ``x - prox_{sigma phi}(x)``.
        ``grad(x)``: the gradient ``sigma (-1/2 u u^T, u)`` with ``u = Omega^{-1} eta``, defined
        where ``Omega`` is symmetric positive definite; ``ValueError`` elsewhere (``phi`` is not
        differentiable on the boundary of its domain and ``+inf`` outside it).
        ``postcomposition(s)`` (also ``s * f``): ``MatrixPerspective(p, s * sigma)``.

    Example:
        >>> from stepsize.prox import MatrixPerspective
        >>> f = MatrixPerspective(3)
        >>> x = f.pack(np.diag([1.0, 0.0, -1.0]), np.array([1.0, 2.0, 0.0]))
        >>> round(float(f(f.prox(x, 1.0))), 6)
        0.604134
        >>> (2 * f).sigma, f.prox(x.astype(np.float32), 1.0).dtype
        (2.0, dtype('float32'))

    Reference: Won, NeurIPS 2020.
    """

    def __init__(self, p: int, sigma: float = 1.0):
        self.p = check_int(p, "p", low=1)
        self.sigma = check_real(sigma, "sigma", low=0, low_inclusive=False)
        # the state pyproximal.ProxOperator.__init__ sets (no linear operator, no gradient of
        # the whole function, Moreau-envelope parameter 1)
        self.Op = None
        self.hasgrad = False
        self.sigmame = 1.0

    def __repr__(self) -> str:
        return f"MatrixPerspective(p={self.p}, sigma={self.sigma:g})"

    @property
    def size(self) -> int:
        """Length ``p^2 + p`` of the flat vectors."""
        return self.p * self.p + self.p

    def pack(self, Omega, eta) -> np.ndarray:
        """Flat vector ``[Omega.ravel(), eta]`` of a pair."""
        Omega = np.asarray(Omega)
        eta = np.asarray(eta)
        if Omega.shape != (self.p, self.p):
            raise ValueError(f"Omega must have shape ({self.p}, {self.p}), got {Omega.shape}")
        if eta.shape != (self.p,):
            raise ValueError(f"eta must have shape ({self.p},), got {eta.shape}")
        return np.concatenate([Omega.ravel(), eta]).astype(_float_dtype(Omega, eta), copy=False)

    def unpack(self, x) -> tuple[np.ndarray, np.ndarray]:
        """The pair ``(Omega, eta)`` of a flat vector (float64 copies)."""
        flat = self._flat(x)
        return flat[: self.p * self.p].reshape(self.p, self.p), flat[self.p * self.p :]

    def _flat(self, x, name: str = "x") -> np.ndarray:
        """``x`` (any shape with ``p^2 + p`` entries) as a finite float64 vector."""
        array = np.asarray(x)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise TypeError(f"{name} must be a real array, got dtype {array.dtype}")
        if array.size != self.size:
            raise ValueError(
                f"{name} must have p^2 + p = {self.size} entries for p = {self.p} (flat layout "
                f"[Omega.ravel(), eta]), got shape {array.shape}"
            )
        flat = array.astype(np.float64).ravel()
        return check_finite(flat, name)

    def _like(self, flat: np.ndarray, x) -> np.ndarray:
        """``flat`` in the shape and floating dtype of ``x``."""
        array = np.asarray(x)
        return flat.reshape(array.shape).astype(_float_dtype(array), copy=False)

    def __call__(self, x) -> float:
        Omega, eta = self.unpack(x)
        if not np.allclose(Omega, Omega.T, rtol=0, atol=1e-10 * max(1.0, np.abs(Omega).max())):
            return np.inf
        Omega, eta = check_pair(Omega, eta, X_name="Omega", y_name="eta", symmetrize=True)
        return self.sigma * perspective_value(Omega, eta)

    def prox(self, x, tau, **kwargs) -> np.ndarray:
        tau = check_real(tau, "tau", low=0, low_inclusive=False)
        Omega, eta = self.unpack(x)
        X, y = check_pair(Omega, eta, X_name="Omega", y_name="eta", symmetrize=True)
        Omega, eta, _ = _prox(X, y, tau * self.sigma, "newton", 1e-12, 50)
        return self._like(np.concatenate([Omega.ravel(), eta]), x)

    def proxdual(self, x, tau, **kwargs) -> np.ndarray:
        check_real(tau, "tau", low=0, low_inclusive=False)
        flat = self._flat(x)
        return self._like(flat - self.prox(flat, 1.0), x)

    def grad(self, x) -> np.ndarray:
        Omega, eta = self.unpack(x)
        if not np.allclose(Omega, Omega.T, rtol=0, atol=1e-10 * max(1.0, np.abs(Omega).max())):
            raise ValueError(
                "MatrixPerspective.grad: phi is +inf at a non-symmetric Omega (no gradient)"
            )
        Omega = 0.5 * (Omega + Omega.T)
        try:
            factor = np.linalg.cholesky(Omega)
        except np.linalg.LinAlgError:
            raise ValueError(
                "MatrixPerspective.grad: phi is differentiable only where Omega is positive "
                f"definite; here lambda_min(Omega) = {np.linalg.eigvalsh(Omega)[0]:.3g} (use "
                "prox, or the Moreau envelope, on the boundary of the domain)"
            ) from None
        u = np.linalg.solve(factor.T, np.linalg.solve(factor, eta))
        return self._like(self.sigma * np.concatenate([-0.5 * np.outer(u, u).ravel(), u]), x)

    def postcomposition(self, sigma):
        """``sigma * f``: the same function with weight ``sigma * self.sigma``."""
        if not isinstance(sigma, numbers.Real) or isinstance(sigma, bool):
            raise TypeError(f"sigma must be a real number, got {type(sigma).__name__}")
        sigma = check_real(float(sigma), "sigma", low=0, low_inclusive=False)
        return type(self)(self.p, sigma * self.sigma)

    def precomposition(self, a, b):
        """``f(a x + b)`` (PyProximal's ``_PrecompositionOperator``; needs PyProximal)."""
        a = check_real(float(a), "a")
        if a == 0:
            raise ValueError("a must be nonzero, got 0.0")
        if not isinstance(b, np.ndarray):
            b = float(check_real(b, "b"))
        if not hasattr(super(), "precomposition"):
            raise ImportError("MatrixPerspective.precomposition needs PyProximal")
        return super().precomposition(a, b)

    def __rmul__(self, sigma):
        if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
            return self.postcomposition(sigma)
        if hasattr(super(), "__rmul__"):
            return super().__rmul__(sigma)  # PyProximal: another operator, chained
        return NotImplemented

    __mul__ = __rmul__


def _float_dtype(*arrays) -> np.dtype:
    """The floating dtype of the result: that of the inputs if floating, else float64."""
    dtype = np.result_type(*arrays)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _build(use_pyproximal: bool = True) -> type:
    """``MatrixPerspective``: a ``pyproximal.ProxOperator`` subclass if PyProximal imports."""
    bases: tuple[type, ...] = (_MatrixPerspectiveMethods,)
    if use_pyproximal:
        try:
            import pyproximal
        except ImportError:
            pass
        else:
            bases = (_MatrixPerspectiveMethods, pyproximal.ProxOperator)
    return type(
        "MatrixPerspective",
        bases,
        {"__doc__": _MatrixPerspectiveMethods.__doc__, "__module__": __name__},
    )


def __getattr__(name: str):
    # built on first access: importing PyProximal (and PyLops) takes seconds
    if name == "MatrixPerspective":
        cls = _build()
        globals()["MatrixPerspective"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
