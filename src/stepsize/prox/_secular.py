"""Eigenvalues and eigenvectors of a symmetric arrowhead matrix through its secular equation.

After one eigendecomposition ``X = U diag(a) U^T``, the lifted matrix of the prox,
``M(t) = [[X, y/sqrt(2)], [y^T/sqrt(2), -t]]``, is orthogonally similar to the arrowhead

    A(t) = [[diag(a), b], [b^T, alpha]],   b = U^T y / sqrt(2),   alpha = -t,

and only ``alpha`` changes with ``t``. After deflation (entries of ``b`` below a tolerance, and
clusters of equal ``a`` merged by a Householder reflection) the remaining ``n`` poles ``d`` are
distinct and every ``b_j`` is nonzero, so the ``n + 1`` eigenvalues are the roots of

    g(lambda) = alpha - lambda + sum_j b_j^2 / (lambda - d_j),

one in each interval ``(-inf, d_1), (d_1, d_2), ..., (d_n, inf)`` (strict interlacing). The last
component of the unit eigenvector of root ``lambda_i`` satisfies ``q_i^2 = -1 / g'(lambda_i)``.

Each root is stored as ``lambda_i = d_k + delta_i`` with ``d_k`` the nearer pole, so that the
differences ``lambda_i - d_j = (d_k - d_j) + delta_i`` keep their relative accuracy (the device
of LAPACK's ``dlaed4``). Eigenvectors use the Gu-Eisenstat correction: ``b`` is recomputed from
the computed roots by the Loewner formula, which makes the eigenvectors numerically orthogonal.

References:
    M. Gu, S. C. Eisenstat, "A stable and efficient algorithm for the rank-one modification of
    the symmetric eigenproblem", SIAM J. Matrix Anal. Appl. 15 (1994).
    N. Jakovcevic Stor, I. Slapnicar, J. L. Barlow, "Accurate eigenvalue decomposition of real
    symmetric arrowhead matrices and applications", Linear Algebra Appl. 464 (2015).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = np.finfo(float).eps
# Rows per block of the (roots x poles) work arrays: 512 KiB each, so that the two of a block
# stay in a 1 to 2 MiB L2 cache (at p = 2000 the sums took 25% less time than with 2 MiB blocks)
_BLOCK_ELEMENTS = 1 << 16
_MAX_ROOT_ITERATIONS = 100


@dataclass
class Arrowhead:
    """A deflated arrowhead ``[[diag(a), b], [b^T, alpha]]`` in the eigenbasis of ``X``.

    Attributes:
        basis: ``U`` after the deflating reflections (p x p, orthogonal).
        poles: the distinct diagonal entries ``d`` whose ``b`` entries are kept (n,).
        weights: ``b_j^2`` for the kept entries (n,).
        signs: signs of the kept ``b_j`` (n,).
        kept: indices (columns of ``basis``) of the kept entries.
        deflated: indices of the deflated entries; each is an eigenpair ``(a_j, basis[:, j])`` of
            every ``A(t)`` with no component on the last coordinate.
        diagonal: the diagonal ``a`` (p,) after deflation.
    """

    basis: np.ndarray
    poles: np.ndarray
    weights: np.ndarray
    signs: np.ndarray
    kept: np.ndarray
    deflated: np.ndarray
    diagonal: np.ndarray


def deflate(eigenvalues: np.ndarray, basis: np.ndarray, b: np.ndarray) -> Arrowhead:
    """Deflate the arrowhead with diagonal ``eigenvalues`` (ascending) and column ``b``.

    A run of diagonal entries closer than the tolerance is reflected so that ``b`` lives on one
    member of the run; entries of ``b`` below the tolerance are then dropped. The tolerance,
    ``8 eps max(|a|, |b|)``, is the one of LAPACK's ``dlaed2``; the perturbation it makes is of
    the order of the rounding errors of the eigendecomposition itself.
    """
    diagonal = eigenvalues.copy()
    basis = basis.copy()
    b = b.copy()
    scale = max(float(np.max(np.abs(diagonal))), float(np.max(np.abs(b))), np.finfo(float).tiny)
    tolerance = 8.0 * _EPS * scale
    size = diagonal.size
    start = 0
    while start < size:
        stop = start + 1
        while stop < size and diagonal[stop] - diagonal[stop - 1] <= tolerance:
            stop += 1
        if stop - start > 1:
            _reflect_cluster(diagonal, basis, b, start, stop)
        start = stop
    small = np.abs(b) <= tolerance
    kept = np.flatnonzero(~small)
    deflated = np.flatnonzero(small)
    return Arrowhead(
        basis=basis,
        poles=diagonal[kept],
        weights=b[kept] ** 2,
        signs=np.sign(b[kept]),
        kept=kept,
        deflated=deflated,
        diagonal=diagonal,
    )


def _reflect_cluster(diagonal, basis, b, start, stop) -> None:
    """Householder-reflect the run ``start:stop`` so that ``b`` is nonzero on its last entry."""
    part = b[start:stop]
    norm = float(np.linalg.norm(part))
    if norm == 0.0:
        return
    target = np.zeros_like(part)
    target[-1] = norm
    direction = part - target
    length = float(np.linalg.norm(direction))
    if length > 0.0:
        direction /= length
        block = basis[:, start:stop]
        basis[:, start:stop] = block - 2.0 * np.outer(block @ direction, direction)
    b[start:stop] = target
    diagonal[start:stop] = diagonal[stop - 1]


def _blocks(rows: int, columns: int):
    step = max(1, _BLOCK_ELEMENTS // max(columns, 1))
    for begin in range(0, rows, step):
        yield slice(begin, min(begin + step, rows))


def secular_sums(poles, weights, origin, offset, powers, *, magnitude: bool = False):
    """Sums ``sum_j w_j / (lambda_i - d_j)^k`` for each ``k`` in ``powers`` (ascending).

    Root ``i`` is ``poles[origin[i]] + offset[i]``; the differences are formed from the pole
    differences so that the term of the origin pole is exact. With ``magnitude`` the sum of
    ``|w_j / (lambda_i - d_j)|`` (the rounding scale of ``g``) is appended. Work is done in
    row blocks.
    """
    out = [np.empty(offset.size) for _ in range(len(powers) + magnitude)]
    # at ratios ||(X, y)|| / sigma near 1e300 a root can sit 1e-110 from its pole and its third
    # power overflow: that sum is then inf, which the callers treat as such (q^2 -> 0)
    with np.errstate(over="ignore"):
        _fill_sums(out, poles, weights, origin, offset, powers, magnitude)
    return out


def _fill_sums(out, poles, weights, origin, offset, powers, magnitude):
    # in place on two work arrays per block: this is the O(n^2) inner loop of the prox
    for rows in _blocks(offset.size, poles.size):
        inverse = np.subtract.outer(poles[origin[rows]], poles)
        inverse += offset[rows, None]
        np.reciprocal(inverse, out=inverse)
        term = inverse * weights
        if magnitude:
            out[-1][rows] = np.abs(term).sum(axis=1)
        power_now = 1
        for slot, power in enumerate(powers):
            while power_now < power:
                term *= inverse
                power_now += 1
            out[slot][rows] = term.sum(axis=1)


@dataclass
class Roots:
    """Selected roots ``lambda = poles[origin] + offset`` of the secular equation."""

    index: np.ndarray
    origin: np.ndarray
    offset: np.ndarray
    second: np.ndarray | None = None  # sum_j b_j^2 / (lambda_i - d_j)^2 at the last iterate
    third: np.ndarray | None = None  # sum_j b_j^2 / (lambda_i - d_j)^3 at the last iterate
    alpha: float | None = None  # the corner they solve for

    def values(self, poles: np.ndarray) -> np.ndarray:
        return poles[self.origin] + self.offset


def secular_roots(
    poles: np.ndarray,
    weights: np.ndarray,
    alpha: float,
    index: np.ndarray,
    start: Roots | None = None,
    midpoints: np.ndarray | None = None,
) -> Roots:
    """Roots number ``index`` (0..n, the interval left of ``poles[index]``) of ``g = 0``.

    Each step solves a rational model of ``g`` that matches ``g`` and ``g'`` at the current
    point and keeps the exact pole of the origin (the fixed-weight idea of LAPACK's ``dlaed4``):
    inside ``(d_k, d_{k+1})`` the model is ``c + b_k^2/(x - d_k) + w/(x - d_other)`` (two poles),
    in the outer intervals ``c + e (x - lambda) + b_k^2/(x - d_k)``; either way the next point
    is the root of a quadratic. Bisection takes over whenever that root leaves the bracket.
    ``start`` (roots for a previous ``alpha``) gives warm starts: the poles do not move with
    ``alpha``, so each root stays in its interval. ``midpoints`` (:func:`midpoint_sums`, which
    do not depend on ``alpha``) saves their O(n^2) pass on repeated calls.
    """
    index = np.asarray(index, dtype=np.intp)
    origin, other, low, high = _brackets(poles, weights, alpha, index, midpoints)
    offset = 0.5 * (low + high)
    if start is not None:
        _warm_start(poles, alpha, index, origin, low, high, offset, start)

    second = np.empty(index.size)
    third = np.empty(index.size)
    active = np.arange(index.size)
    for _ in range(_MAX_ROOT_ITERATIONS):
        if active.size == 0:
            break
        done = _root_step(poles, weights, alpha, origin, other, active, low, high, offset,
                          second, third)
        active = active[~done]
    return Roots(index=index, origin=origin, offset=offset, second=second, third=third,
                 alpha=alpha)


def _warm_start(poles, alpha, index, origin, low, high, offset, start: Roots) -> None:
    """Start from the roots of ``start`` moved to first order, ``d lambda / d alpha = q^2 = 1 /
    (1 + sum_j b_j^2 / (lambda - d_j)^2)``, where that stays in the bracket; else from the
    roots themselves where they are in it (else the bracket midpoint stays)."""
    guess = np.full(poles.size + 1, np.nan)
    guess[start.index] = start.values(poles)
    previous = guess[index] - poles[origin]
    if start.second is not None and start.alpha is not None:
        shift = np.zeros(poles.size + 1)
        shift[start.index] = (alpha - start.alpha) / (1.0 + start.second)
        predicted = previous + shift[index]
        inside = np.isfinite(predicted) & (predicted > low) & (predicted < high)
        previous = np.where(inside, predicted, previous)
    usable = np.isfinite(previous) & (previous > low) & (previous < high)
    offset[usable] = previous[usable]


def midpoint_sums(poles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_j b_j^2 / (m_k - d_j)`` at the midpoints ``m_k`` of ``(d_k, d_{k+1})``, n - 1."""
    left = np.arange(poles.size - 1)
    (sums,) = secular_sums(poles, weights, left, 0.5 * (poles[left + 1] - poles[left]), (1,))
    return sums


def _brackets(poles, weights, alpha, index, midpoints=None):
    """Origin pole, model pole and the bracket ``[low, high]`` of the offset of each root."""
    n = poles.size
    origin = np.minimum(index, n - 1)
    other = origin.copy()  # the second pole of the model; equal to origin in the outer intervals
    low = np.zeros(index.size)
    high = np.zeros(index.size)
    radius = float(np.sqrt(weights.sum()))

    first = index == 0
    last = index == n
    low[first] = (min(0.0, alpha - poles[0]) - radius) * (1 + 4 * _EPS) - _EPS * abs(poles[0])
    high[last] = (max(0.0, alpha - poles[-1]) + radius) * (1 + 4 * _EPS) + _EPS * abs(poles[-1])

    inner = ~(first | last)
    if np.any(inner):
        left = index[inner] - 1
        half_gap = 0.5 * (poles[left + 1] - poles[left])
        if midpoints is None:
            (sums,) = secular_sums(poles, weights, left, half_gap, (1,))
        else:
            sums = midpoints[left]
        upper = alpha - poles[left] - half_gap + sums > 0  # root right of the midpoint
        origin[inner] = np.where(upper, left + 1, left)
        other[inner] = np.where(upper, left, left + 1)
        low[inner] = np.where(upper, -half_gap, 0.0)
        high[inner] = np.where(upper, 0.0, half_gap)
    return origin, other, low, high


def _root_step(poles, weights, alpha, origin, other, active, low, high, offset, second, third):
    """One model step of the ``active`` roots (updates the arrays in place); returns which of
    them are done."""
    k, k_other = origin[active], other[active]
    delta = offset[active]
    first_sum, second_sum, third_sum, rounding = secular_sums(
        poles, weights, k, delta, (1, 2, 3), magnitude=True
    )
    # kept for q^2 and h': a root stops where its last step is at rounding level
    second[active] = second_sum
    third[active] = third_sum
    linear = alpha - poles[k] - delta
    value = linear + first_sum
    # |g| at the level of its own rounding error: the root is found (dlaed4's test)
    noise = 8 * _EPS * (np.abs(linear) + np.abs(alpha) + np.abs(poles[k]) + rounding)
    slope = -1.0 - second_sum
    positive = value > 0
    lo = np.where(positive, delta, low[active])
    hi = np.where(positive, high[active], delta)
    low[active], high[active] = lo, hi
    model = _model_step(poles, weights, k, k_other, delta, value, slope, lo, hi)
    # converged when the model moves the point by rounding only (checked before the
    # bracket test: at the root the model point may sit on the bracket end)
    done = (
        (np.abs(value) <= noise)
        | (np.abs(model - delta) <= 4 * _EPS * np.abs(delta))
        | (hi - lo <= 4 * _EPS * np.maximum(np.abs(lo), np.abs(hi)))
    )
    inside = (model > lo) & (model < hi)
    candidate = np.where(inside, model, 0.5 * (lo + hi))
    small = np.abs(value) <= noise
    finish = np.where(small | ~np.isfinite(model), delta, model)
    offset[active] = np.where(done, finish, candidate)
    return done


def _model_step(poles, weights, k, k_other, delta, value, slope, lo, hi):
    """Root of the rational model at ``delta``: the one in ``[lo, hi]``, else the nearer one.

    The model (fixed weight of the origin pole, as in ``dlaed4``) is a quadratic in the new
    offset. Solved for the offset itself, the root carries ``eps`` times the pole gap, which
    stalled roots far from both poles (tiny weights, where the linear term of ``g`` dominates)
    at ``|g|`` thousands of times its rounding. Solved for the correction ``eta`` (new offset
    ``delta + eta``), the quadratic's constant term is proportional to ``g(delta)``, so ``eta``
    keeps its relative accuracy as ``g`` goes to zero; but ``delta + eta`` cancels when the root
    is much nearer the pole than ``delta``. So the correction is used for steps up to half of
    ``|delta|``, the offset itself for longer ones.
    """
    pole_weight = weights[k]
    gap = poles[k_other] - poles[k]
    two_poles = k_other != k
    # at ratios near 1e300 delta^2 can underflow: the model is then non-finite and the caller
    # bisects
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        rest_value = value - pole_weight / delta
        rest_slope = slope + pole_weight / delta**2
        far = delta - gap
        # two poles: c d^2 + (b_k^2 + w - c D) d - b_k^2 D = 0 with w from the slope of the rest
        far_weight = -rest_slope * far**2
        constant = rest_value - far_weight / far
        direct = _in_bracket(
            np.where(two_poles, constant, rest_slope),
            np.where(two_poles, pole_weight + far_weight - constant * gap,
                     rest_value - rest_slope * delta),
            np.where(two_poles, -pole_weight * gap, pole_weight),
            0.0, lo, hi, delta,
        )
        # the same model times its pole factors, in eta: a2 eta^2 + a1 eta + a0
        correction = _in_bracket(
            np.where(two_poles, constant, rest_slope),
            np.where(two_poles, (delta + far) * value + delta * far * slope, value + delta * slope),
            np.where(two_poles, delta * far * value, delta * value),
            delta, lo, hi, delta,
        )
    return np.where(np.abs(correction - delta) <= 0.5 * np.abs(delta), correction, direct)


def _in_bracket(a2, a1, a0, base, lo, hi, delta):
    """``base +`` the root of ``a2 x^2 + a1 x + a0`` in ``[lo, hi]``, else the one nearer
    ``delta`` (when rounding puts both outside at convergence, it still tells the last step's
    size); NaN when neither is finite."""
    root_disc = np.sqrt(np.maximum(a1 * a1 - 4.0 * a2 * a0, 0.0))
    half = -0.5 * (a1 + np.copysign(root_disc, a1))
    one = base + half / a2
    two = base + a0 / half
    inside_one = np.isfinite(one) & (one >= lo) & (one <= hi)
    inside_two = np.isfinite(two) & (two >= lo) & (two <= hi)
    distance_one = np.where(np.isfinite(one), np.abs(one - delta), np.inf)
    distance_two = np.where(np.isfinite(two), np.abs(two - delta), np.inf)
    nearer = np.where(distance_one <= distance_two, one, two)
    return np.where(inside_one, one, np.where(inside_two, two, nearer))


def corrected_weights(poles: np.ndarray, roots: Roots) -> np.ndarray:
    """Gu-Eisenstat weights ``b_hat_j^2`` for which the computed roots are exact eigenvalues.

    ``b_hat_j^2 = prod_i |lambda_i - d_j| / prod_{k != j} |d_k - d_j|`` over all ``n + 1``
    roots; the products are taken as sums of logarithms to avoid overflow.
    """
    n = poles.size
    log_numerator = np.zeros(n)
    for rows in _blocks(roots.offset.size, n):
        differences = (poles[roots.origin[rows], None] - poles[None, :]) + roots.offset[rows, None]
        log_numerator += np.log(np.abs(differences)).sum(axis=0)
    log_denominator = np.zeros(n)
    for rows in _blocks(n, n):
        gaps = np.abs(poles[rows, None] - poles[None, :])
        gaps[np.arange(gaps.shape[0]), np.arange(rows.start, rows.stop)] = 1.0
        log_denominator[rows] = np.log(gaps).sum(axis=1)
    return np.exp(log_numerator - log_denominator)


def eigenvectors(poles, signed_weights_root, roots: Roots) -> np.ndarray:
    """Unit eigenvectors ``[b_hat / (lambda_i - d); 1] / norm`` of the selected roots, (n+1) x r."""
    n = poles.size
    vectors = np.empty((n + 1, roots.offset.size))
    for rows in _blocks(roots.offset.size, n):
        differences = (poles[roots.origin[rows], None] - poles[None, :]) + roots.offset[rows, None]
        block = signed_weights_root / differences
        norms = np.sqrt(1.0 + np.einsum("ij,ij->i", block, block))
        vectors[:n, rows] = (block / norms[:, None]).T
        vectors[n, rows] = 1.0 / norms
    return vectors
