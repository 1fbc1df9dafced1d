"""ONNX export that onnxruntime runs on integer kernels (issue 16): output quantizers placed so
that its QDQ fusion makes QLinearConv / QLinearAdd, batch norm folded, int32 biases, constant
initializers; exact where every output reaches a layer's own quantizer."""

import collections
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stepsize.quantization import export_onnx, quantize_model
from stepsize.quantization._onnx_integer import (
    OutputQuantizer,
    place_output_quantizers,
    trace_for_onnx,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
speed = pytest.importorskip("stepsize.quantization._onnx_speed")


def _run(path, x, optimize=True):
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def _optimized(path, folder):
    """(operator counts, QLinearConv nodes with an int32 constant bias) of the graph that
    onnxruntime runs after its optimizations."""
    optimized = folder / (path.stem + "_optimized.onnx")
    speed._session(path, 1, optimized)
    graph = onnx.load(str(optimized)).graph
    int32 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT32}
    biases = sum(n.op_type == "QLinearConv" and len(n.input) == 9 and n.input[8] in int32
                 for n in graph.node)
    return collections.Counter(n.op_type for n in graph.node), biases


def _chain():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def test_chain_is_integer_and_exact_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = quantize_model(_chain(), bits=8).eval()
    for norm in (model[1], model[4], model[7]):
        norm.running_mean.uniform_(-0.2, 0.2)
        norm.running_var.uniform_(0.5, 2.0)
    calibration = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        model(calibration)
        model[3].input_quantizer.step_size.fill_(0.05)  # so that 255 s > 6: ReLU6 on the codes
    path = export_onnx(model, tmp_path / "chain.onnx", calibration[:1], integer_kernels=True)
    kernels, biases = _optimized(path, tmp_path)
    assert kernels.get("QLinearConv") == 3 and "Conv" not in kernels
    assert kernels.get("QGemm") == 1 and "Gemm" not in kernels
    assert "BatchNormalization" not in kernels
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]  # initializers are constants
    assert biases == 3  # the last layer (float logits): QGemm, int8 weights, float output
    clips = [n for n in graph.node if n.op_type == "Clip"]
    assert len(clips) == 1  # ReLU6 -> clamp(q, 0, round(6 / 0.05)) on the uint8 codes
    x = torch.randn(256, 3, 8, 8)
    with torch.no_grad():
        fake = model(x).numpy()
    out = _run(path, x)
    assert float((out.argmax(1) == fake.argmax(1)).mean()) >= 0.999
    # only the int32 bias rounding (<= s_x s_w / 2 per output) differs from fake quantization
    assert np.abs(out - fake).max() <= 2e-2 * np.abs(fake).max()


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.stem(x)
        z = torch.relu(self.branch(y) + y)
        return self.head(z.mean((2, 3)))


@pytest.mark.parametrize("init", ["auto", "lsq"])
def test_residual_add_gets_a_calibrated_branch_quantizer_and_fuses(tmp_path, init):
    """The branch into the add and the add's output are calibrated; the stem output (the skip
    input, also read by the branch conv) is carried at the branch conv's own quantization when
    that covers it (8-bit min/max, the default: its pair dropped) and calibrated otherwise
    (the paper's coarser init)."""
    torch.manual_seed(0)
    model = quantize_model(_Residual(), bits=8, activation_init=init).eval()
    calibration = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        model(calibration)
        stem = model.stem(calibration)
        branch = model.branch(stem)
    traced = trace_for_onnx(model)
    redundant = place_output_quantizers(traced, (calibration,))
    quantizers = [m for m in traced.modules() if isinstance(m, OutputQuantizer)]
    # stem output, branch output (calibrated), add output (calibrated)
    assert len(quantizers) == 3
    step = float(model.branch.input_quantizer.step_size)
    if init == "auto":
        assert redundant == {"branch"} and quantizers[0].same_as(model.branch.input_quantizer)
        assert step == pytest.approx(float(stem.max()) / 255, rel=1e-6)  # min/max, unsigned
    else:
        assert redundant == set() and step > 2 * float(stem.max()) / 255  # coarser
        assert float(quantizers[0].scale) == pytest.approx(float(stem.max()) / 255, rel=1e-6)
    assert quantizers[0].zero_point == 0  # after the ReLU: the range starts at 0
    low, high = float(branch.min()), float(branch.max())
    scale = (high - min(low, 0.0)) / 255
    assert float(quantizers[1].scale) == pytest.approx(scale, rel=1e-6)
    assert quantizers[1].zero_point == round(-min(low, 0.0) / scale)
    path = export_onnx(model, tmp_path / "residual.onnx", calibration[:1], integer_kernels=True,
                       calibration_input=calibration)
    kernels = _optimized(path, tmp_path)[0]
    assert kernels.get("QLinearConv") == 2 and kernels.get("QLinearAdd") == 1
    assert "Conv" not in kernels and "Add" not in kernels
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        placed = traced(x).numpy()  # the graph with the output quantizers, in torch
    assert np.abs(_run(path, x, optimize=False) - placed).max() <= 5e-2 * np.abs(placed).max()


