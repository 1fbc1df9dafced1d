"""Issue 16: integer export of real architectures (docs/quantization.md table).

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python examples/lsq_export_architectures.py

Each model: num_classes=10, no pretrained weights, 32x32 inputs, quantize_model(bits=8); batch
norm statistics (momentum None) and step sizes from one training-mode batch of 16 random images;
64 other random images compared with the fake-quantized model in float32 and float64.
"""

from collections import Counter

import torch
from torch import nn

from stepsize.benchmarks.lsq import _batch_statistics, torchvision_models
from stepsize.quantization import export_integer, quantize_model

torch.set_num_threads(1)
tv = torchvision_models()  # before timm: it imports torchvision
import timm  # noqa: E402


def small_vit():
    vit = tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                               hidden_dim=32, mlp_dim=64, num_classes=10)
    nn.init.normal_(vit.heads.head.weight, std=0.1)  # torchvision initializes it to zeros
    return vit


MODELS = {
    "resnet18": lambda: tv.resnet18(num_classes=10),
    "mobilenet_v2": lambda: tv.mobilenet_v2(num_classes=10),
    "efficientnet_b0": lambda: tv.efficientnet_b0(num_classes=10),
    "VisionTransformer (2 layers, dim 32)": small_vit,
    "convnext_atto (timm)": lambda: timm.create_model("convnext_atto", num_classes=10),
    "vit_tiny_patch16_224 (timm, img_size=32)": lambda: timm.create_model(
        "vit_tiny_patch16_224", num_classes=10, img_size=32),
}


def calibrate(model, batch=16, seed=0):
    """Batch-norm statistics and LSQ steps from one training-mode batch; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    return _batch_statistics(model, torch.randn(batch, 3, 32, 32, generator=generator))


def measure(name, build):
    torch.manual_seed(0)
    model = calibrate(quantize_model(build(), bits=8))
    integer = export_integer(model)
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        fake32, out = model(x), integer(x)
        fake64, out64 = model.double()(x.double()), integer(x.double())
    model.float()
    kinds = Counter(op.rsplit("(", 1)[-1].rstrip(")") for op in integer.float_ops)
    ops = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"
    pct = lambda a, b: f"{100 * float((a.argmax(1) == b.argmax(1)).float().mean()):.1f}%"  # noqa: E731
    print(f"| {name} | {len(integer.stages)} | {ops} | {pct(fake32, out)} | {pct(fake64, out64)}"
          f" | {float((out64 - fake64).abs().max()):.3g} | {pct(fake32, fake64)} |", flush=True)


if __name__ == "__main__":
    print("| model | integer layers | float ops reported | argmax vs float32 fake | vs float64 "
          "fake | max abs diff vs float64 fake | float32 fake vs float64 fake |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, build in MODELS.items():
        measure(name, build)
