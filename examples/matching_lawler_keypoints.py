"""A few hundred keypoints: ``match_lawler`` with a ``FactorizedAffinity`` (docs/matching.md).

``outlier_pair(inliers, outliers, density=..., deformation=0.05, seed=0)`` (200 + 50 nodes and
density 0.05 by default), Gaussian edge affinity ``Kq = exp(-(w_a - w_b)^2 / 0.15)`` over the
directed edge lists (``np.argwhere``) in a ``FactorizedAffinity`` (``K``, (n1 n2)^2 entries, is
never formed); prints inlier accuracy, iterations, wall and CPU seconds of the match and the
peak traced Python memory (``tracemalloc``) of construction and match together.

Run from the repository root, one BLAS thread (peak resident memory from ``/usr/bin/time``):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/time -v \\
        .venv/bin/python examples/matching_lawler_keypoints.py [200 50 0.05]
"""

import sys
import time
import tracemalloc

import numpy as np

from stepsize.matching import FactorizedAffinity, match_lawler, matching_accuracy
from stepsize.matching.generators import outlier_pair


def main(inliers: int, outliers: int, density: float) -> None:
    A, B, truth = outlier_pair(inliers, outliers, density=density, deformation=0.05, seed=0)
    n = inliers + outliers
    tracemalloc.start()
    edges_a, edges_b = np.argwhere(A), np.argwhere(B)
    wa, wb = A[tuple(edges_a.T)], B[tuple(edges_b.T)]
    K = FactorizedAffinity(np.exp(-((wa[:, None] - wb[None]) ** 2) / 0.15), edges_a, edges_b)
    wall, cpu = time.perf_counter(), time.process_time()
    result = match_lawler(K, n, n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1]
    print(f"{n} nodes, {len(edges_a)} and {len(edges_b)} directed edges, Kq {wa.size * wb.size:,} "
          f"entries; inlier accuracy {matching_accuracy(result.col_ind, truth):.4f} in "
          f"{result.n_iter} iterations, {wall:.1f} s wall, {cpu:.1f} s CPU; peak traced "
          f"{peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    args = sys.argv[1:] or ["200", "50", "0.05"]
    main(int(args[0]), int(args[1]), float(args[2]))