def _resnet18_kernels(torchvision_models, tmp_path, **quantization):
    """onnxruntime's optimized-graph counts and int32 bias count of an 8-bit random-weight
    resnet18's integer-kernel export, steps from 8 random 32x32 images (eval mode)."""
    torch.manual_seed(0)
    model = quantize_model(torchvision_models.resnet18(num_classes=10), bits=8,
                           **quantization).eval()
    calibration = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        model(calibration)
    path = export_onnx(model, tmp_path / "resnet18.onnx", calibration[:1], integer_kernels=True,
                       calibration_input=calibration)
    return _optimized(path, tmp_path)


def test_resnet18_fuses_every_conv_and_add(torchvision_models, tmp_path):
    kernels, biases = _resnet18_kernels(torchvision_models, tmp_path)
    assert kernels.get("QLinearConv") == 20 and kernels.get("QLinearAdd") == 8
    assert kernels.get("QLinearGlobalAveragePool") == 1
    assert not {"Conv", "FusedConv", "Add", "BatchNormalization"} & set(kernels)
    assert biases == 20
    # the stem's max pooling runs on the uint8 codes, not in float between reorders; the
    # one QuantizeLinear left is the input's: with the 8-bit min/max input steps (the default)
    # every skip path is carried at its consumer's own quantization (no requantization)
    assert kernels.get("NhwcMaxPool") == 1 and "MaxPool" not in kernels
    assert kernels.get("QuantizeLinear") == 1
    # the logits layer: int8 GEMM with float output (its DequantizeLinear nodes carry explicit
    # zero points, without which onnxruntime leaves a float Gemm)
    assert kernels.get("QGemm") == 1 and "Gemm" not in kernels


def test_coarse_input_steps_keep_calibrated_skip_paths(torchvision_models, tmp_path):
    """With the paper's LSQ init at 8 bits (coarser than min/max: ``_Placement.carries``
    refuses it) each stage's input is requantized: read by a block's conv1 at its step and by
    the skip path at a calibrated step: the max pooling's output (layer1.0's skip path) and
    each first block's output of the 4 stages, 5 QuantizeLinear beside the input's."""
    kernels, _ = _resnet18_kernels(torchvision_models, tmp_path, activation_init="lsq")
    assert kernels.get("QuantizeLinear") == 6 and kernels.get("QLinearAdd") == 8


def test_skip_path_is_carried_only_within_the_range_slack():
    """``_Placement.carries``: the stem output of _Residual is carried at the branch conv's
    min/max step when the recorded range is the one the step was set on or reaches 1% further,
    not 3% further (beyond ``SKIP_RANGE_SLACK``, 2%): then it gets its own calibrated
    quantizer and the branch conv a requantization."""
    from stepsize.quantization._onnx_integer import SKIP_RANGE_SLACK

    assert SKIP_RANGE_SLACK == 0.02
    torch.manual_seed(0)
    calibration = torch.randn(32, 3, 8, 8)
    for factor, carried in ((1.0, True), (1.01, True), (1.03, False)):
        model = quantize_model(_Residual(), bits=8).eval()
        with torch.no_grad():
            model(calibration)
        traced = trace_for_onnx(model)
        redundant = place_output_quantizers(traced, (calibration * factor,))
        assert (redundant == {"branch"}) is carried, factor


def test_integer_kernel_arguments_are_checked(tmp_path):
    model = quantize_model(_chain(), bits=8).eval()
    x = torch.randn(4, 3, 8, 8)
    model(x)
    with pytest.raises(TypeError, match="integer_kernels"):
        export_onnx(model, tmp_path / "x.onnx", x, integer_kernels=1)
    with pytest.raises(TypeError, match="calibration_input"):
        export_onnx(model, tmp_path / "x.onnx", x, integer_kernels=True,
                    calibration_input=x.numpy())
    path = export_onnx(model, tmp_path / "x.onnx", x, integer_kernels=True)
    times = speed.onnx_latencies({"a": path, "b": path}, x.numpy(), repeats=2)
    assert sorted(times) == ["a", "b"] and all(t > 0 for t in times.values())
    with pytest.raises(TypeError, match="paths"):
        speed.onnx_latencies({}, x.numpy())
    with pytest.raises(ValueError, match="threads must be >= 1"):
        speed.onnx_latencies({"a": path}, x.numpy(), threads=0)
    with pytest.raises(TypeError, match="inputs"):
        speed.onnx_latencies({"a": path}, x)
    with pytest.raises(TypeError, match="spinning must be a bool"):
        speed.onnx_latencies({"a": path}, x.numpy(), spinning="no")
    quiet = speed.onnx_latencies({"a": path}, x.numpy(), threads=2, repeats=2, spinning=False)
    assert quiet["a"] > 0
    cpu = speed.onnx_latencies({"a": path}, x.numpy(), repeats=2, clock="thread")
    assert cpu["a"] > 0
    with pytest.raises(ValueError, match="clock must be 'wall' or 'thread'"):
        speed.onnx_latencies({"a": path}, x.numpy(), clock="cpu")
    with pytest.raises(ValueError, match="clock='thread' needs threads=1"):
        speed.onnx_latencies({"a": path}, x.numpy(), threads=2, clock="thread")


