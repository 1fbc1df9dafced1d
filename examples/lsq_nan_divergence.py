"""Runs of ``train_model``'s LSQ recipe that diverge to NaN, on torchvision's mobilenet_v2 and
efficientnet_b0 (issue 16's divergence check, the README's "runs diverging to NaN" row).

Per model and seed: ``torchvision.models.<name>(num_classes=10)`` after ``torch.manual_seed``,
80 random 32x32 images with random labels (a ``torch.Generator`` with that seed),
``quantize_model(net, bits=4, example_inputs=x[:2])`` (8-bit first and last layers), then
``train_model`` for one epoch: batch 8 (10 SGD steps), lr 0.01, SGD momentum 0.9, cosine,
default weight decay, ``seed=seed``. A NaN or inf ends the run: in the loss
(``train_model`` raises ``FloatingPointError``) or earlier, in the activations that reach an
input quantizer (``ValueError``). Three rules for the step sizes:

* ``projection``: the library as it is (a step size that an update drives to <= eps or to a
  non-finite value becomes half its previous value; at most a factor 2 per step in training);
* ``eps``: the rule before issue 16 (and torch's ``_LearnableFakeQuantize``'s): every step size
  is clamped to float32 eps after each update (one ulp above it, so that the library's own
  projection, which replaces entries <= eps, leaves it alone) and ``max_change`` is off;
* ``float``: the same network and recipe without quantization (the loss scale of the data).

"lowest step after an update" is the smallest step-size entry that an optimizer update left,
before either rule acted on it. Prints a markdown table and the elapsed time.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv/bin/python examples/lsq_nan_divergence.py [--seeds 0 1 2 3] [--rules ...]
"""

import argparse
import math
import time
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from stepsize.benchmarks.lsq import torchvision_models
from stepsize.quantization import (
    LSQQuantizer,
    TrainingOptions,
    quantize_model,
    step_size_parameters,
    train_model,
)

MODELS = ("mobilenet_v2", "efficientnet_b0")
RULES = ("projection", "eps", "float")
EPS_FLOOR = float(torch.nextafter(torch.tensor(torch.finfo(torch.float32).eps),
                                  torch.tensor(1.0)))


def after_each_update(hook):
    """Attach ``hook`` as the own step post-hook of every optimizer that steps while the
    returned handle lives; torch runs those before the global post-hooks, so ``hook`` sees the
    parameters as the update left them, before stepsize's projection (a global hook)."""
    attached = weakref.WeakSet()

    def attach(optimizer, args, kwargs):
        if optimizer not in attached:
            attached.add(optimizer)
            optimizer.register_step_post_hook(hook)

    return register_optimizer_step_pre_hook(attach)


def run(models, name: str, seed: int, rule: str) -> dict:
    torch.manual_seed(seed)
    net = getattr(models, name)(num_classes=10)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(80, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (80,), generator=generator)
    if rule != "float":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_model(net, bits=4, example_inputs=x[:2])
    if rule == "eps":
        for quantizer in net.modules():
            if isinstance(quantizer, LSQQuantizer):
                quantizer.max_change = None
    steps = list(step_size_parameters(net))
    losses, lowest = [], []

    def record(outputs, targets):
        loss = F.cross_entropy(outputs, targets)
        losses.append(float(loss.detach()))
        return loss

    def after_update(optimizer, args, kwargs):
        if steps:
            lowest.append(min(float(p.detach().min()) for p in steps))
        if rule == "eps":
            with torch.no_grad():
                for p in steps:
                    p.clamp_(min=EPS_FLOOR)

    options = TrainingOptions(epochs=1, lr=0.01, batch_size=8, loss_fn=record)
    handle = after_each_update(after_update)
    try:
        train_model(net, (x, y), options=options, seed=seed, progress=False)
        outcome = "finite"
    except FloatingPointError:  # train_model: the loss of this step is NaN or inf
        outcome = f"NaN loss at step {len(losses)}"
    except ValueError as error:  # an input quantizer met NaN or inf before the loss
        if "finite" not in str(error):
            raise
        outcome = f"NaN activations at step {len(losses) + 1}"
    finally:
        handle.remove()
    finite = [v for v in losses if math.isfinite(v)]
    return {"model": name, "rule": rule, "seed": seed, "outcome": outcome,
            "loss": (min(finite), max(finite)) if finite else None,
            "lowest": min(lowest) if lowest else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = torchvision_models()
    start = time.perf_counter()
    print("| model | rule | seed | result | finite losses (min-max) "
          "| lowest step after an update |")
    print("|---|---|---:|---|---|---:|")
    summary = {}
    for name in args.models:
        for rule in args.rules:
            for seed in args.seeds:
                row = run(models, name, seed, rule)
                loss = "-" if row["loss"] is None else "{:.2f}-{:.2f}".format(*row["loss"])
                low = "-" if row["lowest"] is None else f"{row['lowest']:.3g}"
                print(f"| {name} | {rule} | {seed} | {row['outcome']} "
                      f"| {loss} | {low} |", flush=True)
                summary.setdefault((name, rule), []).append(row["outcome"] != "finite")
    print()
    for (name, rule), diverged in summary.items():
        print(f"{name} {rule}: NaN on {sum(diverged)} of {len(diverged)} seeds")
    print(f"elapsed {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
