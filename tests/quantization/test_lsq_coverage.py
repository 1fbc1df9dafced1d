"""Issue 16: no silent float paths (transformer fast path, constant first batch, layers left in
float, first/last layer by forward order), positive step sizes under SGD, exact resume with
Dropout, and torchvision architectures (skipped without torchvision)."""

import copy
import functools
import math
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from stepsize._checkpoint import module_fingerprint
from stepsize.quantization import (
    LSQQuantizer,
    TrainingOptions,
    initial_step_size,
    quant_layers,
    quantize_model,
    step_size_parameters,
    train_model,
)
from stepsize.quantization.layers import (
    QuantMultiheadAttention,
    float_layers,
    forward_order,
)

# --- transformer fast path -------------------------------------------------------------------


class _Tiny(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.embed, self.encoder, self.head = nn.Linear(6, 16), encoder, nn.Linear(16, 3)

    def forward(self, x, mask=None):
        if isinstance(self.encoder, nn.TransformerEncoder):
            h = self.encoder(self.embed(x), src_key_padding_mask=mask)
        else:
            h = self.encoder(self.embed(x))
        return self.head(h.mean(dim=1))


def _encoder_layer():
    return nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)


def _slow_layer(layer, x):
    """The Python path of TransformerEncoderLayer (norm_first=False), written out."""
    x = layer.norm1(x + layer._sa_block(x, None, None))
    return layer.norm2(x + layer._ff_block(x))


def test_transformer_encoder_layer_fast_path_cannot_skip_the_quantizers():
    model = _Tiny(_encoder_layer())
    float_model = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # attention is quantized too: nothing left in float
        quantize_model(model, bits=2)
    assert isinstance(model.encoder.self_attn, QuantMultiheadAttention)
    x = torch.randn(8, 5, 6)
    model(x)  # initializes the step sizes (train mode)
    model.eval()
    with torch.no_grad():
        out = model(x)
        explicit = model.head(_slow_layer(model.encoder, model.embed(x)).mean(dim=1))
        reference = float_model(x)
    torch.testing.assert_close(out, explicit, rtol=0, atol=1e-6)
    # the quantizers do act: the float model (what the fast path computed) is far away
    assert (out - reference).abs().max() > 0.05
    assert model.encoder.linear1.weight_quantizer.bits == 2


def test_transformer_encoder_nested_tensor_path_is_disabled():
    encoder = nn.TransformerEncoder(_encoder_layer(), num_layers=2, enable_nested_tensor=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = quantize_model(_Tiny(encoder), bits=2)
    x = torch.randn(4, 6, 6)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 4:] = True  # padding: the condition under which the encoder builds nested tensors
    model(x, mask)
    model.eval()
    with torch.no_grad():
        out = model(x, mask)
        torch.backends.mha.set_fastpath_enabled(False)  # torch's own switch: the Python path
        try:
            slow = model(x, mask)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    torch.testing.assert_close(out, slow, rtol=0, atol=1e-6)
    assert encoder.use_nested_tensor is False
    assert all(layer.activation_relu_or_gelu == 0 for layer in encoder.layers)


# --- degenerate first batch ------------------------------------------------------------------


def test_constant_first_batch_defers_initialization():
    quantizer = LSQQuantizer(4, signed=None)
    zeros = torch.zeros(8, 5)
    with pytest.warns(RuntimeWarning, match="constant first batch"):
        out = quantizer(zeros)
    assert torch.equal(out, zeros) and not quantizer.is_initialized and quantizer.signed is None
    with pytest.warns(RuntimeWarning, match="every entry 3.0"):
        quantizer(torch.full((4,), 3.0))
    batch = torch.randn(8, 5)
    quantizer(batch)
    assert quantizer.is_initialized and quantizer.signed is True
    expected = initial_step_size(batch, 4, signed=True)
    assert float(quantizer.step_size.detach()) == pytest.approx(float(expected), rel=1e-6)


