"""The bit-width section of ``stepsize bench lsq`` alone (docs/quantization.md, "Bit widths").

For each seed: an FP model trained with ``train_model`` (SGD momentum 0.9, cosine LR 0.1), then
QAT of every method (ours, torch's native learnable fake-quant op, brevitas with a learned
threshold, brevitas' default quantizers, torchao's fake-quant primitive) from the same FP
weights with the same recipe, at 4, 3 and 2 bits. The configuration is the full bench's
``BITWIDTHS_FULL`` (3 seeds; mnist1d: 5,000 generated samples, 30 FP + 10 QAT epochs;
MNIST-5k: ResNet-8 at width 0.5, 4,000 training images, 6 FP + 2 QAT epochs), run through the
public ``stepsize.benchmarks.lsq.run`` with the rest of the bench switched off (no LeNet bit
widths, no architectures, no deployment; the LeNet FP model that ``run`` always trains is cut to
one epoch on 500 images and is not reported). Prints the bench's bit-width table as markdown.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/lsq_docs_bitwidths.py [--datasets mnist1d mnist5k]
        [--bits 4 3 2] [--seeds 3] [--activation-init lsq] [--ste paper]

``--activation-init lsq`` gives every input quantizer the paper's initial step instead of the
layers' default (``"auto"``: lowest quantization error below 8 bits, min/max at 8 bits, the
first and last layers'). ``--ste paper`` gives ours the paper's straight-through band instead
of ``quantize_model``'s default, ``"rounded"`` (torch's learnable op's).
"""

import argparse
import time

from stepsize.benchmarks import lsq
from stepsize.report import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=["mnist1d", "mnist5k"],
                        default=["mnist1d", "mnist5k"])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3, 2])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--activation-init", default=None)
    parser.add_argument("--ste", choices=["paper", "rounded"], default=None)
    args = parser.parse_args()
    bitwidths = dict(lsq.BITWIDTHS_FULL, datasets=args.datasets, bits=args.bits,
                     seeds=args.seeds)
    for key in ("activation_init", "ste"):
        if getattr(args, key) is not None:
            bitwidths[key] = getattr(args, key)
    config = dict(lsq.QUICK, bits=[], train=500, fp_epochs=1, architectures=[],
                  bitwidths=bitwidths)
    start = time.perf_counter()
    result = lsq.run(config, args.seed)
    for table in result["tables"]:
        if table["title"].startswith("LSQ bit widths"):
            print(markdown_table(table))
    print(f"goal: {result['bitwidths']['goal']}")
    print(f"elapsed {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
