"""The matrix perspective function of Won (NeurIPS 2020): value, exact prox, certificates,
a PyProximal-style operator and the constrained Gaussian MLE that uses the prox.

    phi(Omega, eta) = 1/2 eta^T Omega^+ eta  (Omega PSD, eta in its range; +inf otherwise)

Main entry: ``prox_matrix_perspective(X, y, sigma) -> (Omega, eta)``; for stacks of small
problems ``prox_matrix_perspective_batch(X, y, sigma)`` with ``X`` of shape ``(b, p, p)``.
"""

from stepsize.prox.batch import BatchProxInfo, prox_matrix_perspective_batch
from stepsize.prox.certificates import KKTResiduals, kkt_residuals, project_conjugate_domain
from stepsize.prox.gaussian_mle import (
    GaussianMLEResult,
    constrained_gaussian_mle,
    gaussian_mle_objective,
    sample_moments,
)
from stepsize.prox.perspective import (
    PerspectiveProxInfo,
    matrix_perspective,
    prox_matrix_perspective,
)

__all__ = [
    "BatchProxInfo",
    "GaussianMLEResult",
    "KKTResiduals",
    "MatrixPerspective",
    "PerspectiveProxInfo",
    "constrained_gaussian_mle",
    "gaussian_mle_objective",
    "kkt_residuals",
    "matrix_perspective",
    "project_conjugate_domain",
    "prox_matrix_perspective",
    "prox_matrix_perspective_batch",
    "sample_moments",
]


def __getattr__(name: str):
    # MatrixPerspective subclasses pyproximal.ProxOperator when PyProximal is installed; it is
    # built on first access so that importing stepsize.prox does not import PyProximal
    if name == "MatrixPerspective":
        from stepsize.prox import operator

        return operator.MatrixPerspective
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
