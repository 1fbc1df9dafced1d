"""Newton steps of ``prox_matrix_perspective`` on the issue-13 sets: the table of docs/prox.md.

Run from the repository root (1 BLAS thread; ``--workers 2`` splits the problems over 2 processes):

    OMP_NUM_THREADS=1 .venv/bin/python examples/prox_newton_steps.py [--quick] [--workers N]

Sets (every problem solved by one call of ``prox_matrix_perspective``, ConvergenceWarning as an
error; a step is one evaluation of ``m`` and ``m'`` after the first, the result's ``n_iter``):

* spread sweep: ``stepsize.benchmarks.prox.spread_instance(kind, index)`` for index 0..19999,
  kind ``SPREAD_KINDS[index % 8]`` (sigma 1e-8..1e8, p 2..39); ``--quick``: every 9th index;
* issue range: ``stepsize.benchmarks.prox.issue_range_instances(seed, 5100)`` for seeds 0 and
  7 (``hard_instance`` kinds, sigma 10^U(-8, -4), p 2..39); ``--quick``: 1000 per seed;
* scale sweep: ``stepsize.benchmarks.prox.scale_sweep_instances(0, 10)``, ratios
  ``max|X, y| / sigma = 10^k``, k = -300, -290, ..., 300, 10 instances per kind (3050 problems);
  ``--quick``: 2 per kind.

Prints, per kind: problems, crashes / NaN / ConvergenceWarning, > 10 steps, max and mean steps,
the largest of the four scale-free KKT residuals; then every problem over 10 steps.
"""

from __future__ import annotations

import argparse
import functools
import math
import multiprocessing
import warnings

import numpy as np


@functools.lru_cache(maxsize=4)
def _instances(name, args):
    from stepsize.benchmarks.prox import issue_range_instances, scale_sweep_instances

    return (issue_range_instances if name == "issue" else scale_sweep_instances)(*args)


def _solve(task):
    """``(set, kind, label, steps or None, failure or None, max KKT)`` of one problem."""
    from stepsize import ConvergenceWarning
    from stepsize.benchmarks.prox import spread_instance
    from stepsize.prox import kkt_residuals, prox_matrix_perspective

    name, kind, label, args = task
    if name == "spread":
        X, y, sigma = spread_instance(kind, label)
    else:
        _, X, y, sigma = _instances(name, args)[label]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            result = prox_matrix_perspective(X, y, sigma)
    except ConvergenceWarning:
        return name, kind, label, None, "warning", 0.0
    except Exception as error:  # noqa: BLE001 (a crash is what is counted here)
        return name, kind, label, None, f"crash {type(error).__name__}", 0.0
    Omega, eta = result.x
    if not (np.all(np.isfinite(Omega)) and np.all(np.isfinite(eta))):
        return name, kind, label, None, "nan", 0.0
    r = kkt_residuals(X, y, sigma, Omega, eta)
    kkt = max(r.dual_infeasibility, r.fenchel_young_gap, r.primal_infeasibility,
              r.lifted_complementarity)
    return name, kind, label, int(result.n_iter), None, float(kkt)


def _tasks(quick: bool):
    from stepsize.benchmarks.prox import SPREAD_KINDS

    tasks = [("spread", SPREAD_KINDS[index % 8], index, None)
             for index in range(0, 20000, 9 if quick else 1)]
    count = 1000 if quick else 5100
    for seed in (0, 7):
        tasks += [("issue", f"seed {seed}", index, (seed, count)) for index in range(count)]
    per_kind = 2 if quick else 10
    for index, (kind, *_) in enumerate(_instances("scale", (0, per_kind))):
        tasks.append(("scale", kind, index, (0, per_kind)))
    return tasks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the problems")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    args = parser.parse_args()
    tasks = _tasks(args.quick)
    if args.workers > 1:
        with multiprocessing.Pool(args.workers) as pool:
            results = pool.map(_solve, tasks, chunksize=64)
    else:
        results = [_solve(task) for task in tasks]
    table = {}
    for name, kind, label, steps, failure, kkt in results:
        row = table.setdefault((name, kind), {"n": 0, "fail": {}, "steps": [], "kkt": 0.0,
                                              "over": []})
        row["n"] += 1
        if failure is not None:
            row["fail"][failure] = row["fail"].get(failure, 0) + 1
            continue
        row["steps"].append(steps)
        row["kkt"] = max(row["kkt"], kkt)
        if steps > 10:
            row["over"].append((label, steps))
    print("| set | kind | problems | crashes, NaN, warnings | > 10 steps | max steps | "
          "mean steps | max scale-free KKT |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, kind), row in table.items():
        steps = np.array(row["steps"] or [0])
        fail = row["fail"]
        crashes = sum(v for k, v in fail.items() if k.startswith("crash"))
        print(f"| {name} | {kind} | {row['n']} | {crashes}, {fail.get('nan', 0)}, "
              f"{fail.get('warning', 0)} | {len(row['over'])} | {steps.max()} | "
              f"{steps.mean():.2f} | {row['kkt']:.1e} |")
    over = [(name, kind, label, steps) for (name, kind), row in table.items()
            for label, steps in row["over"]]
    total = sum(len(row["steps"]) for row in table.values())
    largest = max(max(row["steps"] or [0]) for row in table.values())
    print(f"\n{len(results)} problems, {total} solved, {len(over)} over 10 steps, max {largest}"
          f", total steps {sum(sum(row['steps']) for row in table.values())}")
    for name, kind, label, steps in over:
        print(f"  {name} {kind} {label}: {steps} steps")
    if math.isfinite(largest) and largest > 10:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
