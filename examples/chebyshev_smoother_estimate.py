"""The smoother's spectral estimate on 2-D linear elasticity: ``estimate_iter`` 15 vs 30
(docs/chebyshev.md, "Convergence factor and time per V-cycle").

The row of ``stepsize bench smoothers`` closest to its factor tolerance is elasticity 200x200 at
degree 3. This script rebuilds that row's hierarchy as the benchmark does (pyamg's
``smoothed_aggregation_solver(A, B=B)`` with numpy's global generator seeded with ``[0, 2]``,
b from ``default_rng([0, 2])``; seed 0) and compares pyamg's ``'chebyshev'`` smoother with
``attach_smoothers(ml, 3, estimate_iter=k, seed=0)`` for k = 15 (the default) and 30: the fine
level's rho (the smoother's interval is ``[rho/30, 1.1 rho]``) against the largest eigenvalue of
``D^{-1} A`` (``eigsh``), and the convergence factor ``(||r_k|| / ||r_0||)^(1/k)`` over up to 12
V-cycles from x0 = 0, k the last cycle above 1e-11 ||r_0|| (the benchmark's definition).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python examples/chebyshev_smoother_estimate.py
"""

import numpy as np
import scipy.sparse as sp
from pyamg import smoothed_aggregation_solver
from pyamg.gallery import linear_elasticity
from pyamg.relaxation.smoothing import change_smoothers
from scipy.sparse.linalg import eigsh

from stepsize.chebyshev import attach_smoothers

GRID, DEGREE, CYCLES, SEED, INDEX = 200, 3, 12, 0, 2


def convergence_factor(ml, b: np.ndarray) -> float:
    residuals = []
    ml.solve(b, x0=np.zeros_like(b), tol=1e-300, maxiter=CYCLES, residuals=residuals)
    r = np.asarray(residuals)
    k = max(int(np.flatnonzero(r > 1e-11 * r[0]).max()), 1)
    return float((r[k] / r[0]) ** (1 / k))


def main() -> None:
    A, B = linear_elasticity((GRID, GRID))
    np.random.seed([SEED, INDEX])  # noqa: NPY002 (pyamg's estimates draw from the legacy global)
    ml = smoothed_aggregation_solver(A, B=B)
    b = np.random.default_rng([SEED, INDEX]).standard_normal(A.shape[0])
    fine = sp.csr_array(ml.levels[0].A)
    scaled = sp.diags_array(1.0 / fine.diagonal()) @ fine
    true_rho = float(eigsh(scaled, k=1, which="LM", return_eigenvectors=False)[0])
    change_smoothers(ml, ("chebyshev", {"degree": DEGREE}), ("chebyshev", {"degree": DEGREE}))
    print(f"elasticity 2-D {GRID}x{GRID}, degree {DEGREE}; rho(D^-1 A) on the fine level "
          f"(eigsh): {true_rho:.4f}")
    print(f"{'smoother':<32} {'fine-level rho':>14} {'vs eigsh':>9} {'factor':>8}")
    pyamg_factor = convergence_factor(ml, b)
    print(f"{'pyamg chebyshev (rho of A)':<32} {'-':>14} {'-':>9} {pyamg_factor:>8.4f}")
    for estimate_iter in (15, 30):
        attach_smoothers(ml, DEGREE, estimate_iter=estimate_iter, seed=SEED)
        rho = ml.levels[0].presmoother.interval[1] / 1.1
        name = f"ours, estimate_iter={estimate_iter}"
        print(f"{name:<32} {rho:>14.4f} {rho / true_rho - 1:>+9.2%} "
              f"{convergence_factor(ml, b):>8.4f}")


if __name__ == "__main__":
    main()
