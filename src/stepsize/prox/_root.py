"""The safeguarded root finder of the matrix perspective prox: ``m(t) = sigma`` on ``[low, sigma]``.

``h(t)`` returns ``(m, m', rounding of m)`` with ``m(t) = e^T [M(t)]_- e`` (nondecreasing in
``t``). Steps, in order of preference:

* **Two-point power law.** ``m ~ C |t - tau|^k`` through this point and the last one: the ratio
  ``L = m / m' = (t - tau) / k`` is linear in ``t``, so two values give ``k`` and ``tau``.
* **Far out** (``t < -4 scale``): ``m`` decays like ``C |t|^-k`` (``k = 2`` from the negative
  eigenvalues of ``X``, ``k = 3`` from its zero eigenvalues), where Newton on ``h`` crawls (``t*``
  can be 1e50 ``sigma`` below the start): Newton on ``log m`` against ``log |t|``.
* **Rational model** ``C / (tau - t)^2`` fitted to ``m``, ``m'``, while it reduces ``|h|``; then
  plain Newton on ``h``.
* **The pole surrogate** in place of the first Newton restart from a bracket that reaches above
  zero, when that restart would cover under 1% of the bracket: the point where the sum over the
  poles ``d_j`` of the 2 x 2 problems ``[[d_j, b_j], [b_j, -t]]`` (exact for one pole) falls to
  ``10 sigma``, where it is further down.
* **Newton from the best point above** after a point far below the root (``m < sigma / 1000``,
  ``M(t)`` nearly PSD, where no model holds), and after a model step that crossed the root to
  ``m < sigma / 2`` when that point is near (``m <= 1e4 sigma``) and Newton from it covers at
  least half of the way back: ``m`` is convex there, so that step does not overshoot, where the
  two-point models zig-zag across a bend of ``m`` (zero eigenvalues of ``X`` with a tiny ``y`` on
  them: issue 13's 11 to 15 steps).
* **The zero crossing** ``t_c`` (``kink``), the one ``t`` where an eigenvalue of ``M(t)``
  crosses zero and ``m`` bends: after a point below it with ``m < sigma / 100``, the next point
  is just above ``t_c``, and from there (below the root) a Newton step (see ``_kink_step``).
* **Newton from above after a crossing keeps the model's point** when that point lies between
  the lower end and the Newton point (``m`` convex: Newton from above stays above the root).
* **The cubic Hermite step**: when both ends of the bracket have ``|h| <= 0.1 sigma``, the root
  of the cubic Hermite interpolant of ``h`` on the bracket (values and slopes at both ends).
* **Bisection** (of ``log |t|`` when the bracket spans more than a factor 4 below zero) when a
  step leaves the bracket ``[low, high]`` from the signs of ``h``, or when two steps have not
  halved ``|h|`` on the same side of the root. Geometric in the distance from the pole ``tau =
  t + 2 m / m'`` fitted at the upper end instead, when that lies below zero and the bracket
  spans more than a factor 4 in that distance (a cliff of ``m`` just below the upper end, above
  a plateau: issue 13's ``diag_spread`` 12450, 12 steps to 9).

Stops when ``|m - sigma| <= target``, when ``|m - sigma|`` is within the rounding floor of ``m``
(the computed ``m`` cannot tell ``t`` from ``t*`` any more), when a Newton-type step from ``|h| <=
sqrt(eps) sigma`` fails to halve ``|h|``, when a step moves ``t`` by less than ``64 eps |t|``, or
when the bracket has shrunk to rounding level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

_EPS = np.finfo(float).eps
_SQRT_EPS = math.sqrt(_EPS)
# a Newton-type step shorter than this many eps (relative) is at the rounding of m
_STEP_FLOOR = 64
# the kink t_c is tried after a point below it with m under this fraction of sigma
_KINK_FRACTION = 0.01
# a Newton restart from above that covers less than this fraction of the bracket is replaced by
# a bisection
_RESTART_FRACTION = 0.5
# a Newton restart from above across a bracket that reaches above zero and covers less than this
# fraction of it is replaced by the surrogate's point at _SURROGATE_LEVEL sigma (when that is
# further down)
_SURROGATE_FRACTION = 0.01
_SURROGATE_LEVEL = 10.0
# the cubic Hermite step is taken when both ends of the bracket have |h| within this fraction of
# sigma
_HERMITE_LEVEL = 0.1


@dataclass
class _Search:
    """The state of one root search."""

    method: str
    sigma: float
    scale: float
    t: float
    mass: float
    slope: float
    value: float
    low: float
    high: float
    low_is_bound: bool
    upper: tuple
    low_is_flat: bool = False
    restarted_from: float | None = None
    last: tuple | None = None
    far: tuple | None = None
    rational_steps: bool = True
    bisected_last: bool = False
    stepped_from_above: bool = False
    kink: float | None = None
    at_kink: bool = False
    below_kink: int = 0
    sides: list = field(default_factory=list)
    surrogate: object = None
    lower: tuple | None = None


def find_root(h, method, sigma, target, maxiter, low, info, scale=1.0, low_is_bound=False,
              kink=None, surrogate=None):
    """Safeguarded Newton-type steps (or bisection) for ``m(t) = sigma`` on ``[low, sigma]``
    (module docstring); records steps in ``info`` and returns ``(t, m(t) - sigma)``.

    ``kink`` is ``(t_c, rounding)``, the one ``t`` where an eigenvalue of ``M(t)`` crosses
    zero (or None); ``surrogate(level)`` is the ``t < 0`` where the sum of the 2 x 2 corner
    problems falls to ``level`` (or None)."""
    mass, slope, noise = h(sigma)
    s = _Search(method, sigma, scale, sigma, mass, slope, mass - sigma, low, sigma,
                low_is_bound, (sigma, mass - sigma, slope))
    s.surrogate = surrogate if method == "newton" else None
    if kink is not None and method == "newton":
        crossing, rounding = kink
        # just above t_c, past its rounding, so that the crossing term is switched on there
        s.kink = crossing + max(4 * rounding, 2.0**-30 * max(abs(crossing), sigma))
    info.history.append(abs(s.value) / sigma)
    s.sides.append(s.value > 0)
    converged = s.value <= max(target, noise)
    iterations = 0
    while not converged and iterations < maxiter:
        candidate, is_step = _choose(s, info)
        if is_step and abs(candidate - s.t) <= _STEP_FLOOR * _EPS * max(sigma, abs(s.t)):
            converged = True
            break
        info.n_newton += is_step
        converged = _move(s, h, candidate, is_step, target, info)
        iterations += 1
    info.converged = bool(converged)
    info.message = (
        "converged" if converged
        else f"|h(t)| / sigma = {abs(s.value) / sigma:.3g} > {target:.3g}"
    )
    return s.t, s.value


def _choose(s: _Search, info) -> tuple[float, bool]:
    """The next point and whether it is a Newton-type step (else a bisection point)."""
    at_kink, s.at_kink = s.at_kink, False
    far_below = s.value < 0 and s.mass < 1e-3 * s.sigma and not at_kink
    crossed = (s.method == "newton" and s.stepped_from_above and not far_below
               and s.mass < 0.5 * s.sigma)
    if s.value > 0:
        s.high, s.upper = s.t, (s.t, s.value, s.slope)
    else:
        s.low, s.low_is_bound, s.low_is_flat = s.t, False, far_below
        s.lower = (s.t, s.value, s.slope)
    usable = s.method == "newton" and s.slope > 0 and s.mass > 0
    candidate = _model_step(s, usable, far_below)
    upper = s.upper
    trusted = (crossed and s.restarted_from != upper[0] and upper[2] > 0
               and upper[1] <= 1e4 * s.sigma and upper[1] / upper[2] >= 0.5 * (upper[0] - s.t))
    if trusted:
        # Newton from above stays above the root (m convex there): keep the model's point when
        # it lies between the lower end and that Newton point
        newton, s.restarted_from = upper[0] - upper[1] / upper[2], upper[0]
        candidate = candidate if s.low < candidate < newton else newton
    forced = _kink_step(s, candidate, at_kink)
    if forced is None:
        candidate = _safeguard(s, candidate, far_below, trusted, info)
    else:
        candidate = forced
    if s.low < candidate < s.high:
        candidate = _hermite_step(s, candidate)
    is_step = s.low < candidate < s.high
    s.bisected_last = not is_step
    if not is_step:
        info.n_bisection += 1
        candidate = _bisection_point(s)
    s.last = (s.t, s.mass / s.slope) if usable and not far_below else None
    s.stepped_from_above = is_step and s.value > 0
    if s.mass > 0 and s.t < -4.0 * s.scale and not far_below:
        s.far = (s.t, math.log(s.mass))
    return candidate, is_step


def _model_step(s: _Search, usable: bool, far_below: bool) -> float:
    """The preferred model's step from ``s.t`` (NaN when none applies)."""
    log_sigma = math.log(s.sigma)
    if usable and not far_below and s.last is not None:
        ratio = s.mass / s.slope
        last_t, last_ratio = s.last
        exponent = (s.t - last_t) / (ratio - last_ratio) if ratio != last_ratio else math.inf
        if 0.25 <= abs(exponent) <= 16:
            tau = s.t - exponent * ratio
            power = (log_sigma - math.log(s.mass)) / exponent
            return tau + (s.t - tau) * math.exp(min(power, 700.0))
        if abs(exponent) > 16:
            # L nearly constant: m ~ exp(t / L), the limit k -> inf (Newton on log m)
            return s.t + ratio * (log_sigma - math.log(s.mass))
    if usable and far_below:
        return math.nan
    if s.method == "newton" and s.mass > 0 and s.t < -4.0 * s.scale:
        return _far_out_step(s, log_sigma)
    if usable and s.rational_steps:
        return s.t + 2.0 * (s.mass / s.slope) * (1.0 - math.sqrt(s.mass) / math.sqrt(s.sigma))
    if usable:
        return s.t - s.value / s.slope
    return math.nan