def test_shape_check_with_zeros_does_not_fix_the_first_layer():
    """The issue's case: one forward with zeros, then normalised (signed) images."""
    torch.manual_seed(0)
    net = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(4 * 6 * 6, 3)), bits=4)
    with pytest.warns(RuntimeWarning, match="constant first batch"):
        net(torch.zeros(2, 1, 8, 8))
    images = torch.randn(16, 1, 8, 8)
    net(images)
    first = net[0].input_quantizer
    assert first.signed is True  # was fixed to unsigned by the zeros
    assert float(first.step_size.detach()) == pytest.approx(
        float(initial_step_size(images, 8, signed=True, method="minmax")), rel=1e-6)
    assert float(first.step_size.detach()) > 1e-3  # was 1.19e-7 (float32 eps) for good


# --- step sizes stay positive ----------------------------------------------------------------


def test_step_projection_halves_the_previous_step():
    quantizer = LSQQuantizer(4, signed=True, init=0.5)
    quantizer(torch.randn(10))
    for bad in (-2.0, 0.0, float("nan")):
        previous = quantizer.step_size.item()
        with torch.no_grad():
            quantizer.step_size.fill_(bad)
        out = quantizer(torch.randn(10))
        assert quantizer.step_size.item() == previous / 2 and torch.isfinite(out).all()
    previous = quantizer.step_size.item()
    with torch.no_grad():
        quantizer.step_size.fill_(100.0)  # training mode: at most a factor 2 per step
    quantizer(torch.randn(10))
    assert quantizer.step_size.item() == 2 * previous
    quantizer.eval()
    with torch.no_grad():
        quantizer.step_size.fill_(0.3)  # eval mode: a positive step is left as it is
    quantizer(torch.randn(10))
    assert quantizer.step_size.item() == pytest.approx(0.3)


def test_per_channel_step_projection():
    quantizer = LSQQuantizer(4, signed=True, per_channel=True, channels=4, init=0.5)
    quantizer(torch.randn(4, 10))
    with torch.no_grad():
        quantizer.step_size.copy_(torch.tensor([-1.0, float("nan"), 0.6, 5.0]))
    quantizer(torch.randn(4, 10))
    assert quantizer.step_size.detach().tolist() == pytest.approx([0.25, 0.25, 0.6, 1.0])  # x2
    assert quantizer.previous_step.tolist() == pytest.approx([0.25, 0.25, 0.6, 1.0])
    quantizer.eval()
    with torch.no_grad():
        quantizer.step_size.copy_(torch.tensor([0.1, 0.2, 30.0, 0.0]))
    quantizer(torch.randn(4, 10))
    assert quantizer.step_size.detach().tolist() == pytest.approx([0.1, 0.2, 30.0, 0.5])


def test_state_dict_without_previous_step_still_loads():
    quantizer = LSQQuantizer(4, signed=True, init=0.5)
    quantizer(torch.randn(10))
    state = {k: v for k, v in quantizer.state_dict().items() if k != "previous_step"}
    other = LSQQuantizer(4, signed=True)
    other.load_state_dict(state)
    assert float(other.previous_step) == 0.5


