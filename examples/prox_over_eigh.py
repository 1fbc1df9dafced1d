"""Time of ``prox_matrix_perspective`` over one ``numpy.linalg.eigh`` of the same ``X``.

The issue-13 goal "p = 2000 in at most 1.5 eigh" (docs/prox.md, README). Run from the
repository root with one BLAS thread:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python examples/prox_over_eigh.py [--p 2000] [--runs 9] [--repeat 1]

Each repeat calls ``stepsize.benchmarks.prox.prox_over_eigh(p, runs)``: one
``random_prox_instance`` (seed 0) at sigma = 1, a warm-up, then ``runs`` interleaved
prox / ``eigh`` pairs. Prints, per repeat and clock (CPU, then wall): the median prox and
``eigh`` seconds, the ratio of the medians and the range of the per-pair ratios.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from stepsize.benchmarks.prox import prox_over_eigh

    for repeat in range(args.repeat):
        result = prox_over_eigh(args.p, args.runs)
        for clock in ("cpu", "wall"):
            row = result[clock]
            low, high = row["pairs"]
            print(f"p = {args.p}, runs = {args.runs}, repeat {repeat}, {clock}: "
                  f"prox {row['prox']:.3f} s, eigh {row['eigh']:.3f} s, "
                  f"ratio {row['ratio']:.2f} (pairs {low:.2f} to {high:.2f})", flush=True)


if __name__ == "__main__":
    main()
