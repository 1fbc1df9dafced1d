"""Graph matching at large n (issue 17): CPU time and peak memory of ``match_graphs``.

Run from the repository root with one BLAS thread (``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1``); docs/matching.md, *Memory at large n*, quotes each mode:

    /usr/bin/time -v .venv/bin/python examples/large_pair_memory.py pair sparse 10000 [profile]
    .venv/bin/python examples/large_pair_memory.py rows     # n = 1000-5000, time and accuracy
    .venv/bin/python examples/large_pair_memory.py products # float64 vs float32 sparse products

``pair`` builds the benchmark's ``_instance(family, n, 0.05, 0)`` and times ``match_graphs(A, B,
seed=0)`` alone; peak resident memory is reported in units of n^2 float64 values.
"""

import cProfile
import pstats
import resource
import sys
import time

import numpy as np
import scipy.sparse as sp

from stepsize.benchmarks.matching import _instance
from stepsize.matching import match_graphs


def pair(family: str, n: int, profile: bool = False) -> None:
    start = time.process_time()
    A, B, truth = _instance(family, n, 0.05, 0)
    built = time.process_time() - start
    profiler = cProfile.Profile() if profile else None
    start, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    result = match_graphs(A, B, seed=0)
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    accuracy = float(np.mean(np.asarray(result.col_ind) == np.asarray(truth)))
    print(f"build cpu {built:.1f} s; match cpu {cpu:.1f} s, wall {wall:.1f} s; accuracy "
          f"{accuracy}; n_iter {result.n_iter}; objective {result.objective!r}; peak "
          f"{peak / (8.0 * n * n):.2f} n^2 ({peak / 1e9:.2f} GB)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def rows() -> None:
    for family, n in (("sparse", 1000), ("power-law", 1000), ("sparse", 2000),
                      ("power-law", 2000), ("sparse", 5000)):
        A, B, truth = _instance(family, n, 0.05, 0)
        start = time.process_time()
        result = match_graphs(A, B, seed=0)
        cpu = time.process_time() - start
        print(f"{family} {n}: cpu {cpu:.3f} s, accuracy {np.mean(result.col_ind == truth):.4f}, "
              f"objective {result.objective!r}, n_iter {result.n_iter}", flush=True)


def products(n: int = 10000) -> None:
    rng = np.random.default_rng(0)
    A = sp.random_array((n, n), density=0.01, rng=rng, format="csr")
    A = sp.csr_array(A + A.T)
    X = rng.random((n, n))
    block = slice(0, 100)
    for dtype in (np.float64, np.float32):
        Ad, Xd = A.astype(dtype), X.astype(dtype)
        for _ in range(2):
            start = time.process_time()
            Y = Ad[block] @ Xd
            middle = time.process_time()
            Y @ Ad
            print(f"{dtype.__name__}: A[rows] @ X {middle - start:.3f} s, "
                  f"(A[rows] @ X) @ B {time.process_time() - middle:.3f} s")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "pair"
    if mode == "pair":
        pair(sys.argv[2] if len(sys.argv) > 2 else "sparse",
             int(sys.argv[3]) if len(sys.argv) > 3 else 10000, len(sys.argv) > 4)
    elif mode == "rows":
        rows()
    else:
        products()
