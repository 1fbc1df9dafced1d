"""Measure subgraph matching (``match_subgraph``) and the torch batch path (docs/matching.md).

Part 1, subgraph accuracy: B ~ G(n2, 0.15), A = B's subgraph induced on n1 random nodes (node
i of A is node ``keep[i]`` of B), for 30 in 40, 50 in 100 and 80 in 100 nodes, seeds 10-29 (the
seeds not used to choose ``SUBGRAPH_RELAXATIONS``). Mean accuracy (fraction of nodes of A sent
to their planted node) and median time per pair of: naive padding (``center=0``, one run: what
``match_graphs`` did before), graspologic's adopted padding (``center=0.5``, one run), the
centered objective with one relaxation, and the default (four relaxations).

Part 2, torch batch vs numpy loop: ``pairs`` Koopmans-Beckmann pairs (``kb_pair(n,
density=0.3, noise=0.05)``, seeds 0..pairs-1; ``--density``), matched one by one with numpy
(``match_graphs(A, B, seed=0)``) and in one call on a (b, n, n) float64 CPU batch; both timed
interleaved (median of ``--repeats``), with the number of pairs whose ``col_ind`` agree.

Run from the repository root, one BLAS thread:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/subgraph_and_batch.py [--seeds 20] [--repeats 5]

(``--seeds 3`` for a quick look; about a minute with the defaults on one idle core.)
"""

import argparse
import statistics
import time
import warnings

import numpy as np

from stepsize import ConvergenceWarning
from stepsize.matching import match_graphs, match_subgraph
from stepsize.matching.generators import kb_pair, subgraph_pair

SUBGRAPH_PROBLEMS = ((30, 40), (50, 100), (80, 100))
VARIANTS = {
    "naive padding (c = 0)": {"center": 0.0, "relaxations": 1},
    "adopted padding (c = 1/2)": {"center": 0.5, "relaxations": 1},
    "centered, 1 relaxation": {"relaxations": 1},
    "centered, 4 relaxations (default)": {},
}




def subgraph_table(seeds):
    print(f"Subgraph accuracy, G(n2, 0.15), seeds 10-{9 + seeds}: mean accuracy / median s")
    print("| problem | " + " | ".join(VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 1) + "|")
    for n1, n2 in SUBGRAPH_PROBLEMS:
        cells = []
        pairs = [subgraph_pair(n1, n2, density=0.15, seed=seed) for seed in range(10, 10 + seeds)]
        for options in VARIANTS.values():
            accuracy, seconds = [], []
            for A, B, keep in pairs:
                start = time.perf_counter()
                result = match_subgraph(A, B, seed=0, progress=False, **options)
                seconds.append(time.perf_counter() - start)
                accuracy.append(np.mean(result.col_ind == keep))
            cells.append(f"{np.mean(accuracy):.3f} / {statistics.median(seconds):.3f}")
        print(f"| {n1} in {n2} | " + " | ".join(cells) + " |")


def batch_table(pairs, sizes, repeats, density):
    import torch

    torch.set_num_threads(1)
    print(f"\ntorch batch (CPU, float64, one thread) vs numpy loop, {pairs} pairs of "
          f"kb_pair(n, density={density}, noise=0.05), median of {repeats} after a warm-up")
    print("| n | numpy loop s | torch batch s | ratio | same col_ind | accuracy numpy / torch |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        problems = [kb_pair(n, density=density, noise=0.05, seed=s) for s in range(pairs)]
        A = torch.stack([torch.as_tensor(a) for a, _, _ in problems])
        B = torch.stack([torch.as_tensor(b) for _, b, _ in problems])
        loop, batch = [], []
        for _ in range(repeats + 1):  # interleaved; the first round is a warm-up
            start = time.perf_counter()
            ours = [match_graphs(a, b, seed=0, progress=False) for a, b, _ in problems]
            loop.append(time.perf_counter() - start)
            start = time.perf_counter()
            tensors = match_graphs(A, B, seed=0, progress=False)
            batch.append(time.perf_counter() - start)
        same = sum(np.array_equal(r.col_ind, t.col_ind) for r, t in zip(ours, tensors))
        truth = [p[2] for p in problems]
        acc = [np.mean([np.mean(r.col_ind == t) for r, t in zip(results, truth)])
               for results in (ours, tensors)]
        loop_s, batch_s = statistics.median(loop[1:]), statistics.median(batch[1:])
        print(f"| {n} | {loop_s:.3f} | {batch_s:.3f} | {batch_s / loop_s:.2f} | "
              f"{same}/{pairs} | {acc[0]:.3f} / {acc[1]:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20,
                        help="subgraph seeds (from 10); 0 skips the subgraph table")
    parser.add_argument("--pairs", type=int, default=16, help="pairs in the torch batch")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200],
                        help="node counts of the batch pairs")
    parser.add_argument("--density", type=float, default=0.3, help="edge density of the pairs")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (+1 warm-up)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    if args.seeds > 0:
        subgraph_table(args.seeds)
    batch_table(args.pairs, args.sizes, args.repeats, args.density)


if __name__ == "__main__":
    main()