def _depthwise_net():
    layers = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
    for cin, cout, stride in ((16, 24, 2), (24, 32, 1), (32, 32, 2)):
        layers += [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                   nn.BatchNorm2d(cin), nn.ReLU6(),
                   nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


# --- coverage: subclasses, layers left in float, forward order --------------------------------


class _Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame in short: its own forward pads "same" and calls F.conv2d on self.weight."""

    def forward(self, x):
        pad_h = max((-(-x.shape[-2] // self.stride[0]) - 1) * self.stride[0]
                    + self.kernel_size[0] - x.shape[-2], 0)
        pad_w = max((-(-x.shape[-1] // self.stride[1]) - 1) * self.stride[1]
                    + self.kernel_size[1] - x.shape[-1], 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _ScaledLinear(nn.Linear):
    """A Linear subclass that only adds an attribute (forward inherited)."""

    scale = 2.0


def test_subclasses_of_conv_and_linear_are_quantized_with_their_own_forward():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), _Conv2dSame(4, 4, 3, 2),
                          nn.ReLU(), nn.Flatten(), _ScaledLinear(4 * 4 * 4, 8), nn.ReLU(),
                          nn.Linear(8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left in float, so no warning
        quantize_model(model, bits=3)
    assert [name for name, _ in quant_layers(model)] == ["0", "2", "5", "7"]
    assert isinstance(model[2], _Conv2dSame) and type(model[2]).__name__ == "Quant_Conv2dSame"
    assert model[2].weight_quantizer.bits == 3 and model[5].scale == 2.0
    x = torch.randn(6, 2, 7, 7)
    model(x)
    same, linear = model[2], model[5]
    h = torch.relu(model[0](x))
    expected = _Conv2dSame.forward(same, same.input_quantizer(h))  # float weight: compare below
    with torch.no_grad():
        weight = same.weight.detach().clone()
        qw = same.weight_quantizer(weight)
        same.weight.copy_(qw)  # the float forward with the quantized weight written in
        expected = _Conv2dSame.forward(same, same.input_quantizer(h))
        same.weight.copy_(weight)
    torch.testing.assert_close(same(h), expected, rtol=0, atol=1e-6)
    assert same.weight is not qw and isinstance(same.weight, nn.Parameter)  # restored
    # gradients reach the float weight and both step sizes of the subclass layer
    model(x).square().sum().backward()
    assert same.weight.grad.abs().sum() > 0
    assert same.weight_quantizer.step_size.grad != 0 and same.input_quantizer.step_size.grad != 0
    z = torch.randn(6, 64)
    torch.testing.assert_close(
        linear(z), F.linear(linear.input_quantizer(z), linear.quantized_weight(), linear.bias))
    state = copy.deepcopy(model).state_dict()
    assert "2.weight_quantizer.step_size" in state and "2.weight" in state


def test_layers_left_in_float_are_named_in_one_warning():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.lstm = nn.LSTM(8, 8, batch_first=True)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 2)

        def forward(self, tokens):
            h, _ = self.lstm(self.embed(tokens))
            h, _ = self.attn(h, h, h)
            return self.head(h.mean(dim=1))

    model = Mixed()
    with pytest.warns(UserWarning) as record:
        quantize_model(model, bits=4)
    messages = [str(w.message) for w in record if "full precision" in str(w.message)]
    assert len(messages) == 1
    for text in ("'embed': Embedding", "'lstm': LSTM"):
        assert text in messages[0]
    assert "attn" not in messages[0]  # attention is quantized (QuantMultiheadAttention)
    assert [name for name, _ in quant_layers(model)] == ["attn.out_proj", "head"]
    assert float_layers(model) == [("embed", "Embedding (embedding lookup)"),
                                   ("lstm", "LSTM (recurrent layer)")]
    excluded = Mixed()
    with pytest.warns(UserWarning) as record:
        quantize_model(excluded, bits=4, exclude=["attn"])
    assert type(excluded.attn) is nn.MultiheadAttention
    assert type(excluded.attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert "'attn'" not in str(record[0].message)  # excluded on purpose
    assert float_layers(excluded)[-1] == ("attn", "MultiheadAttention (attention projections "
                                                  "computed from raw weights)")
    # excluded layers, and first/last kept float on purpose, are not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)),
                       first_last_bits=None)
    with pytest.raises(ValueError, match=r"no quantizable layer.*LSTM"):
        quantize_model(nn.Sequential(nn.LSTM(4, 4)))


class _StemLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head, self.stem = nn.Linear(8, 8), nn.Linear(8, 2), nn.Linear(4, 8)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).relu())


class _Branchy(_StemLast):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            x = -x
        return super().forward(x)


def _bits(model):
    return {name: layer.weight_quantizer.bits for name, layer in quant_layers(model)}


def test_first_and_last_layers_follow_the_forward_order():
    assert forward_order(_StemLast()) == ["stem", "body", "head"]
    assert _bits(quantize_model(_StemLast(), bits=2)) == {"body": 2, "head": 8, "stem": 8}
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match="registration order"):
        fallback = quantize_model(_Branchy(), bits=2)
    assert _bits(fallback) == {"body": 8, "head": 2, "stem": 8}
    model = _Branchy()
    model.train()
    dropout_free = quantize_model(model, bits=2, example_inputs=x)
    assert _bits(dropout_free) == {"body": 2, "head": 8, "stem": 8}
    assert model.training and all(m.training for m in model.modules())  # modes restored
    with pytest.raises(TypeError, match="example_inputs"):
        quantize_model(_StemLast(), example_inputs=[x])


# --- exact resume with Dropout ---------------------------------------------------------------


def test_resume_with_dropout_equals_uninterrupted_run(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 8, 8, generator=generator)
    y = torch.randint(0, 10, (32,), generator=generator)

    def fresh(seed):
        torch.manual_seed(seed)
        return quantize_model(_depthwise_net(), bits=4)

    settings = dict(options=TrainingOptions(epochs=3, lr=0.01, batch_size=8), progress=False,
                    seed=2)
    torch.manual_seed(7)
    reference = fresh(1)
    train_model(reference, (x, y), **settings)

    class Interrupt(Exception):
        pass

    forwards = []

    def stop(module, inputs):
        forwards.append(None)
        if len(forwards) == 11:  # after optimizer step 10, inside the third epoch
            raise Interrupt

    path = tmp_path / "run.pt"
    interrupted = fresh(1)
    interrupted.register_forward_pre_hook(stop)
    with pytest.raises(Interrupt):
        train_model(interrupted, (x, y), checkpoint=path, **settings)
    resumed = fresh(1)
    torch.manual_seed(12345)  # another global RNG state: the checkpoint's must be used
    result = train_model(resumed, (x, y), checkpoint=path, **settings)
    assert result.resumed_from == 2
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def _eps_clamp(quantizer):
    """The pre-issue-16 rule (and torch's _LearnableFakeQuantize's): clamp s to float32 eps."""
    with torch.no_grad():
        quantizer.step_size.clamp_(min=torch.finfo(torch.float32).eps)


def test_overshooting_sgd_step_keeps_codes_in_use():
    """The failure mode: one SGD step drives a depthwise layer's weight step below zero."""
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False), nn.BatchNorm2d(8))
    nn.init.kaiming_normal_(layer[0].weight, mode="fan_out")  # tiny depthwise weights
    model = quantize_model(nn.Sequential(nn.Conv2d(3, 8, 1), layer, nn.Flatten(),
                                         nn.Linear(8 * 6 * 6, 4)), bits=4)
    x = torch.randn(8, 3, 6, 6)
    model(x)
    quantizer = model[1][0].weight_quantizer
    step = float(quantizer.step_size.detach())
    optimizer = torch.optim.SGD([quantizer.step_size], lr=0.01, momentum=0.9)
    quantizer.step_size.grad = torch.tensor(3 * step / 0.01)  # the update overshoots to -2 s
    optimizer.step()  # the optimizer hook projects at once: half the previous step
    assert float(quantizer.step_size.detach()) == pytest.approx(step / 2)
    with torch.no_grad():  # a write outside any optimizer: the eager forward projects it
        quantizer.step_size.fill_(-2 * step)
    model(x)
    assert float(quantizer.step_size.detach()) == pytest.approx(step / 4)
    codes = model[1][0].weight / quantizer.step_size
    assert (codes.abs() < 7).float().mean() > 0.5  # most weights keep an unsaturated code
    # the eps rule saturates every code of the layer: its output is then ~1e-6 of the input.
    # It replaces the projection of this one quantizer object only (an instance attribute,
    # which the eager forward calls in place of the method); the class is untouched
    quantizer.project_step_size = lambda: _eps_clamp(quantizer)
    with torch.no_grad():
        quantizer.step_size.fill_(-2 * step)
    model(x)
    assert float(quantizer.step_size.detach()) == torch.finfo(torch.float32).eps
    codes = model[1][0].weight / quantizer.step_size
    assert (codes.abs() >= 7).all()
    eps = torch.finfo(torch.float32).eps
    assert float(quantizer(model[1][0].weight).detach().abs().max()) <= 8 * eps


