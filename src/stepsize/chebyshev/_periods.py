r"""Preconditioned Chebyshev periods, and the CG steps that estimate and correct their interval.

The kernel of :func:`~stepsize.chebyshev.chebyshev_gd` and
:func:`~stepsize.chebyshev.chebyshev_semi_iterative` (inputs checked by them): when no interval
is given, ``estimate_iter`` preconditioned CG steps (:func:`pcg_estimate`) give the Lanczos Ritz
values of :math:`M W` and an iterate worth keeping; then periods of Chebyshev steps run, each
followed (with a tolerance) by a comparison of the residual reduction with the Chebyshev bound,
which triggers another estimate from the current residual when it falls short. The same CG steps
are :func:`~stepsize.chebyshev.conjugate_gradient` when run without a cap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stepsize._results import SolverResult, warn_not_converged
from stepsize.chebyshev._backend import (
    axpy,
    cast_steps,
    column_norms,
    copy,
    dot_columns,
    is_torch,
    residual,
    stacked,
    to_numpy,
)
from stepsize.chebyshev._drivers import DivergenceMonitor, DriveOptions, drive
from stepsize.chebyshev.preconditioning import LMAX_WIDENING, lanczos_bounds
from stepsize.chebyshev.steps import chebyshev_bound, chebyshev_period, chebyshev_steps

__all__ = ["UNCAPPED", "ChebyshevPlan", "chebyshev_periods", "pcg_estimate"]

UNCAPPED = 2**62


def pcg_estimate(W, c, x, r, precondition, steps):
    r"""``steps`` preconditioned CG steps from ``(x, r)``, in place, yielding after each.

    Returns (through ``yield from``) the extreme Ritz values of :math:`M W` over the columns,
    or None when no column had a nonzero residual. Raises ``ValueError`` when
    :math:`r^\top M r < 0` (M not positive definite) or :math:`p^\top W p \le 0` (W not).
    """
    tiny = np.finfo(np.float64).tiny
    z = r if precondition is None else precondition(r)
    rz = dot_columns(r, z)
    _check_positive(rz, r, z, "M", "r^T M r")
    p = copy(z)
    alphas, betas = [], []
    for _ in range(steps):
        Wp = W @ p
        pWp = dot_columns(p, Wp)
        _check_positive(pWp, p, Wp, "W", "p^T W p", strict=True)
        alpha = rz / (pWp + (pWp == 0) * tiny)
        x += alpha * p
        r -= alpha * Wp
        z = r if precondition is None else precondition(r)
        rz_next = dot_columns(r, z)
        _check_positive(rz_next, r, z, "M", "r^T M r")
        beta = rz_next / (rz + (rz == 0) * tiny)
        p = z + beta * p
        alphas.append(alpha)
        betas.append(beta)
        rz = rz_next
        yield x, r
    return _ritz_interval(stacked(alphas), stacked(betas))


def _check_positive(values, left, right, name, what, strict=False):
    """Raise when an inner product that must be positive is negative beyond rounding.

    The norms that scale the rounding allowance are computed only when a value is suspect.
    """
    values = (to_numpy(values) if is_torch(values) else np.asarray(values)).reshape(-1)
    smallest = values.min()
    if smallest > 0 or (not strict and smallest == 0):
        return
    scale = column_norms(left.reshape(left.shape[0], -1)) * column_norms(
        right.reshape(right.shape[0], -1))
    bad = values < -1e-12 * scale
    if strict:  # p != 0 with p^T W p <= 0 (W p may vanish: a singular W)
        bad |= (values <= 0) & (column_norms(left.reshape(left.shape[0], -1)) > 0)
    if np.any(bad):
        value = float(values[np.argmax(bad)])
        raise ValueError(f"{name} must be symmetric positive definite, but CG met "
                         f"{what} = {value:.3g} ({name} is singular or indefinite)")


def check_nonsingular(lmin, lmax):
    if not lmin > 1e-13 * lmax:
        raise ValueError(f"W appears singular: the Ritz values of M W reach {lmin:.3g} against "
                         f"{lmax:.3g}; Chebyshev steps need lmin > 0")


def _ritz_interval(alphas, betas) -> tuple[float, float] | None:
    """Extreme Ritz values over the columns, from each column's steps with a nonzero alpha."""
    lows, highs = [], []
    for column in range(alphas.shape[1]):
        valid = int(np.argmin(alphas[:, column] > 0)) if np.any(alphas[:, column] <= 0) else (
            alphas.shape[0])
        if valid:
            low, high = lanczos_bounds(alphas[:valid, column], betas[:valid, column])
            lows.append(low)
            highs.append(high)
    if not lows:
        return None
    return min(lows), max(highs)


