"""Ours with the paper's straight-through band against ``ste="rounded"``, paired seed by seed
(docs/quantization.md, "The straight-through band").

For each seed: the FP model of ``stepsize bench lsq``'s bit-width section (``BITWIDTHS_FULL``:
mnist1d CNN, 30 FP + 10 QAT epochs; MNIST-5k ResNet-8 at width 0.5, 6 FP + 2 QAT epochs), then
QAT with ``quantize_model(..., ste="paper")`` and with ``ste="rounded"`` from the same FP weights,
the same initial steps (one seeded training batch) and the same data order, at every bit width.
Prints each seed's accuracies, then per bit width the means and the paired difference (rounded
minus paper: mean and standard error over seeds).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/lsq_ste_paired.py [--dataset mnist1d] [--seeds 10]
        [--bits 4 3 2]
"""

import argparse
import json
import statistics
import time

import torch

from stepsize.benchmarks import lsq

STES = ("paper", "rounded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist1d", "mnist5k"], default="mnist1d")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3, 2])
    args = parser.parse_args()
    config = lsq.BITWIDTHS_FULL
    settings = config[args.dataset]
    data, build = lsq._bitwidth_data_and_model(args.dataset, settings)
    start = time.perf_counter()
    accuracies: dict[str, list[float]] = {f"{b} {s}": [] for b in args.bits for s in STES}
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        float_model = build()
        lsq._fit(float_model, data["train"], epochs=settings["fp_epochs"], lr=config["fp_lr"],
                 batch_size=config["batch_size"], seed=seed)
        for bits in args.bits:
            for ste in STES:
                twins = lsq._bitwidth_twins(float_model, bits, data, dict(config, ste=ste), seed,
                                            {"ours": None})
                accuracy, _, _ = lsq._bitwidth_qat("ours", twins["ours"], data, config,
                                                   settings, bits, seed)
                accuracies[f"{bits} {ste}"].append(accuracy)
        print(f"seed {seed}: " + json.dumps({k: v[-1] for k, v in accuracies.items()}),
              flush=True)
    print(f"| {args.dataset} bits | paper % | rounded % | rounded - paper, paired (points) |")
    print("|---|---|---|---|")
    for bits in args.bits:
        paper, rounded = accuracies[f"{bits} paper"], accuracies[f"{bits} rounded"]
        paired = lsq._paired(rounded, paper)
        print(f"| {bits} | {100 * statistics.mean(paper):.2f} ({100 * min(paper):.1f}-"
              f"{100 * max(paper):.1f}) | {100 * statistics.mean(rounded):.2f} "
              f"({100 * min(rounded):.1f}-{100 * max(rounded):.1f}) | "
              f"{100 * paired['mean']:+.2f} +- {100 * paired['standard_error']:.2f} |")
    print(f"elapsed {time.perf_counter() - start:.0f} s, {args.seeds} seeds")


if __name__ == "__main__":
    main()