def _before_projection(hook):
    """Attach ``hook`` to every optimizer that steps while the returned handle lives, as that
    optimizer's own step post-hook: torch runs those before the global post-hooks, so ``hook``
    sees the step sizes as the update left them, before stepsize's projection (a global hook
    registered at import)."""
    attached = weakref.WeakSet()

    def attach(optimizer, args, kwargs):
        if optimizer not in attached:
            attached.add(optimizer)
            optimizer.register_step_post_hook(hook)

    return register_optimizer_step_pre_hook(attach)


# --- torchvision architectures (skipped without torchvision) ---------------------------------


def test_efficientnet_b0_trains_without_nan_where_the_eps_clamp_diverged(torchvision_models):
    """Issue 16's failure: efficientnet_b0, batch 8, lr 0.01, 4 bits; NaN within the first steps
    with the eps clamp (checked here too, so the test can fail), finite losses now."""
    models = torchvision_models
    eps = torch.finfo(torch.float32).eps
    # the eps rule, one float32 ulp above eps: the library's projection replaces entries <= eps
    # and, without a max_change bound, leaves every larger finite entry as the old rule set it
    floor = float(torch.nextafter(torch.tensor(eps), torch.tensor(1.0)))

    def run(eps_clamp, bounded=True):
        torch.manual_seed(0)
        net = models.efficientnet_b0(num_classes=10)
        x, y = torch.randn(24, 3, 32, 32), torch.randint(0, 10, (24,))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no layer left in float
            quantize_model(net, bits=4, example_inputs=x[:2])
        quantizers = [m for m in net.modules() if isinstance(m, LSQQuantizer)]
        assert not any(quantizer.is_initialized for quantizer in quantizers)
        for quantizer in quantizers:  # this net's objects only; the class is untouched
            if quantizer.bits == 8 and quantizer.init == "minmax":
                # the 8-bit input init of the run, the paper's (min/max, the default
                # since, is finer; with it the eps clamp's control run does not diverge here)
                quantizer.init = "lsq"
            if eps_clamp or not bounded:  # the old rule had no max_change bound
                quantizer.max_change = None
            if eps_clamp:  # what the eager forward calls in place of the method
                quantizer.project_step_size = functools.partial(_eps_clamp, quantizer)

        def lowest():
            return min(float(p.detach().min()) for p in step_size_parameters(net))

        updated, projected = [], []  # the smallest step size after each update, then projection

        def after_update(optimizer, args, kwargs):
            updated.append(lowest())
            if eps_clamp:
                with torch.no_grad():
                    for quantizer in quantizers:
                        quantizer.step_size.clamp_(min=floor)

        handles = (_before_projection(after_update), register_optimizer_step_post_hook(
            lambda optimizer, args, kwargs: projected.append(lowest())))
        try:
            result = train_model(net, (x, y), progress=False, seed=0,
                                 options=TrainingOptions(epochs=1, lr=0.01, batch_size=8))
        finally:
            for handle in handles:
                handle.remove()
        return result, updated, projected

    result, updated, projected = run(eps_clamp=False)
    assert all(map(math.isfinite, result.losses)) and result.optimizer_steps == 3
    assert len(updated) == len(projected) == 3
    assert min(updated) < 0 < min(projected)  # an SGD update drove a step below zero; the hook
    assert min(projected) > eps  # caught it, and every step stays a usable positive number
    # the control: without the bound, the projection alone still trains; the eps rule does not
    result, updated, _ = run(eps_clamp=False, bounded=False)
    assert all(map(math.isfinite, result.losses)) and min(updated) < 0
    with pytest.raises((FloatingPointError, ValueError), match="NaN|finite"):
        run(eps_clamp=True)