def test_weight_only_model_exports_weights_only(tmp_path):
    """activation_bits=0: the ONNX graph dequantizes the int8 weight codes (one
    DequantizeLinear per layer, no QuantizeLinear: inputs stay float) and equals the
    fake-quantized model in onnxruntime, with and without batch-norm folding; integer kernels
    are refused, naming the layer."""
    torch.manual_seed(0)
    model = quantize_model(_chain(), bits=4, activation_bits=0)
    x = torch.randn(16, 3, 8, 8)
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    for fold in (False, True):
        path = export_onnx(model, tmp_path / f"w{fold}.onnx", x, fold_batch_norm=fold,
                           bias_codes=fold)
        ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
        assert ops["QuantizeLinear"] == 0 and ops["DequantizeLinear"] == 4
        assert ops["BatchNormalization"] == (0 if fold else 3)
        np.testing.assert_allclose(_run(path, x), expected, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="layer '0' is weight-only"):
        export_onnx(model, tmp_path / "k.onnx", x, integer_kernels=True)


def test_bench_deployment_helpers(tmp_path):
    """bench lsq's deployment row: the goal flag is exactly ``float / ours >= 1.5``; the
    integer-kernel agreement check and onnxruntime's quantize_static peer run on the chain."""
    lsq = pytest.importorskip("stepsize.benchmarks.lsq")
    info = {"ours_agreement": 1.0, "ours_logit_error": 0.0, "float_agreement": 1.0,
            "float_logit_error": 0.0}
    row = lsq._deploy_row("m", info, 1, 2, {"float": 3.0, "ours": 2.0, "peer": 1.0})
    assert row[5] == 1.5 and row[6] == "yes" and row[8] == 3.0
    assert lsq._deploy_row("m", info, 1, 1, {"float": 2.999, "ours": 2.0})[6:9] == [
        "NO", None, None]
    torch.manual_seed(0)
    model = quantize_model(_chain(), bits=8).eval()
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        model(x[:32])
        reference = model(x).argmax(1)
    out = lsq._integer_kernel_agreement(model, x, reference, tmp_path / "c.onnx", x[:32])
    # the plain fake model does not compute the int32 bias codes and requantizations: 2 of
    # 64 random-chain inputs (near-tied logits) flip with 8-bit min/max input steps
    assert out["onnx_int_agreement"] >= 0.96
    assert out["onnx_int_kernels"] == {"QLinearConv": 3, "Conv": 0}
    float_model = _chain().eval()
    torch.onnx.export(float_model, (x[:1],), str(tmp_path / "f.onnx"), dynamo=False,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    peer = lsq._peer_quantize(tmp_path / "f.onnx", tmp_path / "p.onnx", x[:16])
    assert speed.onnx_kernels(peer).get("QLinearConv") == 3
    with torch.no_grad():
        expected = float_model(x).numpy()
    error = np.linalg.norm(_run(peer, x) - expected) / np.linalg.norm(expected)
    # measured 0.136 (min/max calibration on 16 images of an untrained chain); a peer that
    # ran on the wrong input or left its output as codes would be near 1 or far above
    assert error <= 0.25


def test_integer_kernels_export_ignores_other_forward_defaults(tmp_path):
    """A forward with a non-tensor default argument (timm's ``is_causal=False``): the traced
    graph's placeholder must not reach the exporter as a tensor."""

    class WithDefault(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(144, 2)

        def forward(self, x, start_dim: int = 1):
            return self.head(torch.flatten(torch.relu(self.conv(x)), start_dim))

    torch.manual_seed(0)
    model = quantize_model(WithDefault(), bits=8).eval()
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        model(x)
        expected = model(x).numpy()
    path = export_onnx(model, tmp_path / "d.onnx", x[:1], integer_kernels=True,
                       calibration_input=x)
    assert speed.onnx_kernels(path).get("QLinearConv") == 1
    assert (_run(path, x).argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_folded_weight_codes_are_widened_for_finer_bias_codes(tmp_path):
    """integer_kernels: each output channel's int8 codes are multiplied by the largest integer
    k_c with |k_c W_bar| <= 127 and its scale divided by k_c (the same weights), so the int32
    bias codes at s_x s_c / k_c are k_c times finer."""
    torch.manual_seed(0)
    model = quantize_model(_chain(), bits=8).eval()
    with torch.no_grad():
        model[6].weight[:8].mul_(0.05)  # depthwise channels whose codes span a few levels
    x = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        model(x)
    path = export_onnx(model, tmp_path / "w.onnx", x[:1], integer_kernels=True)
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    codes = [a for a in arrays.values() if a.dtype == np.int8 and a.ndim == 4]
    assert len(codes) == 3
    depthwise = next(a for a in codes if a.shape == (16, 1, 3, 3))
    largest = np.abs(depthwise.reshape(16, -1)).max(1)
    assert (largest >= 64).all() and (largest <= 127).all()  # k_c * max|W_bar_c| in [64, 127]
    quantizer = model[6].weight_quantizer
    original = torch.round(model[6].weight / quantizer.step_size).reshape(16, -1).abs().amax(1)
    factor = largest / original.detach().numpy()
    assert np.array_equal(factor, np.floor(127 / original.detach().numpy()))
    assert factor[:8].min() >= 10  # the shrunken channels: bias codes >= 10x finer
    x_test = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        expected = model(x_test).numpy()
    assert np.abs(_run(path, x_test) - expected).max() <= 2e-2 * np.abs(expected).max()


def test_mobilenet_v2_kernels_and_the_relu6_clips_it_needs(torchvision_models, tmp_path):
    """mobilenet_v2's optimized graph: every conv and add on integer kernels, the logits on
    QGemm; a Clip on the codes for exactly the ReLU6 outputs whose 8-bit range 255 s exceeds 6
    (all 34 at LSQ's initial steps); besides the input's, one QuantizeLinear for each of the 10
    tensors read by both a convolution (its step) and a skip path (a calibrated step)."""
    torch.manual_seed(0)
    # LSQ's initial activation steps (2 mean|v| / sqrt(Q_P)), whatever the default init
    model = quantize_model(torchvision_models.mobilenet_v2(num_classes=10), bits=8,
                           activation_init="lsq")
    calibration = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        model(calibration)  # training mode: batch statistics, so no layer sees zeros
    model.eval()
    # the layers that read a ReLU6 output: each depthwise and each projection convolution
    readers = [model.features[1].conv[0][0], model.features[1].conv[1]] + [
        layer for block in model.features[2:18] for layer in (block.conv[1][0], block.conv[2])]
    relu6_steps = [float(layer.input_quantizer.step_size) for layer in readers]
    path = export_onnx(model, tmp_path / "m.onnx", calibration[:1], integer_kernels=True,
                       calibration_input=calibration)
    kernels = speed.onnx_kernels(path)
    assert kernels.get("QLinearConv") == 52 and kernels.get("QLinearAdd") == 10
    assert kernels.get("QGemm") == 1 and kernels.get("QLinearGlobalAveragePool") == 1
    assert not {"Conv", "FusedConv", "Add", "Gemm", "BatchNormalization"} & set(kernels)
    assert len(relu6_steps) == 34 and all(255 * s > 6 for s in relu6_steps)
    assert kernels.get("Clip") == 34
    assert kernels.get("QuantizeLinear") == 1 + 10
    assert kernels.get("Transpose") == 2  # NCHW <-> NHWC once, at the input and the pool
    # its deployment model (ReLU6 kept in torch, applied to the codes at export) exports to
    # the same kernels, whose logits equal its own
    x = torch.randn(32, 3, 32, 32)
    _, onnx_out, torch_out, _, deployed_kernels, _ = _deployment_check(
        model, calibration, x, tmp_path, "mobilenet")
    assert deployed_kernels == kernels
    assert np.array_equal(onnx_out, torch_out)  # the kernels' arithmetic, emulated


def test_widened_codes_keep_a_channel_whose_largest_code_is_minus_128(tmp_path):
    """8-bit weight codes run -128..127: a channel whose largest |code| is 128 keeps k_c = 1
    (127 // 128 = 0 would zero its weights and make its scale infinite)."""
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
                                         nn.Flatten(), nn.Linear(16, 2)), 8).eval()
    x = torch.randn(8, 3, 2, 2)
    with torch.no_grad():
        model(x)
        step = float(model[0].weight_quantizer.step_size)
        model[0].weight[0] = 0.0
        model[0].weight[0, :2, 0, 0] = torch.tensor([-128 * step, 0.3 * step])
    path = export_onnx(model, tmp_path / "n.onnx", x[:1], integer_kernels=True)
    arrays = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    codes = next(a for a in arrays if a.dtype == np.int8 and a.ndim == 4)
    assert codes[0].ravel().tolist() == [-128, 0, 0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(_run(path, x) - expected).max() <= 2e-2 * np.abs(expected).max()


def test_output_quantizer_gradient_is_lsq():
    """The learnable output quantizer's backward, against LSQ's closed form: straight-through
    for x inside the code range; for s, round(v) - v inside and the clamped code minus z
    outside (v = x / s + z), times 1 / sqrt(N (high - z))."""
    quantizer = OutputQuantizer(0.5, 10, False, learnable=True)
    x = torch.tensor([-6.0, -1.2, 0.26, 3.0, 200.0], requires_grad=True)
    quantizer(x).sum().backward()
    # v = x / 0.5 + 10 = [-2, 7.6, 10.52, 16, 410]; codes clamp to [0, 255]
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    steps = [0 - 10, 8 - 7.6, 11 - 10.52, 16 - 16, 255 - 10]
    expected = sum(steps) / (5 * 245) ** 0.5
    assert float(quantizer.scale.grad) == pytest.approx(expected, rel=1e-5)


def _deployment_check(model, calibration, x, tmp_path, name):
    """(deployment model, its ONNX logits and the torch deployment model's logits on x, the
    plain export's logits, kernel counts of both exports)."""
    from stepsize.quantization.export import deployment_model

    deployed = deployment_model(model, calibration)
    path = export_onnx(deployed, tmp_path / f"{name}_d.onnx", calibration[:1],
                       integer_kernels=True)
    plain = export_onnx(model, tmp_path / f"{name}.onnx", calibration[:1], integer_kernels=True,
                        calibration_input=calibration)
    with torch.no_grad():
        torch_logits = deployed(x).numpy()
    return (deployed, _run(path, x), torch_logits, _run(plain, x),
            speed.onnx_kernels(path), speed.onnx_kernels(plain))


def test_deployment_model_computes_what_onnxruntime_runs(tmp_path):
    """deployment_model = the fake model with the export's output quantizers and bias
    rounding: its ONNX export is the plain integer-kernel export (same kernels, same logits)
    and equals it in torch to float32 rounding, where the fake model itself does not; after
    training steps (steps and weights moved, batch norm frozen) it still does."""
    torch.manual_seed(0)
    for build in (_chain, _Residual):
        model = quantize_model(build(), bits=8).eval()
        calibration, x = torch.randn(32, 3, 8, 8), torch.randn(512, 3, 8, 8)
        with torch.no_grad():
            model(calibration)
            fake = model(x).numpy()
        deployed, onnx_out, torch_out, plain_out, kernels, plain_kernels = _deployment_check(
            model, calibration, x, tmp_path, build.__name__)
        assert kernels == plain_kernels and np.array_equal(onnx_out, plain_out)
        scale = np.abs(torch_out).max()
        assert np.abs(onnx_out - torch_out).max() <= 1e-6 * scale  # measured 3e-8 / 4e-8
        assert np.abs(plain_out - fake).max() >= 1e-4 * scale  # measured 5e-3, 1.7e-2
        assert (onnx_out.argmax(1) == torch_out.argmax(1)).all()
        steps = [p for n, p in deployed.named_parameters() if "output_quantizer" in n]
        # calibrated (the rest are tied): the chain's pooled input; _Residual's branch and
        # add output (its skip input is carried at the branch conv's min/max step)
        assert len(steps) == (1 if build is _chain else 2)
        optimizer = torch.optim.Adam(deployed.parameters(), 1e-3)
        for step in range(5):
            optimizer.zero_grad()
            deployed(calibration).square().mean().backward()
            if step == 0:
                assert all(float(p.grad) != 0 for p in steps)
            optimizer.step()
        assert all(float(p) > 0 for p in steps)
        path = export_onnx(deployed, tmp_path / "trained.onnx", x[:1], integer_kernels=True)
        with torch.no_grad():
            trained = deployed(x).numpy()
        assert np.abs(_run(path, x) - trained).max() <= 1e-6 * np.abs(trained).max()


def test_resnet18_deployment_model_agrees_with_onnxruntime(torchvision_models, tmp_path):
    """resnet18 (random weights, 32x32): the deployment model's export keeps every integer
    kernel, and its logits equal the deployment model's (eval mode: the kernels' arithmetic)."""
    torch.manual_seed(0)
    model = quantize_model(torchvision_models.resnet18(num_classes=10), bits=8)
    calibration, x = torch.randn(8, 3, 32, 32), torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        model(calibration)  # training mode: batch statistics, then LSQ steps
    model.eval()
    _, onnx_out, torch_out, plain_out, kernels, plain_kernels = _deployment_check(
        model, calibration, x, tmp_path, "resnet18")
    assert kernels == plain_kernels
    assert kernels.get("QLinearConv") == 20 and kernels.get("QLinearAdd") == 8
    # min/max input steps set in training mode (batch statistics) do not cover 4 of the 5
    # skip paths' eval-mode ranges (running statistics after one batch): those stay
    # calibrated, each with a requantization for its conv1 (QuantizeLinear) beside the input's
    assert kernels.get("QuantizeLinear") == 5 and kernels.get("Transpose") == 2
    # (its calibrated steps see the bias rounding, so they differ slightly from the plain
    # export's: no bit equality with it here)
    # in eval mode the deployment model computes the integer kernels' arithmetic: the logits
    # are equal (before the emulation, 3 of 64 inputs had a code moved by a rounding tie)
    assert np.array_equal(onnx_out, torch_out)


def test_deployment_model_and_export_onnx_name_bad_arguments(tmp_path):
    """Review finding: deployment_model(None, x) raised AttributeError, a bad calibration_input
    was called example_input, and a batch of the wrong shape raised from inside torch.fx."""
    from stepsize.quantization.export import deployment_model

    net = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                       nn.Flatten(), nn.Linear(16, 2)), 8)
    x = torch.randn(8, 1, 4, 4)
    net(x)
    net.eval()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        deployment_model(None, x)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        export_onnx(None, tmp_path / "m.onnx", x)
    with pytest.raises(TypeError, match="calibration_input must be a torch.Tensor"):
        deployment_model(net, [1.0])
    with pytest.raises(ValueError, match="calibration_input does not fit the model"):
        deployment_model(net, torch.randn(8, 3, 4, 4))
    assert not (tmp_path / "m.onnx").exists()


