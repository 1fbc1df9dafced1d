r"""First-order solvers for :math:`W x = c` with W symmetric positive definite.

Right-hand sides may be batched (``c`` of shape (n, k)), and numpy arrays, scipy sparse
matrices, LinearOperators, :class:`NormalOperator` and torch tensors (any device, any float
dtype; the iteration runs in the dtype of ``c``) are accepted.

- :func:`gradient_descent`: :math:`x_{t+1} = x_t + \gamma_{t \bmod T} (c - W x_t)`, a periodic
  step sequence (constant step for T = 1).
- :func:`chebyshev_gd`: the same with Chebyshev steps from an (estimated) spectrum; the paper's
  CHGD. Its error meets the Chebyshev bound at multiples of T only.
- :func:`chebyshev_semi_iterative`: the three-term Chebyshev recurrence (Golub & Varga 1961),
  optimal at every iteration, immune to step ordering.
- :func:`heavy_ball`: Polyak's momentum with the optimal constants.
- :func:`conjugate_gradient`: the Krylov-optimal reference (uses inner products), column-wise
  for batches.

Least squares :math:`\min \|A x - y\|` runs through :func:`normal_equations`, which applies
:math:`A^\top A` without forming it.

**Options.** What only the Chebyshev solvers take (the period ``T``, the step ``order``, the
CG steps ``estimate_iter`` of an interval estimate, ``mixed_precision``) comes in one
:class:`ChebyshevOptions`, passed as ``options=``; the keywords are those shared with
``scipy.sparse.linalg.cg`` and this module's other solvers (``M``, ``x0``, ``max_iter``, ``tol``,
``x_true``, ``history``, ``warn``) and the interval (``lmin``/``lmax`` or ``spectrum``).

**Interval** (:func:`chebyshev_gd`, :func:`chebyshev_semi_iterative`). Given (``lmin``/``lmax``
or ``spectrum``), it is used as is. Otherwise the solve starts with ``estimate_iter`` steps of
preconditioned CG whose step lengths give the Lanczos Ritz values of :math:`M W`
(:mod:`stepsize.chebyshev.preconditioning`); their iterate is kept, so the estimate costs no
wasted matvecs. ``lmax = 1.1 theta_max`` (PETSc's widening) and ``lmin = theta_min``. Ritz values
lie inside the spectrum, so ``lmin`` may be too high: after each period the residual reduction
is compared with the Chebyshev bound, and when it falls short by more than a square root (or the
residual grew, which restores the period's starting point and widens lmax by 1.25) another
``estimate_iter`` CG steps run from the current residual, which is then rich in the
eigenvectors the interval missed, and the interval is widened to their Ritz values.
``info["intervals"]`` lists the intervals. A given interval whose period grows the residual
tenfold is reported as diverged (``info["diverged"]``, a warning).

**Stopping.** With ``tol``, every column's relative residual :math:`\|c - W x\| / \|c\|` (as in
``scipy.sparse.linalg.cg``) is checked once per period (every step with ``history=True``), and
each period's length is chosen for the reduction still needed (:func:`chebyshev_period`, at most
256). Without ``max_iter`` the cap is
:math:`3 (k_{CG} + \lceil \sqrt\kappa\,\ln(2/\mathrm{tol})/2 \rceil) + 50` for the current
interval's :math:`\kappa`. Without ``tol`` it runs ``max_iter`` steps (default: one period, the
paper's CHGD) and reports ``converged=None``.

**How it is built.** :mod:`stepsize.chebyshev._system` checks the inputs once;
:mod:`stepsize.chebyshev._drivers` runs a method (a generator yielding iterate and residual),
records the history, tests ``tol``, counts matvecs, splits sparse batches into cache-sized
column blocks and holds the mixed-precision kernel; :mod:`stepsize.chebyshev._periods` holds the
preconditioned CG and Chebyshev periods; :mod:`stepsize.chebyshev._backend` the numpy/torch
array operations.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from stepsize._results import SolverResult
from stepsize._validation import check_array, check_choice, check_int, check_rng, describe
from stepsize.chebyshev._backend import copy, is_torch, like, low_precision, residual
from stepsize.chebyshev._drivers import (
    MIXED_PRECISION_MAX_KAPPA,
    DriveOptions,
    drive,
    in_column_blocks,
    mixed_precision_descent,
    periodic_descent,
)
from stepsize.chebyshev._periods import UNCAPPED, ChebyshevPlan, chebyshev_periods, pcg_estimate
from stepsize.chebyshev._system import check_budget, given_interval, spectrum_of, validated_system
from stepsize.chebyshev._torch_support import torch_extensions
from stepsize.chebyshev.operators import NormalOperator, normal_equations
from stepsize.chebyshev.preconditioning import LMAX_WIDENING, as_preconditioner
from stepsize.chebyshev.spectrum import Spectrum, interval_result
from stepsize.chebyshev.steps import ORDERS, chebyshev_period, heavy_ball_parameters

__all__ = [
    "ChebyshevOptions",
    "NormalOperator",
    "chebyshev_gd",
    "chebyshev_period",
    "chebyshev_semi_iterative",
    "conjugate_gradient",
    "gradient_descent",
    "heavy_ball",
    "normal_equations",
    "preconditioned_spectrum",
]

# Work arrays touched per iteration: x, r, c and the axpy buffer for periodic descent; the four
# float32 arrays (right-hand side, correction, residual, buffer) of a mixed-precision period.
_DESCENT_ARRAYS = 4
_MIXED_ENTRY_BYTES = 4 * 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChebyshevOptions:
    """The Chebyshev-specific options of :func:`chebyshev_gd` and
    :func:`chebyshev_semi_iterative`, with their defaults.

    The values are validated when the options are built; ``dataclasses.replace`` builds (and
    validates) a changed copy.

    Attributes:
        T: period of :func:`chebyshev_gd` (None: chosen per period from ``tol``, or for 1e-8
            without it). :func:`chebyshev_semi_iterative` takes None only.
        order: step order within a period, one of ``ORDERS`` (``"fractal"`` is stable at any
            T); :func:`chebyshev_gd` only.
        estimate_iter: CG steps per interval estimate (each costs one matvec per column), >= 1.
        mixed_precision: float32 periods with float64 refinement (:func:`chebyshev_gd` only).

    >>> options = ChebyshevOptions(T=8, order="natural")
    >>> options.estimate_iter, options.mixed_precision
    (15, False)
    >>> dataclasses.replace(options, T=0)
    Traceback (most recent call last):
    ValueError: T must be >= 1, got 0
    """

    T: int | None = None
    order: str = "fractal"
    estimate_iter: int = 15
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        check_choice(self.order, "order", ORDERS)
        if not isinstance(self.mixed_precision, (bool, np.bool_)):
            raise TypeError(f"mixed_precision must be a bool, got "
                            f"{describe(self.mixed_precision)}")
        canonical = {
            "T": None if self.T is None else check_int(self.T, "T", low=1),
            "estimate_iter": check_int(self.estimate_iter, "estimate_iter", low=1),
            "mixed_precision": bool(self.mixed_precision),
        }
        for name, value in canonical.items():  # frozen: set once, here
            object.__setattr__(self, name, value)


def _check_options(options, solver: str, *, refused: tuple[str, ...] = ()) -> ChebyshevOptions:
    """``options`` as a :class:`ChebyshevOptions` (None: the defaults); fields in ``refused``
    must keep their defaults."""
    if options is None:
        return ChebyshevOptions()
    if not isinstance(options, ChebyshevOptions):
        raise TypeError(f"options must be a ChebyshevOptions or None, e.g. "
                        f"ChebyshevOptions(T=8), got {describe(options)}")
    default = ChebyshevOptions()
    changed = [name for name in refused if getattr(options, name) != getattr(default, name)]
    if changed:
        raise ValueError(f"options.{changed[0]} is not an option of {solver} (it takes "
                         f"estimate_iter only), got {getattr(options, changed[0])!r}")
    return options


def gradient_descent(
    W, c, steps, *, x0=None, max_iter=None, tol=None, x_true=None, history=False, warn=True,
) -> SolverResult:
    r"""Gradient descent with a periodic step sequence on :math:`\tfrac12 x^\top W x - c^\top x`.

    :math:`x_{t+1} = x_t + \gamma_{t \bmod T}\,(c - W x_t)`; one matvec per iteration.

    Args:
        W: SPD matrix, sparse matrix, LinearOperator, :class:`NormalOperator` or torch tensor.
        c: right-hand side, shape (n,) or (n, k).
        steps: a positive scalar or a sequence of T steps, repeated periodically.
        x0: starting point (zeros by default).
        max_iter: iterations (default: one period T).
        tol: stop when every column's relative residual is <= tol (None: run max_iter and
            report ``converged=None``).
        x_true: if given, the history records the relative error instead of the residual.
        history: record the per-iteration relative error (or residual).
        warn: warn with :class:`~stepsize.ConvergenceWarning` when ``tol`` is not met.

    Returns:
        :class:`~stepsize.SolverResult` with ``info["matvecs"]``.

    >>> W = np.diag([1.0, 2.0])
    >>> gradient_descent(W, np.array([1.0, 2.0]), [1.0, 0.5]).x.tolist()
    [1.0, 1.0]
    """
    W, c, x0, x_true = validated_system(W, c, x0, x_true)
    steps = check_array(np.atleast_1d(np.asarray(steps, dtype=np.float64)), "steps", ndim=1)
    if np.any(steps <= 0):
        raise ValueError(f"steps must be positive, got min {steps.min():.3g}")
    n_iter, tol = check_budget(max_iter, tol, steps.size)
    options = DriveOptions("gradient_descent", n_iter, tol, x_true, history, warn)
    return in_column_blocks(functools.partial(periodic_descent, steps=steps), W, c, x0, options,
                            entry_bytes=_DESCENT_ARRAYS * c.dtype.itemsize)


@torch_extensions
def chebyshev_gd(
    W, c, *, M=None, lmin=None, lmax=None, spectrum=None, x0=None, max_iter=None, tol=None,
    x_true=None, history=False, warn=True, seed=None, options: ChebyshevOptions | None = None,
) -> SolverResult:
    r"""Chebyshev gradient descent (CHGD), optionally preconditioned.

    .. math::

        x_{t+1} = x_t + \gamma_{t \bmod T}\, M (c - W x_t),

    with the T Chebyshev steps :math:`\gamma_t` of :func:`chebyshev_steps` for an interval
    ``[lmin, lmax]`` holding the spectrum of :math:`M W` (of W without ``M``). One matvec and one
    preconditioner application per step, no inner products within a period. How the interval is
    estimated and corrected, and when the solve stops, is in this module's docstring.

    With ``options.mixed_precision`` (float64 ``c``, a dense, sparse or torch ``W``, no ``M``) the
    periods run in float32 and each is corrected by one float64 residual (iterative refinement;
    the interval comes from :func:`estimate_spectrum` on the float32 copy of W).

    Args:
        W: SPD matrix (dense, sparse, torch), LinearOperator or :class:`NormalOperator`.
        c: right-hand side, shape (n,) or (n, k).
        M: preconditioner, an SPD approximation of :math:`W^{-1}` given as in scipy's ``cg``
            (:func:`~stepsize.chebyshev.preconditioning.as_preconditioner`): an array, sparse
            matrix, LinearOperator, callable, ``"jacobi"`` or a pyamg ``MultilevelSolver``.
        lmin, lmax, spectrum: the interval of :math:`M W`; estimated when not given.
        x0: starting point (zeros by default).
        max_iter: cap on iterations (CG estimation steps included).
        tol: relative residual to reach; None runs ``max_iter`` steps.
        x_true, history, warn: as in :func:`gradient_descent`.
        seed: seed of the mixed-precision Lanczos estimate (the only random part).
        options: a :class:`ChebyshevOptions` (period ``T``, step ``order``, ``estimate_iter``,
            ``mixed_precision``); None: ``ChebyshevOptions()``.

    Returns:
        :class:`~stepsize.SolverResult` with ``info["matvecs"]`` (estimation included),
        ``info["lmin"]``, ``info["lmax"]`` (the final interval) and ``info["intervals"]``.

    >>> W = np.diag([1.0, 2.0, 4.0])
    >>> r = chebyshev_gd(W, np.ones(3), lmin=1.0, lmax=4.0, max_iter=9,
    ...                  options=ChebyshevOptions(T=3))
    >>> bool(np.allclose(r.x, [1.0, 0.5, 0.25], atol=1e-3)), r.converged
    (True, None)
    >>> A = np.diag(np.linspace(1.0, 100.0, 50))
    >>> r = chebyshev_gd(A, np.ones(50), M="jacobi", tol=1e-10)
    >>> r.converged, r.n_iter
    (True, 1)
    """
    W, c, x0, x_true = validated_system(W, c, x0, x_true)
    chosen = _check_options(options, "chebyshev_gd")
    max_iter, tol = check_budget(max_iter, tol, None)
    drive_options = DriveOptions("chebyshev_gd", max_iter or UNCAPPED, tol, x_true, history, warn)
    if chosen.mixed_precision:
        return _mixed_precision_solve(W, c, x0, drive_options, M=M, T=chosen.T,
                                      interval=(lmin, lmax), spectrum=spectrum,
                                      order=chosen.order, max_iter=max_iter, seed=seed)
    return _chebyshev_solve(W, c, x0, drive_options, "steps", M=M, T=chosen.T,
                            interval=given_interval(spectrum, lmin, lmax), order=chosen.order,
                            max_iter=max_iter, estimate_iter=chosen.estimate_iter)


def _mixed_precision_solve(W, c, x0, options, *, M, T, interval, spectrum, order, max_iter,
                           seed) -> SolverResult:
    """:func:`chebyshev_gd` with ``options.mixed_precision`` (inputs but these checked)."""
    if M is not None:
        raise ValueError("mixed_precision does not take a preconditioner M")
    if T is not None:
        raise ValueError("T is chosen per period when options.mixed_precision is True; leave "
                         "options.T=None")
    if str(c.dtype) not in ("float64", "torch.float64"):
        raise ValueError(f"mixed_precision refines float64 solves; c has dtype {c.dtype}")
    # the float32 copy also serves the spectrum estimate: bounds need no float64 accuracy
    W_low = low_precision(W)
    lmin, lmax, estimation_matvecs = spectrum_of(W_low, spectrum, *interval, seed)
    if lmax / lmin > MIXED_PRECISION_MAX_KAPPA:
        raise ValueError(f"mixed_precision needs lmax / lmin <= "
                         f"{MIXED_PRECISION_MAX_KAPPA:g} (float32 cannot resolve the "
                         f"system), got {lmax / lmin:.3g}")
    options = dataclasses.replace(
        options, n_iter=max_iter or 10 * chebyshev_period(lmin, lmax, 1e-8),
        extra_matvecs=estimation_matvecs)
    kernel = functools.partial(mixed_precision_descent, W_low=W_low, lmin=lmin, lmax=lmax,
                               order=order)
    result = in_column_blocks(kernel, W, c, x0, options, entry_bytes=_MIXED_ENTRY_BYTES)
    result.info["estimation_matvecs"] = estimation_matvecs
    return result


def _chebyshev_solve(W, c, x0, options, recurrence, *, M, T, interval, order, max_iter,
                     estimate_iter) -> SolverResult:
    """Shared entry of :func:`chebyshev_gd` (``recurrence="steps"``) and
    :func:`chebyshev_semi_iterative` (``"three-term"``)."""
    precondition = as_preconditioner(M, W)
    plan = ChebyshevPlan(recurrence, precondition, interval, T, order, estimate_iter, max_iter)
    # work arrays per iteration: x, r, c and a buffer, plus M r, plus p and W p for estimation
    arrays = 4 + (precondition is not None) + 2 * (interval is None)
    options = dataclasses.replace(options,
                                  extra_matvecs=0 if interval is None else interval[2])
    return in_column_blocks(functools.partial(chebyshev_periods, plan=plan), W, c, x0, options,
                            entry_bytes=arrays * c.dtype.itemsize)


@torch_extensions
def chebyshev_semi_iterative(
    W, c, *, M=None, lmin=None, lmax=None, spectrum=None, x0=None, max_iter=None, tol=None,
    x_true=None, history=False, warn=True, options: ChebyshevOptions | None = None,
) -> SolverResult:
    r"""Chebyshev semi-iterative method (three-term recurrence; Golub & Varga 1961).

    With :math:`\theta = (l_{\max} + l_{\min})/2`, :math:`\delta = (l_{\max} - l_{\min})/2`,
    :math:`\sigma = \theta/\delta`: :math:`\rho_0 = 1/\sigma`, :math:`d_0 = M r_0/\theta`, and

    .. math::

        x_{k+1} = x_k + d_k,\quad r_{k+1} = r_k - W d_k,\quad
        \rho_{k+1} = (2\sigma - \rho_k)^{-1},\quad
        d_{k+1} = \rho_{k+1}\rho_k d_k + \tfrac{2\rho_{k+1}}{\delta} M r_{k+1}.

    The error after k steps is the scaled Chebyshev polynomial of degree k at *every* k, so it
    equals :func:`chebyshev_gd` with period k at t = k, and it has no ordering issue. The
    preconditioner, the interval estimate and its correction, the stopping rule and the cap are
    those of :func:`chebyshev_gd` (see this module's docstring); with a tolerance the recurrence
    restarts at each period's end (where the residual is checked).

    Args:
        W, c, M, lmin, lmax, spectrum, x0, x_true, history, warn: as in :func:`chebyshev_gd`.
        max_iter: cap on iterations; without ``tol``, the degree of the one period run.
        tol: relative residual to reach; None runs ``max_iter`` steps (``converged=None``).
        options: a :class:`ChebyshevOptions` whose ``estimate_iter`` is used; its ``T``,
            ``order`` and ``mixed_precision`` (:func:`chebyshev_gd`'s) must keep their defaults.

    Returns:
        :class:`~stepsize.SolverResult`, with the ``info`` of :func:`chebyshev_gd`.

    >>> r = chebyshev_semi_iterative(np.diag([1.0, 2.0, 4.0]), np.ones(3), tol=1e-12)
    >>> bool(np.allclose(r.x, [1.0, 0.5, 0.25]))
    True
    """
    W, c, x0, x_true = validated_system(W, c, x0, x_true)
    chosen = _check_options(options, "chebyshev_semi_iterative",
                            refused=("T", "order", "mixed_precision"))
    max_iter, tol = check_budget(max_iter, tol, None)
    drive_options = DriveOptions("chebyshev_semi_iterative", max_iter or UNCAPPED, tol, x_true,
                                 history, warn)
    return _chebyshev_solve(W, c, x0, drive_options, "three-term", M=M,
                            T=None if tol is not None else max_iter,
                            interval=given_interval(spectrum, lmin, lmax), order="natural",
                            max_iter=max_iter, estimate_iter=chosen.estimate_iter)


def heavy_ball(
    W, c, *, lmin=None, lmax=None, spectrum=None, x0=None, max_iter=100, tol=None, x_true=None,
    history=False, warn=True, seed=None,
) -> SolverResult:
    r"""Polyak's heavy ball, :math:`x_{k+1} = x_k + \alpha (c - W x_k) + \beta (x_k - x_{k-1})`,
    with the optimal :math:`(\alpha, \beta)` of :func:`heavy_ball_parameters`
    (and :math:`x_{-1} = x_0`).

    Args:
        W, c, x0, x_true, history, warn: as in :func:`gradient_descent`.
        lmin, lmax, spectrum: the interval of W; estimated by :func:`estimate_spectrum` when
            not given.
        max_iter: iterations (default 100).
        tol: relative residual to reach; None runs ``max_iter`` steps (``converged=None``).
        seed: seed of the spectrum estimate's random start.

    Returns:
        :class:`~stepsize.SolverResult` with ``info["alpha"]``, ``info["beta"]`` and
        ``info["matvecs"]`` (estimation included).

    >>> r = heavy_ball(np.diag([1.0, 4.0]), np.ones(2), lmin=1.0, lmax=4.0, tol=1e-10)
    >>> r.converged, np.round(r.x, 8).tolist(), (r.info["alpha"], r.info["beta"])
    (True, [1.0, 0.25], (0.4444444444444444, 0.1111111111111111))
    """
    W, c, x0, x_true = validated_system(W, c, x0, x_true)
    lmin, lmax, estimation_matvecs = spectrum_of(W, spectrum, lmin, lmax, seed)
    n_iter, tol = check_budget(max_iter, tol, 100)
    alpha, beta = heavy_ball_parameters(lmin, lmax)

    def method():
        previous, x = x0, x0
        r = c - W @ x
        while True:
            x, previous = x + alpha * r + beta * (x - previous), x
            r = c - W @ x
            yield x, r

    options = DriveOptions("heavy_ball", n_iter, tol, x_true, history, warn, estimation_matvecs)
    return drive(method(), W, c, x0, options, info={"alpha": alpha, "beta": beta})


@torch_extensions
def conjugate_gradient(
    W, c, *, M=None, x0=None, max_iter=None, tol=None, x_true=None, history=False, warn=True,
) -> SolverResult:
    r"""(Preconditioned) conjugate gradient, one recurrence per column of ``c`` (the reference).

    Uses two inner products per iteration and no eigenvalue bounds; ``M`` as in
    :func:`chebyshev_gd`. Columns whose residual reaches zero are frozen rather than divided by
    zero. The default cap is 10 n iterations, as in scipy's ``cg``.

    Args:
        W, c, M, x0, x_true, history, warn: as in :func:`chebyshev_gd`.
        max_iter: cap on iterations (default 10 n).
        tol: relative residual to reach; None runs ``max_iter`` steps (``converged=None``).

    Returns:
        :class:`~stepsize.SolverResult` with ``info["matvecs"]``.

    >>> conjugate_gradient(np.diag([1.0, 3.0]), np.ones(2), tol=1e-12).n_iter
    2
    """
    W, c, x0, x_true = validated_system(W, c, x0, x_true)
    n_iter, tol = check_budget(max_iter, tol, 10 * W.shape[0])
    precondition = as_preconditioner(M, W)

    def method():
        x, r = copy(x0), residual(W, c, x0, c * 0)
        while True:
            yield from pcg_estimate(W, c, x, r, precondition, UNCAPPED)

    options = DriveOptions("conjugate_gradient", n_iter, tol, x_true, history, warn)
    return drive(method(), W, c, x0, options)


def preconditioned_spectrum(W, M=None, *, max_iter=15, seed=None) -> Spectrum:
    r"""Ritz interval of :math:`M W` from ``max_iter`` preconditioned CG steps.

    CG runs on :math:`W x = b` from a random b, and its step lengths give the Lanczos Ritz values
    (:func:`~stepsize.chebyshev.preconditioning.lanczos_bounds`); as in PETSc's
    ``KSPChebyshevEstEigSet`` the returned ``lmax`` is ``1.1 * theta_max`` and ``lmin`` is
    ``theta_min``, an *overestimate* of the smallest eigenvalue (Ritz values lie inside the
    spectrum): suited to smoothers, which only need lmax, and to :func:`chebyshev_gd`, which
    corrects lmin while solving. For verified bounds use :func:`estimate_spectrum`.

    Args:
        W: SPD operator (as in :func:`chebyshev_gd`).
        M: preconditioner (as in :func:`chebyshev_gd`); None for W itself.
        max_iter: CG steps (one W product and one M application each).
        seed: seed of the random right-hand side.

    Returns:
        :class:`~stepsize.chebyshev.Spectrum` with ``method="cg-lanczos"`` and
        ``converged=None`` (a fixed number of steps: no stopping rule was tested).

    >>> s = preconditioned_spectrum(np.diag(np.arange(1.0, 11.0)), max_iter=10, seed=0)
    >>> round(s.ritz_min, 6), round(s.ritz_max, 6), round(s.lmax, 6)
    (1.0, 10.0, 11.0)
    """
    W, _, _, _ = validated_system(W, np.zeros(W.shape[0]), None)
    max_iter = check_int(max_iter, "max_iter", low=1)
    b = check_rng(seed).standard_normal(W.shape[0])
    if is_torch(W):
        b = like(W, b)
    precondition = as_preconditioner(M, W)
    x, r = b * 0, copy(b)
    estimate = pcg_estimate(W, b, x, r, precondition, max_iter)
    steps = 0
    try:
        while True:
            next(estimate)
            steps += 1
    except StopIteration as stop:
        ritz = stop.value
    if ritz is None:
        raise ValueError("W has no spectrum to estimate: CG stopped at its first step")
    # a fixed number of steps, no stopping rule: nothing was tested
    return interval_result(ritz[0], LMAX_WIDENING * ritz[1], ritz[0], ritz[1], steps, None,
                           "cg-lanczos")