def _kink_step(s: _Search, candidate: float, at_kink: bool) -> float | None:
    """The step that the kink ``t_c`` dictates, or None.

    Only one eigenvalue of ``M(t)`` ever crosses zero, at ``t_c``; there ``m`` bends from the
    weakly coupled negative eigenvalues alone (often far below ``sigma``) to a term that grows
    linearly above ``t_c``. With ``sigma`` small the root sits just above the bend, where the
    models overshoot below ``t_c`` and Newton from above crawls back (issue 13's 11 to 17
    steps). So after a point below ``t_c`` with ``m < sigma / 100`` (or a second point below it
    whose tangent stays under ``sigma`` at ``t_c``) the next point is just above
    ``t_c`` (once), and from there, when it is below the root, the step is Newton's: ``m`` is
    smooth on ``(t_c, t*]`` and linear near ``t_c``. Used only after such a point, the kink
    costs no step where the models do not overshoot.
    """
    if s.kink is None:
        return None
    if at_kink:
        s.kink = None
        return s.t - s.value / s.slope if s.value < 0 and s.slope > 0 else None
    if not s.low < s.kink < s.high or s.value > 0 or s.t > s.kink:
        return None
    s.below_kink += 1
    # m far below sigma, or (the second time below t_c) its tangent still below sigma at t_c:
    # the root is likely above t_c
    if s.mass >= _KINK_FRACTION * s.sigma and (
            s.below_kink < 2 or s.mass + s.slope * (s.kink - s.t) >= s.sigma):
        return None
    s.at_kink = True
    return s.kink