class _ResidualNorm(nn.Module):
    """conv-BN-ReLU, conv-BN into a residual add, ReLU, pooling, linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.stem(x)
        return self.head(torch.relu(self.branch(y) + y).mean((2, 3)))


def _calibrated_deployment():
    """The deployment model of an 8-bit _ResidualNorm calibrated on 32 random images (the
    paper's LSQ input init: 3 calibrated output steps)."""
    from stepsize.quantization.export import deployment_model

    torch.manual_seed(0)
    model = quantize_model(_ResidualNorm(), bits=8, activation_init="lsq")
    calibration = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        model(calibration)
    return deployment_model(model.eval(), calibration)


def test_deployment_model_output_steps_get_no_weight_decay():
    """The calibrated output steps of a deployment model are step sizes: train_model puts them
    in the no-decay group with the LSQ steps (decay would pull them toward 0)."""
    from stepsize.quantization.training import _parameter_groups

    deployed = _calibrated_deployment()
    decayed, free = _parameter_groups(deployed, 1e-4)
    assert (decayed["weight_decay"], free["weight_decay"]) == (1e-4, 0.0)
    outputs = {id(p) for n, p in deployed.named_parameters() if "output_quantizer" in n}
    lsq = {id(p) for n, p in deployed.named_parameters() if "step_size" in n}
    assert len(outputs) == 3 and lsq
    assert {id(p) for p in free["params"]} == outputs | lsq
    assert not outputs & {id(p) for p in decayed["params"]}


def test_train_model_trains_the_deployment_model_that_onnxruntime_runs(tmp_path):
    """QAT of what is deployed: train_model (train mode: batch norm on batch statistics, its
    running statistics, weights and the calibrated output steps all move) on a deployment
    model; its integer-kernel export then equals it to float32 rounding."""
    from stepsize.quantization import TrainingOptions, train_model
    from stepsize.quantization.export import deployment_model

    torch.manual_seed(0)
    # the paper's LSQ input init: coarser than min/max, so every skip path is calibrated
    model = quantize_model(_ResidualNorm(), bits=8, activation_init="lsq")
    calibration, x = torch.randn(32, 3, 8, 8), torch.randn(256, 3, 8, 8)
    targets = torch.randint(0, 4, (256,))
    with torch.no_grad():
        model(calibration)  # training mode: batch statistics, then LSQ steps
    deployed = deployment_model(model.eval(), calibration)
    steps = {n: float(p.detach()) for n, p in deployed.named_parameters()
             if "output_quantizer" in n}
    mean = deployed.get_submodule("stem.1").running_mean.clone()
    assert len(steps) == 3  # calibrated: the skip input, the branch, the add's output
    result = train_model(deployed, (x, targets), options=TrainingOptions(
        epochs=2, lr=0.05, batch_size=32), seed=0)
    assert all(np.isfinite(result.losses))
    deployed.eval()
    moved = {n: float(p.detach()) for n, p in deployed.named_parameters()
             if "output_quantizer" in n}
    assert all(moved[n] != steps[n] and moved[n] > 0 for n in steps)
    assert not torch.equal(deployed.get_submodule("stem.1").running_mean, mean)
    path = export_onnx(deployed, tmp_path / "qat.onnx", x[:1], integer_kernels=True)
    with torch.no_grad():
        expected = deployed(x).numpy()
    scale = np.abs(expected).max()
    assert np.abs(_run(path, x) - expected).max() <= 1e-6 * scale


class _Kernels(nn.Module):
    """Every kernel the emulation covers: conv-BN-ReLU6 (a Clip on the codes), a depthwise
    conv, a residual add of two calibrated tensors (non-zero zero points) with a ReLU, global
    average pooling, the linear logits (QGemm, float output)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16),
                                  nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16),
                                       nn.BatchNorm2d(16))
        self.project = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        y = self.depthwise(self.stem(x))
        return self.head(torch.flatten(self.pool(torch.relu(self.project(y) + y)), 1))


def test_deployment_model_equals_onnxruntime_bit_for_bit(tmp_path):
    """In eval mode the deployment model computes each fused kernel as onnxruntime's CPU
    kernels do (exact int32 accumulator, one float32 requantization with round half to even,
    QLinearAdd's fused multiply-adds, QLinearGlobalAveragePool's integer sum, QGemm's float
    logits), so its logits equal onnxruntime's exactly, also after training steps (before the
    emulation: up to 3e-8 relative and one moved code on some inputs). In train mode it is
    the fake model (batch statistics), and the gradient is the fake model's in both modes."""
    from stepsize.quantization._onnx_emulation import strip_emulation
    from stepsize.quantization.export import deployment_model

    torch.manual_seed(0)
    # the paper's LSQ input init: ReLU6's reader gets a step with 255 s > 6 (a Clip on the
    # codes) and the skip path a calibrated step (non-zero zero points at the add)
    model = quantize_model(_Kernels(), bits=8, activation_init="lsq")
    calibration, x = torch.randn(32, 3, 8, 8), torch.randn(512, 3, 8, 8)
    with torch.no_grad():
        model(calibration)  # training mode: batch statistics, then LSQ steps
        model.stem[0].weight.mul_(4.0)  # ReLU6 saturates: its Clip on the codes matters
    deployed = deployment_model(model.eval(), calibration)
    kinds = collections.Counter(type(m).__name__ for m in deployed.modules())
    assert (kinds["KernelOutput"], kinds["AddOutput"], kinds["PoolOutput"]) == (4, 1, 1)
    for step in range(3):
        path = export_onnx(deployed, tmp_path / f"k{step}.onnx", x[:1], integer_kernels=True)
        with torch.no_grad():
            expected = deployed(x).numpy()
        assert np.array_equal(_run(path, x), expected)
        deployed.train()
        with torch.no_grad():
            fake = deployed(x[:64])  # train mode: no emulation, batch statistics
        assert not torch.equal(fake, torch.from_numpy(expected[:64]))
        deployed.eval()
        deployed(calibration).square().mean().backward()  # eval: straight-through gradient
        with torch.no_grad():
            for parameter in deployed.parameters():
                parameter.sub_(1e-3 * parameter.grad.sign())
                parameter.grad = None
    kernels = speed.onnx_kernels(path)
    assert (kernels.get("QLinearConv"), kernels.get("QLinearAdd"), kernels.get("QGemm"),
            kernels.get("QLinearGlobalAveragePool"), kernels.get("Clip")) == (3, 1, 1, 1, 1)
    assert not {"Conv", "Add", "Gemm", "BatchNormalization"} & set(kernels)
    # without the emulation (the float32 fake arithmetic) the logits are not onnxruntime's
    plain = copy.deepcopy(deployed)
    strip_emulation(plain)
    with torch.no_grad():
        assert not np.array_equal(_run(path, x), plain(x).numpy())


