"""The matrix perspective function of Won (NeurIPS 2020) and its exact proximity operator.

The function (the closed matrix-fractional function) is

    phi(Omega, eta) = 1/2 eta^T Omega^+ eta   if Omega is PSD and eta in range(Omega),
                      +inf                    otherwise,

for a symmetric ``Omega`` (p x p) and a vector ``eta`` (p). Its epigraph is the PSD cone through
``phi(Omega, eta) <= s  <=>  [[Omega, eta/sqrt(2)], [eta^T/sqrt(2), s]] >= 0``, so the prox

    prox_{sigma phi}(X, y) = argmin  sigma phi(Omega, eta)
                                     + 1/2 ||Omega - X||_F^2 + 1/2 ||eta - y||^2

is a projection onto the PSD cone of size p + 1 with a linear cost on the corner entry. With

    M(t) = [[X, y/sqrt(2)], [y^T/sqrt(2), -t]],   h(t) = e^T [M(t)]_- e - sigma

(``[.]_+`` and ``[.]_-`` the positive and negative parts, ``e`` the last unit vector), ``h`` is
continuous, nondecreasing and strongly semismooth. If ``X + y y^T / (2 sigma) <= 0`` the prox is
``(0, 0)`` (the zero region); otherwise ``h`` has a root ``t*`` in
``[sigma/2 - (||X||_F^2 + ||y||^2) / (2 sigma), sigma]`` and, with ``S* = [M(t*)]_+``,

    Omega* = S*[:p, :p],   eta* = sqrt(2) S*[:p, p],   S*[p, p] = phi(Omega*, eta*) = sigma - t*.

The last identity is a free optimality certificate. This is Won's theorem written with
``t = sigma (1 - mu)`` in place of the dual variable ``mu`` of his code.

Speed: one eigendecomposition of ``X`` (O(p^3)) turns ``M(t)`` into an arrowhead matrix whose
corner alone depends on ``t``; every evaluation of ``h`` and ``h'`` is then a secular equation
solved in O(p^2) (see :mod:`stepsize.prox._secular`), and ``S*`` is assembled with two matrix
products. For small p one Householder tridiagonalization of the lifted matrix, whose corner it
never touches, plays the same role with a LAPACK tridiagonal eigensolver per evaluation.

Reference: J.-H. Won, "Proximity Operator of the Matrix Perspective Function and its
Applications", NeurIPS 2020; author's code ``won-j/MatrixPerspective.jl``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from scipy.linalg.lapack import dorghr as _orghr
from scipy.linalg.lapack import dstevd as _stevd
from scipy.linalg.lapack import dsytrd as _sytrd

from stepsize._results import SolverResult, warn_not_converged
from stepsize._validation import (
    check_array,
    check_choice,
    check_int,
    check_real,
    check_square,
    check_symmetric,
)
from stepsize.prox._secular import (
    Roots,
    corrected_weights,
    deflate,
    eigenvectors,
    secular_roots,
)

__all__ = [
    "PerspectiveProxInfo",
    "matrix_perspective",
    "prox_matrix_perspective",
]

_EPS = np.finfo(float).eps
_SQRT2 = math.sqrt(2.0)
METHODS = ("newton", "bisection")


def check_pair(X, y, *, X_name: str = "X", y_name: str = "y", symmetrize: bool = False):
    """Validate a symmetric matrix and a vector of matching length; return float64 copies.

    Non-symmetric ``X`` raises unless ``symmetrize`` is set, in which case ``(X + X^T) / 2`` is
    used. Tiny asymmetry (relative 1e-10) is always accepted and removed.
    """
    X = check_array(X, X_name, ndim=2)
    check_square(X, X_name)
    if not symmetrize:
        check_symmetric(X, X_name)
    X = 0.5 * (X + X.T)
    y = check_array(y, y_name, ndim=1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{y_name} must have length {X.shape[0]} to match {X_name} of shape {X.shape}, "
            f"got length {y.shape[0]}"
        )
    return X, y


def matrix_perspective(Omega, eta, *, rtol: float = 1e-10) -> float:
    """The matrix perspective function ``phi(Omega, eta) = 1/2 eta^T Omega^+ eta``.

    Computed from the eigendecomposition ``Omega = Q diag(w) Q^T`` without inverting anything:
    with ``c = Q^T eta`` the value is ``1/2 sum_{w_i > tau} c_i^2 / w_i``, where
    ``tau = rtol * max(w)``. The point is outside the domain (value ``+inf``) when ``min(w) <
    -tau`` (``Omega`` not PSD) or when the part of ``eta`` in the numerical null space,
    ``||c_{w <= tau}||``, exceeds ``sqrt(rtol) * ||eta||`` (``eta`` not in the range).

    Args:
        Omega: symmetric matrix, p x p.
        eta: vector of length p.
        rtol: relative eigenvalue threshold of the numerical null space.

    Returns:
        The value, a float (``inf`` outside the domain).

    Example:
        >>> matrix_perspective(np.diag([2.0, 0.0]), np.array([2.0, 0.0]))
        1.0
        >>> matrix_perspective(np.diag([2.0, 0.0]), np.array([0.0, 1.0]))
        inf

    Reference: Won (NeurIPS 2020), the function phi; Boyd and Vandenberghe, the matrix-fractional
    function.
    """
    Omega, eta = check_pair(Omega, eta, X_name="Omega", y_name="eta")
    rtol = check_real(rtol, "rtol", low=0, high=1, low_inclusive=False)
    return perspective_value(Omega, eta, rtol)


def perspective_value(Omega: np.ndarray, eta: np.ndarray, rtol: float = 1e-10) -> float:
    """:func:`matrix_perspective` on validated input."""
    value, lowest, null_part = perspective_parts(Omega, eta, rtol)
    threshold = rtol * max(float(np.linalg.norm(Omega, 2)), 0.0)
    if lowest < -threshold or null_part > math.sqrt(rtol) * float(np.linalg.norm(eta)):
        return math.inf
    return value


def perspective_parts(
    Omega: np.ndarray, eta: np.ndarray, rtol: float
) -> tuple[float, float, float]:
    """``(value on the range, smallest eigenvalue, ||eta part in the null space||)``.

    The value is ``1/2 sum_{w_i > tau} c_i^2 / w_i`` with ``c = Q^T eta`` and ``tau = rtol *
    max(w)``: the perspective of the projection of ``eta`` onto the numerical range.
    """
    w, Q = np.linalg.eigh(Omega)
    threshold = rtol * max(float(w[-1]), 0.0)
    c = Q.T @ eta
    null = w <= threshold
    value = 0.5 * float(np.sum(c[~null] ** 2 / w[~null]))
    return value, float(w[0]), float(np.linalg.norm(c[null]))


@dataclass
class PerspectiveProxInfo(SolverResult):
    """Diagnostics of :func:`prox_matrix_perspective` (``x`` is the pair ``(Omega, eta)``).

    Attributes:
        root: ``t*``, the root of ``h(t) = e^T [M(t)]_- e - sigma`` (``sigma`` in the zero region).
        certificate: ``sigma - t* = phi(Omega*, eta*)``, the optimal value of the perspective term.
        residual: ``|h(t*)| / sigma``.
        zero_region: whether ``X + y y^T / (2 sigma) <= 0``, where the prox is ``(0, 0)``.
        n_newton: Newton steps taken (each one O(p^2) secular solve).
        n_bisection: bisection steps taken (the safeguard, or every step for ``"bisection"``).
        method: ``"newton"`` or ``"bisection"``.
        rank: rank of the lifted solution ``S*`` (its positive eigenvalues).
    """

    root: float = math.nan
    certificate: float = math.nan
    residual: float = math.nan
    zero_region: bool = False
    n_newton: int = 0
    n_bisection: int = 0
    method: str = "newton"
    rank: int = 0
    history: list[float] | None = field(default=None)


class _SecularRootFunction:
    """``h(t) = e^T [A(t)]_- e - 1`` and ``h'`` through the arrowhead ``A(t)`` (sigma = 1).

    One ``eigh`` of ``X`` in the constructor; each call then costs O(p^2). Only the roots on one
    side of zero are needed: ``e^T A_- e = sum_{lambda < 0} -lambda q^2`` or, through ``e^T A e =
    -t``, ``e^T A_- e = t + sum_{lambda > 0} lambda q^2``; the smaller set is used (interlacing
    tells in advance which roots are negative, up to one), except that the second form, which
    cancels when ``t << -1``, is then avoided. The derivative follows from ``d
    lambda_i / dt = -q_i^2`` and ``d q_i^2 / dt = -2 q_i^6 sum_j b_j^2 / (lambda_i - d_j)^3``:
    it is the Loewner divided-difference formula of the note, summed over one side only.
    """

    def __init__(self, X, y):
        a, U = scipy.linalg.eigh(X, driver="evd", check_finite=False)
        self.arrow = deflate(a, U, (U.T @ y) / _SQRT2)
        self.poles = self.arrow.poles
        self.weights = self.arrow.weights
        self.scale = max(1.0, float(np.max(np.abs(a))), float(np.sqrt(self.weights.sum())))
        n = self.poles.size
        negatives = int(np.searchsorted(self.poles, 0.0, side="left"))
        self.fewer_negative = negatives + 1 <= n - negatives + 1
        self.negative_index = np.arange(0, negatives + 1)
        self.positive_index = np.arange(negatives, n + 1)
        self.roots: Roots | None = None

    def __call__(self, t: float) -> tuple[float, float]:
        if self.poles.size == 0:  # A(t) = diag(a, -t): the corner is an eigenvalue
            return max(t, 0.0) - 1.0, 1.0 if t > 0 else 0.0
        # the positive side subtracts ~|t| from ~|t| when t << -1: use it only when it is stable
        use_negative = self.fewer_negative or t < -1.0
        index = self.negative_index if use_negative else self.positive_index
        self.roots = secular_roots(self.poles, self.weights, -t, index, self.roots)
        lam = self.roots.values(self.poles)
        q2 = 1.0 / (1.0 + self.roots.second)
        rate = q2 * q2 + 2.0 * lam * q2**3 * self.roots.third
        if use_negative:
            side = lam < 0
            return float(np.sum(-lam[side] * q2[side])) - 1.0, float(np.sum(rate[side]))
        side = lam > 0
        return t + float(np.sum(lam[side] * q2[side])) - 1.0, 1.0 - float(np.sum(rate[side]))

    def largest_eigenvalue(self, t: float) -> float:
        """Largest eigenvalue of ``A(t)``: the last secular root or a deflated diagonal entry."""
        arrow = self.arrow
        top = -math.inf
        if arrow.deflated.size:
            top = float(np.max(arrow.diagonal[arrow.deflated]))
        if self.poles.size == 0:
            return max(top, -t)
        root = secular_roots(self.poles, self.weights, -t, np.array([self.poles.size]))
        return max(top, float(root.values(self.poles)[0]))

    def assemble(self, t: float, X, y):
        """``S = [M(t)]_+`` from the arrowhead eigenpairs; returns ``(Omega, eta, rank)``.

        The sum runs over the smaller of the positive and negative eigenvalue sets: ``S = sum_+
        lambda v v^T`` or ``S = M(t) + sum_- (-lambda) v v^T``.
        """
        arrow = self.arrow
        p = X.shape[0]
        poles = arrow.poles
        n = poles.size
        columns = []
        if n:
            roots = secular_roots(poles, arrow.weights, -t, np.arange(n + 1), self.roots)
            lam = roots.values(poles)
        else:
            roots, lam = None, np.array([-t])
        deflated_values = arrow.diagonal[arrow.deflated]
        rank = int(np.sum(lam > 0) + np.sum(deflated_values > 0))
        use_positive = rank <= (n + 1 + deflated_values.size) - rank
        side = lam > 0 if use_positive else lam < 0
        magnitude = np.sqrt(np.abs(lam[side]))
        if n:
            chosen = Roots(
                index=roots.index[side], origin=roots.origin[side], offset=roots.offset[side]
            )
            b_hat = arrow.signs * np.sqrt(corrected_weights(poles, roots))
            vectors = eigenvectors(poles, b_hat, chosen) * magnitude
            kept_basis = arrow.basis if n == p else arrow.basis[:, arrow.kept]
            top = kept_basis @ vectors[:n]
            columns.append(np.vstack([top, vectors[n : n + 1]]))
        elif side[0]:
            columns.append(np.concatenate([np.zeros(p), magnitude]).reshape(-1, 1))
        pick = deflated_values > 0 if use_positive else deflated_values < 0
        if np.any(pick):
            top = arrow.basis[:, arrow.deflated[pick]] * np.sqrt(np.abs(deflated_values[pick]))
            columns.append(np.vstack([top, np.zeros((1, top.shape[1]))]))
        factor = np.hstack(columns) if columns else np.zeros((p + 1, 0))
        upper = factor[:p]
        Omega = upper @ upper.T
        eta = _SQRT2 * (upper @ factor[p])
        if not use_positive:
            Omega += X
            eta += y
        return 0.5 * (Omega + Omega.T), eta, rank


class _DenseRootFunction:
    """The same ``h``, ``h'`` and ``S = [M(t)]_+`` from a tridiagonal eigensolver per call.

    With the corner first, ``[[-t, b^T], [b, X]]`` (``b = y / sqrt(2)``), Householder
    tridiagonalization (``dsytrd``) gives ``Q T Q^T`` whose reflectors never touch the corner, so
    ``Q e = e`` and the corner of ``T`` is ``-t`` for every ``t``: one reduction, then one
    tridiagonal eigendecomposition (``dstevd``, 40% cheaper than a dense ``dsyevd`` at p = 50) per
    evaluation, with ``q`` the first row of its eigenvectors. ``Q`` is formed only for the final
    assembly. Used below ``DENSE_MAX_SIZE``, where LAPACK on a tiny matrix costs less than the
    vectorized secular iteration's overhead. ``h'`` is the Loewner formula ``sum_ij Gamma_ij q_i^2
    q_j^2`` with ``Gamma = 1`` on pairs of negative eigenvalues and ``lambda_i / (lambda_i -
    lambda_j)`` on pairs ``lambda_i < 0 <= lambda_j``.
    """

    def __init__(self, X, y):
        p = X.shape[0]
        lifted = np.empty((p + 1, p + 1))
        lifted[1:, 1:] = X
        lifted[1:, 0] = lifted[0, 1:] = y / _SQRT2
        lifted[0, 0] = 0.0
        reduced, self.diagonal, self.offdiagonal, tau, status = _sytrd(lifted, lower=1)
        if status != 0:
            raise np.linalg.LinAlgError(f"dsytrd failed with info = {status}")
        self._reflectors = (reduced, tau)
        self._last = None
        # ||M(1)|| bounds ||X|| and ||y|| / sqrt(2) from above (interlacing, ||M e||) and by at
        # most their sum + 1 from below; M(1) is decomposed anyway (zero-region test, first h)
        self.scale = max(1.0, float(np.max(np.abs(self._eigh(1.0)[0]))))

    def _eigh(self, t: float):
        # the last decomposition is reused: the zero-region test and h share t = 1, and the
        # assembly happens at the last t evaluated
        if self._last is None or self._last[0] != t:
            diagonal = self.diagonal.copy()
            diagonal[0] = -t
            lam, vectors, status = _stevd(diagonal, self.offdiagonal, compute_v=1)
            if status != 0:
                raise np.linalg.LinAlgError(f"dstevd failed with info = {status}")
            self._last = (t, lam, vectors)
        return self._last[1], self._last[2]

    def __call__(self, t: float) -> tuple[float, float]:
        lam, vectors = self._eigh(t)
        q2 = vectors[0] ** 2
        negative = lam < 0
        mass = float(np.sum(q2[negative]))
        value = float(np.sum(-lam[negative] * q2[negative])) - 1.0
        lam_neg, lam_pos = lam[negative], lam[~negative]
        divided = lam_neg[:, None] / (lam_neg[:, None] - lam_pos[None, :])
        slope = mass * mass + 2.0 * float(q2[negative] @ divided @ q2[~negative])
        return value, slope

    def largest_eigenvalue(self, t: float) -> float:
        return float(self._eigh(t)[0][-1])

    def assemble(self, t: float, X, y):
        lam, vectors = self._eigh(t)
        positive = lam > 0
        # dsytrd (lower) stores its reflectors as dgehrd does (v(i+1) = 1, the rest below the
        # subdiagonal), so dorghr forms Q; scipy exposes no dorgtr
        reduced, tau = self._reflectors
        Q, status = _orghr(reduced, tau, lo=0, hi=reduced.shape[0] - 1)
        if status != 0:
            raise np.linalg.LinAlgError(f"dorghr failed with info = {status}")
        factor = Q @ (vectors[:, positive] * np.sqrt(lam[positive]))
        upper = factor[1:]
        Omega = upper @ upper.T
        return 0.5 * (Omega + Omega.T), _SQRT2 * (upper @ factor[0]), int(positive.sum())


# Below this size (p + 1) a tridiagonal eigensolver per Newton step is faster than the secular
# equation (measured crossover p ~ 200, one thread); above this ||(X, y)|| / sigma its absolute
# rounding in small eigenvector entries shows.
DENSE_MAX_SIZE = 192
DENSE_MAX_SCALE = 1e4


def prox_matrix_perspective(
    X,
    y,
    sigma,
    *,
    method: str = "newton",
    tol: float = 1e-12,
    maxiter: int | None = None,
    symmetrize: bool = False,
    return_info: bool = False,
):
    """Exact proximity operator of ``sigma * phi``, the matrix perspective function.

    Solves ``min sigma phi(Omega, eta) + 1/2 ||Omega - X||_F^2 + 1/2 ||eta - y||^2`` through the
    root ``t*`` of ``h(t) = e^T [M(t)]_- e - sigma``, ``M(t) = [[X, y/sqrt(2)], [y^T/sqrt(2),
    -t]]`` (module docstring). Steps: rescale by ``sigma`` (``prox_{sigma phi}(v) = sigma
    prox_phi(v / sigma)``); one ``eigh`` of ``X`` (below ``p + 1 = DENSE_MAX_SIZE``, one
    tridiagonal reduction of the lifted matrix instead); the zero-region test ``lambda_max(X + y
    y^T / (2 sigma)) <= 0``; ``h(sigma) = 0`` gives ``t* = sigma`` (e.g. ``y = 0``); otherwise a
    safeguarded semismooth Newton iteration, on ``log(1 + h / sigma)`` (same root) until a step
    fails to reduce ``|h|`` and on ``h`` after that, on the bracket ``[sigma/2 - (||X||_F^2 +
    ||y||^2) / (2 sigma), sigma]`` with bisection whenever the Newton point leaves it; finally
    ``S* = [M(t*)]_+`` from the arrowhead eigenvectors.

    Args:
        X: symmetric matrix, p x p.
        y: vector of length p.
        sigma: the scale ``sigma > 0``.
        method: ``"newton"`` (safeguarded semismooth Newton) or ``"bisection"``.
        tol: stop when ``|h(t)| <= tol * sigma`` (or when the bracket of ``t*`` has shrunk to
            rounding level).
        maxiter: cap on root-finding steps (default 50 for Newton, 200 for bisection).
        symmetrize: use ``(X + X^T) / 2`` instead of raising on a non-symmetric ``X``.
        return_info: also return a :class:`PerspectiveProxInfo`.

    Returns:
        ``(Omega, eta)``, or ``(Omega, eta, info)`` when ``return_info`` is set.

    Raises:
        ValueError: non-square, non-symmetric or non-finite ``X``, ``y`` of the wrong length,
            ``sigma <= 0``, empty input.

    Example:
        >>> Omega, eta = prox_matrix_perspective(np.diag([1.0, 0.0, -1.0]), [1.0, 2.0, 0.0], 1.0)
        >>> np.round(eta, 6)
        array([0.634093, 0.845887, 0.      ])

    Reference: Won, "Proximity Operator of the Matrix Perspective Function and its
    Applications", NeurIPS 2020.
    """
    X, y = check_pair(X, y, symmetrize=symmetrize)
    sigma = check_real(sigma, "sigma", low=0, low_inclusive=False)
    method = check_choice(method, "method", METHODS)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    if maxiter is None:
        maxiter = 50 if method == "newton" else 200
    maxiter = check_int(maxiter, "maxiter", low=1)
    Omega, eta, info = _prox(X, y, sigma, method, tol, maxiter)
    return (Omega, eta, info) if return_info else (Omega, eta)


def _prox(X, y, sigma, method, tol, maxiter):
    """The prox on validated input; returns ``(Omega, eta, info)``."""
    p = X.shape[0]
    X_scaled = X / sigma
    y_scaled = y / sigma
    # the dense path's rounding grows with ||X|| / sigma (see below): keep it to tame scales
    size = max(float(np.linalg.norm(X_scaled)), float(np.linalg.norm(y_scaled)))
    dense = p + 1 <= DENSE_MAX_SIZE and size <= DENSE_MAX_SCALE
    h = (_DenseRootFunction if dense else _SecularRootFunction)(X_scaled, y_scaled)
    info = PerspectiveProxInfo(x=None, n_iter=0, converged=True, method=method, history=[])
    if h.largest_eigenvalue(1.0) <= 64 * _EPS * h.scale:
        info.zero_region = True
        info.root, info.certificate, info.residual = sigma, 0.0, 0.0
        info.message = "zero region: X + y y^T / (2 sigma) is negative semidefinite"
        info.x = (np.zeros((p, p)), np.zeros(p))
        return info.x[0], info.x[1], info

    # h is a sum of positive terms of size ~1 (sigma = 1): tol is absolute, whatever ||X||
    target = max(tol, 16 * _EPS)
    low = 0.5 - 0.5 * (float(np.sum(X_scaled**2)) + float(y_scaled @ y_scaled))
    t, value = _find_root(h, method, target, maxiter, low, info)
    if dense and abs(value) > target:
        # a dense eigenvector's small last components carry absolute (not relative) rounding
        # errors, which can leave h above tol on badly scaled data: redo it on the arrowhead
        h = _SecularRootFunction(X_scaled, y_scaled)
        t, value = _find_root(h, method, target, maxiter, low, info)
    if not info.converged:
        warn_not_converged(f"prox_matrix_perspective ({method})", info.n_iter, info.message)

    Omega_scaled, eta_scaled, rank = h.assemble(t, X_scaled, y_scaled)
    info.x = (sigma * Omega_scaled, sigma * eta_scaled)
    info.root = sigma * t
    info.certificate = sigma * (1.0 - t)
    info.residual = abs(value)
    info.rank = rank
    return info.x[0], info.x[1], info


def _find_root(h, method, target, maxiter, low, info):
    """Safeguarded Newton on ``log(1 + h)`` (or bisection) for ``h(t) = 0`` on ``[low, 1]``.

    Returns ``(t, h(t))``.

    Stops when ``|h| <= target``, when a Newton step no longer moves ``t`` (``h`` at its
    rounding level) or when the bracket has shrunk to rounding level.
    """
    t, (value, slope) = 1.0, h(1.0)
    info.history.append(abs(value))
    high = 1.0
    converged = value <= target
    iterations = 0
    # Newton on g = log(1 + h) = log(e^T [M(t)]_- e) has the same root and is nearly linear
    # where 1 + h ~ C / t^2 (t << 0), so it needs far fewer steps than Newton on h from the far
    # start; where 1 + h ~ t (t >> 0) it overshoots instead, and h itself is nearly linear. So
    # the log step runs until a step fails to reduce |h|, and plain Newton after that.
    log_steps = True
    upper, restarted_from = (t, value, slope), None
    while not converged and iterations < maxiter:
        if value > 0:
            high, upper = t, (t, value, slope)
        else:
            low = t
        candidate = math.nan
        if method == "newton" and slope > 0:
            numerator = math.log1p(value) * (1.0 + value) if log_steps else value
            candidate = t - numerator / slope
        elif method == "newton" and upper[2] > 0 and restarted_from != upper[0]:
            # no slope here (M(t) >= 0, h = -1: a log step overshot): plain Newton from the
            # last point above the root, once, instead of bisecting a wide bracket
            candidate, restarted_from = upper[0] - upper[1] / upper[2], upper[0]
        if low < candidate < high:
            if abs(candidate - t) <= 4 * _EPS * max(1.0, abs(t)):
                converged = True
                break
            info.n_newton += 1
        else:
            candidate = 0.5 * (low + high)
            info.n_bisection += 1
        t = candidate
        previous = abs(value)
        value, slope = h(t)
        log_steps = log_steps and abs(value) < previous
        iterations += 1
        info.n_iter += 1
        info.history.append(abs(value))
        converged = abs(value) <= target or high - low <= 4 * _EPS * max(1.0, abs(low), abs(high))
    info.converged = bool(converged)
    info.message = "converged" if converged else f"|h(t)| = {abs(value):.3g} > {target:.3g}"
    return t, value