def _far_out_step(s: _Search, log_sigma: float) -> float:
    """``m ~ C |t|^-k``: the exponent from the last far point (a secant of log m against log
    |t|; m' itself underflows or cancels out here), else from m', else k = 2."""
    exponent = math.nan
    if s.far is not None and s.far[0] != s.t:
        exponent = (s.far[1] - math.log(s.mass)) / (math.log(-s.t) - math.log(-s.far[0]))
    elif s.slope > 0:
        exponent = s.slope * -s.t / s.mass
    if not 0.5 <= exponent <= 8:
        exponent = 2.0
    return s.t * math.exp(min((math.log(s.mass) - log_sigma) / exponent, 700.0))


def _safeguard(s: _Search, candidate: float, far_below: bool, trusted: bool, info) -> float:
    """Replace a model step that cannot be trusted (NaN means: bisect); a ``trusted`` Newton
    step from above after a crossing is exempt from the progress test."""
    low, high, upper = s.low, s.high, s.upper
    if s.method == "newton" and far_below and s.restarted_from == upper[0]:
        # m ~ 0 here and the Newton step from above also fell past the root: the root is
        # just above the kink where M(t) stops being PSD (t* - t0 ~ sigma / m'), so look just
        # above this point instead of bisecting
        candidate = low + (high - low) / 1024
    elif math.isfinite(candidate) and candidate <= low and (s.low_is_bound or s.low_is_flat):
        # a model step past the a-priori lower bound (nearly t* when y is mostly in the
        # range of Pi_+(X)): try just above it instead of a slow Newton step from above
        candidate = low + (high - low) / 1024
    if (s.method == "newton" and not low < candidate < high and upper[2] > 0
            and s.restarted_from != upper[0]):
        newton = upper[0] - upper[1] / upper[2]
        if high < 0 and upper[0] - newton < _RESTART_FRACTION * (high - low):
            # Newton from above would cover under half of the bracket: m is convex there, so it
            # would crawl (a cliff of m below the root, issue 13's 11 to 14 steps): bisect
            return math.nan
        if s.surrogate is not None and high > 0 and upper[0] - newton < _SURROGATE_FRACTION * (
                high - low):
            # from t = sigma with m / sigma huge, m is flat over the scale m / m' of the small
            # poles and Newton crawls (issue 13's spread sweep): jump to where the sum of the
            # 2 x 2 problems of the poles falls to 10 sigma (once)
            point, s.surrogate = s.surrogate(_SURROGATE_LEVEL * s.sigma), None
            if point is not None and low < point < newton:
                newton = point
        candidate, s.restarted_from = newton, upper[0]
    # the models can cycle (a two-point fit alternating about the root): when two steps have
    # not halved |h| on the same side of the root, bisect once (not against a flat lower end,
    # whose |h| = sigma says nothing about progress)
    slow = (
        len(info.history) >= 3
        and abs(s.value) > 0.5 * info.history[-3] * s.sigma
        and not s.low_is_flat
        and len(s.sides) >= 3
        and s.sides[-3] == (s.value > 0)
    )
    return math.nan if slow and not s.bisected_last and not trusted else candidate