def test_carried_skip_path_is_bit_for_bit_and_trains_tied(tmp_path):
    """8-bit min/max steps set in eval mode (the default init): the skip input of _Kernels'
    add (signed, read by the project conv) is carried at that conv's own quantization (uint8,
    zero point 128, tied to its step: no requantization in the export), and the deployment
    model's logits still equal onnxruntime's exactly, before and after training steps."""
    from stepsize.benchmarks.lsq import _batch_statistics
    from stepsize.quantization.export import deployment_model

    torch.manual_seed(0)
    calibration, x = torch.randn(32, 3, 8, 8), torch.randn(512, 3, 8, 8)
    model = _batch_statistics(quantize_model(_Kernels(), bits=8), calibration)
    deployed = deployment_model(model, calibration)
    outputs = [m for m in deployed.modules() if isinstance(m, OutputQuantizer)]
    carried = [m for m in outputs if m._source and m._source[0] is deployed.get_submodule(
        "project.0").input_quantizer]
    assert len(carried) == 1 and carried[0].zero_point == 128
    for step in range(3):
        path = export_onnx(deployed, tmp_path / f"c{step}.onnx", x[:1], integer_kernels=True)
        with torch.no_grad():
            expected = deployed(x).numpy()
        assert np.array_equal(_run(path, x), expected)
        deployed(calibration).square().mean().backward()
        with torch.no_grad():
            for parameter in deployed.parameters():
                parameter.sub_(1e-3 * parameter.grad.sign())
                parameter.grad = None
        assert carried[0].same_as(deployed.get_submodule("project.0").input_quantizer)
    kernels = speed.onnx_kernels(path)
    assert (kernels.get("QLinearConv"), kernels.get("QLinearAdd"), kernels.get("QuantizeLinear"),
            kernels.get("Clip")) == (3, 1, 1, None)


