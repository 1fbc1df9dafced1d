r"""Chebyshev steps for gradient descent on quadratics, and the bounds that go with them.

For :math:`f(x) = \tfrac12 x^\top W x - c^\top x` with the spectrum of :math:`W` inside
:math:`[\lambda_{\min}, \lambda_{\max}]`, gradient descent with steps :math:`\gamma_0, \dots,
\gamma_{T-1}` maps the error through :math:`e_T = \prod_t (I - \gamma_t W)\, e_0`. The Chebyshev
steps put the roots of :math:`\beta_T(\lambda) = \prod_t (1 - \gamma_t \lambda)` at the Chebyshev
nodes of the interval,

.. math::

    \gamma_t = \Big[\tfrac{\lambda_{\max} + \lambda_{\min}}{2}
        + \tfrac{\lambda_{\max} - \lambda_{\min}}{2} \cos\tfrac{(2t + 1)\pi}{2T}\Big]^{-1},
    \qquad t = 0, \dots, T - 1,

which minimizes :math:`\max_{\lambda} |\beta_T(\lambda)|` and gives the contraction bound
:math:`\rho(Q_T) \le 1 / T_T\big(\tfrac{\kappa + 1}{\kappa - 1}\big) = 2 r^T / (1 + r^{2T})`,
:math:`r = (\sqrt\kappa - 1)/(\sqrt\kappa + 1)`, so the per-step rate tends to the first-order
optimum :math:`r` as :math:`T \to \infty`.

The product is invariant to the order of the steps in exact arithmetic but not in floating point:
a rounding error made at step j is amplified by :math:`\prod_{k > j} |1 - \gamma_k \lambda|`,
which is huge near :math:`\lambda_{\max}` when the large steps are grouped. The default
``"fractal"`` order (Lebedev & Finogenov 1971; Agarwal, Goel & Zhang 2021) interleaves large
and small steps recursively and keeps every partial product bounded; the paper's ``"natural"``
order diverges in float32 on dense problems already at T = 25.

Reference: S. Takabe and T. Wadayama, "Theoretical Interpretation of Learned Step Size in
Deep-Unfolded Gradient Descent", arXiv:2001.05142; "Convergence Acceleration via Chebyshev Step",
IEICE Trans. Fundamentals E105-A(8), 2022.
"""

from __future__ import annotations

import math

import numpy as np

from stepsize._validation import check_array, check_choice, check_int, check_real

__all__ = [
    "ORDERS",
    "chebyshev_bound",
    "chebyshev_order",
    "chebyshev_period",
    "chebyshev_steps",
    "contraction_factor",
    "expected_squared_error",
    "heavy_ball_parameters",
    "optimal_constant_step",
    "optimal_rate",
    "per_step_rate",
]

ORDERS = ("natural", "descending", "zigzag", "fractal")


def _check_interval(lmin, lmax) -> tuple[float, float]:
    lmin = check_real(lmin, "lmin", low=0, low_inclusive=False)
    lmax = check_real(lmax, "lmax", low=0, low_inclusive=False)
    if lmin > lmax:
        raise ValueError(f"lmin must be <= lmax, got lmin={lmin!r} > lmax={lmax!r}")
    return lmin, lmax


def _normalized_interval(lmin, lmax) -> tuple[float, float]:
    """Validated ``(lmin / lmax, lmax)``: every quantity here is a homogeneous function of the
    interval, computed on ``[lmin / lmax, 1]`` and rescaled, so no intermediate overflows."""
    lmin, lmax = _check_interval(lmin, lmax)
    return lmin / lmax, lmax


def _rescaled(values, lmax: float, what: str):
    """``values / lmax``, refused when the result is not representable in float64."""
    with np.errstate(over="ignore"):
        result = np.asarray(values, dtype=np.float64) / lmax
    if not np.all(np.isfinite(result)):
        raise ValueError(
            f"lmax={lmax!r} is too small: the {what} (1/lmax and above) overflow float64"
        )
    return result


def _fractal_permutation(T: int) -> np.ndarray:
    """Lebedev-Finogenov interleaving of ranks 0..T-1 (0 = smallest step).

    For powers of two, ``sigma_1 = [0]`` and ``sigma_{2m} = interleave(sigma_m, 2m - 1 - sigma_m)``
    pairs each step with its mirror. Other T take the permutation of the next power of two and keep
    the ranks below T, which preserves the alternation of large and small steps.
    """
    sigma = np.zeros(1, dtype=np.int64)
    while sigma.size < T:
        size = 2 * sigma.size
        doubled = np.empty(size, dtype=np.int64)
        doubled[0::2] = sigma
        doubled[1::2] = size - 1 - sigma
        sigma = doubled
    return sigma[sigma < T]


