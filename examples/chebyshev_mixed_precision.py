"""What one float32 Chebyshev period achieves, and the mixed-precision solve built on it
(docs/chebyshev.md, "Mixed precision").

Dense SPD test matrices W = Q diag(lambda) Q^T, n = 1000, lambda log-spaced on [1, kappa] for
kappa 30 and 1000 (Q from the QR of a seeded Gaussian matrix), c ~ N(0, I).

1. One period in float32: for each target reduction eps, the period
   T = ``chebyshev_period(1, kappa, eps)`` of ``chebyshev_gd`` on the float32 copies of W and c
   from x = 0 (exact interval, fractal order), and the relative residual ||c - W x|| / ||c||
   reached, computed in float64: float32 rounding stops it near kappa * eps32 whatever the target.
2. ``chebyshev_gd(W, c, tol=1e-10, options=ChebyshevOptions(mixed_precision=True))`` against the
   float64 solve with the same interval: float32 steps, periods (one float64 product each) and
   the final relative residual.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python examples/chebyshev_mixed_precision.py
"""

import numpy as np

from stepsize.chebyshev import ChebyshevOptions, chebyshev_gd, chebyshev_period

N = 1000
KAPPAS = (30.0, 1000.0)
TARGETS = (1e-3, 1e-5, 1e-7, 1e-10)


def problem(kappa: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(N, N)))
    W = (Q * np.logspace(0, np.log10(kappa), N)) @ Q.T
    return (W + W.T) / 2, rng.normal(size=N)


def relative_residual(W, c, x) -> float:
    return float(np.linalg.norm(c - W @ np.asarray(x, dtype=float)) / np.linalg.norm(c))


def main() -> None:
    eps32 = float(np.finfo(np.float32).eps)
    print("One float32 period from x = 0 (exact interval [1, kappa], fractal order)")
    print(f"{'kappa':>6} {'target':>8} {'T':>4} {'reached':>10} {'kappa*eps32':>12}")
    problems = {kappa: problem(kappa) for kappa in KAPPAS}
    for kappa, (W, c) in problems.items():
        W32, c32 = W.astype(np.float32), c.astype(np.float32)
        for target in TARGETS:
            T = chebyshev_period(1.0, kappa, target)
            result = chebyshev_gd(W32, c32, lmin=1.0, lmax=kappa, max_iter=T,
                                  options=ChebyshevOptions(T=T), warn=False)
            print(f"{kappa:>6.0f} {target:>8.0e} {T:>4} {relative_residual(W, c, result.x):>10.2e}"
                  f" {kappa * eps32:>12.2e}")
    print()
    print("Solve to tol 1e-10 (exact interval): mixed precision vs float64")
    print(f"{'kappa':>6} {'solver':<16} {'steps':>6} {'periods':>8} {'rel. residual':>14}")
    for kappa, (W, c) in problems.items():
        for name, mixed in (("float64", False), ("mixed precision", True)):
            result = chebyshev_gd(W, c, lmin=1.0, lmax=kappa, tol=1e-10, max_iter=100_000,
                                  history=True,
                                  options=ChebyshevOptions(mixed_precision=mixed))
            periods = len(result.history) if mixed else "-"
            print(f"{kappa:>6.0f} {name:<16} {result.n_iter:>6} {periods!s:>8} "
                  f"{relative_residual(W, c, result.x):>14.2e}")


if __name__ == "__main__":
    main()
