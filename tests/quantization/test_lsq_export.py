"""Integer export of traceable models (issue 16): graph order, residual adds, concatenation,
grouped convolutions, attention projections, batch norm folded, float operations reported.

The reference is the fake-quantized model itself, run in float64: the integer model computes the
same quantization exactly (integer accumulators), so the two agree to float64 rounding, and the
float32 fake-quantized model agrees with both up to its own rounding-tie flips."""

import pytest
import torch
from torch import nn

from stepsize.benchmarks.lsq import _batch_statistics
from stepsize.quantization import LSQQuantizer, export_integer, quant_layers, quantize_model


def _calibrate(model, shape, seed=0):
    """Batch-norm statistics from one training-mode batch, then the step sizes (eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    return _batch_statistics(model, torch.randn(8, *shape, generator=generator))


def _agreement(model, integer, x):
    """(argmax agreement with the fake model evaluated in float64, the arithmetic the integer
    model performs exactly (the bench's goal), max |integer - float64 fake| / scale). Against
    the float32 fake model, random-weight networks (near-tied logits) flip an argmax on a
    rounding tie now and then (mobilenet_v2 with 8-bit min/max input steps: 1 of 8)."""
    with torch.no_grad():
        out = integer(x)
        fake64, out64 = model.double()(x.double()), integer(x.double())
    model.float()
    assert out.dtype == torch.float32 and out64.dtype == torch.float64
    # the float32 run of the integer model: the same codes up to float32 rounding ties
    assert float((out.double() - out64).abs().max() / out64.abs().max()) <= 1e-2
    agreement = float((fake64.argmax(1) == out64.argmax(1)).float().mean())
    return agreement, float((out64 - fake64).abs().max() / fake64.abs().max())


class _Block(nn.Module):
    """Residual add, concatenation, a grouped and a depthwise conv, SiLU, batch norm after a
    ReLU (not foldable), a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.after_relu = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y = self.stem(x)
        z = torch.relu(self.norm(self.grouped(y)) + y)
        w = nn.functional.silu(self.depthwise(z))
        u = self.after_relu(torch.cat([z, w], dim=1))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(u, 1), 1))


def test_residual_concat_grouped_model_is_exact_and_reports_float_ops():
    torch.manual_seed(0)
    model = _calibrate(quantize_model(_Block(), bits=4, first_last_bits=8), (3, 8, 8))
    integer = export_integer(model)
    x = torch.randn(64, 3, 8, 8)
    agreement, error = _agreement(model, integer, x)
    assert agreement >= 0.999 and error <= 1e-12
    assert integer.float_ops == ["silu (silu)", "after_relu (BatchNorm2d)"]
    # stem and grouped batch norms folded away, the one after the ReLU and concat kept
    kinds = [type(m).__name__ for m in integer.graph_module.modules()]
    assert kinds.count("BatchNorm2d") == 1 and kinds.count("IntegerLayer") == 4
    stages = integer.stages
    assert [s.name for s in stages] == ["stem.0", "grouped", "depthwise", "head"]
    assert stages[1].weight_codes.dtype == torch.int8
    assert stages[1].weight_codes.abs().max() <= 8  # 4-bit codes -8..7
    # input codes against the fake quantizers' codes, layer by layer
    captured = []
    hooks = [layer.input_quantizer.register_forward_hook(
        lambda module, args, out: captured.append(out / module.step_size.detach()))
        for _, layer in quant_layers(model)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    for fake, codes in zip(captured, integer.input_codes(x), strict=True):
        assert codes.dtype == torch.int32
        assert float((fake.round() == codes).float().mean()) >= 0.999
    acc = stages[-1].accumulate(integer.input_codes(x)[-1])
    assert acc.dtype == torch.int32


def test_attention_projections_are_integer():
    torch.manual_seed(0)

    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(6, 8)
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            h = self.embed(x)
            return self.head(self.attention(h, h, h, need_weights=False)[0].mean(1))

    model = quantize_model(Attend(), bits=8).eval()
    with torch.no_grad():
        model(torch.randn(8, 5, 6))
    integer = export_integer(model)
    agreement, error = _agreement(model, integer, torch.randn(32, 5, 6))
    assert agreement >= 0.999 and error <= 1e-12
    assert "attention (softmax attention)" in integer.float_ops
    assert [s.name for s in integer.stages] == ["embed", "attention.out_proj", "head"]


@pytest.mark.parametrize(("name", "layers", "groups"),
                         [("resnet18", 21, 1), ("mobilenet_v2", 53, 960)])
def test_resnet18_and_mobilenet_v2_agree_with_fake_quantization(torchvision_models, name,
                                                                 layers, groups):
    torch.manual_seed(0)
    model = quantize_model(getattr(torchvision_models, name)(num_classes=10), bits=8)
    model = _calibrate(model, (3, 32, 32))
    integer = export_integer(model)
    agreement, error = _agreement(model, integer, torch.randn(8, 3, 32, 32))
    assert agreement >= 0.999 and error <= 1e-12
    assert integer.float_ops == []  # ReLU, ReLU6, pooling, adds: all exact
    assert not any(isinstance(m, nn.BatchNorm2d) for m in integer.graph_module.modules())
    assert len(integer.stages) == layers
    assert max(s.conv["groups"] for s in integer.stages if not s.linear) == groups


def test_vision_transformer_exports(torchvision_models):
    torch.manual_seed(0)
    vit = torchvision_models.VisionTransformer(image_size=16, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=16, mlp_dim=32,
                                               num_classes=10)
    nn.init.normal_(vit.heads.head.weight, std=0.1)  # torchvision initializes it to zeros
    model = quantize_model(vit, bits=8).eval()
    with torch.no_grad():
        model(torch.randn(8, 3, 16, 16))
    integer = export_integer(model)
    agreement, error = _agreement(model, integer, torch.randn(16, 3, 16, 16))
    assert agreement >= 0.999 and error <= 1e-12
    assert sum("softmax attention" in op for op in integer.float_ops) == 2
    assert sum("gelu" in op.lower() for op in integer.float_ops) == 2


def test_unsupported_layers_and_untraceable_models_are_named():
    float_conv = quantize_model(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3),
                                              nn.ReLU(), nn.Linear(3, 2)), 4,
                                first_last_bits=None)
    float_conv(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"layer '0' \(Linear\) is not quantized"):
        export_integer(float_conv)

    class Padded(nn.Conv2d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1), value=1.0))

    own_forward = quantize_model(nn.Sequential(Padded(1, 2, 3), nn.Flatten(), nn.Linear(32, 2)), 4)
    own_forward(torch.randn(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"layer '0' \(QuantPadded\).*its own forward"):
        export_integer(own_forward)

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 2)

        def forward(self, x):
            return self.layer(x) if x.sum() > 0 else -self.layer(x)

    branchy = quantize_model(Branchy(), 4, example_inputs=torch.randn(2, 3))
    branchy(torch.randn(4, 3))
    with pytest.raises(TypeError, match="torch.fx can trace; tracing Branchy failed"):
        export_integer(branchy)
    offset = nn.Sequential(nn.Linear(3, 2))
    quantize_model(offset, 4)
    offset[0].input_quantizer = LSQQuantizer(4, signed=False, offset=True)
    offset(torch.randn(5, 3))
    with pytest.raises(ValueError, match="offset"):
        export_integer(offset)


