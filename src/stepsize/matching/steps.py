"""Step-size rules of the projected fixed-point iteration ``M <- M + alpha (D - M)``.

Along the direction ``Delta = D - M`` the objective is an exact quadratic in ``alpha``:

    Z(M + alpha Delta) = Z(M) + c1 alpha + c2 alpha^2,
    c1 = <Delta, A M B + lam K>,   c2 = 1/2 <Delta, A Delta B>.

:func:`adaptive_step` returns the maximizer of this quadratic on ``[0, 1]`` (Shen, Niu, Zhu):
``alpha* = clip(-c1 / (2 c2), 0, 1)`` when ``c2 < 0``; when ``c2 >= 0`` the quadratic is convex
and the maximum is at an end point: ``alpha* = 1`` (whenever ``c1 + c2 >= 0``, which always holds
for an ascent direction, ``c1 >= 0``) and ``alpha* = 0`` otherwise. Since ``alpha = 0`` is
feasible, every adaptive step satisfies ``Z(M_{k+1}) >= Z(M_k)``: the iteration is monotone.
:func:`fixed_step` is the constant rule of GA (``alpha = 1``) and DSPFP (``alpha = 0.5``).

Reference: Shen, Niu, Zhu, "Dynamical softassign and adaptive parameter tuning for graph
matching", arXiv:2208.08233 (2022), section 3.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stepsize._validation import check_real

__all__ = ["StepRule", "adaptive_step", "fixed_step", "line_search_coefficients"]

StepRule = Callable[[float, float], float]


def line_search_coefficients(
    gradient: np.ndarray, direction: np.ndarray, curvature_product: np.ndarray
) -> tuple[float, float]:
    """The coefficients ``(c1, c2)`` of ``Z(M + alpha Delta) - Z(M) = c1 alpha + c2 alpha^2``.

    Args:
        gradient: ``A M B + lam K`` at the current ``M``.
        direction: ``Delta = D - M``.
        curvature_product: ``A Delta B``.

    Returns:
        ``(c1, c2) = (<Delta, gradient>, <Delta, A Delta B> / 2)``.

    >>> line_search_coefficients(np.eye(2), np.ones((2, 2)), -np.ones((2, 2)))
    (2.0, -2.0)
    """
    return float(np.vdot(direction, gradient)), 0.5 * float(np.vdot(direction, curvature_product))


def adaptive_step(c1: float, c2: float) -> float:
    """The exact line-search step ``argmax_{alpha in [0, 1]} c1 alpha + c2 alpha^2``.

    Args:
        c1: first-order coefficient ``<Delta, grad Z(M)>``.
        c2: curvature coefficient ``<Delta, A Delta B> / 2``.

    Returns:
        ``clip(-c1 / (2 c2), 0, 1)`` if ``c2 < 0``; else 1 if ``c1 + c2 >= 0`` and 0 otherwise.

    >>> adaptive_step(1.0, 0.5), adaptive_step(1.0, -2.0), adaptive_step(-1.0, -2.0)
    (1.0, 0.25, 0.0)
    """
    if c2 >= 0.0:
        return 1.0 if c1 + c2 >= 0.0 else 0.0
    return float(min(max(-c1 / (2.0 * c2), 0.0), 1.0))


def fixed_step(alpha: float) -> StepRule:
    """The constant rule ``alpha_k = alpha`` (GA: 1, DSPFP: 0.5), with no ascent guarantee.

    Args:
        alpha: the step, in ``(0, 1]``.

    Returns:
        A rule ``(c1, c2) -> alpha`` that ignores its arguments.

    >>> fixed_step(0.5)(3.0, -100.0)
    0.5
    """
    alpha = check_real(alpha, "alpha", low=0, high=1, low_inclusive=False)

    def rule(c1: float, c2: float) -> float:
        return alpha

    return rule