@dataclass(frozen=True)
class ChebyshevPlan:
    """What ``chebyshev_gd`` or ``chebyshev_semi_iterative`` settled before iterating.

    Attributes:
        recurrence: ``"steps"`` (periodic Chebyshev steps, CHGD) or ``"three-term"`` (the
            semi-iterative recurrence, restarted each period).
        precondition: the map ``r -> M r``, or None.
        interval: ``(lmin, lmax, matvecs)`` as given, or None to estimate and correct it.
        T: the period; None chooses each period's length for the reduction still needed.
        order: the step order within a period (``"steps"`` only).
        estimate_iter: CG steps per estimate.
        max_iter: the caller's cap, or None for the cap derived from ``tol``.
    """

    recurrence: str
    precondition: Callable | None
    interval: tuple[float, float, int] | None
    T: int | None
    order: str
    estimate_iter: int
    max_iter: int | None


def _period_kernel(plan: ChebyshevPlan, W, c, x, r, lmin, lmax, T):
    """One period of T Chebyshev steps from ``(x, r)``, in place, yielding after each step."""
    precondition = plan.precondition
    if plan.recurrence == "steps":
        gammas = cast_steps(chebyshev_steps(lmin, lmax, T, order=plan.order), c)
        buffer = r * 0
        for gamma in gammas:
            axpy(gamma, r if precondition is None else precondition(r), x, buffer)
            r = residual(W, c, x, r)
            yield x, r
        return
    # three-term recurrence (Golub & Varga 1961) restarted each period; equal to the T-step
    # periodic method at the period's end in exact arithmetic
    theta, delta = (lmax + lmin) / 2, (lmax - lmin) / 2
    z = r if precondition is None else precondition(r)
    d = z / theta
    buffer = r * 0
    if delta == 0:  # one exact step solves a problem with a single eigenvalue
        for _ in range(T):
            x += d
            r = residual(W, c, x, r)
            d = (r if precondition is None else precondition(r)) / theta
            yield x, r
        return
    sigma = theta / delta
    rho = 1 / sigma
    for _ in range(T):
        x += d
        axpy(-1.0, W @ d, r, buffer)
        rho_next = 1 / (2 * sigma - rho)
        d *= rho_next * rho
        axpy(2 * rho_next / delta, r if precondition is None else precondition(r), d, buffer)
        rho = rho_next
        yield x, r


def _derived_cap(lmin, lmax, tol, estimation_steps) -> int:
    """Default cap with a tolerance: three times what the Chebyshev bound needs, plus 50."""
    needed = np.ceil(np.sqrt(lmax / lmin) * np.log(2 / tol) / 2)
    return int(3 * (estimation_steps + needed) + 50)