def test_optimizer_hook_keeps_deployment_output_steps_positive():
    """Issue 16: the optimizer hook's positivity projection covered only LSQQuantizer steps;
    a deployment model's calibrated output steps went <= 0 after a large step (the scale
    was then used as it was). Now they follow the LSQ rule: a step that is not above eps (or
    not finite) becomes half its previous value; copies (deepcopy) are projected too."""
    deployed = _calibrated_deployment()
    for copied in (deployed, copy.deepcopy(deployed)):
        steps = [p for n, p in copied.named_parameters() if "output_quantizer" in n]
        before = [float(p) for p in steps]
        assert len(steps) == 3 and min(before) > 0
        optimizer = torch.optim.SGD(steps, lr=1.0)
        for parameter, value in zip(steps, before):
            parameter.grad = torch.tensor(value + 1.0)  # the SGD step lands at -1
        optimizer.step()
        assert [float(p) for p in steps] == pytest.approx([v / 2 for v in before], rel=1e-6)
        for parameter in steps:
            parameter.grad = torch.tensor(float("nan"))
        optimizer.step()  # a NaN step: half the previous (projected) value again
        assert [float(p) for p in steps] == pytest.approx([v / 4 for v in before], rel=1e-6)
        steps[0].grad = torch.tensor(-float(steps[0]))  # doubles: a positive step is kept
        optimizer.step()
        assert float(steps[0]) == pytest.approx(before[0] / 2, rel=1e-6)


