"""Optimality certificates of the matrix perspective prox, and the projection onto the domain of
the conjugate by the Moreau identity.

The conjugate of ``phi`` is the indicator of the convex cone

    C = {(V, u) : V + 1/2 u u^T <= 0}

(``phi`` is the support function of ``C``), so Moreau's identity reads

    (X, y) = prox_{sigma phi}(X, y) + sigma Pi_C((X, y) / sigma).

``(Omega, eta)`` is ``prox_{sigma phi}(X, y)`` if and only if, with ``V = (X - Omega) / sigma`` and
``u = (y - eta) / sigma``, the pair ``(V, u)`` is a subgradient of ``phi`` at ``(Omega, eta)``:

* dual feasibility: ``lambda_max(V + 1/2 u u^T) <= 0``;
* primal feasibility: ``Omega >= 0`` and ``eta in range(Omega)``;
* Fenchel-Young equality: ``<V, Omega> + u^T eta = phi(Omega, eta)``.

In the lifted form ``S = [[Omega, eta/sqrt(2)], [., phi]] >= 0`` and ``Lambda = [[Omega - X,
(eta - y)/sqrt(2)], [., sigma]] >= 0`` are complementary, ``<S, Lambda> = 0``.

Reference: Won, NeurIPS 2020; research note ``matrix_perspective_prox.md`` section 6.7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stepsize._validation import check_real
from stepsize.prox.perspective import _prox, check_pair, perspective_parts

__all__ = ["KKTResiduals", "kkt_residuals", "project_conjugate_domain"]


@dataclass(frozen=True)
class KKTResiduals:
    """Relative optimality residuals of a candidate ``(Omega, eta) = prox_{sigma phi}(X, y)``.

    Each residual is divided by the size of the terms whose cancellation it measures (the scale
    of its own rounding error), never by an absolute 1, so every residual is scale free: it is
    unchanged when ``(X, y, sigma, Omega, eta)`` are multiplied by one ``c > 0``, and it is
    ``O(eps)`` for a prox exact to rounding whatever ``||(X, y)|| / sigma`` is (a wrong ``(0, 0)``
    next to a large ``sigma`` gives a dual infeasibility near 1). With ``dX = X - Omega`` and
    ``dy = y - eta`` (``V = dX / sigma``, ``u = dy / sigma``), computed in data units:

    Attributes:
        dual_infeasibility: ``lambda_max(sigma dX + dy dy^T / 2)_+`` (``sigma^2 lambda_max(V + u
            u^T / 2)``) over ``sigma (||X||_2 + ||Omega||_2) + ||dy|| (||dy|| + ||y|| +
            ||eta||) / 2``.
        primal_infeasibility: ``max(-lambda_min(Omega), 0) / ||Omega||_2``.
        range_residual: ``||(I - Omega Omega^+) eta|| / ||eta||``.
        fenchel_young_gap: ``|<dX, Omega> + dy^T eta - sigma phi(Omega, eta)|`` (``sigma`` times
            ``<V, Omega> + u^T eta - phi``) over ``(||X|| + ||Omega||) ||Omega|| + (||y|| +
            ||eta||) ||eta|| + sigma phi``, with ``phi`` taken on the numerical range of ``Omega``.
        lifted_complementarity: ``|<S, sigma Lambda>|`` with ``S = [[Omega, eta/sqrt(2)], [.,
            phi]]``, ``sigma Lambda = [[-dX, -dy/sqrt(2)], [., sigma]]``, over ``||S||_F (||X||_F
            + ||Omega||_F + ||y|| + ||eta|| + sigma)``.
    """

    dual_infeasibility: float
    primal_infeasibility: float
    range_residual: float
    fenchel_young_gap: float
    lifted_complementarity: float

    @property
    def max(self) -> float:
        """The largest residual."""
        return max(
            self.dual_infeasibility,
            self.primal_infeasibility,
            self.range_residual,
            self.fenchel_young_gap,
            self.lifted_complementarity,
        )


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` with ``0 / 0 = 0`` (all terms exactly zero)."""
    return numerator / denominator if denominator > 0 else (0.0 if numerator == 0 else math.inf)


def kkt_residuals(X, y, sigma, Omega, eta, *, rtol: float = 1e-10) -> KKTResiduals:
    """Scale-free residuals of the optimality conditions of ``(Omega, eta) = prox_{sigma phi}(X,
    y)``.

    ``(Omega, eta)`` is the prox if and only if ``(V, u) = ((X - Omega) / sigma, (y - eta) /
    sigma)`` is a subgradient of ``phi`` there: ``V + u u^T / 2 <= 0`` (dual feasibility),
    ``Omega >= 0`` with ``eta`` in its range (primal feasibility) and ``<V, Omega> + u^T eta =
    phi(Omega, eta)`` (Fenchel-Young). The data are first divided by a power of two near
    ``max(|X|, |y|, |Omega|, |eta|)`` (exact), so nothing overflows for any finite input.

    Args:
        X: symmetric matrix, p x p (the prox input).
        y: vector of length p.
        sigma: the scale, ``sigma > 0``.
        Omega: symmetric candidate, p x p.
        eta: candidate vector of length p.
        rtol: relative eigenvalue threshold of the numerical null space of ``Omega``.

    Returns:
        A :class:`KKTResiduals`; ``.max`` is the largest one.

    Example:
        >>> from stepsize.prox import prox_matrix_perspective
        >>> X, y = np.diag([1.0, 0.0, -1.0]), np.array([1.0, 2.0, 0.0])
        >>> kkt_residuals(X, y, 1.0, *prox_matrix_perspective(X, y, 1.0).x).max < 1e-12
        True
        >>> kkt_residuals(1e-20 * X, 1e-20 * y, 1.0, np.zeros((3, 3)), np.zeros(3)).max > 0.1
        True

    Reference: research note section 6.7 (Won, NeurIPS 2020).
    """
    X, y = check_pair(X, y)
    Omega, eta = check_pair(Omega, eta, X_name="Omega", y_name="eta")
    if Omega.shape != X.shape:
        raise ValueError(f"Omega must have shape {X.shape} like X, got {Omega.shape}")
    sigma = check_real(sigma, "sigma", low=0, low_inclusive=False)
    rtol = check_real(rtol, "rtol", low=0, high=1, low_inclusive=False)
    return _residuals(*_normalized(X, y, sigma, Omega, eta), rtol)