class _Periods:
    """The method of one Chebyshev solve (for :func:`drive`) and what it found on the way."""

    def __init__(self, W, c, x0, plan: ChebyshevPlan, tol, history):
        self.W, self.c, self.x0, self.plan, self.tol, self.history = W, c, x0, plan, tol, history
        self.c_norms = np.maximum(column_norms(c.reshape(c.shape[0], -1)), np.finfo(float).tiny)
        self.intervals = []
        self.lmin = self.lmax = None
        self.estimated = 0  # CG steps spent on estimates, per column
        self.monitor = DivergenceMonitor()

    def relative_residual(self, r) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.max(column_norms(r.reshape(r.shape[0], -1)) / self.c_norms))

    def iterate(self):
        """Estimate (unless given), then periods, each checked and corrected when adaptive."""
        plan, tol = self.plan, self.tol
        x, r = copy(self.x0), residual(self.W, self.c, self.x0, self.c * 0)
        done = 0
        if plan.interval is None:
            lmin, lmax = yield from self._first_estimate(x, r)
            done = plan.estimate_iter
        else:
            lmin, lmax = plan.interval[0], plan.interval[1]
        adaptive = plan.interval is None and tol is not None
        while True:
            self.lmin, self.lmax = lmin, lmax
            self.intervals.append((lmin, lmax))
            start = self.relative_residual(r) if tol is not None else 1.0
            period = self._period_length(lmin, lmax, start, done)
            if period is None:
                return
            saved = (copy(x), copy(r)) if adaptive else None
            x, r = yield from self._period(x, r, lmin, lmax, period)
            done += period
            if self._stops_after_period(r):
                return
            if not adaptive:
                continue
            achieved = self.relative_residual(r) / max(start, 1e-300)
            if achieved <= np.sqrt(chebyshev_bound(lmin, lmax, period)):
                continue
            lmin, lmax = yield from self._corrected(x, r, saved, achieved, lmin, lmax)
            done += plan.estimate_iter

    def _first_estimate(self, x, r):
        ritz = yield from pcg_estimate(self.W, self.c, x, r, self.plan.precondition,
                                       self.plan.estimate_iter)
        self.estimated = self.plan.estimate_iter
        lmin, lmax = (1.0, 1.0) if ritz is None else (ritz[0], LMAX_WIDENING * ritz[1])
        check_nonsingular(lmin, lmax)
        return lmin, lmax

    def _period_length(self, lmin, lmax, start, done) -> int | None:
        """The next period's length, or None when the derived cap is reached."""
        plan, tol = self.plan, self.tol
        if plan.max_iter is None and tol is not None and done >= _derived_cap(
                lmin, lmax, tol, self.estimated):
            return None
        period = plan.T
        if period is None:
            reduction = 1e-8 if tol is None else min(max(tol / max(start, 1e-300), 1e-16), 0.5)
            period = chebyshev_period(lmin, lmax, reduction)
        if plan.max_iter is not None:
            period = min(period, plan.max_iter - done)
        return period

    def _period(self, x, r, lmin, lmax, period):
        """Run one period, yielding each step (with a history) or the period as a whole."""
        if self.plan.interval is not None:
            self.monitor.start(r)
        kernel = _period_kernel(self.plan, self.W, self.c, x, r, lmin, lmax, period)
        for x, r in kernel:  # the kernel updates x and r in place, maybe rebinding r
            if self.history:
                yield x, r
        if not self.history:
            yield x, r, period, 0
        return x, r

    def _stops_after_period(self, r) -> bool:
        if self.plan.interval is not None and self.monitor.diverged(r) and self.tol is not None:
            return True  # a given interval that misses the spectrum: more periods only grow
        return self.plan.max_iter is None and self.tol is None  # no tolerance, no cap: one period

    def _corrected(self, x, r, saved, achieved, lmin, lmax):
        """The interval widened to the Ritz values of CG steps from the current residual (after
        undoing the period and widening lmax when the residual grew)."""
        if achieved > 1:  # lmax was too low: undo the period
            x[...] = saved[0]
            r[...] = saved[1]
            lmax *= 1.25
        ritz = yield from pcg_estimate(self.W, self.c, x, r, self.plan.precondition,
                                       self.plan.estimate_iter)
        self.estimated += self.plan.estimate_iter
        if ritz is not None:
            lmin, lmax = min(lmin, ritz[0]), max(lmax, LMAX_WIDENING * ritz[1])
            check_nonsingular(lmin, lmax)
        return lmin, lmax


def chebyshev_periods(W, c, x0, options: DriveOptions, *, plan: ChebyshevPlan) -> SolverResult:
    """Solve by Chebyshev periods as ``plan`` says; ``info`` gets the final interval, the list of
    intervals, the estimation matvecs and whether a given interval diverged."""
    periods = _Periods(W, c, x0, plan, options.tol, options.history)
    # one warning per failure: a divergence is reported as such, not also as a miss of tol
    result = drive(periods.iterate(), W, c, x0, dataclasses.replace(options, warn=False))
    if periods.monitor.growth is not None:
        periods.monitor.report(result, options, periods.lmin, periods.lmax)
    elif options.warn and result.converged is False:
        warn_not_converged(options.name, result.n_iter, f"tol={options.tol:g}", stacklevel=4)
    columns = 1 if c.ndim == 1 else c.shape[1]
    result.info.update(lmin=periods.lmin, lmax=periods.lmax, intervals=periods.intervals,
                       estimation_matvecs=periods.estimated * columns + options.extra_matvecs,
                       preconditioned=plan.precondition is not None)
    return result