def test_torchvision_models_convert_with_forward_order_and_no_float_layers(torchvision_models):
    models = torchvision_models
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for builder, first, last in ((models.mobilenet_v2, "features.0.0", "classifier.1"),
                                 (models.resnet18, "conv1", "fc")):
        net = builder(num_classes=5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            quantize_model(net, bits=3)
        bits = _bits(net)
        assert bits[first] == 8 and bits[last] == 8
        assert sorted(set(bits.values())) == [3, 8] and list(bits.values()).count(8) == 2
        net(x)
        net.eval()
        with torch.no_grad():
            assert torch.isfinite(net(x)).all()
    from torchvision.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                            hidden_dim=16, mlp_dim=32, num_classes=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # attention included: nothing left in float
        quantize_model(vit, bits=4, example_inputs=x)
    bits = _bits(vit)
    assert len(bits) == 1 + 2 * 3 + 1 and bits["conv_proj"] == bits["heads.head"] == 8
    assert bits["encoder.layers.encoder_layer_0.self_attention.out_proj"] == 4
    assert sum(isinstance(m, QuantMultiheadAttention) for m in vit.modules()) == 2


@pytest.mark.parametrize("batch_first", [True, False])
def test_quantized_attention_equals_the_functional_composition(batch_first):
    """Only nn.MultiheadAttention in the model: inputs, in_proj and out_proj all quantized."""
    attention = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    float_attention = copy.deepcopy(attention)
    model = nn.Sequential(attention)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_model(model, bits=3)
    assert isinstance(attention, QuantMultiheadAttention)
    assert attention.in_proj_weight_quantizer.bits == 3
    x = torch.randn(4, 5, 8)  # (batch, length, embed) or (length, batch, embed)
    memory = torch.randn(4, 7, 8) if batch_first else torch.randn(7, 5, 8)
    out, weights = attention(x, memory, memory)  # cross-attention: key is value
    assert not attention.value_quantizer.is_initialized  # value reused the key's codes
    q, kv = attention.query_quantizer(x), attention.key_quantizer(memory)
    if batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    w = attention.in_proj_weight_quantizer(attention.in_proj_weight)
    inner, expected_weights = F.multi_head_attention_forward(
        q, kv, kv, 8, 2, w, attention.in_proj_bias, None, None, False, 0.0,
        torch.eye(8), None, training=True)
    expected = attention.out_proj(inner)  # QuantLinear: its own input and weight quantizers
    if batch_first:
        expected = expected.transpose(0, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights, expected_weights)
    with torch.no_grad():
        reference, _ = float_attention(x, memory, memory)
    assert (out - reference).abs().max() > 1e-2  # 3-bit: quantization shows
    out.square().sum().backward()
    assert attention.in_proj_weight.grad.abs().sum() > 0
    assert attention.in_proj_weight_quantizer.step_size.grad != 0
    assert attention.query_quantizer.step_size.grad != 0


def test_quantized_attention_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from stepsize.quantization import export_onnx

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(6, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            h = self.embed(x)
            return self.head(self.attn(h, h, h, need_weights=False)[0].mean(dim=1))

    model = quantize_model(SelfAttention(), bits=4)
    x = torch.randn(16, 5, 6)
    model(x)
    model.eval()
    path = export_onnx(model, tmp_path / "attn.onnx", x[:2])
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    with torch.no_grad():
        fake = model(x).numpy()
    assert abs(out - fake).max() <= 1e-4 * abs(fake).max()
    with pytest.raises(ValueError, match="is not calibrated"):
        export_onnx(quantize_model(SelfAttention(), bits=4), tmp_path / "x.onnx", x[:2])


def _five_layers():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)), nn.ReLU(),
                         nn.Linear(8, 2))


