"""The prox at every scale: homogeneity, ratios ||(X, y)|| / sigma from 1e-300 to 1e300, the
asymptotic answers at both ends, the crash of issue 13 and the Newton step counts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepsize import ConvergenceWarning
from stepsize._reference.prox_instances import hard_instance
from stepsize.benchmarks.prox import spread_instance
from stepsize.prox import kkt_residuals, prox_matrix_perspective

# PyProximal's backtracking ProximalGradient crashed here with log1p(-1) (issue 13)
CRASH_X = np.diag([0, 0, 0.323, 1.496, 2.704, 12.938])
CRASH_Y = np.array([-2.55e-7, 8.98e-8, -0.0764, -1.96, 0.00432, 2.89])
CRASH_SIGMA = 9.5367431640625e-07


def optimality(X, y, sigma, Omega, eta):
    """The scale-free residuals that stay meaningful at every ratio: the range test is left
    out, because beyond ratios ~1e20 the prox's Omega carries eta on eigenvalues below
    1e-10 ||Omega|| (they grow like (sigma ||y||^2)^(1/3))."""
    r = kkt_residuals(X, y, sigma, Omega, eta)
    return max(
        r.dual_infeasibility,
        r.primal_infeasibility,
        r.fenchel_young_gap,
        r.lifted_complementarity,
    )


def psd_part(X):
    w, Q = np.linalg.eigh(X)
    return (Q * np.maximum(w, 0)) @ Q.T


def test_issue_crash_instance():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = prox_matrix_perspective(CRASH_X, CRASH_Y, CRASH_SIGMA)
        Omega, eta = info.x
    assert np.all(np.isfinite(Omega)) and np.all(np.isfinite(eta))
    assert info.converged and info.n_iter <= 10 and not info.zero_region
    assert optimality(CRASH_X, CRASH_Y, CRASH_SIGMA, Omega, eta) <= 1e-12
    Omega_ref, eta_ref = bisection_reference(CRASH_X, CRASH_Y, CRASH_SIGMA)
    np.testing.assert_allclose(Omega, Omega_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(eta, eta_ref, rtol=0, atol=1e-12)


def bisection_reference(X, y, sigma):
    """Brute force in data units: 300 bisections of h(t) = e^T [M(t)]_- e - sigma with a full
    eigh of M(t) each, then S = [M(t)]_+."""
    p = y.size
    M = np.zeros((p + 1, p + 1))
    M[:p, :p] = X
    M[:p, p] = M[p, :p] = y / math.sqrt(2)

    def h(t):
        M[p, p] = -t
        w, V = np.linalg.eigh(M)
        return float(np.sum(np.maximum(-w, 0) * V[p] ** 2)) - sigma

    low, high = sigma / 2 - (np.sum(X**2) + y @ y) / (2 * sigma), sigma
    for _ in range(300):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if h(mid) < 0 else (low, mid)
    M[p, p] = -high
    w, V = np.linalg.eigh(M)
    S = (V * np.maximum(w, 0)) @ V.T
    return S[:p, :p], math.sqrt(2) * S[:p, p]


@pytest.mark.parametrize("exponent", range(-300, 301, 50))
def test_homogeneity_against_unit_scale(exponent):
    rng = np.random.default_rng(abs(exponent))
    X, y = hard_instance("random", rng, 6)
    Omega, eta = prox_matrix_perspective(X, y, 0.7).x
    # a power of two: bit for bit (the internal normalization is the same)
    c = 2.0 ** round(exponent * math.log2(10))
    Omega_c, eta_c = prox_matrix_perspective(c * X, c * y, c * 0.7).x
    np.testing.assert_array_equal(Omega_c, c * Omega)
    np.testing.assert_array_equal(eta_c, c * eta)
    # a power of ten: to rounding
    c = 10.0**exponent
    Omega_c, eta_c = prox_matrix_perspective(c * X, c * y, c * 0.7).x
    size = c * max(np.abs(X).max(), np.abs(y).max())
    np.testing.assert_allclose(Omega_c, c * Omega, rtol=0, atol=1e-13 * size)
    np.testing.assert_allclose(eta_c, c * eta, rtol=0, atol=1e-13 * size)


@pytest.mark.parametrize("kind", ["random", "zeros", "negative", "lowrank", "clusters"])
def test_ratio_sweep_1e_minus300_to_1e300(kind):
    rng = np.random.default_rng(len(kind))
    X, y = hard_instance(kind, rng, 7)
    data = max(np.abs(X).max(), np.abs(y).max())
    small, large = psd_part(X), psd_part(X)
    for exponent in range(-300, 301, 20):
        sigma = data * 10.0 ** (-exponent)  # ratio 10^exponent
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            info = prox_matrix_perspective(X, y, sigma)
            Omega, eta = info.x
        assert np.all(np.isfinite(Omega)) and np.all(np.isfinite(eta)), exponent
        assert info.converged and info.n_iter <= 10, (exponent, info.n_iter)
        assert optimality(X, y, sigma, Omega, eta) <= 1e-10, exponent
        if exponent <= -16:  # sigma >> data: (Pi_+(X), 0), not a "zero region" (0, 0)
            assert np.abs(Omega - small).max() <= 1e-14 * data
            assert np.abs(eta).max() <= 1e-14 * data
        if exponent >= 60:  # sigma << data: the projection onto the closed domain
            assert np.abs(Omega - large).max() <= 1e-13 * data
            assert np.abs(eta - y).max() <= 1e-13 * data


def test_tiny_psd_input_is_not_zero_region():
    X = 1e-20 * np.diag([1.0, 2.0, 0.5])
    y = 1e-20 * np.array([1.0, -1.0, 0.3])
    info = prox_matrix_perspective(X, y, 1.0)
    Omega, eta = info.x
    assert not info.zero_region
    np.testing.assert_allclose(Omega, X, rtol=0, atol=1e-15 * np.abs(X).max())
    assert np.abs(eta).max() <= 1e-39
    # the same at a ratio of 1e-10 (the root finder, not the closed form; t* = sigma to
    # rounding, so no step is needed)
    info = prox_matrix_perspective(X, y, 1e-10)
    Omega, eta = info.x
    assert not info.zero_region and "closed form" not in info.message
    assert kkt_residuals(X, y, 1e-10, Omega, eta).max <= 1e-12


def test_regime_boundaries_agree():
    rng = np.random.default_rng(21)
    X, y = hard_instance("random", rng, 5)
    data = max(np.abs(X).max(), np.abs(y).max())
    # closed form (ratio < 2^-56) against the root finder just above it
    below = prox_matrix_perspective(X, y, data * 2.0**57).x
    above = prox_matrix_perspective(X, y, data * 2.0**50).x
    np.testing.assert_allclose(below[0], above[0], rtol=0, atol=1e-14 * data)
    np.testing.assert_allclose(below[1], above[1], rtol=0, atol=1e-14 * data)
    # sigma raised to 2^-900 data (ratio > 2^900) against the root finder at 2^-880
    clamped = prox_matrix_perspective(X, y, data * 2.0**-1000).x
    solved = prox_matrix_perspective(X, y, data * 2.0**-880).x
    np.testing.assert_allclose(clamped[0], solved[0], rtol=0, atol=4e-14 * data)
    np.testing.assert_allclose(clamped[1], solved[1], rtol=0, atol=4e-14 * data)


@pytest.mark.parametrize(
    ("x_scale", "y_scale", "sigma"),
    [
        (1e308, 1e308, 1e-300),
        (1e308, 0.0, 5e-324),
        (1.0, 1e308, 1.0),
        (5e-314, 1e-308, 1.7e308),
        (1e-300, 1e300, 1e-300),
        (0.0, 1e-320, 1.0),
    ],
)
def test_extreme_finite_inputs_stay_finite(x_scale, y_scale, sigma):
    rng = np.random.default_rng(5)
    X, y = hard_instance("random", rng, 5)
    X, y = x_scale * X / np.abs(X).max(), y_scale * y / np.abs(y).max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = prox_matrix_perspective(X, y, sigma)
        Omega, eta = info.x
    assert np.all(np.isfinite(Omega)) and np.all(np.isfinite(eta)) and info.converged
    assert not math.isnan(info.root) and not math.isnan(info.certificate)


@pytest.mark.parametrize("kind", ["random", "zeros", "negative", "lowrank", "clusters"])
def test_newton_steps_in_the_issue_range(kind):
    """sigma from 1e-8 to 1e-4 (where 88 of 5100 instances ran to the 50-step cap)."""
    rng = np.random.default_rng(13)
    steps = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for _ in range(40):
            X, y = hard_instance(kind, rng, int(rng.integers(2, 30)))
            sigma = 10 ** rng.uniform(-8, -4)
            info = prox_matrix_perspective(X, y, sigma)
            Omega, eta = info.x
            steps.append(info.n_iter)
            assert optimality(X, y, sigma, Omega, eta) <= 1e-10
    # issue 13's goal: at most 10 steps (measured over 2 x 5100 such instances: docs/prox.md)
    assert max(steps) <= 10


# instances of a 4000-draw sweep that took 11 to 34 Newton steps before the secular roots were
# solved for their correction and the crossing t_c of M(t) was used (docs/prox.md)
PREVIOUSLY_SLOW = [("spread_y", 1113), ("spread_y", 1305), ("spread_y", 3665),
                   ("diag_spread", 3258), ("diag_spread", 3642), ("clusters", 1047),
                   ("clusters", 2487), ("zeros", 1316)]


@pytest.mark.parametrize(("kind", "seed"), PREVIOUSLY_SLOW)
def test_previously_slow_instances_take_at_most_10_steps(kind, seed):
    X, y, sigma = spread_instance(kind, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        info = prox_matrix_perspective(X, y, sigma)
    assert info.converged and info.n_iter <= 10, info.n_iter
    assert optimality(X, y, sigma, *info.x) <= 1e-10
    # homogeneity: the same steps and answer after scaling by a power of two
    scaled = prox_matrix_perspective(2.0**-40 * X, 2.0**-40 * y, 2.0**-40 * sigma)
    np.testing.assert_array_equal(scaled.Omega, 2.0**-40 * info.Omega)


@pytest.mark.parametrize(("tiny", "log10_sigma"), [(1e-5, -5.95), (1e-5, -5.8), (1e-7, -7.8)])
def test_bend_at_zero_eigenvalues_takes_few_steps(tiny, log10_sigma):
    """Zero eigenvalues of X with a tiny y on them bend m(t) from linear to a steep power law;
    with the root in the bend the two-point models zig-zagged (11 to 14 steps before)."""
    d = np.r_[0.0, 0.0, np.linspace(0.5, 5.0, 8)]
    y = np.r_[tiny, -tiny, np.ones(8)]
    sigma = 10.0**log10_sigma
    result = prox_matrix_perspective(np.diag(d), y, sigma)
    assert result.converged and result.n_iter <= 8
    assert optimality(np.diag(d), y, sigma, *result.x) <= 1e-12
    np.testing.assert_allclose(result.Omega, bisection_reference(np.diag(d), y, sigma)[0],
                               rtol=0, atol=1e-12)


def test_kkt_residuals_are_scale_free():
    rng = np.random.default_rng(22)
    X, y = hard_instance("random", rng, 6)
    Omega, eta = prox_matrix_perspective(X, y, 0.3).x
    base = kkt_residuals(X, y, 0.3, Omega, eta)
    scaled = kkt_residuals(1e150 * X, 1e150 * y, 1e150 * 0.3, 1e150 * Omega, 1e150 * eta)
    for name in ("dual_infeasibility", "fenchel_young_gap", "lifted_complementarity"):
        assert getattr(scaled, name) == pytest.approx(getattr(base, name), abs=1e-15)
    # the wrong "zero region" answer next to a large sigma is flagged (it was ~1e-20)
    X_psd = 1e-10 * np.eye(3)
    wrong = kkt_residuals(X_psd, 1e-10 * np.ones(3), 1.0, np.zeros((3, 3)), np.zeros(3))
    assert wrong.dual_infeasibility >= 0.4


def test_eta_keeps_its_relative_accuracy_when_sigma_dominates():
    """Spread-sweep instance 19042 (p = 4, max|X, y| / sigma ~ 1.3e-7, X with eigenvalues near
    1e-7): ``sqrt(2) S*[:p, p]`` was 55% off ``eta`` (scale-free Fenchel-Young gap 5.8e-7);
    ``Omega (Omega + sigma I)^-1 y`` agrees with the first-order closed form ``Omega y / sigma``
    (whose error is O(r) relative) to its accuracy, on the single and the batched path."""
    X, y, sigma = spread_instance("diag_spread", 19042)
    result = prox_matrix_perspective(X, y, sigma)
    Omega, eta = result.x
    w, Q = np.linalg.eigh(X + np.outer(y, y) / (2 * sigma))
    closed = (Q * np.maximum(w, 0.0)) @ Q.T
    assert np.abs(Omega - closed).max() <= 1e-8 * np.abs(closed).max()
    expected = closed @ y / sigma
    assert np.abs(eta - expected).max() <= 1e-8 * np.abs(expected).max()
    residuals = kkt_residuals(X, y, sigma, Omega, eta)
    assert residuals.fenchel_young_gap <= 1e-9 and residuals.range_residual <= 1e-12
    stack = prox_matrix_perspective(np.stack([X, X]), np.stack([y, 2 * y]), sigma)
    np.testing.assert_array_equal(stack.eta[0], eta)



def test_assembly_does_not_cancel_when_omega_is_far_below_x():
    """Spread-sweep instance 15537 (p = 16, sigma 1.9e6, ||Omega*|| ~ 7e-8 ||X||): the smaller
    (negative) side gives ``Omega = X + sum_-``, whose rounding ``eps ||X||`` left Omega with an
    eigenvalue of -1.5e-9 (later -7.8e-9) times its norm; the positive sum is now used there.
    Instance 13914 (p = 39): the assembly's Gu-Eisenstat weights from roots that are iterated
    again at ``t*`` (dual infeasibility 2.1e-9 when the root search's roots were reused)."""
    X, y, sigma = spread_instance("spread_y", 15537)
    Omega, eta = prox_matrix_perspective(X, y, sigma).x
    assert np.linalg.norm(Omega) < 1e-7 * np.linalg.norm(X)
    assert kkt_residuals(X, y, sigma, Omega, eta).max <= 1e-12
    assert np.linalg.eigvalsh(Omega)[0] >= -1e-12 * np.linalg.norm(Omega)
    X, y, sigma = spread_instance("diag_spread", 13914)
    assert kkt_residuals(X, y, sigma, *prox_matrix_perspective(X, y, sigma).x).max <= 1e-12

@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["random", "zeros", "negative", "lowrank", "clusters"]),
    p=st.integers(1, 7),
    log10_ratio=st.floats(-300, 300),
    scale=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_scale_any_ratio(kind, p, log10_ratio, scale, seed):
    rng = np.random.default_rng(seed)
    X, y = hard_instance(kind if p >= 3 else "random", rng, p)
    data = max(np.abs(X).max(), np.abs(y).max())
    sigma = data * 10.0 ** (-log10_ratio)
    # any power of two that keeps data and sigma within the normal floats
    lowest, highest = math.log2(min(data, sigma)), math.log2(max(data, sigma))
    shift = round(-1000 - lowest + scale * (2000 - (highest - lowest)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = prox_matrix_perspective(X, y, sigma)
        Omega, eta = info.x
    assert np.all(np.isfinite(Omega)) and np.all(np.isfinite(eta))
    assert info.converged and info.n_iter <= 16
    assert optimality(X, y, sigma, Omega, eta) <= 1e-9
    c = 2.0**shift  # exact homogeneity through the power-of-two normalization
    Omega_c, eta_c = prox_matrix_perspective(c * X, c * y, c * sigma).x
    # exact wherever c * value is a normal float; an output entry that lands among the
    # subnormals (below 2.2e-308, with fewer bits) is rounded there, on either side
    tiny, subnormal_step = np.finfo(float).tiny, 5e-324
    for got, want in ((Omega_c, c * Omega), (eta_c, c * eta)):
        normal = np.abs(want) >= tiny
        np.testing.assert_array_equal(got[normal], want[normal])
        np.testing.assert_allclose(got[~normal], want[~normal], rtol=0, atol=2 * subnormal_step)
