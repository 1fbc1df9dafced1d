"""The deep-unfolded GD notebook's printed values, the test MSE through the dense operator, and
the noisy deblurring problem with the best expected MSE any T-step GD can reach; shared by
``stepsize reproduce dugd``, ``stepsize bench dugd`` and the tests of :mod:`stepsize.unfolding`.

Reference: ``DUGD_LMS_example.ipynb`` (Takabe & Wadayama, arXiv:2001.05142), on the (300, 600)
instance of :func:`stepsize._reference.instances.gaussian_operator`.
"""

from __future__ import annotations

import numpy as np

# The notebook's learned steps, as printed after 25 generations of minibatch training.
NOTEBOOK_STEPS = (
    2.7968, 0.1583, 2.7524, 0.1761, 2.6692, 0.1789, 2.4023, 0.1841, 2.0442, 0.1988,
    1.7192, 0.1905, 1.1071, 0.2077, 0.8197, 0.2200, 0.6515, 0.2353, 0.5380, 0.2542,
    0.4552, 0.3079, 0.2783, 0.3924, 0.3455,
)
# The notebook's printed test MSE at t = 25 with those steps.
NOTEBOOK_TEST_MSE = 3.86385e-7


def _model(A, steps):
    from stepsize.unfolding import UnfoldedGD

    return UnfoldedGD(len(steps), A, init=np.asarray(steps, dtype=np.float64))


def dense_mse(A, steps, x_test) -> float:
    """Mean squared error of ``x_T`` for the signals ``x_test`` (batch, n), ``y = A x``, through
    the dense operator in the dtype of ``x_test``, as the notebook evaluates.

    >>> import torch
    >>> dense_mse(np.eye(2), [1.0], torch.ones(3, 2, dtype=torch.float64))
    0.0
    """
    import torch

    model = _model(A, steps)
    with torch.no_grad():
        return float((model(model.operator.apply(x_test)) - x_test).square().mean())


def dense_mse_curve(A, steps, x_test) -> list[float]:
    """The test MSE of every iterate ``x_0 .. x_T`` (see :func:`dense_mse`).

    >>> import torch
    >>> dense_mse_curve(np.eye(2), [0.5], torch.ones(3, 2, dtype=torch.float64))
    [1.0, 0.25]
    """
    import torch

    model = _model(A, steps)
    with torch.no_grad():
        y = model.operator.apply(x_test)
        return [float((x - x_test).square().mean()) for x in model.iterates(y)]


def deblurring_problem(n: int, width: float = 2.0):
    """A 1-D Gaussian blur (``width`` samples, unit DC gain, zero boundary) and the signal
    covariance exp(-|i - j| / 10). Width 2: A^T A numerically singular; width 1: its condition
    number is 4.80e3 at n = 128 (4.72e3 at 64, 4.83e3 at 256), the operator of issue 14.

    >>> A, covariance = deblurring_problem(16)
    >>> A.shape, round(float(A.sum(axis=1)[8]), 6), bool(covariance[0, 1] == np.exp(-0.1))
    ((16, 16), 0.999916, True)
    """
    from scipy.linalg import toeplitz

    kernel = np.exp(-0.5 * (np.arange(n) / width) ** 2)
    index = np.arange(n)
    return (toeplitz(kernel / (kernel[0] + 2 * kernel[1:].sum())),
            np.exp(-np.abs(index[:, None] - index[None, :]) / 10.0))


def best_gd_loss(A, covariance, noise_std: float, T: int) -> float:
    """The least expected MSE any T-step GD (x_0 = 0) can reach: its error polynomial
    p(lambda) = prod_t (1 - gamma_t lambda) has p(0) = 1 and degree T, and over ALL such
    polynomials (1/n) sum_i [d_i p(l_i)^2 + s^2 (1 - p(l_i))^2 / l_i] is a linear least-squares
    problem (Chebyshev basis), computed in the eigenbasis of A^T A, independently of training.

    >>> round(best_gd_loss(np.eye(2), np.eye(2), 0.0, 1), 12)   # gamma = 1 solves exactly
    0.0
    """
    eigenvalues, vectors = np.linalg.eigh(A.T @ A)
    eigenvalues = np.maximum(eigenvalues, 1e-300)
    weights = np.einsum("ij,ik,kj->j", vectors, covariance, vectors)
    basis = np.polynomial.chebyshev.chebvander(2 * eigenvalues / eigenvalues[-1] - 1, T - 1)
    design = eigenvalues[:, None] * basis
    rows = np.vstack([np.sqrt(weights)[:, None] * design,
                      (noise_std / np.sqrt(eigenvalues))[:, None] * design])
    target = np.concatenate([-np.sqrt(weights), np.zeros_like(eigenvalues)])
    coefficients, *_ = np.linalg.lstsq(rows, target, rcond=None)
    p = 1 + design @ coefficients
    return float(np.mean(weights * p**2 + noise_std**2 * (1 - p) ** 2 / eigenvalues))