@pytest.mark.parametrize("channels", [8, 600, 1200])
def test_emulated_accumulator_is_exact(channels):
    """The emulated int32 accumulator: one float32 convolution (8 channels: every partial sum
    below 2^24), the input codes split as 16 h + l into two (600: 5400 terms of up to
    255 x 127), or float64 (1200); each equals the float64 convolution of the codes."""
    from stepsize.quantization._onnx_emulation import KernelOutput
    from stepsize.quantization.export import _kernel_weights

    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Conv2d(channels, 4, 3), nn.BatchNorm2d(4),
                                         nn.ReLU()), bits=8, first_last_bits=8)
    x = torch.rand(2, channels, 5, 5) * 3  # unsigned input codes up to 255
    with torch.no_grad():
        model(x)
        model[0].weight[0, 0, 0, 0] = 127 * model[0].weight_quantizer.step_size  # |code| 127
        model[0].input_quantizer.step_size.fill_(2.9 / 255)  # codes up to 255
    layer = model[0].eval()
    total, _ = KernelOutput(layer, model[1], None, None).accumulator(x)
    codes, _, bias = _kernel_weights(layer, model[1])
    x_codes = (x / layer.input_quantizer.step_size.detach()).clamp(0, 255).round()
    assert int(x_codes.max()) == 255 and int(codes.abs().max()) == 127
    expected = F.conv2d(x_codes.double(), codes.double()) + bias.double().view(-1, 1, 1)
    assert torch.equal(total, expected)