def chebyshev_order(T: int, order: str = "fractal") -> np.ndarray:
    """Permutation of the ranks ``0..T-1`` (0 = smallest step) for a step ordering.

    ``"natural"``: ascending (the paper's code order); ``"descending"``; ``"zigzag"``: largest,
    smallest, second largest, second smallest, ...; ``"fractal"``: the Lebedev-Finogenov
    interleaving (stable in float32 up to T = 256 at kappa = 1000).

    >>> chebyshev_order(8, "fractal").tolist()
    [0, 7, 3, 4, 1, 6, 2, 5]
    >>> chebyshev_order(5, "zigzag").tolist()
    [4, 0, 3, 1, 2]
    """
    T = check_int(T, "T", low=1)
    check_choice(order, "order", ORDERS)
    ranks = np.arange(T)
    if order == "natural":
        return ranks
    if order == "descending":
        return ranks[::-1].copy()
    if order == "zigzag":
        zigzag = np.empty(T, dtype=np.int64)
        zigzag[0::2] = ranks[::-1][: (T + 1) // 2]
        zigzag[1::2] = ranks[: T // 2]
        return zigzag
    return _fractal_permutation(T)


def chebyshev_steps(lmin: float, lmax: float, T: int, order: str = "fractal") -> np.ndarray:
    r"""The T Chebyshev steps for the spectrum interval ``[lmin, lmax]``.

    :math:`\gamma_t = 1 / (\tfrac{l_{\max} + l_{\min}}{2} + \tfrac{l_{\max} - l_{\min}}{2}
    \cos\tfrac{(2t+1)\pi}{2T})`, returned in the requested ``order`` (see
    :func:`chebyshev_order`); ``"natural"`` is the paper's ascending order.

    Args:
        lmin, lmax: bounds of the spectrum, ``0 < lmin <= lmax``.
        T: number of steps (one period), ``T >= 1``.
        order: ``"natural"``, ``"descending"``, ``"zigzag"`` or ``"fractal"`` (default, stable).

    Returns:
        float64 array of shape ``(T,)``.

    Raises:
        ValueError: for an interval that is not ``0 < lmin <= lmax`` (finite), or steps that
            overflow float64 (lmax below about 5.6e-309).

    The steps are homogeneous of degree -1 in ``(lmin, lmax)``: they are computed on
    ``[lmin / lmax, 1]`` and divided by ``lmax``, so no intermediate overflows or underflows
    (``chebyshev_steps(1.5e308, 1.5e308, 4)`` is ``1 / 1.5e308`` four times).

    >>> chebyshev_steps(1.0, 3.0, 2, order="natural").round(4).tolist()
    [0.3694, 0.7735]
    """
    ratio, lmax = _normalized_interval(lmin, lmax)
    T = check_int(T, "T", low=1)
    check_choice(order, "order", ORDERS)
    t = np.arange(T, dtype=np.float64)
    centre, radius = (1.0 + ratio) / 2, (1.0 - ratio) / 2
    ascending = _rescaled(1.0 / (centre + radius * np.cos((2 * t + 1) * np.pi / (2 * T))), lmax,
                          "steps")
    return ascending[chebyshev_order(T, order)]


def chebyshev_bound(lmin: float, lmax: float, T: int) -> float:
    r"""Worst-case contraction of T Chebyshev steps: :math:`1 / T_T((\kappa+1)/(\kappa-1))`.

    Equals :math:`2 r^T / (1 + r^{2T})` with :math:`r = (\sqrt\kappa-1)/(\sqrt\kappa+1)`; zero when
    ``lmin == lmax`` (one step 1/lmin solves the problem). Scale-free: any positive finite
    interval works, from subnormal to 1.8e308.

    >>> round(chebyshev_bound(0.184191, 5.678371, 25), 8)
    0.00022233
    """
    _check_interval(lmin, lmax)
    T = check_int(T, "T", low=1)
    r = optimal_rate(lmin, lmax)
    if r == 0.0:
        return 0.0
    # 2 r^T / (1 + r^(2T)) never overflows, unlike cosh(T arccosh(.)).
    return float(2.0 * r**T / (1.0 + r ** (2 * T)))


def chebyshev_period(lmin: float, lmax: float, reduction: float) -> int:
    r"""Period ``T`` whose Chebyshev bound reaches ``reduction``, clipped to [8, 256].

    :math:`1/T_T((\kappa+1)/(\kappa-1)) \le 2 r^T` with
    :math:`r = (\sqrt\kappa - 1)/(\sqrt\kappa + 1) \approx e^{-2/\sqrt\kappa}`, so
    :math:`T = \lceil \sqrt\kappa\,\ln(2/\epsilon)/2 \rceil` suffices; the cap keeps float32
    runs within the tested stability range of the fractal order.

    >>> chebyshev_period(1.0, 30.0, 1e-10)
    65
    """
    lmin, lmax = _check_interval(lmin, lmax)
    reduction = check_real(reduction, "reduction", low=0, high=1, low_inclusive=False)
    return int(np.clip(np.ceil(np.sqrt(lmax / lmin) * np.log(2 / reduction) / 2), 8, 256))


def optimal_rate(lmin: float, lmax: float) -> float:
    r"""First-order lower bound on the per-step rate, :math:`(\sqrt\kappa-1)/(\sqrt\kappa+1)`."""
    lmin, lmax = _check_interval(lmin, lmax)
    # (sqrt(lmax) - sqrt(lmin)) / (sqrt(lmax) + sqrt(lmin)) as (lmax - lmin) / (sqrt(lmax) +
    # sqrt(lmin))^2 divided through by lmax: no overflow, no cancellation when kappa is near 1
    # (lmax - lmin is exact there), and exactly invariant under scaling by a power of two
    return ((lmax - lmin) / lmax) / (1.0 + math.sqrt(lmin / lmax)) ** 2


def optimal_constant_step(lmin: float, lmax: float) -> float:
    r"""The best constant step :math:`2 / (l_{\min} + l_{\max})`; its rate is
    :math:`(\kappa-1)/(\kappa+1)`.

    >>> optimal_constant_step(1.0, 3.0)
    0.5
    """
    ratio, lmax = _normalized_interval(lmin, lmax)
    return float(_rescaled(2.0 / (1.0 + ratio), lmax, "step"))


def heavy_ball_parameters(lmin: float, lmax: float) -> tuple[float, float]:
    r"""Polyak's optimal heavy-ball step and momentum for ``[lmin, lmax]``.

    :math:`\alpha = 4 / (\sqrt{l_{\max}} + \sqrt{l_{\min}})^2`, :math:`\beta = r^2`; the iteration
    :math:`x_{k+1} = x_k - \alpha \nabla f(x_k) + \beta (x_k - x_{k-1})` has asymptotic rate r.

    >>> heavy_ball_parameters(1.0, 9.0)
    (0.25, 0.25)
    """
    ratio, lmax = _normalized_interval(lmin, lmax)
    alpha = float(_rescaled(4.0 / (1.0 + math.sqrt(ratio)) ** 2, lmax, "step"))
    return alpha, optimal_rate(lmin, lmax) ** 2


def _steps_and_eigenvalues(steps, eigenvalues) -> tuple[np.ndarray, np.ndarray]:
    steps = check_array(steps, "steps", ndim=1)
    eigenvalues = check_array(eigenvalues, "eigenvalues", ndim=1)
    return steps, eigenvalues


def contraction_factor(steps, eigenvalues) -> float:
    r"""Spectral radius of :math:`Q_T = \prod_t (I - \gamma_t W)`:
    :math:`\max_i |\prod_t (1 - \gamma_t \lambda_i)|`.

    Computed in log space, so it neither overflows nor underflows for long step sequences.

    >>> contraction_factor([0.5], [1.0, 3.0])
    0.5
    """
    steps, eigenvalues = _steps_and_eigenvalues(steps, eigenvalues)
    factors = np.abs(1.0 - np.outer(eigenvalues, steps))
    with np.errstate(divide="ignore"):
        log_product = np.log(factors).sum(axis=1)
    return float(np.exp(log_product.max()))


def per_step_rate(steps, eigenvalues) -> float:
    r"""Geometric mean contraction per step, :math:`\rho(Q_T)^{1/T}`."""
    steps, eigenvalues = _steps_and_eigenvalues(steps, eigenvalues)
    return contraction_factor(steps, eigenvalues) ** (1.0 / steps.size)


def expected_squared_error(steps, eigenvalues) -> float:
    r"""Mean squared error after the steps for :math:`x^\star \sim N(0, I)`, :math:`x_0 = 0`:
    :math:`\tfrac1n \sum_i \prod_t (1 - \gamma_t \lambda_i)^2`.

    This is the population loss of deep-unfolded GD; it lies between :math:`\rho(Q_T)^2/n` and
    :math:`\rho(Q_T)^2`.

    >>> expected_squared_error([0.5], [1.0, 3.0])
    0.25
    """
    steps, eigenvalues = _steps_and_eigenvalues(steps, eigenvalues)
    factors = np.abs(1.0 - np.outer(eigenvalues, steps))
    with np.errstate(divide="ignore"):
        log_product = 2 * np.log(factors).sum(axis=1)
    return float(np.mean(np.exp(log_product)))
