"""The matrix perspective function of Won (NeurIPS 2020): value, exact prox, certificates,
a PyProximal-style operator and the constrained Gaussian MLE that uses the prox.

    phi(Omega, eta) = 1/2 eta^T Omega^+ eta  (Omega PSD, eta in its range; +inf otherwise)

Main entry: ``prox_matrix_perspective(X, y, sigma)``, returning a ``PerspectiveProxResult``
(``Omega, eta = result.x``); the same call solves a stack with ``X`` of shape ``(b, p, p)`` and
the multi-column function ``1/2 tr(H^T Omega^+ H)`` when ``y`` is a p x k matrix.
"""

from stepsize.prox.certificates import KKTResiduals, kkt_residuals, project_conjugate_domain
from stepsize.prox.gaussian_mle import (
    GaussianMLEResult,
    constrained_gaussian_mle,
    gaussian_mle_objective,
    sample_moments,
)
from stepsize.prox.perspective import (
    PerspectiveProxResult,
    matrix_perspective,
    prox_matrix_perspective,
)
from stepsize.prox.pseudolikelihood import (
    PseudolikelihoodResult,
    pseudolikelihood_graph,
    pseudolikelihood_objective,
)
from stepsize.prox.regression import (
    ScaledLassoResult,
    matrix_scaled_lasso,
    matrix_scaled_lasso_objective,
)

__all__ = [
    "GaussianMLEResult",
    "KKTResiduals",
    "MatrixPerspective",
    "PerspectiveProxResult",
    "PseudolikelihoodResult",
    "ScaledLassoResult",
    "constrained_gaussian_mle",
    "gaussian_mle_objective",
    "kkt_residuals",
    "matrix_perspective",
    "matrix_scaled_lasso",
    "matrix_scaled_lasso_objective",
    "project_conjugate_domain",
    "prox_matrix_perspective",
    "pseudolikelihood_graph",
    "pseudolikelihood_objective",
    "sample_moments",
]


def __getattr__(name: str):
    # MatrixPerspective subclasses pyproximal.ProxOperator when PyProximal is installed; it is
    # built on first access so that importing stepsize.prox does not import PyProximal
    if name == "MatrixPerspective":
        from stepsize.prox import operator

        return operator.MatrixPerspective
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