def _move(s: _Search, h, candidate: float, is_step: bool, target: float, info) -> bool:
    """Evaluate ``h`` at ``candidate``; returns whether the search has converged."""
    previous = abs(s.value)
    s.t = candidate
    s.mass, s.slope, noise = h(candidate)
    s.value = s.mass - s.sigma
    s.rational_steps = s.rational_steps and abs(s.value) < previous
    info.n_iter += 1
    info.history.append(abs(s.value) / s.sigma)
    s.sides.append(s.value > 0)
    # a Newton-type step from |h| <= sqrt(eps) sigma that does not halve |h| has met the
    # rounding of the computed m (near a simple root Newton squares the error)
    stalled = is_step and previous <= _SQRT_EPS * s.sigma and abs(s.value) > 0.5 * previous
    # the floor of m: its own rounding plus the change of m over one rounding step of t
    floor = noise + abs(s.slope) * 4 * _EPS * max(s.sigma, abs(s.t))
    return (
        abs(s.value) <= max(target, floor)
        or stalled
        or s.high - s.low <= 4 * _EPS * max(s.sigma, abs(s.low), abs(s.high))
    )


def _bisection_point(s: _Search) -> float:
    """The bisection point of ``[low, high]``: geometric in the distance from the pole ``tau = t
    + 2 m / m'`` of ``C / (tau - t)^2`` fitted at the upper end (when it lies below zero and the
    bracket spans more than a factor 4 in that distance: a cliff of ``m`` just below the upper
    end, above a plateau), else geometric in ``|t|`` over wide negative brackets, else the
    midpoint."""
    low, high, upper = s.low, s.high, s.upper
    pole = upper[0] + 2.0 * (upper[1] + s.sigma) / upper[2] if upper[2] > 0 else 0.0
    if high < 0 and upper[0] == high and pole < 0 and low - pole < 4 * (high - pole):
        return pole - math.sqrt((pole - low) * (pole - high))
    if high < 0 and low < 4 * high:
        return -math.exp(0.5 * (math.log(-low) + math.log(-high)))
    return 0.5 * (low + high)


def _hermite_step(s: _Search, candidate: float) -> float:
    """The root of the cubic Hermite interpolant of ``h`` (values and slopes at both ends of the
    bracket) when both ends are near the root (``|h| <= 0.1 sigma``), else ``candidate``: its
    error is of order ``(t* - low)^2 (high - t*)^2``, where a one-sided model keeps only the
    nearer end."""
    lower, upper = s.lower, s.upper
    if (s.method != "newton" or lower is None or lower[0] != s.low or upper[0] != s.high
            or lower[2] <= 0 or upper[2] <= 0
            or max(-lower[1], upper[1]) > _HERMITE_LEVEL * s.sigma):
        return candidate
    width = upper[0] - lower[0]
    h0, h1, d0, d1 = lower[1], upper[1], lower[2] * width, upper[2] * width
    # h0 <= 0 < h1: bisection of the cubic in x = (t - low) / width to full precision
    a, b = 0.0, 1.0
    for _ in range(60):
        x = 0.5 * (a + b)
        value = ((1 + 2 * x) * (1 - x) ** 2 * h0 + x * (1 - x) ** 2 * d0
                 + x * x * (3 - 2 * x) * h1 - x * x * (1 - x) * d1)
        if value > 0:
            b = x
        else:
            a = x
    return lower[0] + 0.5 * (a + b) * width