def test_bits_as_a_mapping_or_a_callable():
    net = quantize_model(_five_layers(), bits={"2": 3, "4.*": 2, "6": 6}, first_last_bits=8)
    assert _bits(net) == {"0": 8, "2": 3, "4.0": 2, "4.2": 2, "6": 6}  # "6" named: overrides 8
    assert net[2].input_quantizer.bits == 3  # activation_bits default: the layer's own bits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # None is float on purpose: no warning
        net = quantize_model(_five_layers(), bits={"4.2": None, "*": 3})
    assert _bits(net) == {"0": 8, "2": 3, "4.0": 3, "6": 8}
    net = quantize_model(_five_layers(), bits={"2": 2})  # unmatched layers: 4
    assert _bits(net) == {"0": 8, "2": 2, "4.0": 4, "4.2": 4, "6": 8}
    seen = []

    def rule(name, module):
        seen.append(name)
        return 2 if module.in_features == 8 else 5

    net = quantize_model(_five_layers(), bits=rule, activation_bits=4)
    assert _bits(net) == {"0": 8, "2": 2, "4.0": 2, "4.2": 2, "6": 8}
    assert net[2].input_quantizer.bits == 4 and seen == ["0", "2", "4.0", "4.2", "6"]
    with pytest.raises(ValueError, match=r"bits names no quantizable layer: \['layer9'\]"):
        quantize_model(_five_layers(), bits={"2": 3, "layer9": 2})
    with pytest.raises(ValueError, match=r"bits\['2'\]"):
        quantize_model(_five_layers(), bits={"2": 1})
    with pytest.raises(ValueError, match=r"bits\('0'\) must be <= 16"):
        quantize_model(_five_layers(), bits=lambda name, module: 40)
    with pytest.raises(TypeError, match="bits keys"):
        quantize_model(_five_layers(), bits={2: 3})


