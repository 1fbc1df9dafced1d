"""Theory-derived step sizes for linear iterations: Chebyshev steps, bounds, spectra, solvers.

numpy/scipy only; solvers also accept torch tensors (any device and float dtype). Reference:
S. Takabe and T. Wadayama, arXiv:2001.05142 and arXiv:2010.13335.
"""

from stepsize.chebyshev.operators import NormalOperator, normal_equations
from stepsize.chebyshev.preconditioning import as_preconditioner
from stepsize.chebyshev.psor import chebyshev_psor, jacobi_map, jacobi_spectrum, psor
from stepsize.chebyshev.schedules import chebyshev_schedule
from stepsize.chebyshev.smoothers import ChebyshevSmoother, attach_smoothers, chebyshev_smoother
from stepsize.chebyshev.solvers import (
    ChebyshevOptions,
    chebyshev_gd,
    chebyshev_semi_iterative,
    conjugate_gradient,
    gradient_descent,
    heavy_ball,
    preconditioned_spectrum,
)
from stepsize.chebyshev.spectrum import Spectrum, estimate_spectrum, marchenko_pastur_edges
from stepsize.chebyshev.steps import (
    ORDERS,
    chebyshev_bound,
    chebyshev_order,
    chebyshev_period,
    chebyshev_steps,
    contraction_factor,
    expected_squared_error,
    heavy_ball_parameters,
    optimal_constant_step,
    optimal_rate,
    per_step_rate,
)

__all__ = [
    "ChebyshevOptions",
    "ChebyshevSmoother",
    "attach_smoothers",
    "chebyshev_schedule",
    "chebyshev_smoother",
    "ORDERS",
    "NormalOperator",
    "Spectrum",
    "as_preconditioner",
    "chebyshev_bound",
    "chebyshev_gd",
    "chebyshev_period",
    "chebyshev_order",
    "chebyshev_psor",
    "chebyshev_semi_iterative",
    "chebyshev_steps",
    "conjugate_gradient",
    "contraction_factor",
    "estimate_spectrum",
    "expected_squared_error",
    "gradient_descent",
    "heavy_ball",
    "heavy_ball_parameters",
    "jacobi_map",
    "jacobi_spectrum",
    "marchenko_pastur_edges",
    "normal_equations",
    "optimal_constant_step",
    "optimal_rate",
    "per_step_rate",
    "preconditioned_spectrum",
    "psor",
]


def __getattr__(name):
    # ChebyshevLR needs torch: loaded on first access so that this package stays numpy-only
    if name == "ChebyshevLR":
        from stepsize.chebyshev._torch_schedules import ChebyshevLR

        return ChebyshevLR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
