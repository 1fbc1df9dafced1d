"""QAPLIB n <= 50, one start: where apfp's CPU time goes, against scipy FAQ (issue 17).

Summed ``time.process_time`` of ``match_graphs(A, B, maximize=False, seed=0, **options)`` over
the instances with a best-known value, per configuration, minimum of 5 passes. Run from the
repository root (the instances are ``../shared/data/qaplib``, see docs/matching.md):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/qaplib_small_n_profile.py
"""

import sys
import time
import warnings
from pathlib import Path

from scipy.optimize import quadratic_assignment

from stepsize.matching import match_graphs
from stepsize.matching.qaplib import read_qaplib, read_qaplib_solutions

BASE = dict(polish=0, two_opt=False, stall_restarts=0, restart_epsilon=None)
CONFIGS = {
    "per-call overhead only": dict(BASE, max_iter=0),
    "the iteration alone": BASE,
    "+ one IPFP polish step": dict(BASE, polish=1),
    "+ the 2-opt search": dict(BASE, polish=30, two_opt=True),
    # Since the 2-opt search sharpens a run that ends near the barycenter, apfp's default
    # restarts nothing up to 100 nodes; before, bur26*, had20, lipa*, wil50 had a soft-point
    # restart and the esc* instances stall restarts (what these two lines then measured).
    "+ the soft-point restart where allowed (stall_restarts=0)": dict(stall_restarts=0),
    "the default": {},
}


def main(directory: Path, passes: int = 5) -> None:
    best = read_qaplib_solutions(directory / "solutions.csv")
    instances = [q for q in map(read_qaplib, sorted(directory.glob("*.dat")))
                 if q.n <= 50 and q.name in best]
    warnings.simplefilter("ignore")
    for name, options in CONFIGS.items():
        times, iterations = [], 0
        for _ in range(passes):
            start = time.process_time()
            iterations = sum(match_graphs(q.A, q.B, maximize=False, seed=0, **options).n_iter
                             for q in instances)
            times.append(time.process_time() - start)
        print(f"{name}: {min(times):.3f} s, {iterations} outer iterations")
    times = []
    for _ in range(passes):
        start = time.process_time()
        for q in instances:
            quadratic_assignment(q.A, q.B)
        times.append(time.process_time() - start)
    print(f"scipy FAQ: {min(times):.3f} s ({len(instances)} instances)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/qaplib"))
