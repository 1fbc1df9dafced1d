"""Deep-unfolded GD started from the Chebyshev steps: incremental vs joint training, two learning
rates (docs/unfolding.md, "Training from Chebyshev steps" and "Chebyshev-init learning rate").

The instance is the paper's (300, 600) Gaussian operator, drawn with numpy's legacy generator
exactly as the authors' notebook (seed 12, entries N(0, 1/300)). Each run is
``train_expected_loss(UnfoldedGD(25, A, init="chebyshev"), incremental=..., lr=...)`` with the
notebook's schedule (25 generations x 500 Adam steps): deterministic, float64, on the exact
expected loss. Prints, per run, the expected MSE of the untrained Chebyshev steps, the loss at the
end of the last generation, the smallest and largest generation loss over generations 16-25 (how
far Adam oscillates late in training) and the training time.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python examples/unfolding_chebyshev_init.py
"""

import time

import numpy as np
import torch

from stepsize.unfolding import UnfoldedGD, expected_loss, train_expected_loss

T = 25
RUNS = [  # (incremental, lr)
    (False, 5e-4),
    (False, 2e-3),
    (True, 5e-4),
    (True, 2e-3),
]


def paper_operator(n: int = 300, m: int = 600, seed: int = 12) -> np.ndarray:
    """The notebook's A (m x n): its H (n x m) with N(0, 1/n) entries, transposed."""
    return np.random.RandomState(seed).normal(0.0, 1.0 / np.sqrt(n), (n, m)).T


def main() -> None:
    torch.set_num_threads(1)
    A = paper_operator()
    print(f"{'training':<12} {'lr':>7} {'untrained':>10} {'final':>10} "
          f"{'min g16-25':>10} {'max g16-25':>10} {'train s':>8}")
    for incremental, lr in RUNS:
        model = UnfoldedGD(T, A, init="chebyshev")
        start = expected_loss(model)
        began = time.perf_counter()
        result = train_expected_loss(model, incremental=incremental, lr=lr, progress=False)
        seconds = time.perf_counter() - began
        late = result.losses[15:]
        name = "incremental" if incremental else "joint"
        print(f"{name:<12} {lr:>7.0e} {start:>10.3e} {result.losses[-1]:>10.3e} "
              f"{min(late):>10.3e} {max(late):>10.3e} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
