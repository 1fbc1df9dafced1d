"""Chebyshev steps and bounds against the research note's oracles and closed forms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepsize._reference.instances import gaussian_gram
from stepsize.chebyshev import (
    ORDERS,
    chebyshev_bound,
    chebyshev_order,
    chebyshev_steps,
    contraction_factor,
    expected_squared_error,
    heavy_ball_parameters,
    optimal_constant_step,
    optimal_rate,
    per_step_rate,
)

# Research note section 3: the T = 25 steps of the seed-12 (300, 600) instance, code order.
NOTE_STEPS = [0.1763, 0.1776, 0.1804, 0.1846, 0.1904, 0.1981, 0.2078, 0.2200, 0.2350, 0.2536,
              0.2767, 0.3053, 0.3411, 0.3866, 0.4448, 0.5208, 0.6219, 0.7595, 0.9517, 1.2276,
              1.6344, 2.2440, 3.1383, 4.2946, 5.2739]


@pytest.fixture(scope="module")
def dugd_spectrum():
    return np.linalg.eigvalsh(gaussian_gram(300, 600, 12))


def test_instance_spectrum_matches_notebook(dugd_spectrum):
    assert dugd_spectrum[0] == pytest.approx(0.184191, abs=1e-6)
    assert dugd_spectrum[-1] == pytest.approx(5.678371, abs=1e-6)
    assert dugd_spectrum[-1] / dugd_spectrum[0] == pytest.approx(30.8288, abs=1e-4)


def test_steps_match_note(dugd_spectrum):
    steps = chebyshev_steps(dugd_spectrum[0], dugd_spectrum[-1], 25, order="natural")
    np.testing.assert_allclose(steps, NOTE_STEPS, atol=1e-4)
    assert steps.dtype == np.float64 and steps.shape == (25,)


def test_contraction_and_expected_mse_oracles(dugd_spectrum):
    lmin, lmax = dugd_spectrum[0], dugd_spectrum[-1]
    steps = chebyshev_steps(lmin, lmax, 25)
    assert contraction_factor(steps, dugd_spectrum) == pytest.approx(2.2233e-4, rel=1e-3)
    assert expected_squared_error(steps, dugd_spectrum) == pytest.approx(2.45e-8, rel=1e-2)
    constant = np.full(25, optimal_constant_step(lmin, lmax))
    assert optimal_constant_step(lmin, lmax) == pytest.approx(0.34115, abs=1e-5)
    assert contraction_factor(constant, dugd_spectrum) == pytest.approx(0.1974, abs=1e-4)
    assert expected_squared_error(constant, dugd_spectrum) == pytest.approx(1.048e-3, rel=1e-3)
    assert per_step_rate(steps, dugd_spectrum) == pytest.approx(0.7143, abs=1e-4)
    assert optimal_rate(lmin, lmax) == pytest.approx(0.6948, abs=1e-4)


@pytest.mark.parametrize("T", [1, 2, 7, 25, 64, 300])
def test_bound_closed_forms_agree(T):
    lmin, lmax = 0.3, 12.0
    kappa = lmax / lmin
    cosh_form = 1 / np.cosh(T * np.arccosh((kappa + 1) / (kappa - 1)))
    assert chebyshev_bound(lmin, lmax, T) == pytest.approx(cosh_form, rel=1e-10)
    # The Chebyshev steps attain the bound: the extreme points of T_T on the interval.
    grid = np.linspace(lmin, lmax, 20001)
    assert contraction_factor(chebyshev_steps(lmin, lmax, T), grid) == pytest.approx(
        chebyshev_bound(lmin, lmax, T), rel=1e-6)


def test_rate_decreases_to_optimum():
    rates = [chebyshev_bound(1.0, 100.0, T) ** (1 / T) for T in (4, 16, 64, 256, 1024)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(optimal_rate(1.0, 100.0), rel=2e-3)


def test_single_point_interval():
    assert chebyshev_bound(2.0, 2.0, 5) == 0.0
    np.testing.assert_allclose(chebyshev_steps(2.0, 2.0, 3), 0.5)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 25, 100])
def test_orders_are_permutations(order, T):
    permutation = chebyshev_order(T, order)
    assert sorted(permutation.tolist()) == list(range(T))
    steps = chebyshev_steps(1.0, 10.0, T, order=order)
    np.testing.assert_allclose(np.sort(steps), chebyshev_steps(1.0, 10.0, T, order="natural"))


def test_zigzag_and_fractal_alternate_large_and_small():
    assert chebyshev_order(6, "zigzag").tolist() == [5, 0, 4, 1, 3, 2]
    assert chebyshev_order(4, "fractal").tolist() == [0, 3, 1, 2]
    assert chebyshev_order(6, "descending").tolist() == [5, 4, 3, 2, 1, 0]


def _float32_dense_run(W, steps, samples=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((W.shape[0], samples)).astype(np.float32)
    W32 = W.astype(np.float32)
    C = W32 @ X
    x = np.zeros_like(X)
    for gamma in steps.astype(np.float32):
        x = x + gamma * (C - W32 @ x)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.linalg.norm(x - X) / np.linalg.norm(X))


def test_default_order_is_stable_in_float32_where_natural_diverges(dugd_spectrum):
    W = gaussian_gram(300, 600, 12)
    lmin, lmax = dugd_spectrum[0], dugd_spectrum[-1]
    bound = chebyshev_bound(lmin, lmax, 25)
    assert _float32_dense_run(W, chebyshev_steps(lmin, lmax, 25)) < 2 * bound
    assert _float32_dense_run(W, chebyshev_steps(lmin, lmax, 25, "natural")) > 1.0


@pytest.mark.parametrize("T", [64, 256])
def test_fractal_reaches_bound_float32_kappa_1000(T):
    rng = np.random.default_rng(1)
    n = 120
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigenvalues = np.geomspace(1e-3, 1.0, n)
    W = (Q * eigenvalues) @ Q.T
    W = (W + W.T) / 2
    bound = chebyshev_bound(1e-3, 1.0, T)
    error = _float32_dense_run(W, chebyshev_steps(1e-3, 1.0, T))
    # float32 round-off floor is about 1e-6 relative; the bound is 3e-2 (T=64), 1e-8 (T=256).
    assert error < max(2 * bound, 1e-4)


def test_heavy_ball_parameters_closed_form():
    alpha, beta = heavy_ball_parameters(0.184191, 5.678371)
    assert alpha == pytest.approx(2 * (1 + beta) / (0.184191 + 5.678371), rel=1e-12)
    assert beta == pytest.approx(optimal_rate(0.184191, 5.678371) ** 2)


@pytest.mark.parametrize("args, match", [
    ((0.0, 1.0, 5), "lmin"), ((-1.0, 1.0, 5), "lmin"), ((2.0, 1.0, 5), "lmin must be <= lmax"),
    ((1.0, np.inf, 5), "lmax"), ((np.nan, 1.0, 5), "lmin"), ((1.0, 2.0, 0), "T"),
])
def test_bad_intervals(args, match):
    with pytest.raises(ValueError, match=match):
        chebyshev_steps(*args)
    with pytest.raises(ValueError, match=match):
        chebyshev_bound(*args)


def test_bad_types_and_orders():
    with pytest.raises(TypeError, match="T"):
        chebyshev_steps(1.0, 2.0, 2.5)
    with pytest.raises(ValueError, match="order"):
        chebyshev_steps(1.0, 2.0, 4, order="random")
    with pytest.raises(TypeError, match="lmin"):
        chebyshev_steps("1", 2.0, 4)
    with pytest.raises(ValueError, match="steps"):
        contraction_factor([np.nan], [1.0])


# Scale extremes (issue 11): the steps are homogeneous of degree -1 in (lmin, lmax) and the bound
# of degree 0, so both are computed on [lmin / lmax, 1] and rescaled.

def test_steps_at_the_top_of_the_float_range():
    # used to return zeros: lmax + lmin overflowed
    np.testing.assert_allclose(chebyshev_steps(1.5e308, 1.5e308, 4), 1 / 1.5e308, rtol=1e-15)
    assert chebyshev_bound(1.5e308, 1.5e308, 4) == 0.0
    assert optimal_constant_step(1.5e308, 1.5e308) == pytest.approx(1 / 1.5e308, rel=1e-15)
    alpha, beta = heavy_ball_parameters(1.7e308, 1.7e308)
    assert alpha == pytest.approx(1 / 1.7e308, rel=1e-15) and beta == 0.0


def test_steps_at_the_bottom_of_the_float_range():
    np.testing.assert_allclose(chebyshev_steps(1e-300, 1e-300, 4), 1e300, rtol=1e-15)
    # used to return inf: 1 / 1e-310 is not a float64, so the call is refused clearly
    for function in (chebyshev_steps, optimal_constant_step, heavy_ball_parameters):
        arguments = (1e-310, 1e-310, 4) if function is chebyshev_steps else (1e-310, 1e-310)
        with pytest.raises(ValueError, match=r"lmax=1e-310 is too small"):
            function(*arguments)
    # the bound is scale-free and stays defined
    assert chebyshev_bound(1e-310, 1e-310, 4) == 0.0
    assert chebyshev_bound(1e-310, 1.0, 4) == pytest.approx(1.0, abs=1e-12)


def test_subnormal_lmin_against_the_zero_limit():
    # lmin / lmax = 1e-310: the nodes are those of [0, lmax] to double precision
    t = np.arange(6)
    limit = 2.0 / (1.0 + np.cos((2 * t + 1) * np.pi / 12))
    np.testing.assert_allclose(chebyshev_steps(1e-310, 1.0, 6, order="natural"), limit,
                               rtol=1e-15)
    np.testing.assert_allclose(chebyshev_steps(1e-300, 1e10, 6, order="natural"), limit / 1e10,
                               rtol=1e-15)


@settings(max_examples=200, deadline=None)
@given(
    lmin=st.floats(1e-6, 1.0),
    width=st.floats(1.0, 1e6),
    exponent=st.integers(-1000, 1000),
    T=st.integers(1, 64),
)
def test_homogeneity_under_scaling(lmin, width, exponent, T):
    lmax = lmin * width
    factor = 2.0**exponent
    steps = chebyshev_steps(lmin, lmax, T)
    # a power of two is exact: the results differ by the exponent only
    np.testing.assert_array_equal(chebyshev_steps(lmin * factor, lmax * factor, T),
                                  steps / factor)
    assert chebyshev_bound(lmin * factor, lmax * factor, T) == pytest.approx(
        chebyshev_bound(lmin, lmax, T), rel=1e-12, abs=1e-300)
    assert optimal_constant_step(lmin * factor, lmax * factor) == optimal_constant_step(
        lmin, lmax) / factor
    # any other factor up to rounding
    scale = 10.0 ** (exponent * 0.29)
    np.testing.assert_allclose(chebyshev_steps(lmin * scale, lmax * scale, T), steps / scale,
                               rtol=1e-13)
    # rounding the scaled ends moves kappa - 1 by about 4 eps, and the bound ~ ((kappa - 1) / 4)^T
    # near kappa = 1 by T times that relative amount: the condition of the bound
    conditioning = 8 * T * np.finfo(float).eps / max(lmax / lmin - 1, np.finfo(float).tiny)
    assert chebyshev_bound(lmin * scale, lmax * scale, T) == pytest.approx(
        chebyshev_bound(lmin, lmax, T), rel=1e-9 + conditioning, abs=1e-300)
