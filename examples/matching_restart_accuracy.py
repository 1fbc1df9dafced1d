"""apfp's soft-point restart vs the adaptive softassign on noisy pairs (docs/matching.md).

Mean accuracy over seeds 0-2 of ``match_graphs(A, B, seed=0, ...)`` on the benchmark's pair
families built from the public generators (dense: ``kb_pair(n, density=1)``, sparse:
``kb_pair(n, density=min(0.2, max(0.01, 10 / n)), sparse=True)``, power-law:
``network_pair(n, rewire=noise)``, geometric: ``edm_pair(n, jitter=noise)``, outliers:
``outlier_pair(20, 5)``), for: apfp without its restart (``restart_epsilon=None``), apfp
(default), ``asm``, and the adaptive softassign from ``10 sqrt(N)`` at every iteration
(``epsilon=1`` and ``0.1``, no restart). The last row averages dense, sparse and power-law
pairs at noise 0.05 and n = 20, 50, 200.

Run from the repository root, one BLAS thread (about a minute):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/matching_restart_accuracy.py
"""

import warnings

from stepsize import ConvergenceWarning
from stepsize.matching import match_graphs, matching_accuracy
from stepsize.matching.generators import edm_pair, kb_pair, network_pair, outlier_pair

VARIANTS = {
    "apfp without restart": {"restart_epsilon": None},
    "apfp (restart)": {},
    "asm": {"method": "asm"},
    "adaptive from 10 sqrt(N), eps 1": {"restart_epsilon": None, "epsilon": 1.0},
    "same, eps 0.1": {"restart_epsilon": None, "epsilon": 0.1},
}
CELLS = [("dense", 200, 0.25), ("dense", 50, 0.25), ("sparse", 200, 0.25),
         ("power-law", 200, 0.25), ("power-law", 50, 0.25), ("outliers", 20, 5),
         ("geometric", 50, 0.05)]
EASY = [(family, n, 0.05) for family in ("dense", "sparse", "power-law") for n in (20, 50, 200)]


def pair(family, n, noise, seed):
    if family == "dense":
        return kb_pair(n, density=1.0, noise=noise, seed=seed)
    if family == "sparse":
        density = min(0.2, max(0.01, 10.0 / n))
        return kb_pair(n, density=density, noise=noise, sparse=True, seed=seed)
    if family == "power-law":
        return network_pair(n, rewire=noise, seed=seed)
    if family == "geometric":
        return edm_pair(n, kind="edm", jitter=noise, seed=seed)
    return outlier_pair(n, noise, seed=seed)


def accuracies(cells):
    sums = dict.fromkeys(VARIANTS, 0.0)
    for family, n, noise in cells:
        for seed in range(3):
            A, B, truth = pair(family, n, noise, seed)
            for name, options in VARIANTS.items():
                result = match_graphs(A, B, seed=0, **options)
                sums[name] += matching_accuracy(result.col_ind, truth)
    return [sums[name] / (3 * len(cells)) for name in VARIANTS]


def main() -> None:
    warnings.simplefilter("ignore", ConvergenceWarning)
    print("| family, n, noise | " + " | ".join(VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 1) + "|")
    for family, n, noise in CELLS:
        label = f"outliers, {n} + {noise}" if family == "outliers" else f"{family}, {n}, {noise}"
        cells = " | ".join(f"{a:.3f}" for a in accuracies([(family, n, noise)]))
        print(f"| {label} | {cells} |", flush=True)
    means = " | ".join(f"{a:.3f}" for a in accuracies(EASY))
    print(f"| dense, sparse, power-law, noise 0.05, n = 20-200 (mean) | {means} |")


if __name__ == "__main__":
    main()
