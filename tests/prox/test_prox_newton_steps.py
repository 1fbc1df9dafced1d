"""Newton steps on the issue-13 sets (examples/prox_newton_steps.py measures them all): the
instance generators, and the spread-sweep problems that took or still take more than 10
steps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from stepsize import ConvergenceWarning
from stepsize._reference.prox_instances import HARD_KINDS
from stepsize.benchmarks.prox import issue_range_instances, scale_sweep_instances, spread_instance
from stepsize.prox import kkt_residuals, prox_matrix_perspective

# the spread-sweep problems (of 20,000) that took more than 10 steps before the bisection that
# replaces a crawling Newton restart (docs/prox.md, "Root finding"), with their counts then
FORMERLY_SLOW = [("spread_y", 2961, 14), ("spread_y", 7561, 13), ("spread_y", 10593, 14),
                 ("spread_y", 19809, 12), ("diag_spread", 1770, 13), ("diag_spread", 4570, 13),
                 ("zeros", 4140, 11), ("zeros", 10580, 11)]
# over 10 steps after that bisection, at or below 10 since the pole surrogate replaces the first
# Newton restart from t = sigma when it would crawl (with their counts before it)
SURROGATE_FIXED = [("spread_y", 2257, 12), ("spread_y", 16233, 12), ("diag_spread", 9394, 11)]
# the two still over 10 (a cliff of m(t) above a plateau next to the root; a root just below the
# zero crossing), with their counts now
STILL_SLOW = [("diag_spread", 12450, 12), ("zeros", 19316, 11)]


def _solve(kind, seed):
    X, y, sigma = spread_instance(kind, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = prox_matrix_perspective(X, y, sigma)
    r = kkt_residuals(X, y, sigma, *result.x)
    kkt = max(r.dual_infeasibility, r.primal_infeasibility, r.fenchel_young_gap,
              r.lifted_complementarity)
    return result, kkt


@pytest.mark.parametrize(("kind", "seed", "before"), FORMERLY_SLOW + SURROGATE_FIXED)
def test_formerly_slow_instances_take_at_most_10_steps(kind, seed, before):
    result, kkt = _solve(kind, seed)
    assert result.converged and result.n_iter <= 10, (result.n_iter, before)
    assert kkt <= 1e-14, kkt


@pytest.mark.parametrize(("kind", "seed", "steps"), STILL_SLOW)
def test_slow_instances_converge_accurately_in_their_measured_steps(kind, seed, steps):
    result, kkt = _solve(kind, seed)
    assert result.converged
    assert kkt <= 1e-14, kkt
    # no regression past the measured count (the goal, 10, is the xfail below)
    assert result.n_iter <= steps, result.n_iter


@pytest.mark.xfail(strict=True, reason="issue 13's 'at most 10 Newton steps' is not met on "
                   "these 2 of the 20,000 spread-sweep problems (docs/prox.md)")
@pytest.mark.parametrize(("kind", "seed"), [(kind, seed) for kind, seed, _ in STILL_SLOW])
def test_slow_instances_take_at_most_10_steps(kind, seed):
    result, _ = _solve(kind, seed)
    assert result.n_iter <= 10, result.n_iter


def _corner_negative_part(d, b, t):
    """``e^T [A]_- e`` of the 2 x 2 ``A = [[d, b], [b, -t]]`` by numpy's eigh (the reference)."""
    lam, vectors = np.linalg.eigh(np.array([[d, b], [b, -t]]))
    return float(sum(-lam[i] * vectors[1, i] ** 2 for i in range(2) if lam[i] < 0))


def test_pole_surrogate_is_exact_for_one_pole_and_sums_the_poles():
    from stepsize.prox.perspective import _SecularRootFunction, _surrogate_mass, _surrogate_point

    d = np.array([-0.3, 1e-7, 0.8])
    b = np.array([0.2, 0.05, 0.4])
    for t in (-1e-6, -0.01, -0.5, -3.0, -1e3):
        expected = sum(_corner_negative_part(dj, bj, t) for dj, bj in zip(d, b))
        # (the 2 x 2 eigh reference carries eps ||A|| in the small eigenvalue)
        assert _surrogate_mass(d, b**2, t) == pytest.approx(expected, rel=1e-9)
        # one pole: the arrowhead is the 2 x 2 problem itself, so the surrogate is m(t)
        h = _SecularRootFunction(np.array([[d[0]]]), np.array([np.sqrt(2.0) * b[0]]), 1.0)
        assert _surrogate_mass(h.poles, h.weights, t) == pytest.approx(h(t)[0], rel=1e-12)
    # the point where the surrogate falls to the level, to bisection accuracy
    level = 1e-3
    point = _surrogate_point(d, b**2, level)
    assert point < 0
    assert _surrogate_mass(d, b**2, point) == pytest.approx(level, rel=1e-9)
    assert _surrogate_mass(d, b**2, point * (1 + 1e-6)) < level
    # no crossing: a level above the surrogate's supremum, or no poles
    assert _surrogate_point(d, b**2, 1e9) is None
    assert _surrogate_point(np.zeros(0), np.zeros(0), level) is None


def test_issue_range_instances():
    instances = issue_range_instances(7, 60)
    assert len(instances) == 60
    assert [kind for kind, *_ in instances] == [HARD_KINDS[i % 5] for i in range(60)]
    for _, X, y, sigma in instances:
        assert 2 <= X.shape[0] <= 39 and X.shape == (y.size, y.size)
        np.testing.assert_array_equal(X, X.T)
        assert 1e-8 <= sigma <= 1e-4
    # the same draws on every call (the seed alone decides them), and a prefix of a longer run
    again = issue_range_instances(7, 61)
    np.testing.assert_array_equal(again[59][1], instances[59][1])
    assert again[59][3] == instances[59][3]
    assert issue_range_instances(0, 1)[0][3] != instances[0][3]


def test_scale_sweep_instances():
    instances = scale_sweep_instances(0, per_kind=2, step=100)
    exponents = list(range(-300, 301, 100))
    assert len(instances) == 5 * 2 * len(exponents)
    for index, (kind, X, y, sigma) in enumerate(instances):
        assert kind == HARD_KINDS[index // (2 * len(exponents))]
        assert 3 <= X.shape[0] <= 11
        exponent = exponents[index % len(exponents)]
        ratio = max(np.abs(X).max(), np.abs(y).max()) / sigma
        assert ratio == pytest.approx(10.0**exponent, rel=1e-14)
    with pytest.raises(ValueError, match="per_kind"):
        scale_sweep_instances(0, per_kind=0)
    with pytest.raises(ValueError, match="count"):
        issue_range_instances(0, -1)
