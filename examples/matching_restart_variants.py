"""Why apfp restarts: variants of the iteration on one large power-law pair (docs/matching.md).

On ``network_pair(n, rewire=0.05, seed=0)`` (n = 5000 by default) times ``match_graphs(A, B,
seed=0, ...)`` with public options only: apfp without its soft-point restart
(``restart_epsilon=None``), the same with a fixed ``beta`` (3000, 20000), IPFP continued from the
first variant's soft iterate (``method="ipfp", init=X``), the adaptive softassign from the start
(``epsilon=1`` and ``0.1``, ``beta_0 = 10 sqrt(N)``, no restart), ``asm`` and the default apfp.
Prints accuracy, edge correctness, iterations, mean row maximum of the last iterate and CPU
seconds (``time.process_time``) per variant.

Run from the repository root, one BLAS thread (roughly 15 minutes of CPU at n = 5000; ``--n 1000``
for a quick look):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/matching_restart_variants.py [--n 5000]
"""

import argparse
import time
import warnings

from stepsize import ConvergenceWarning
from stepsize.matching import match_graphs, score_matching
from stepsize.matching.generators import network_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    n = parser.parse_args().n
    A, B, truth = network_pair(n, rewire=0.05, seed=0)
    soft = {}
    variants = {
        "apfp without restart (restart_epsilon=None)": {"restart_epsilon": None},
        "apfp (default: first run + restart)": {},
        "asm": {"method": "asm"},
        "adaptive softassign from 10 sqrt(N), epsilon = 1": {"restart_epsilon": None,
                                                             "epsilon": 1.0},
        "same, epsilon = 0.1": {"restart_epsilon": None, "epsilon": 0.1},
        "apfp without restart, fixed beta = 20000": {"restart_epsilon": None, "beta": 20000.0},
        "apfp without restart, fixed beta = 3000": {"restart_epsilon": None, "beta": 3000.0},
        "ipfp from the soft iterate of the first row": {"method": "ipfp", "init": soft},
    }
    print(f"network_pair({n}, rewire=0.05, seed=0), {A.nnz // 2} edges")
    print("| variant | accuracy | EC | iterations | mean row max | CPU s |")
    print("|---|---|---|---|---|---|")
    for name, options in variants.items():
        if options.get("init") is soft:
            options = {**options, "init": soft["X"]}
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = match_graphs(A, B, seed=0, **options)
        seconds = time.process_time() - start
        soft.setdefault("X", result.X)
        score = score_matching(A, B, result.col_ind, truth=truth)
        print(f"| {name} | {score.accuracy:.4f} | {score.edge_correctness:.3f} | "
              f"{result.n_iter} | {result.info.get('mean_row_max', float('nan')):.3f} | "
              f"{seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
