"""apfp against scipy FAQ only, on the 36 real-network pairs of ``real_networks.py``.

The quick form of ``examples/real_networks.py`` for the time goal of issue 17 (apfp's CPU time
at most FAQ's, geometric mean of the per-pair ratios): the same pairs (``rewired_copy``), the
same calls, apfp and FAQ interleaved on each pair, each pair's time the median of
``--repeats`` calls after a warm-up (``time.process_time``). Prints apfp's and FAQ's mean
accuracy, the geometric mean of apfp / FAQ time overall and per graph, and the load average.

Run from the repository root:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/matching_speed_small.py [--seeds 3] [--repeats 5]
"""

import argparse
import os
import pathlib
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from real_networks import GRAPHS, REWIRE, cpu_time, methods, rewired_copy  # noqa: E402

from stepsize import ConvergenceWarning  # noqa: E402
from stepsize.matching import as_adjacency  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    solvers = {name: solve for name, solve in methods().items() if name in ("apfp", "scipy FAQ")}
    print(f"start {time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}")
    accuracy = {name: [] for name in solvers}
    seconds = {name: [] for name in solvers}
    graph_of = []
    for label, build in GRAPHS.items():
        adjacency = as_adjacency(build(), label)[0].toarray()
        for rewire in REWIRE:
            for seed in range(args.seeds):
                A, B, truth = rewired_copy(adjacency, rewire, seed)
                for name, solve in solvers.items():
                    spent, col_ind = cpu_time(solve, A, B, seed, args.repeats)
                    accuracy[name].append(float(np.mean(col_ind == truth)))
                    seconds[name].append(spent)
                graph_of.append(label)
    ratios = np.array(seconds["apfp"]) / np.array(seconds["scipy FAQ"])
    for name in solvers:
        print(f"{name}: mean accuracy {np.mean(accuracy[name]):.3f}, "
              f"summed CPU {np.sum(seconds[name]):.4f} s")
    print(f"apfp / FAQ time, geometric mean over {ratios.size} pairs: "
          f"{np.exp(np.mean(np.log(ratios))):.3f}")
    for label in GRAPHS:
        mine = ratios[np.array(graph_of) == label]
        acc = np.array(accuracy["apfp"])[np.array(graph_of) == label]
        print(f"  {label}: {np.exp(np.mean(np.log(mine))):.3f} ({mine.min():.2f} - "
              f"{mine.max():.2f}), apfp accuracy {acc.mean():.3f}")
    print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