# --- options: weight-only, LSQ+ offsets, per channel, re-quantizing ---------------------------


def test_weight_only_mode_quantizes_no_input():
    torch.manual_seed(0)
    net = quantize_model(_five_layers(), bits=3, activation_bits=0)
    layers = list(quant_layers(net))
    assert [layer.input_quantizer for _, layer in layers] == [None] * 5  # first/last too
    assert _bits(net) == {"0": 8, "2": 3, "4.0": 3, "4.2": 3, "6": 8}
    x = torch.randn(16, 4)
    out = net(x)
    h = x
    for index, module in enumerate([net[0], net[2], net[4][0], net[4][2], net[6]]):
        q = module.weight_quantizer
        q_n, q_p = q.bounds
        weight = (module.weight / q.step_size).round().clamp(-q_n, q_p) * q.step_size
        h = F.linear(h, weight, module.bias)  # the input enters unquantized
        h = h if index == 4 else h.relu()
    torch.testing.assert_close(out, h, atol=1e-6, rtol=1e-6)
    assert {id(p) for p in step_size_parameters(net)} == {
        id(layer.weight_quantizer.step_size) for _, layer in layers}
    with pytest.raises(ValueError, match="activation_bits must be >= 2"):
        quantize_model(_five_layers(), bits=3, activation_bits=1)


def test_lsq_plus_offsets_and_per_channel_through_quantize_model():
    torch.manual_seed(0)
    net = quantize_model(_five_layers(), bits=4, offset=True, per_channel=True,
                         activation_init="minmax", activation_signed=False)
    x = torch.randn(32, 4) + 3.0  # shifted inputs: the offset moves the code range onto them
    net(x)
    first = net[0]
    low, high = float(x.min()), float(x.max())
    q = first.input_quantizer
    assert q.offset is not None and q.bits == 8 and q.signed is False
    step = (high - low) / 255  # LSQ+ min-max init: [min, max] onto the codes 0..255
    assert float(q.step_size.detach()) == pytest.approx(step, rel=1e-5)
    assert float(q.offset.detach()) == pytest.approx(low, rel=1e-5)
    assert first.weight_quantizer.step_size.shape == (8,)
    torch.testing.assert_close(first.weight_quantizer.step_size.detach(),
                               initial_step_size(first.weight.detach(), 8, True,
                                                 channel_axis=0))
    net(x).sum().backward()
    assert all(layer.input_quantizer.offset.grad is not None for _, layer in quant_layers(net))
    beta, s = q.offset.detach(), q.step_size.detach()
    expected = ((x - beta) / s).clamp(0, 255).round() * s + beta
    torch.testing.assert_close(q(x), expected, atol=1e-6, rtol=0)


