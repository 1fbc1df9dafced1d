r"""Chebyshev steps as a learning-rate schedule: a pure function of the step count (optax style).

For an objective whose Hessian has its spectrum in :math:`[\lambda_{\min}, \lambda_{\max}]`
(exactly for quadratics, locally for smooth strongly convex problems), gradient descent with the
T Chebyshev steps of :func:`~stepsize.chebyshev.steps.chebyshev_steps`, repeated with period T,
contracts the error by at most :func:`~stepsize.chebyshev.steps.chebyshev_bound` per period. The
schedule below precomputes the T steps once; each call is an index into a tuple.

References: S. Takabe and T. Wadayama, "Theoretical Interpretation of Learned Step Size in
Deep-Unfolded Gradient Descent", arXiv:2001.05142; N. Agarwal, S. Goel and C. Zhang,
"Acceleration via Fractal Learning Rate Schedules", ICML 2021 (arXiv:2103.01338), where the
fractal (Lebedev-Finogenov) order is proposed for optimizer schedules.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from stepsize._validation import describe
from stepsize.chebyshev.steps import chebyshev_steps

__all__ = ["chebyshev_schedule"]


def chebyshev_schedule(
    lmin: float, lmax: float, T: int, order: str = "fractal", *, cycle: bool = True
) -> Callable[[int], float]:
    r"""Chebyshev step sizes as a schedule ``schedule(step_index) -> float``.

    .. math::

        \eta_k = \gamma_{\sigma(k \bmod T)}, \qquad
        \gamma_t = \Big[\tfrac{\lambda_{\max} + \lambda_{\min}}{2}
            + \tfrac{\lambda_{\max} - \lambda_{\min}}{2} \cos\tfrac{(2t + 1)\pi}{2T}\Big]^{-1},

    where :math:`\sigma` is the permutation of ``order`` (see
    :func:`~stepsize.chebyshev.steps.chebyshev_order`). Gradient descent
    :math:`x_{k+1} = x_k - \eta_k \nabla f(x_k)` on a quadratic with Hessian spectrum in
    :math:`[\lambda_{\min}, \lambda_{\max}]` then satisfies
    :math:`\|x_{jT} - x^\star\| \le \big(1/T_T(\tfrac{\kappa+1}{\kappa-1})\big)^j \|x_0 - x^\star\|`
    at the end of every period; iterates inside a period may be far larger (only period ends are
    meaningful). The steps are absolute step sizes (learning rates), not multipliers.

    Args:
        lmin, lmax: bounds of the Hessian spectrum, ``0 < lmin <= lmax``. An ``lmax`` below the
            true largest eigenvalue makes the schedule amplify the error (keep a margin, e.g.
            1.1 x a power-iteration estimate).
        T: the period (number of distinct steps), ``T >= 1``.
        order: ``"fractal"`` (default; stable at large T), ``"zigzag"``, ``"descending"`` or
            ``"natural"`` (the paper's ascending order; round-off makes it diverge at large T).
        cycle: if True (default) the T steps repeat with period T for every
            ``step_index >= 0``. If False the schedule covers one period only and raises a
            ``ValueError`` for ``step_index >= T``: holding any single Chebyshev step (most of
            them exceed ``2 / lmax``) would diverge, so no value past the period is safe to invent.

    Returns:
        ``schedule(step_index) -> float``, a pure function of the integer step count
        (Python, numpy or 0-d tensor integers; negative indices and non-integers are refused).

    Raises:
        ValueError / TypeError: for invalid ``lmin``, ``lmax``, ``T``, ``order`` or ``cycle``,
            when the schedule is built.

    >>> schedule = chebyshev_schedule(1.0, 3.0, 2, order="natural")
    >>> [round(schedule(k), 4) for k in range(4)]
    [0.3694, 0.7735, 0.3694, 0.7735]
    >>> chebyshev_schedule(1.0, 3.0, 2, cycle=False)(2)
    Traceback (most recent call last):
        ...
    ValueError: step_index must be < T = 2 when cycle=False, got 2

    References:
        S. Takabe and T. Wadayama, arXiv:2001.05142 (Chebyshev steps, the bound);
        N. Agarwal, S. Goel and C. Zhang, "Acceleration via Fractal Learning Rate Schedules",
        ICML 2021 (the fractal order as an optimizer schedule).
    """
    if not isinstance(cycle, bool):
        raise TypeError(f"cycle must be True or False, got {describe(cycle)}")
    steps = tuple(float(s) for s in chebyshev_steps(lmin, lmax, T, order))
    period = len(steps)

    def schedule(step_index: int) -> float:
        if isinstance(step_index, bool):
            raise TypeError(f"step_index must be an integer, got {step_index!r}")
        try:
            index = operator.index(step_index)
        except TypeError:
            raise TypeError(f"step_index must be an integer, got {describe(step_index)}") from None
        if index < 0:
            raise ValueError(f"step_index must be >= 0, got {index}")
        if index >= period:
            if not cycle:
                raise ValueError(
                    f"step_index must be < T = {period} when cycle=False, got {index}")
            index %= period
        return steps[index]

    return schedule
