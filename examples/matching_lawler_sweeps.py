"""Lawler affinities with outliers: the temperature sweep and dummy nodes (docs/matching.md).

RRWM's protocol as in ``lawler_benchmark``: ``outlier_pair(inliers, outliers,
deformation=0.05, seed=s)``, the affinity ``K`` built by ``pygmtools.utils.build_aff_mat`` from
the edge weights with ``gaussian_aff_fn(sigma=0.15)``. Mean inlier accuracy of
``match_lawler(K, N, N, ...)`` (apfp):

* ``beta``: ``beta = c sqrt(N)`` for c in 1, 2, 3, 4, 5, 7, 10 (4 is ``beta="auto"``), seeds
  0-7, five inlier + outlier settings; then fixed ``beta`` = 10, 20, 30, 40 and pygmtools RRWM
  at 20 + 10, seeds 0-9.
* ``unmatched``: dummy nodes (``unmatched=c``, c = 0, 5, 10, 20) against none, 20 inliers with
  10 and 20 outliers, seeds 0-9: mean inlier accuracy / median CPU ms / mean unmatched nodes
  of graph 1 (CPU time, ``time.process_time``).

Run from the repository root, one BLAS thread (a few minutes each):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/matching_lawler_sweeps.py beta|unmatched
"""

import functools
import statistics
import sys
import time
import warnings

import numpy as np
import pygmtools

from stepsize import ConvergenceWarning
from stepsize.matching import match_lawler, matching_accuracy
from stepsize.matching.generators import outlier_pair

pygmtools.set_backend("numpy")
AFFINITY = functools.partial(pygmtools.utils.gaussian_aff_fn, sigma=0.15)


def lawler_pair(inliers, outliers, seed):
    A, B, truth = outlier_pair(inliers, outliers, deformation=0.05, seed=seed)
    edges_a, edges_b = np.argwhere(A), np.argwhere(B)
    weights_a, weights_b = A[tuple(edges_a.T)][:, None], B[tuple(edges_b.T)][:, None]
    K = pygmtools.utils.build_aff_mat(None, weights_a, edges_a, None, weights_b, edges_b,
                                      edge_aff_fn=AFFINITY)
    return K, truth


def beta_sweep():
    factors = (1, 2, 3, 4, 5, 7, 10)
    print("| inliers + outliers | " + " | ".join(f"c = {c}" for c in factors) + " |")
    print("|---" * (len(factors) + 1) + "|")
    for inliers, outliers in ((20, 6), (20, 10), (20, 20), (40, 10), (40, 20)):
        sums = dict.fromkeys(factors, 0.0)
        for seed in range(8):
            K, truth = lawler_pair(inliers, outliers, seed)
            n = truth.size
            for c in factors:
                result = match_lawler(K, n, n, beta=c * np.sqrt(n))
                sums[c] += matching_accuracy(result.col_ind, truth) / 8
        cells = " | ".join(f"{sums[c]:.3f}" for c in factors)
        print(f"| {inliers} + {outliers} | {cells} |", flush=True)
    fixed, rrwm = dict.fromkeys((10, 20, 30, 40), 0.0), 0.0
    for seed in range(10):
        K, truth = lawler_pair(20, 10, seed)
        n = truth.size
        for beta in fixed:
            fixed[beta] += matching_accuracy(match_lawler(K, n, n, beta=beta).col_ind, truth) / 10
        soft = pygmtools.classic_solvers.rrwm(K, n, n)
        rrwm += matching_accuracy(pygmtools.hungarian(soft).argmax(axis=1), truth) / 10
    cells = ", ".join(f"beta = {b}: {a:.3f}" for b, a in fixed.items())
    print(f"20 + 10, seeds 0-9: {cells}; RRWM {rrwm:.3f}")


def dummy_nodes():
    variants = (None, 0.0, 5.0, 10.0, 20.0)
    print("| outliers | " + " | ".join(f"unmatched={c}" for c in variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for outliers in (10, 20):
        runs = {c: [] for c in variants}
        for seed in range(10):
            K, truth = lawler_pair(20, outliers, seed)
            n = truth.size
            for c in variants:
                start = time.process_time()
                result = match_lawler(K, n, n, unmatched=c)
                seconds = time.process_time() - start
                dropped = result.info["unmatched"][0] if c is not None else 0
                runs[c].append((matching_accuracy(result.col_ind, truth), seconds, dropped))
        cells = " | ".join(
            f"{np.mean([r[0] for r in runs[c]]):.3f} / "
            f"{1000 * statistics.median(r[1] for r in runs[c]):.0f} ms / "
            f"{np.mean([r[2] for r in runs[c]]):.1f}" for c in variants)
        print(f"| {outliers} | {cells} |", flush=True)


if __name__ == "__main__":
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="pygmtools")
    {"beta": beta_sweep, "unmatched": dummy_nodes}[sys.argv[1] if len(sys.argv) > 1 else "beta"]()