def test_ste_option_reaches_every_quantizer_through_quantize_model():
    """quantize_model's default band is "rounded" (the quantizer's own default is the paper's)."""
    net = quantize_model(_five_layers(), bits=2, ste="paper")
    encoder = quantize_model(_Tiny(_encoder_layer()), bits=4, ste="paper")
    for model in (net, encoder):
        stes = [m.ste for m in model.modules() if isinstance(m, LSQQuantizer)]
        assert len(stes) >= 10 and set(stes) == {"paper"}
    assert {m.ste for m in quantize_model(_five_layers()).modules()
            if isinstance(m, LSQQuantizer)} == {"rounded"}
    assert LSQQuantizer(4).ste == "paper"
    # the structural fingerprint is that of the releases before the option (train_model records
    # the band as its own setting: test_resume_refuses_another_straight_through_band_...)
    assert module_fingerprint(quantize_model(_five_layers(), ste="paper"), weights=False) == \
        module_fingerprint(quantize_model(_five_layers()), weights=False)
    plain = _five_layers()
    with pytest.raises(ValueError, match="ste must be one of 'paper', 'rounded'; got 'torch'"):
        quantize_model(plain, bits=2, ste="torch")
    assert not list(quant_layers(plain))  # refused before converting anything


def test_requantizing_at_other_bits_initializes_from_the_current_weights():
    torch.manual_seed(0)
    x = torch.randn(16, 4)
    net = quantize_model(_five_layers(), bits=4)
    train_model(net, (x, (x[:, 0] > 0).long()),
                options=TrainingOptions(epochs=2, lr=0.05, batch_size=8), progress=False)
    weights = [layer.weight for _, layer in quant_layers(net)]
    quantize_model(net, bits=2, first_last_bits=6)
    assert _bits(net) == {"0": 6, "2": 2, "4.0": 2, "4.2": 2, "6": 6}
    assert [layer.weight for _, layer in quant_layers(net)] == weights  # the same tensors
    assert not any(layer.weight_quantizer.is_initialized for _, layer in quant_layers(net))
    net(x)
    middle = net[2].weight_quantizer
    assert float(middle.step_size.detach()) == pytest.approx(
        float(initial_step_size(net[2].weight.detach(), 2, True)), rel=1e-6)
    encoder = quantize_model(_Tiny(_encoder_layer()), bits=4)
    quantize_model(encoder, bits=3)
    attention = encoder.encoder.self_attn
    assert isinstance(attention, QuantMultiheadAttention)
    assert attention.in_proj_weight_quantizer.bits == 3
    assert attention.out_proj.weight_quantizer.bits == 3


# --- compile-friendly quantizers --------------------------------------------------------------


def test_step_sizes_of_copies_are_projected_by_the_optimizer_hook():
    torch.manual_seed(0)
    net = quantize_model(_five_layers(), bits=4)
    x = torch.randn(8, 4)
    net(x)
    twin = copy.deepcopy(net)
    quantizer = twin[2].weight_quantizer
    step = float(quantizer.step_size.detach())
    optimizer = torch.optim.SGD([quantizer.step_size], lr=1.0)
    quantizer.step_size.grad = torch.tensor(3 * step)  # the update lands on -2 s
    optimizer.step()
    assert float(quantizer.step_size.detach()) == pytest.approx(step / 2)


@pytest.mark.slow
@pytest.mark.parametrize("ste", ["paper", "rounded"])
def test_compiled_quantized_model_has_no_graph_break_and_matches_eager(ste):
    """Issue 16: ``if not self.initialized`` and ``int(self.signed_code)`` broke the graph at
    every quantizer (10 breaks on this model before), and the projection's in-place write of
    the step size made a compiled backward fail."""
    torch.manual_seed(0)
    net = quantize_model(nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 3)), bits=4, ste=ste)
    x = torch.randn(2, 3, 8, 8)
    net(x)  # initializes every quantizer
    explanation = torch._dynamo.explain(net)(x)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0)
    torch._dynamo.reset()
    twin, other = copy.deepcopy(net), copy.deepcopy(net)
    eager = net(x)
    eager.square().sum().backward()
    compiled = torch.compile(twin, backend="aot_eager")
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    for (name, a), b in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5, msg=name)
    # the band matters here: the other band's eager gradients differ, so a compiled path that
    # ignored ``ste`` would fail above
    for module in other.modules():
        if isinstance(module, LSQQuantizer):
            module.ste = "paper" if ste == "rounded" else "rounded"
    other(x).square().sum().backward()
    assert any(not torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-5)
               for a, b in zip(net.parameters(), other.parameters(), strict=True))
    torch._dynamo.reset()
