"""Training-step time of the small torchvision ViT, ours vs torch's native learnable fake-quant
op, in lockstep (issue 16's step-time goal, <= 1.05x native).

The model and data are those of ``stepsize bench lsq``'s small ViT (4 layers, dim 64, patch 8,
32x32 inputs, 4-bit middle layers, 8-bit first/last), converted and fitted for one epoch as the
bench does; the native twin is the bench's ``_native_model``. Each of ``STEPS`` iterations times
one SGD step (forward, backward, update) of each model in turn, as thread CPU time (other
processes' time slices do not count); the first 10 are dropped. Prints the median forward,
backward, optimizer and total times and their ratios, for ours with the paper's
straight-through band (``ste="paper"``) and with ``ste="rounded"`` (``quantize_model``'s
default): two copies of the converted model with every quantizer set to one band.

    OMP_NUM_THREADS=1 .venv/bin/python examples/lsq_vit_step_lockstep.py [STEPS]
"""

import copy
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from stepsize.benchmarks import lsq as bench
from stepsize.quantization import LSQQuantizer

warnings.simplefilter("ignore")
torch.set_num_threads(1)


def setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(160, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (160,), generator=g)
    torch.manual_seed(seed)
    net = bench.torchvision_models().VisionTransformer(
        image_size=32, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10)
    bench._convert(net, 4, x[:2])
    bench._fit(net, (x, y), epochs=1, lr=0.01, batch_size=8, seed=seed)
    return net, x, y


def optimizer(model):
    names = ("step_size", "scale")
    steps = [p for n, p in model.named_parameters() if n.endswith(names)]
    ids = {id(p) for p in steps}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.SGD([{"params": rest, "weight_decay": 1e-4},
                            {"params": steps, "weight_decay": 0.0}], lr=0.001, momentum=0.9)


def main(steps: int) -> None:
    net, x, y = setup()
    models = {"ours": copy.deepcopy(net).train(), "rounded": copy.deepcopy(net).train(),
              "native": bench._native_model(net).train()}
    for key, band in (("ours", "paper"), ("rounded", "rounded")):
        for module in models[key].modules():
            if isinstance(module, LSQQuantizer):
                module.ste = band
    opts = {k: optimizer(m) for k, m in models.items()}
    parts = {k: {"fwd": [], "bwd": [], "opt": [], "all": []} for k in models}
    for i in range(steps):
        idx = torch.arange(8) + (i % 20) * 8
        for k, model in models.items():
            t0 = time.thread_time_ns()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            t1 = time.thread_time_ns()
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.thread_time_ns()
            opts[k].step()
            t3 = time.thread_time_ns()
            if i >= 10:
                for n, v in zip(("fwd", "bwd", "opt", "all"), (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    parts[k][n].append(v / 1e3)
    for n in ("fwd", "bwd", "opt", "all"):
        a, r, b = (statistics.median(parts[k][n]) for k in ("ours", "rounded", "native"))
        print(f"{n}: ours paper {a:8.1f} us, ours rounded {r:8.1f} us, native {b:8.1f} us, "
              f"ratios {a / b:.3f} / {r / b:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
