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

    All are computed in the units of ``sigma = 1`` (data divided by ``sigma``) and divided by
    the size of the quantities they compare, so that they are scale free.

    Attributes:
        dual_infeasibility: ``max(lambda_max(V + u u^T / 2), 0) / max(1, ||V||_2 + ||u||^2 / 2)``.
        primal_infeasibility: ``max(-lambda_min(Omega), 0) / max(1, ||Omega||_2)``.
        range_residual: ``||(I - Omega Omega^+) eta|| / max(1, ||eta||)``.
        fenchel_young_gap: ``|<V, Omega> + u^T eta - phi(Omega, eta)|`` over ``max(1, |<V, Omega>|
            + |u^T eta| + phi)``, with ``phi`` taken on the numerical range of ``Omega``.
        lifted_complementarity: ``|<S, Lambda>| / max(1, ||S||_F ||Lambda||_F)``.
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


def kkt_residuals(X, y, sigma, Omega, eta, *, rtol: float = 1e-10) -> KKTResiduals:
    """Residuals of the optimality conditions of ``(Omega, eta) = prox_{sigma phi}(X, y)``.

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
        >>> kkt_residuals(X, y, 1.0, *prox_matrix_perspective(X, y, 1.0)).max < 1e-12
        True

    Reference: research note section 6.7 (Won, NeurIPS 2020).
    """
    X, y = check_pair(X, y)
    Omega, eta = check_pair(Omega, eta, X_name="Omega", y_name="eta")
    if Omega.shape != X.shape:
        raise ValueError(f"Omega must have shape {X.shape} like X, got {Omega.shape}")
    sigma = check_real(sigma, "sigma", low=0, low_inclusive=False)
    rtol = check_real(rtol, "rtol", low=0, high=1, low_inclusive=False)
    X, y, Omega, eta = X / sigma, y / sigma, Omega / sigma, eta / sigma
    V = X - Omega
    u = y - eta

    dual = V + 0.5 * np.outer(u, u)
    dual_scale = max(1.0, float(np.linalg.norm(V, 2)) + 0.5 * float(u @ u))
    dual_infeasibility = max(float(np.linalg.eigvalsh(dual)[-1]), 0.0) / dual_scale

    value, lowest, null_part = perspective_parts(Omega, eta, rtol)
    omega_norm = float(np.linalg.norm(Omega, 2))
    primal_infeasibility = max(-lowest, 0.0) / max(1.0, omega_norm)
    range_residual = null_part / max(1.0, float(np.linalg.norm(eta)))

    pairing = float(np.sum(V * Omega))
    linear = float(u @ eta)
    fenchel_young_gap = abs(pairing + linear - value) / max(1.0, abs(pairing) + abs(linear) + value)

    p = X.shape[0]
    lifted = np.empty((p + 1, p + 1))
    lifted[:p, :p] = Omega
    lifted[:p, p] = lifted[p, :p] = eta / math.sqrt(2.0)
    lifted[p, p] = value
    multiplier = np.empty((p + 1, p + 1))
    multiplier[:p, :p] = -V
    multiplier[:p, p] = multiplier[p, :p] = -u / math.sqrt(2.0)
    multiplier[p, p] = 1.0
    inner = float(np.sum(lifted * multiplier))
    lifted_complementarity = abs(inner) / max(
        1.0, float(np.linalg.norm(lifted) * np.linalg.norm(multiplier))
    )
    return KKTResiduals(
        dual_infeasibility=dual_infeasibility,
        primal_infeasibility=primal_infeasibility,
        range_residual=range_residual,
        fenchel_young_gap=fenchel_young_gap,
        lifted_complementarity=lifted_complementarity,
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