def test_weight_only_models_are_refused_naming_the_layer():
    """activation_bits=0 leaves no input step s_x, so there are no integer input codes."""
    model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), bits=4,
                           activation_bits=0)
    with torch.no_grad():
        model(torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"layer '0' \(QuantLinear\) is weight-only"):
        export_integer(model.eval())

    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attention(x, x, x, need_weights=False)[0]

    attention = quantize_model(Attend(), bits=4, activation_bits=0)
    with torch.no_grad():
        attention(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"'attention' \(QuantMultiheadAttention\) is weight-on"):
        export_integer(attention.eval())


def test_bench_integer_agreement_separates_float32_rounding_from_export_error():
    """bench lsq judges export_integer against the fake model in float64 and records the
    float32 floor: at step 0.7 the input 1.05 (float32 1.0499999523...) is code 2 in float32
    (x / s rounds to exactly 1.5, a tie to even) and code 1 in float64 (1.49999996), so the
    float32 fake model picks class 0 (logit 2 * 0.7 * w_hat against the bias 1.05) while the
    float64 fake model and the integer model pick class 1."""
    lsq = pytest.importorskip("stepsize.benchmarks.lsq")
    linear = nn.Linear(1, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0], [0.0]]))
        linear.bias.copy_(torch.tensor([0.0, 1.05]))
    model = quantize_model(nn.Sequential(linear), bits=8)
    with torch.no_grad():
        model(torch.rand(16, 1))
        model[0].input_quantizer.step_size.fill_(0.7)
    model.eval()
    x = torch.tensor([[1.0499999523162842], [0.3], [2.0]])
    with torch.no_grad():
        logits32 = model(x)
        logits64 = model.double()(x.double())
    model.float()
    with torch.no_grad():
        w_hat = float(model[0].weight_quantizer(model[0].weight)[0, 0])
    assert logits32.argmax(1).tolist() == [0, 1, 0] and logits64.argmax(1).tolist() == [1, 1, 0]
    out = lsq._integer_agreement(model, x, logits32, logits64)
    assert out["integer_agreement"] == 1.0  # the goal: the exact evaluation
    assert out["integer_agreement_float32"] == pytest.approx(2 / 3)
    assert out["fake_float32_vs_float64"] == pytest.approx(2 / 3)
    assert out["integer_max_error_vs_float64"] <= 1e-12
    assert out["fake_float32_max_error_vs_float64"] == pytest.approx(0.7 * w_hat, rel=1e-6)
    assert out["integer_flip_margins"] == pytest.approx([1.4 * w_hat - 1.05], rel=1e-5)