def _normalized(X, y, sigma, Omega, eta):
    """The data divided by a power of two near their largest entry (exact), ``sigma`` in those
    units kept within 2^-1000..2^1000 (beyond, the terms it weighs are negligible)."""
    largest = max(
        float(np.max(np.abs(X))), float(np.max(np.abs(y))),
        float(np.max(np.abs(Omega))), float(np.max(np.abs(eta))), np.finfo(float).tiny,
    )
    shift = math.frexp(largest)[1]
    X, y, Omega, eta = (np.ldexp(a, -shift) for a in (X, y, Omega, eta))
    sigma = min(max(math.ldexp(sigma, -shift), 2.0**-1000), 2.0**1000)
    return X, y, sigma, Omega, eta


def _residuals(X, y, sigma, Omega, eta, rtol) -> KKTResiduals:
    """:func:`kkt_residuals` on normalized data."""
    # the dual condition divided by max(1, sigma)
    weight_dX, weight_dy = sigma / max(1.0, sigma), 1.0 / max(1.0, sigma)
    dX, dy = X - Omega, y - eta
    norm_X, norm_Omega = float(np.linalg.norm(X, 2)), float(np.linalg.norm(Omega, 2))
    norm_y, norm_eta, norm_dy = (float(np.linalg.norm(a)) for a in (y, eta, dy))

    dual = weight_dX * dX + (0.5 * weight_dy) * np.outer(dy, dy)
    dual_infeasibility = _ratio(
        max(float(np.linalg.eigvalsh(dual)[-1]), 0.0),
        weight_dX * (norm_X + norm_Omega)
        + 0.5 * weight_dy * norm_dy * (norm_dy + norm_y + norm_eta),
    )

    # sigma phi directly: at ratios ~1e-140 phi's terms c^2 underflow, sigma phi's do not
    weighted, lowest, null_part = perspective_parts(Omega, eta, rtol, weight=sigma)
    value = weighted / sigma
    pairing = float(np.sum(dX * Omega)) + float(dy @ eta)
    # <S, sigma Lambda> with S = [[Omega, eta/sqrt(2)], [., phi]], sigma Lambda = [[-dX,
    # -dy/sqrt(2)], [., sigma]] is -(<dX, Omega> + dy^T eta - sigma phi): the Fenchel-Young
    # numerator, there over ||S||_F times the size of (X, y, Omega, eta, sigma)
    lifted_norm = math.sqrt(float(np.sum(Omega**2)) + float(eta @ eta) + value**2)
    return KKTResiduals(
        dual_infeasibility=dual_infeasibility,
        primal_infeasibility=_ratio(max(-lowest, 0.0), norm_Omega),
        range_residual=_ratio(null_part, norm_eta),
        fenchel_young_gap=_ratio(
            abs(pairing - weighted),
            (norm_X + norm_Omega) * float(np.linalg.norm(Omega))
            + (norm_y + norm_eta) * norm_eta + weighted,
        ),
        lifted_complementarity=_ratio(
            abs(pairing - weighted),
            lifted_norm
            * (float(np.linalg.norm(X)) + float(np.linalg.norm(Omega)) + norm_y + norm_eta
               + sigma),
        ),
    )


def project_conjugate_domain(V, u, *, symmetrize: bool = False):
    """Euclidean projection onto ``C = {(V, u) : V + u u^T / 2 <= 0}`` by the Moreau identity.

    ``Pi_C(V, u) = (V, u) - prox_phi(V, u)``: ``phi`` is the support function of ``C``, so its
    conjugate is the indicator of ``C`` and Moreau's decomposition gives the projection from the
    prox (``sigma = 1``).

    Args:
        V: symmetric matrix, p x p.
        u: vector of length p.
        symmetrize: use ``(V + V^T) / 2`` instead of raising on a non-symmetric ``V``.

    Returns:
        The projected pair ``(V_C, u_C)``.

    Example:
        >>> V_C, u_C = project_conjugate_domain(np.eye(2), np.ones(2))
        >>> bool(np.linalg.eigvalsh(V_C + 0.5 * np.outer(u_C, u_C))[-1] <= 1e-12)
        True

    Reference: Won, NeurIPS 2020 (phi as the support function of a convex cone).
    """
    V, u = check_pair(V, u, X_name="V", y_name="u", symmetrize=symmetrize)
    Omega, eta, _ = _prox(V, u, 1.0, "newton", 1e-12, 50)
    return V - Omega, u - eta