class _WindowPool(nn.Module):
    """A windowed average pool that ends at 1 x 1 (AvgPool2d(2) on a 3 x 3 map: the top-left
    2 x 2 window only), which is not QLinearGlobalAveragePool."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.stem(x)), 1))


def test_a_windowed_pool_is_not_emulated_as_a_global_one(tmp_path):
    # Found by review: every pool with a 1 x 1 output was emulated as a global average (the
    # pooled values off by 0.32, the logits by 0.17 against onnxruntime's).
    from stepsize.quantization.export import deployment_model

    torch.manual_seed(0)
    model = quantize_model(_WindowPool(), bits=8)
    calibration, x = torch.randn(32, 3, 3, 3), torch.randn(8, 3, 3, 3)
    with torch.no_grad():
        model(calibration)
    deployed = deployment_model(model.eval(), calibration)
    assert not any(type(m).__name__ == "PoolOutput" for m in deployed.modules())
    path = export_onnx(deployed, tmp_path / "pool.onnx", x[:1], integer_kernels=True)
    with torch.no_grad():
        expected = deployed(x).numpy()
    np.testing.assert_allclose(_run(path, x), expected, rtol=0, atol=1e-6)


def test_emulated_accumulator_bound_counts_int8_minus_128():
    # Found by review: int8 abs(-128) is -128, so the bound chose the float32 path where its
    # sums are not exact (off by 12 in 4.6e7).
    from stepsize.quantization._onnx_emulation import KernelOutput
    from stepsize.quantization.export import _kernel_weights

    torch.manual_seed(0)
    channels = 600
    model = quantize_model(nn.Sequential(nn.Conv2d(channels, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
                           bits=8, first_last_bits=8)
    x = torch.rand(2, channels, 5, 5) * 3
    with torch.no_grad():
        model(x)
        step = model[0].weight_quantizer.step_size.view(-1, 1, 1, 1)
        weight = torch.full_like(model[0].weight, -1000.0)
        weight[:, ::2] = 1.0
        model[0].weight.copy_(weight * step)
        model[0].input_quantizer.step_size.fill_(2.9 / 255)
    layer = model[0].eval()
    total, _ = KernelOutput(layer, model[1], None, None).accumulator(x)
    codes, _, bias = _kernel_weights(layer, model[1])
    x_codes = (x / layer.input_quantizer.step_size.detach()).clamp(0, 255).round()
    expected = F.conv2d(x_codes.double(), codes.double()) + bias.double().view(-1, 1, 1)
    assert int(codes.min()) == -128
    assert torch.equal(total, expected)
