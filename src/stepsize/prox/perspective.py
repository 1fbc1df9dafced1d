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
from typing import Any

import numpy as np
from scipy.linalg.lapack import dgtsv as _gtsv
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
    check_symmetry_gap,
)
from stepsize.prox._root import find_root
from stepsize.prox._secular import (
    Roots,
    corrected_weights,
    deflate,
    eigenvectors,
    midpoint_sums,
    secular_roots,
)
from stepsize.prox._tridiagonal import tridiagonal_eigh

__all__ = [
    "PerspectiveProxResult",
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
    X = check_symmetric_matrix(X, X_name, symmetrize)
    y = check_array(y, y_name, ndim=1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{y_name} must have length {X.shape[0]} to match {X_name} of shape {X.shape}, "
            f"got length {y.shape[0]}"
        )
    return X, y


def check_symmetric_matrix(X, name: str = "X", symmetrize: bool = False) -> np.ndarray:
    """A validated float64 symmetric p x p matrix (symmetrized to rounding, or on request)."""
    X = check_array(X, name, ndim=2)
    check_square(X, name)
    # not (X + X^T) / 2, which overflows near the largest float; in row blocks, with the
    # symmetry test of check_symmetric (rtol 1e-10 of max |X_ij|) on the way, so that no
    # p x p temporary is made
    out = np.empty(X.shape)
    gap = scale = 0.0
    step = max(1, (1 << 15) // max(X.shape[0], 1))
    for begin in range(0, X.shape[0], step):
        rows = slice(begin, begin + step)
        top, left = X[rows], X[:, rows].T
        if not symmetrize:
            gap = max(gap, float(np.max(np.abs(top - left))))
            scale = max(scale, float(np.max(np.abs(top))))
        np.multiply(top, 0.5, out=out[rows])
        out[rows] += 0.5 * left
    check_symmetry_gap(gap, scale, name)
    return out


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
    Omega: np.ndarray, eta: np.ndarray, rtol: float, weight: float = 1.0
) -> tuple[float, float, float]:
    """``(weight * value on the range, smallest eigenvalue, ||eta part in the null space||)``.

    The value is ``1/2 sum_{w_i > tau} c_i^2 / w_i`` with ``c = Q^T eta`` and ``tau = rtol *
    max(w)``: the perspective of the projection of ``eta`` onto the numerical range. It is
    summed as ``(c_i sqrt(weight / w_i))^2``, so that ``weight * value`` does not underflow when
    ``c_i^2`` alone would.
    """
    w, Q = np.linalg.eigh(Omega)
    threshold = rtol * max(float(w[-1]), 0.0)
    c = Q.T @ eta
    null = w <= threshold
    if weight == 1.0:
        value = 0.5 * float(np.sum(c[~null] ** 2 / w[~null]))
    else:
        value = 0.5 * float(np.sum((c[~null] * (np.sqrt(weight) / np.sqrt(w[~null]))) ** 2))
    return value, float(w[0]), float(np.linalg.norm(c[null]))


@dataclass
class PerspectiveProxResult(SolverResult):
    """Result of :func:`prox_matrix_perspective`.

    ``x`` is the pair ``(Omega, eta)`` (so ``Omega, eta = result.x``); ``Omega`` and ``eta``
    name its two parts. For one problem the diagnostics below are numbers; for a batch (``X``
    of shape ``(b, p, p)``) ``Omega`` is ``(b, p, p)``, ``eta`` is ``(b, p)`` (or ``(b, p, k)``)
    and every diagnostic is an array of shape ``(b,)``, while ``n_iter`` is the largest
    per-problem step count, ``converged`` is whether every problem converged, and
    ``info["n_iter"]`` and ``info["converged"]`` hold the per-problem values (``(b,)`` arrays;
    ``info["single_calls"]`` counts the problems solved one by one).

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

    root: Any = math.nan
    certificate: Any = math.nan
    residual: Any = math.nan
    zero_region: Any = False
    n_newton: Any = 0
    n_bisection: Any = 0
    method: str = "newton"
    rank: Any = 0
    history: list[float] | None = field(default=None)

    @property
    def Omega(self) -> np.ndarray:  # noqa: N802 (the paper's name)
        """The matrix part of the prox, ``x[0]``."""
        return self.x[0]

    @property
    def eta(self) -> np.ndarray:
        """The vector (or p x k matrix) part of the prox, ``x[1]``."""
        return self.x[1]


class _SecularRootFunction:
    """``m(t) = e^T [A(t)]_- e`` and ``m'`` through the arrowhead ``A(t)``; ``h = m - sigma``.

    One eigendecomposition of ``X`` in the constructor (its back-transformation ``Q`` kept as
    reflectors, :mod:`stepsize.prox._tridiagonal`); each call then costs O(p^2). Only the roots
    on one side of zero are needed: ``e^T A_- e = sum_{lambda < 0} -lambda q^2`` or, through
    ``e^T A e = -t``, ``e^T A_- e = t + sum_{lambda > 0} lambda q^2``; the smaller set is used
    (interlacing tells in advance which roots are negative, up to one), except that the second
    form, which cancels when ``t << -sigma``, is then avoided. The derivative follows from ``d
    lambda_i / dt = -q_i^2`` and ``d q_i^2 / dt = -2 q_i^6 sum_j b_j^2 / (lambda_i - d_j)^3``:
    it is the Loewner divided-difference formula of the note, summed over one side only.

    The mass ``m`` is returned itself, not ``h = m - sigma``: near ``M(t) >= 0`` it is far below
    ``sigma`` and ``log m`` (the log-Newton step) needs its relative accuracy, which ``m - sigma``
    loses. Each root ``d_k + delta`` carries an absolute error of order ``eps (|d_k| + |lambda|)``;
    summed with the weights ``q^2`` this is the rounding floor of ``m`` (third return value).
    """

    def __init__(self, X, y, sigma: float = 1.0):
        # X = Q Z diag(a) Z^T Q^T with Q left as reflectors: U = Q Z is never formed
        a, Z, self.reflectors = tridiagonal_eigh(X)
        self.norm = float(np.linalg.norm(a))  # ||X||_F
        rotated = self.reflectors.apply(y[:, None].copy(), transpose=True)[:, 0]  # Q^T y
        self.arrow = deflate(a, Z, (Z.T @ rotated) / _SQRT2)
        self.poles = self.arrow.poles
        self.weights = self.arrow.weights
        self.sigma = sigma
        n = self.poles.size
        negatives = int(np.searchsorted(self.poles, 0.0, side="left"))
        self.fewer_negative = negatives + 1 <= n - negatives + 1
        self.negative_index = np.arange(0, negatives + 1)
        self.positive_index = np.arange(negatives, n + 1)
        self.roots: Roots | None = None
        self.midpoints = midpoint_sums(self.poles, self.weights)

    def __call__(self, t: float) -> tuple[float, float, float]:
        if self.poles.size == 0:  # A(t) = diag(a, -t): the corner is an eigenvalue
            return max(t, 0.0), 1.0 if t > 0 else 0.0, _EPS * abs(t)
        # the positive side subtracts ~|t| from ~|t| when t << -sigma: use it only when stable
        use_negative = self.fewer_negative or t < -self.sigma
        index = self.negative_index if use_negative else self.positive_index
        self.roots = secular_roots(self.poles, self.weights, -t, index, self.roots,
                                   self.midpoints)
        lam = self.roots.values(self.poles)
        q2 = 1.0 / (1.0 + self.roots.second)
        # q^4 (1 + 2 lambda q^2 sum b^2 / (lambda - d)^3), grouped so that q^6 cannot underflow
        with np.errstate(over="ignore", invalid="ignore"):
            rate = q2 * q2 * (1.0 + 2.0 * (lam * self.roots.third) * q2)
        # an overflowed sum (a root 1e-110 from its pole, q^2 ~ 1e-220): that term's rate is
        # negligible, and q^4 is its leading part
        rate = np.where(np.isfinite(rate), rate, q2 * q2)
        side = lam < 0 if use_negative else lam > 0
        # each root's secular function g is known to eps (|t| + |d_k| + |lambda|) at least, so
        # the root to that over |g'| = 1 / q^2, and its term of m, lambda q^2, to that times q^2
        # plus eps |lambda| q^2 (the relative rounding of q^2)
        size = abs(t) + np.abs(self.poles[self.roots.origin[side]]) + np.abs(lam[side])
        noise = 16 * _EPS * float(np.sum((size * q2[side] + np.abs(lam[side])) * q2[side]))
        if use_negative:
            return float(np.sum(-lam[side] * q2[side])), float(np.sum(rate[side])), noise
        mass = t + float(np.sum(lam[side] * q2[side]))
        return mass, 1.0 - float(np.sum(rate[side])), noise + 4 * _EPS * abs(t)

    def kink(self) -> tuple[float, float] | None:
        """The one ``t_c`` where an eigenvalue of ``A(t)`` crosses zero, and its rounding.

        ``det A(t)`` is linear in ``t`` (the corner alone moves), so ``lambda = 0`` is an
        eigenvalue only at ``g(0) = 0``: ``t_c = -sum_j b_j^2 / d_j``. There ``m`` bends: the
        crossing eigenvalue's term ``-lambda q^2`` switches on, linearly, and ``m'`` jumps by
        ``q^4``. None when a pole is exactly zero (no crossing).
        """
        poles, weights = self.poles, self.weights
        if poles.size == 0 or np.any(poles == 0.0):
            return None
        with np.errstate(over="ignore", divide="ignore"):
            terms = weights / poles
            rounding = float(np.sum(np.abs(terms))) + float(
                np.max(np.abs(self.arrow.diagonal))) * float(np.sum(weights / poles**2))
        crossing = -float(np.sum(terms))
        if not (math.isfinite(crossing) and math.isfinite(rounding)):
            return None
        return crossing, 2 * _EPS * rounding

    def surrogate_point(self, level: float) -> float | None:
        """See :func:`_surrogate_point`."""
        return _surrogate_point(self.poles, self.weights, level)

    def root_lower_bound(self) -> float:
        """A lower bound on ``t* = sigma - phi(Omega*, eta*)`` from a feasible point.

        The prox objective at ``(Pi_+(X) + eps I, y)`` bounds the optimal one, and ``1/2
        ||Omega - X||^2 >= 1/2 ||Pi_-(X)||^2`` for every PSD ``Omega``, so ``phi(Omega*, eta*) <=
        sum_j b_j^2 / (max(d_j, 0) + eps) + (eps tr Pi_-(X) + p eps^2 / 2) / sigma`` for every
        ``eps > 0``; minimized over ``eps`` on a grid of powers of two, refined twice. When ``y``
        lies mostly in the range of ``Pi_+(X)`` this is within a hair of ``t*``, far above the
        generic ``sigma / 2 - (||X||^2 + ||y||^2) / (2 sigma)``, and it keeps model steps from
        overshooting into the flat region where ``M(t) >= 0``.
        """
        sigma = self.sigma
        positive = np.maximum(self.poles, 0.0)
        negative_trace = float(-np.sum(np.minimum(self.arrow.diagonal, 0.0)))
        size = self.arrow.diagonal.size

        def bound(log2_eps):
            eps = np.exp2(log2_eps)[:, None]
            value = np.sum(self.weights / (positive + eps), axis=1)
            return value + (eps[:, 0] * negative_trace + 0.5 * size * eps[:, 0] ** 2) / sigma

        best, step = 0.0, 8.0
        grid = np.arange(-1000.0, 64.0, step)
        for _ in range(3):
            values = bound(grid)
            best = float(grid[int(np.argmin(values))])
            step /= 8.0
            grid = best + np.arange(-8.0, 8.5, 1.0) * step
        phi_bound = float(np.min(bound(np.array([best]))))
        return sigma - phi_bound * (1.0 + 1e-10) - 1e-300

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
        lambda v v^T`` or ``S = M(t) + sum_- (-lambda) v v^T``. The second form cancels when
        ``||Omega|| << ||X||`` (its rounding is ``eps ||X||``, which was 1e-8 of ``Omega`` on a
        spread-sweep instance): below ``2^-10 ||X||_F`` the first form is used instead.
        """
        arrow = self.arrow
        poles = arrow.poles
        n = poles.size
        if n:
            # all n + 1 roots (the Gu-Eisenstat weights need them). Reusing the last
            # evaluation's roots at this t saved two passes but left the weights at 2e-9
            # dual infeasibility on a spread-sweep instance: they are iterated again here
            roots = secular_roots(poles, arrow.weights, -t, np.arange(n + 1), self.roots,
                                  self.midpoints)
            lam = roots.values(poles)
        else:
            roots, lam = None, np.array([-t])
        deflated_values = arrow.diagonal[arrow.deflated]
        rank = int(np.sum(lam > 0) + np.sum(deflated_values > 0))
        use_positive = rank <= (n + 1 + deflated_values.size) - rank
        Omega, eta = self._sum(roots, lam, use_positive, X.shape[0])
        if not use_positive:
            # X is exactly symmetric (validated), so the sum stays exactly symmetric
            Omega += X
            eta += y
            if float(np.linalg.norm(Omega)) < 2.0**-10 * self.norm:
                Omega, eta = self._sum(roots, lam, True, X.shape[0])
        return Omega, eta, rank

    def _sum(self, roots, lam, use_positive: bool, p: int):
        """``(F F^T, sqrt(2) F last)`` over the eigenpairs of one sign: ``F = Q Z V |lambda|^(1/2)``
        (``V`` the arrowhead eigenvectors)."""
        arrow = self.arrow
        poles = arrow.poles
        n = poles.size
        deflated_values = arrow.diagonal[arrow.deflated]
        side = lam > 0 if use_positive else lam < 0
        magnitude = np.sqrt(np.abs(lam[side]))
        # S = F F^T with F = [upper; last]: upper = Q G with G in the basis Z, built as G^T
        # (C order, so G is Fortran-ordered for dormqr in place), then one syrk (numpy's
        # A @ A.T, exactly symmetric), with no stacked copy of F
        uppers, lasts = [], []
        if n:
            chosen = Roots(
                index=roots.index[side], origin=roots.origin[side], offset=roots.offset[side]
            )
            b_hat = arrow.signs * np.sqrt(corrected_weights(poles, roots))
            vectors = eigenvectors(poles, b_hat, chosen)
            vectors *= magnitude
            kept_basis = arrow.basis if n == p else arrow.basis[:, arrow.kept]
            uppers.append(vectors[:n].T @ kept_basis.T)
            lasts.append(vectors[n])
        elif side[0]:
            uppers.append(np.zeros((1, p)))
            lasts.append(magnitude)
        pick = deflated_values > 0 if use_positive else deflated_values < 0
        if np.any(pick):
            uppers.append((arrow.basis[:, arrow.deflated[pick]]
                           * np.sqrt(np.abs(deflated_values[pick]))).T)
            lasts.append(np.zeros(int(np.sum(pick))))
        transposed = uppers[0] if len(uppers) == 1 else np.vstack(uppers or [np.zeros((0, p))])
        upper = self.reflectors.apply(transposed.T)
        last = lasts[0] if len(lasts) == 1 else np.concatenate(lasts or [np.zeros(0)])
        rows = upper.T  # C order: numpy's rows.T @ rows is a syrk (upper @ upper.T, with upper
        # Fortran-ordered, is a full gemm: 0.14 s against 0.09 s at p = 2000, r = 1000)
        return rows.T @ rows, _SQRT2 * (upper @ last)


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

    def __init__(self, X, y, sigma: float = 1.0):
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

    def __call__(self, t: float) -> tuple[float, float, float]:
        lam, vectors = self._eigh(t)
        q = vectors[0]
        q2 = q**2
        negative = lam < 0
        mass = float(q2[negative].sum())
        value = float(np.sum(-lam[negative] * q2[negative]))
        lam_neg, lam_pos = lam[negative], lam[~negative]
        divided = lam_neg[:, None] / (lam_neg[:, None] - lam_pos[None, :])
        slope = mass * mass + 2.0 * float(q2[negative] @ divided @ q2[~negative])
        # absolute rounding: eps ||M|| in each eigenvalue, eps in each eigenvector entry
        top = float(np.max(np.abs(lam)))
        noise = 8 * _EPS * (top * mass + float(np.sum(np.abs(lam[negative] * q[negative]))))
        return value, slope, noise

    def largest_eigenvalue(self, t: float) -> float:
        return float(self._eigh(t)[0][-1])

    def surrogate_point(self, level: float) -> float | None:
        """See :func:`_surrogate_point`; the poles and weights from the trailing block of the
        reduced tridiagonal matrix (``X``) and its coupling to the corner (one ``dstevd``)."""
        if self.diagonal.size < 2:
            return None
        poles, vectors, status = _stevd(self.diagonal[1:].copy(), self.offdiagonal[1:].copy(),
                                        compute_v=1)
        if status != 0:
            return None
        return _surrogate_point(poles, (self.offdiagonal[0] * vectors[0]) ** 2, level)

    def kink(self) -> tuple[float, float] | None:
        """``t_c = -b^T X^{-1} b`` (see :meth:`_SecularRootFunction.kink`) from the reduced
        tridiagonal matrix: ``X`` is its trailing block, ``b`` its first off-diagonal entry."""
        if self.diagonal.size < 2:
            return None
        first = self.offdiagonal[0]
        trailing = self.diagonal[1:]
        rest = self.offdiagonal[1:]
        if trailing.size == 1:
            if trailing[0] == 0.0:
                return None
            z = 1.0 / trailing
        else:
            unit = np.zeros((trailing.size, 1))
            unit[0, 0] = 1.0
            *_, solution, status = _gtsv(rest, trailing, rest, unit)
            if status != 0:
                return None
            z = solution[:, 0]
        crossing = -first * first * float(z[0])
        size = float(np.max(np.abs(trailing))) + 2.0 * float(np.max(np.abs(rest), initial=0.0))
        rounding = abs(crossing) + size * first * first * float(z @ z)
        if not (math.isfinite(crossing) and math.isfinite(rounding)):
            return None
        return crossing, 2 * _EPS * rounding


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
# equation (measured crossover p ~ 200, one thread). Its absolute rounding (eps ||M(t)||) in small
# eigenvalues and eigenvector entries shows outside a band of ratios ||(X, y)|| / sigma, so it is
# used only for DENSE_MIN_RATIO <= ratio <= DENSE_MAX_RATIO.
DENSE_MAX_SIZE = 192
DENSE_MIN_RATIO = 2.0**-4
DENSE_MAX_RATIO = 1e4
# Ratios ||(X, y)||_max / sigma outside [2^SMALL_LOG2_RATIO, 2^LARGE_LOG2_RATIO] (see _prox).
SMALL_LOG2_RATIO = -56
LARGE_LOG2_RATIO = 900


def prox_matrix_perspective(
    X,
    y,
    sigma,
    *,
    method: str = "newton",
    tol: float = 1e-12,
    max_iter: int | None = None,
    symmetrize: bool = False,
) -> PerspectiveProxResult:
    """Exact proximity operator of ``sigma * phi``, the matrix perspective function.

    Solves ``min sigma phi(Omega, eta) + 1/2 ||Omega - X||_F^2 + 1/2 ||eta - y||^2`` through the
    root ``t*`` of ``h(t) = e^T [M(t)]_- e - sigma``, ``M(t) = [[X, y/sqrt(2)], [y^T/sqrt(2),
    -t]]`` (module docstring): an exact power-of-two rescaling, one ``eigh`` of ``X`` (below
    ``p + 1 = DENSE_MAX_SIZE``, one tridiagonal reduction of the lifted matrix instead), the
    zero-region test ``lambda_max(X + y y^T / (2 sigma)) <= 0``, then safeguarded Newton-type
    steps on the bracket ``[sigma/2 - (||X||_F^2 + ||y||^2) / (2 sigma), sigma]`` (bisection
    whenever a step leaves it), and ``S* = [M(t*)]_+``.

    Shapes decide the problem. A stack is solved at once: ``X`` of shape ``(b, p, p)``
    (``X.ndim`` decides), ``y`` of shape ``(b, p)``, ``sigma`` a number or shape ``(b,)``, with
    Newton steps vectorized over the stack (batched ``eigh``; problems outside the dense
    solver's accurate band get a single call each). A ``y`` of shape ``(p, k)`` (or ``(b, p,
    k)``) is a matrix ``eta`` for ``phi(Omega, H) = 1/2 tr(H^T Omega^+ H)``: semismooth Newton on
    the k x k corner ``T`` of ``M(T)`` (:mod:`stepsize.prox._matrix_eta`; docs/prox.md).

    Args:
        X: symmetric matrix, p x p, or a stack ``(b, p, p)``.
        y: vector of length p, a p x k matrix, or their stacks ``(b, p)``, ``(b, p, k)``.
        sigma: the scale ``sigma > 0`` (for a stack: a number or one per problem).
        method: ``"newton"`` (safeguarded semismooth Newton) or ``"bisection"``.
        tol: stop when ``|h(t)| <= tol * sigma`` (or when the bracket of ``t*`` has shrunk to
            rounding level).
        max_iter: cap on root-finding steps (default 50 for Newton, 200 for bisection).
        symmetrize: use ``(X + X^T) / 2`` instead of raising on a non-symmetric ``X``.

    Returns:
        A :class:`PerspectiveProxResult`: ``x = (Omega, eta)`` (also ``.Omega``, ``.eta``),
        ``n_iter``, ``converged``, ``history`` (``|h| / sigma`` per step), ``message`` and the
        certificate fields (per-problem arrays for a stack, see the class).

    Raises:
        ValueError: non-square, non-symmetric or non-finite ``X``, ``y`` of the wrong shape,
            ``sigma <= 0``, empty input.

    Example:
        >>> result = prox_matrix_perspective(np.diag([1.0, 0.0, -1.0]), [1.0, 2.0, 0.0], 1.0)
        >>> Omega, eta = result.x
        >>> np.round(eta, 6)
        array([0.634093, 0.845887, 0.      ])
        >>> result.converged, round(result.certificate, 6)
        (True, 0.604134)
        >>> X = np.stack([np.eye(3), -10 * np.eye(3)])
        >>> stack = prox_matrix_perspective(X, np.ones((2, 3)), 1.0)
        >>> stack.Omega.shape, stack.zero_region
        ((2, 3, 3), array([False,  True]))
        >>> matrix = prox_matrix_perspective(np.eye(3), np.ones((3, 2)), 1.0)
        >>> matrix.eta.shape, matrix.root.shape, bool(matrix.converged)
        ((3, 2), (2, 2), True)

    Reference: Won, "Proximity Operator of the Matrix Perspective Function and its
    Applications", NeurIPS 2020.
    """
    method = check_choice(method, "method", METHODS)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    if max_iter is None:
        max_iter = 50 if method == "newton" else 200
    max_iter = check_int(max_iter, "max_iter", low=1)
    if np.ndim(X) == 3:
        from stepsize.prox._batch import prox_batch

        return prox_batch(X, y, sigma, method, tol, max_iter, symmetrize)
    if _check_y_rank(X, y) == 2:
        from stepsize.prox._matrix_eta import matrix_eta_prox

        return matrix_eta_prox(X, y, sigma, method, tol, max_iter, symmetrize)
    X, y = check_pair(X, y, symmetrize=symmetrize)
    sigma = check_real(sigma, "sigma", low=0, low_inclusive=False)
    return _prox(X, y, sigma, method, tol, max_iter)[2]


def _check_y_rank(X, y) -> int:
    """The number of axes of ``y`` for one problem: 1 (vector) or 2 (matrix ``eta``)."""
    if np.ndim(y) > 2:
        raise ValueError(f"y must be a vector (p,) or a p x k matrix for X of shape "
                         f"{np.shape(X)} (a stack needs X of shape (b, p, p)), got shape "
                         f"{np.shape(y)}")
    return np.ndim(y)


def _prox(X, y, sigma, method, tol, maxiter, *, secular=False):
    """The prox on validated input; returns ``(Omega, eta, info)``. ``secular=True`` forces
    the secular (arrowhead) solver at every size and ratio (the tests' seam for that path).

    Exact power-of-two normalization (homogeneity: ``prox(cX, cy, c sigma) = c prox(X, y,
    sigma)``, and scaling by ``c = 2^-k`` rounds nothing): with ``D = max(|X_ij|, |y_i|)``
    and ``k`` the binary exponent of ``max(D, sigma)``, the problem is solved for ``(X, y,
    sigma) 2^-k``, whose largest number lies in ``[1/2, 1)``, so no square or reciprocal below
    overflows or loses the data to underflow. The ratio ``r = D / sigma`` picks the regime:

    * ``r < 2^-56``: the closed form ``Omega = Pi_+(X + y y^T / (2 sigma))``, ``eta = Omega y /
      sigma``, exact to first order in ``r`` (the optimality condition ``eta = Omega (Omega +
      sigma I)^-1 y``); its error is ``O(r^2 D)``, and ``O(r D)`` bounds even ``(Pi_+(X), 0)``'s:
      below rounding;
    * ``r > 2^900``: ``sigma`` is raised to ``2^-900 D``, which moves the prox by ``O(D
      (sigma / D)^(1/3)) = O(2^-300 D)`` (the slowest rate, of an eigenvalue of ``Omega``
      growing from 0 as ``(sigma ||y||^2)^(1/3)``): below rounding;
    * otherwise the root of ``h(t) = e^T [M(t)]_- e - sigma`` in these units.
    """
    p = X.shape[0]
    info = PerspectiveProxResult(x=None, n_iter=0, converged=True, method=method, history=[])
    # max |X_ij| as max(max X, -min X): two passes, no p x p temporary
    largest = max(float(X.max()), -float(X.min()), float(np.max(np.abs(y))))
    if largest == 0.0:
        return _zero_region(info, p, sigma)
    log2_ratio = math.log2(largest) - math.log2(sigma)
    if log2_ratio < SMALL_LOG2_RATIO:
        return _large_sigma(info, X, y, sigma)
    shift = max(math.frexp(largest)[1], math.frexp(sigma)[1])
    X_n, y_n = np.ldexp(X, -shift), np.ldexp(y, -shift)
    sigma_n = math.ldexp(sigma, -shift)
    if log2_ratio > LARGE_LOG2_RATIO:
        sigma_n = math.ldexp(math.ldexp(largest, -shift), -LARGE_LOG2_RATIO)
    Omega_n, eta_n, root_n = _normalized_prox(X_n, y_n, sigma_n, method, tol, maxiter, info,
                                              secular)
    if Omega_n is None:
        return _zero_region(info, p, sigma)
    # Omega_n is a fresh array of the assembly: scaled in place (no second p x p array)
    info.x = (np.ldexp(Omega_n, shift, out=Omega_n), np.ldexp(eta_n, shift))
    # root and certificate can exceed the float range (phi ~ 1e308): inf then, not an error
    info.root = _ldexp(root_n, shift)
    info.certificate = _ldexp(sigma_n - root_n, shift)
    return info.x[0], info.x[1], info


def _ldexp(value: float, shift: int) -> float:
    try:
        return math.ldexp(value, shift)
    except OverflowError:
        return math.copysign(math.inf, value)


def _zero_region(info, p, sigma):
    info.zero_region = True
    info.root, info.certificate, info.residual = sigma, 0.0, 0.0
    info.message = "zero region: X + y y^T / (2 sigma) is negative semidefinite"
    info.x = (np.zeros((p, p)), np.zeros(p))
    return info.x[0], info.x[1], info


def _large_sigma(info, X, y, sigma):
    """``Omega = Pi_+(X + y y^T / (2 sigma))``, ``eta = Omega y / sigma`` for ``max|X, y| <
    2^-56 sigma``: exact to rounding, and to first order in ``||y||^2 / sigma`` (which keeps it
    right relative to the answer when ``X`` is zero or negative semidefinite)."""
    shift = math.frexp(max(float(np.max(np.abs(X))), float(np.max(np.abs(y)))))[1]
    X_n, y_n = np.ldexp(X, -shift), np.ldexp(y, -shift)
    ratio = math.ldexp(1.0, shift) / sigma  # < 2^-55: no overflow
    w, Q = np.linalg.eigh(X_n + (0.5 * ratio) * np.outer(y_n, y_n))
    if w[-1] <= 0.0:
        return _zero_region(info, X.shape[0], sigma)
    Omega_n = (Q * np.maximum(w, 0.0)) @ Q.T
    Omega_n = 0.5 * (Omega_n + Omega_n.T)
    product = Omega_n @ y_n
    info.x = (np.ldexp(Omega_n, shift), np.ldexp(product * ratio, shift))
    # phi(Omega, eta) = 1/2 eta^T Omega^+ eta = 1/2 y^T Omega y / sigma^2 on the range of Omega
    info.certificate = _ldexp(0.5 * float(y_n @ product) * ratio * ratio, shift)
    info.root = sigma - info.certificate
    info.residual = 0.0
    info.rank = int(np.sum(w > 0.0))
    info.message = "sigma >= 2^56 max|X, y|: closed form Omega = Pi_+(X + y y^T / (2 sigma)), " \
        "eta = Omega y / sigma"
    return info.x[0], info.x[1], info


def _normalized_prox(X, y, sigma, method, tol, maxiter, info, secular=False):
    """The root and ``S* = [M(t*)]_+`` on normalized data; ``(None, None, sigma)`` in the
    zero region."""
    p = X.shape[0]
    norm_X, norm_y = float(np.linalg.norm(X)), float(np.linalg.norm(y))
    size = max(norm_X, norm_y)
    dense = (not secular and p + 1 <= DENSE_MAX_SIZE
             and DENSE_MIN_RATIO * sigma <= size <= DENSE_MAX_RATIO * sigma)
    h = (_DenseRootFunction if dense else _SecularRootFunction)(X, y, sigma)
    # zero region: lambda_max(M(sigma)) <= 0 <=> lambda_max(X + y y^T / (2 sigma)) <= 0, tested
    # to the rounding of the eigenvalues of M(sigma) near zero, those of its (X, y) part: relative
    # to ||(X, y)||, not to sigma (a tiny X is not "zero" next to a large sigma)
    scale = norm_X + norm_y
    if h.largest_eigenvalue(sigma) <= 64 * _EPS * scale:
        return None, None, sigma

    target = max(tol, 16 * _EPS) * sigma
    low = 0.5 * sigma - 0.5 * (norm_X * norm_X + norm_y * norm_y) / sigma
    bounded = isinstance(h, _SecularRootFunction)
    if bounded:
        low = max(low, h.root_lower_bound())
    t, value = find_root(h, method, sigma, target, maxiter, low, info, scale, bounded, h.kink(),
                         h.surrogate_point)
    if dense and not info.converged:
        # a dense eigenvector's small last components carry absolute (not relative) rounding
        # errors, which can leave h above tol on badly scaled data: redo it on the arrowhead
        h = _SecularRootFunction(X, y, sigma)
        low = max(low, h.root_lower_bound())
        t, value = find_root(h, method, sigma, target, maxiter, low, info, scale, True, h.kink(),
                             h.surrogate_point)
    if not info.converged:
        warn_not_converged(f"prox_matrix_perspective ({method})", info.n_iter, info.message)
    Omega, eta, rank = h.assemble(t, X, y)
    info.residual = abs(value) / sigma
    info.rank = rank
    return Omega, _relative_eta(Omega, eta, y, sigma), t


def _surrogate_mass(poles, weights, t: float) -> float:
    """``sum_j e^T [A_j]_- e`` over the 2 x 2 problems ``A_j = [[d_j, b_j], [b_j, -t]]``, ``t <
    0``: the first-order model of ``m(t)`` (exact for one pole) that ignores how the poles
    share the corner. The negative eigenvalue is ``(-t d_j - b_j^2) / lambda_+`` (no
    cancellation), its corner weight ``(d - lambda)^2 / ((d - lambda)^2 + b^2)``."""
    corner = -t
    with np.errstate(all="ignore"):
        upper = 0.5 * (poles + corner) + np.hypot(0.5 * (poles - corner), np.sqrt(weights))
        lam = (poles * corner - weights) / upper
        gap = (poles - lam) ** 2
        q2 = gap / (gap + weights)
        terms = np.where((lam < 0) & (weights > 0), -lam * q2, 0.0)
    return float(np.sum(np.where(np.isfinite(terms), terms, 0.0)))


def _surrogate_point(poles, weights, level: float) -> float | None:
    """The ``t < 0`` where :func:`_surrogate_mass` falls to ``level`` (to a few digits: it only
    places one step of the root finder), or None where it does not cross it in ``[-1e300,
    -1e-300]``. Geometric bracketing by factors of 4, then bisection of ``log |t|``."""
    if poles.size == 0:
        return None
    low = high = -1.0
    if _surrogate_mass(poles, weights, low) > level:
        while _surrogate_mass(poles, weights, low) > level:
            if low < -1e300:
                return None
            high, low = low, 4.0 * low
    else:
        while _surrogate_mass(poles, weights, high) <= level:
            if high > -1e-300:
                return None
            low, high = high, 0.25 * high
    for _ in range(40):
        middle = -math.sqrt(low * high)
        if _surrogate_mass(poles, weights, middle) > level:
            high = middle
        else:
            low = middle
    return high


def _relative_eta(Omega, eta, y, sigma):
    """``eta* = Omega* (Omega* + sigma I)^-1 y`` (the minimizer over ``eta`` at ``Omega*``)
    where ``sigma >= 4 ||Omega*||_F``. ``sqrt(2) S*[:p, p]`` carries an absolute error of
    ``eps sigma``, which there can exceed ``eta`` itself (``eta ~ Omega y / sigma``: 55% off
    on a spread-sweep instance with ``||(X, y)|| / sigma ~ 1e-7``); the solve, with a
    condition number below 1.25, keeps the relative accuracy of ``Omega``."""
    if not sigma >= 4.0 * float(np.linalg.norm(Omega)):
        return eta
    shifted = Omega + sigma * np.eye(Omega.shape[0])
    return Omega @ np.linalg.solve(shifted, y)
