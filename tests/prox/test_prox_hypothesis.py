"""Property-based checks of the prox certificates over random sizes, scales and sigma."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stepsize.prox import kkt_residuals, matrix_perspective, prox_matrix_perspective
from stepsize.prox.perspective import _prox


@settings(max_examples=80, deadline=None)
@given(
    p=st.integers(1, 7),
    log_scale=st.floats(-3, 3),
    log_sigma=st.floats(-3, 3),
    seed=st.integers(0, 2**32 - 1),
    secular=st.booleans(),
    shift=st.sampled_from([0.0, -1.0, 1.0]),
)
def test_certificates_hold(p, log_scale, log_sigma, seed, secular, shift):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((p, p))
    scale, sigma = 10.0**log_scale, 10.0**log_sigma
    X = scale * ((B + B.T) / 2 + shift * np.eye(p))
    y = scale * rng.standard_normal(p)
    if secular:  # the secular solver forced at every size (the private seam of _prox)
        info = _prox(0.5 * (X + X.T), y, sigma, "newton", 1e-12, 50, secular=True)[2]
    else:
        info = prox_matrix_perspective(X, y, sigma)
    Omega, eta = info.x
    assert info.converged
    assert kkt_residuals(X, y, sigma, Omega, eta).max <= 1e-8
    if not info.zero_region:
        value = matrix_perspective(Omega, eta)
        assert abs(value - info.certificate) <= 1e-8 * max(1.0, value, sigma)
