"""The prox on the author's test instance, against the values of ``MatrixPerspective.jl``.

``X = diag(1, 0, -1)``, ``y = (1, 2, 0)``, ``sigma = 1``: the regression test of the author's
Julia package (``won-j/MatrixPerspective.jl``, ``test/runtests.jl``), whose values are copied
below. Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python examples/prox_author_instance.py

Prints the root ``t*`` (full ``repr``) beside the author's, the largest entry difference of
``(Omega*, eta*)`` from the author's, the certificate ``sigma - t*`` against
``phi(Omega*, eta*)``, the Newton steps and the largest scale-free KKT residual. The same
instance is the first "special case" of ``stepsize reproduce prox``.
"""

from __future__ import annotations

import numpy as np

from stepsize.prox import kkt_residuals, matrix_perspective, prox_matrix_perspective

AUTHOR_OMEGA = np.array([[1.066944081426201, 0.2111491993644736, 0.0],
                         [0.2111491993644736, 0.6659884405376072, 0.0],
                         [0.0, 0.0, 0.0]])
AUTHOR_ETA = np.array([0.6340926854346827, 0.845886972140417, 0.0])
AUTHOR_ROOT = 0.39586583682156734


def main() -> None:
    X, y, sigma = np.diag([1.0, 0.0, -1.0]), np.array([1.0, 2.0, 0.0]), 1.0
    result = prox_matrix_perspective(X, y, sigma)
    Omega, eta = result.x
    error = max(np.abs(Omega - AUTHOR_OMEGA).max(), np.abs(eta - AUTHOR_ETA).max())
    print(f"root t* = {result.root!r} (author {AUTHOR_ROOT!r}, "
          f"difference {abs(result.root - AUTHOR_ROOT):.1e})")
    print(f"max |(Omega*, eta*) - author's| = {error:.1e}")
    print(f"certificate sigma - t* = {result.certificate!r}, "
          f"|certificate - phi(Omega*, eta*)| = "
          f"{abs(result.certificate - matrix_perspective(Omega, eta)):.1e}")
    print(f"Newton steps {result.n_iter}, converged {result.converged}, "
          f"max scale-free KKT residual {kkt_residuals(X, y, sigma, Omega, eta).max:.1e}")


if __name__ == "__main__":
    main()
