"""The deep-unfolded GD notebook's printed values and the test MSE through the dense operator,
shared by ``stepsize reproduce dugd``, ``stepsize bench dugd`` and their tests.

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
