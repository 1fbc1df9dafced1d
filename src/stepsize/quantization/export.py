"""From fake quantization to integer inference and ONNX.

:func:`export_integer` turns any ``torch.fx``-traceable quantized model into integer layers
(``acc = W_bar * x_bar`` exact in int32, batch norm folded, requantization at each consumer; see
:mod:`stepsize.quantization._fx_export`). :func:`export_onnx` writes the model with
QuantizeLinear/DequantizeLinear nodes; with ``integer_kernels=True`` the graph is laid out so
that onnxruntime fuses it into QLinearConv / QLinearMatMul / QLinearAdd (see
:mod:`stepsize.quantization._onnx_integer`); :func:`deployment_model` is the fake-quantized
model with that graph's extra quantizers and bias rounding, to evaluate or fine-tune what is
deployed.

Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020 (section 2: ``y_bar =
W_bar x_bar``, ``y_hat = s_w s_x y_bar``); Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018 (folded requantization).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from stepsize._validation import check_int, describe
from stepsize.quantization._fx_export import IntegerModel, build_integer_model
from stepsize.quantization._onnx_emulation import emulate_kernels, strip_emulation
from stepsize.quantization._onnx_integer import (
    OutputQuantizer,
    absorb_placed,
    from_lsq,
    place_output_quantizers,
    trace_for_onnx,
)
from stepsize.quantization._onnx_speed import onnx_kernels, onnx_latencies
from stepsize.quantization.layers import (
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    QuantMultiheadAttention,
    _QuantMixin,
    check_calibrated,
)
from stepsize.quantization.quantizer import LSQQuantizer

__all__ = ["IntegerModel", "deployment_model", "export_integer", "export_onnx", "onnx_kernels",
           "onnx_latencies"]

_QUANT = (QuantConv1d, QuantConv2d, QuantLinear)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_INT32_MAX = 2**31 - 1
_WEIGHT_ONLY_KERNELS = (
    "layer {name!r} is weight-only (activation_bits=0, no input quantizer): integer_kernels=True "
    "needs quantized inputs (onnxruntime's QLinearConv/QLinearMatMul take uint8 input codes); "
    "export it with integer_kernels=False (int8 weights behind DequantizeLinear, float inputs)"
)


def _codes(values: torch.Tensor, bounds: tuple[int, int]) -> torch.Tensor:
    q_n, q_p = bounds
    return torch.clamp(torch.round(values), -q_n, q_p)


def export_integer(model: nn.Module) -> IntegerModel:
    """Integer weight codes, folded scales and an integer-arithmetic forward of ``model``.

    The model is traced with ``torch.fx`` (quantized layers as leaves) and run in graph order.
    Each quantized conv/linear layer (and each projection of a ``QuantMultiheadAttention``)
    computes, from its input codes ``x_bar = clamp(round(y / s_x), -Q_N, Q_P)`` and weight codes
    ``W_bar``::

        acc = W_bar * x_bar  (int32, exact),   y' = M_c acc + B_c,
        M_c = gamma_c s_w,c s_x / sigma_c,     B_c = gamma_c (b_c - mu_c) / sigma_c + beta_c

    with the batch norm ``(gamma, beta, mu, sigma)`` that directly follows a convolution folded
    in (``M_c = s_w,c s_x``, ``B_c = b_c`` without one). Residual adds, concatenations, pooling
    and ReLU act on ``y'``; the next layer requantizes what reaches it. Activations without an
    integer form (SiLU, GELU, hardswish, softmax, layer norm, ...) run in float between integer
    layers and are listed in ``IntegerModel.float_ops``.

    Args:
        model: a calibrated quantized model (after :func:`quantize_model` and at least one
            forward pass) that ``torch.fx`` can trace, without LSQ+ offsets.

    Returns:
        An :class:`IntegerModel`: ``forward`` agrees with ``model.eval()`` up to rare
        rounding-tie flips; ``stages`` are the integer layers in graph order (``weight_codes``
        int8 up to 8 bits, else int16; ``multiplier`` and ``offset`` per output channel);
        ``input_codes(x)`` the integer codes entering each; ``float_ops`` the float operations.

    Raises:
        ValueError: a layer is not calibrated, has an offset, is weight-only
            (``activation_bits=0``: no input step ``s_x``, so no integer input codes), or is a
            conv/linear/attention (or other layer with weights) left in float, or a quantized
            subclass with its own forward; each named.
        TypeError: ``torch.fx`` cannot trace the model (the tracer's message is included).
        OverflowError: an accumulator does not fit int32.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from stepsize.quantization import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 3)), 4)
        >>> x = torch.randn(16, 4); _ = net(x)
        >>> integer = export_integer(net.eval())
        >>> bool((integer(x).argmax(1) == net(x).argmax(1)).all()), integer.float_ops
        (True, ['1 (SiLU)'])
    """
    return build_integer_model(model)


class _QuantizeDequantize(torch.autograd.Function):
    """``clamp(round(x/s), lo, hi) * s``, exported as QuantizeLinear [-> Clip] -> DequantizeLinear.
    """

    @staticmethod
    def forward(ctx, x, scale, low, high, signed):
        return torch.clamp(torch.round(x / scale), low, high) * scale

    @staticmethod
    def symbolic(g, x, scale, low, high, signed):
        dtype = torch.int8 if signed else torch.uint8
        zero = g.op("Constant", value_t=torch.tensor(0, dtype=dtype))
        codes = g.op("QuantizeLinear", x, scale, zero)
        if (low, high) != (torch.iinfo(dtype).min, torch.iinfo(dtype).max):
            codes = g.op("Clip", codes, g.op("Constant", value_t=torch.tensor(low, dtype=dtype)),
                         g.op("Constant", value_t=torch.tensor(high, dtype=dtype)))
        return g.op("DequantizeLinear", codes, scale, zero)


class _Dequantize(torch.autograd.Function):
    """``codes * s`` for int8 weight codes; exported as DequantizeLinear of an int8 initializer."""

    @staticmethod
    def forward(ctx, codes, scale, axis, zero_point):
        shape = (-1,) + (1,) * (codes.dim() - 1) if scale.dim() else ()
        return codes.float() * scale.view(shape)

    @staticmethod
    def symbolic(g, codes, scale, axis, zero_point):
        # an explicit zero point (0): onnxruntime fuses DQ -> Gemm into QGemm only with one
        if axis is None:
            return g.op("DequantizeLinear", codes, scale, zero_point)
        return g.op("DequantizeLinear", codes, scale, zero_point, axis_i=axis)


def _dequantize(codes: torch.Tensor, scale: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``codes * scale`` (per axis 0 for a 1-D scale), exported as DequantizeLinear."""
    zero_point = torch.zeros(scale.shape, dtype=codes.dtype, device=codes.device)
    return _Dequantize.apply(codes, scale, axis, zero_point)


class _OnnxActivation(nn.Module):
    def __init__(self, quantizer: LSQQuantizer):
        super().__init__()
        self.register_buffer("scale", quantizer.step_size.detach().clone().float())
        q_n, q_p = quantizer.bounds
        self.low, self.high, self.signed = -q_n, q_p, bool(quantizer.signed)

    def forward(self, x):
        return _QuantizeDequantize.apply(x, self.scale, self.low, self.high, self.signed)


class _OnnxWeight(nn.Module):
    def __init__(self, quantizer: LSQQuantizer, weight: torch.Tensor):
        super().__init__()
        step = quantizer.step_size.detach().float()
        shape = (-1,) + (1,) * (weight.dim() - 1) if quantizer.per_channel else ()
        codes = _codes(weight.detach().float() / step.view(shape), quantizer.bounds)
        self.register_buffer("codes", codes.to(torch.int8))
        self.register_buffer("scale", step.clone())
        self.axis = 0 if quantizer.per_channel else None

    def forward(self, weight):
        return _dequantize(self.codes, self.scale, self.axis)


def _batch_norm_pairs(model: nn.Module) -> list[tuple[str, str]] | None:
    """``(conv name, batch-norm name)`` where the batch norm's only input is the output of a
    quantized convolution used nowhere else (read from a ``torch.fx`` trace; None if it fails)."""
    import torch.fx

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module, qualified_name):
            return isinstance(module, (_QuantMixin, OutputQuantizer, _BiasRounding)) or \
                super().is_leaf_module(module, qualified_name)

    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means "no folding"
        return None
    modules = dict(model.named_modules())
    calls = [str(n.target) for n in graph.nodes if n.op == "call_module"]
    pairs = []
    for node in graph.nodes:
        norm = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(norm, _BATCH_NORM) or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module"):
            continue
        conv = modules.get(str(source.target))
        if (type(conv) in (QuantConv1d, QuantConv2d) and len(source.users) == 1
                and norm.track_running_stats and calls.count(str(node.target)) == 1
                and calls.count(str(source.target)) == 1):
            pairs.append((str(source.target), str(node.target)))
    return pairs


class _OnnxBias(nn.Module):
    """A bias as int32 codes at scale ``s_x s_w,c`` behind DequantizeLinear (what onnxruntime's
    QDQ fusion into QLinearConv needs)."""

    def __init__(self, bias: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        codes = torch.round(bias.double() / scale.double())
        if bool((codes.abs() > _INT32_MAX).any()):
            raise ValueError("a folded bias does not fit int32 codes at scale s_x s_w")
        self.register_buffer("codes", codes.to(torch.int32))
        self.register_buffer("scale", scale.float())

    def forward(self):
        return _dequantize(self.codes, self.scale, 0)


def _fold_forward(self, x):
    return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.onnx_bias())


def _widen_codes(weight: _OnnxWeight) -> torch.Tensor:
    """Multiply each output channel's int8 codes by the largest integer ``k_c`` that keeps them
    in [-127, 127] and divide its scale by ``k_c``: the same weights (``k_c W_bar`` at
    ``s_c / k_c``), but the int32 bias codes, at ``s_x s_c / k_c``, are ``k_c`` times finer.
    Returns the new per-channel scale (float64).

    The bias rounding ``|b - s_x s_c round(b / (s_x s_c))| <= s_x s_c / 2`` is the one inexact
    step of a fused QLinearConv; with per-tensor weight steps and batch norm folded, channels
    whose codes span a few levels (often depthwise) have an ``s_x s_c`` near the output step."""
    codes = weight.codes.to(torch.int32)
    largest = codes.abs().flatten(1).amax(1).clamp(min=1)
    # a channel whose largest code is -128 keeps k_c = 1 (127 // 128 would zero it)
    factor = torch.div(127, largest, rounding_mode="floor").clamp(min=1)
    shape = (-1,) + (1,) * (codes.dim() - 1)
    weight.codes = (codes * factor.view(shape)).to(torch.int8)
    scale = weight.scale.double() / factor.double()
    weight.scale = scale.float()
    return scale


def _folded(layer: nn.Module, norm: nn.Module) -> tuple[_OnnxWeight, torch.Tensor]:
    """The ONNX weight (codes, per-channel scale ``s_w gamma_c / sigma_c``) and the float64
    bias ``gamma_c (b_c - mu_c) / sigma_c + beta_c`` of ``layer`` with ``norm`` folded in."""
    with torch.no_grad():
        sigma = torch.sqrt(norm.running_var.double() + norm.eps)
        gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(sigma)
        beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(sigma)
        factor = gamma / sigma
        weight = _OnnxWeight(layer.weight_quantizer, layer.weight)
        scale = weight.scale.double().expand_as(factor) * factor
        bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(sigma)
        bias = factor * (bias - norm.running_mean.double()) + beta
        weight.scale, weight.axis = scale.float(), 0
    return weight, bias


def _bias_codes(layer: nn.Module, norm: nn.Module | None) -> tuple[_OnnxWeight, _OnnxBias,
                                                                    torch.Tensor]:
    """The ONNX weight, the int32 bias codes and the exact float64 bias that
    ``integer_kernels`` export writes for ``layer`` (``norm`` folded in, codes widened; or
    without a batch norm: the layer's bias at ``s_x s_w``)."""
    step_x = layer.input_quantizer.step_size.detach().double()
    if norm is not None:
        weight, bias = _folded(layer, norm)
        return weight, _OnnxBias(bias, step_x * _widen_codes(weight)), bias
    weight = _OnnxWeight(layer.weight_quantizer, layer.weight)
    scale = weight.scale.double().expand(layer.weight.shape[0]) * step_x
    bias = layer.bias.detach().double()
    return weight, _OnnxBias(bias, scale), bias


def _kernel_weights(layer: nn.Module, norm: nn.Module | None):
    """``(weight codes, float32 weight scale per output channel, int32 bias codes)`` that
    ``integer_kernels`` export writes for ``layer`` (``norm`` folded in; zero bias codes
    where the layer has no bias)."""
    channels = layer.weight.shape[0]
    if norm is None and layer.bias is None:
        weight = _OnnxWeight(layer.weight_quantizer, layer.weight)
        return weight.codes, weight.scale.expand(channels), torch.zeros(
            channels, dtype=torch.int32, device=weight.codes.device)
    weight, bias, _ = _bias_codes(layer, norm)
    return weight.codes, weight.scale.expand(channels), bias.codes


def _fold_batch_norms(exported: nn.Module, bias_codes: bool) -> int:
    """Fold every batch norm that follows a quantized convolution into it: the weight codes
    stay, the per-channel scale becomes ``s_w gamma_c / sigma_c`` and the bias
    ``gamma_c (b_c - mu_c) / sigma_c + beta_c`` (float, or int32 codes at ``s_x s_w,c'``)."""
    pairs = _batch_norm_pairs(exported)
    if pairs is None:
        warnings.warn(
            f"torch.fx could not trace {type(exported).__name__}: batch norm is not folded",
            UserWarning, stacklevel=3,
        )
        return 0
    for conv_name, norm_name in pairs:
        layer, norm = exported.get_submodule(conv_name), exported.get_submodule(norm_name)
        if bias_codes and layer.input_quantizer is not None:
            layer.weight_quantizer, layer.onnx_bias, _ = _bias_codes(layer, norm)
            layer.bias = None
            layer.forward = _fold_forward.__get__(layer)
        else:
            layer.weight_quantizer, bias = _folded(layer, norm)
            layer.bias = nn.Parameter(bias.float())
        parent, _, child = norm_name.rpartition(".")
        setattr(exported.get_submodule(parent) if parent else exported, child, nn.Identity())
    return len(pairs)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_input: torch.Tensor,
    *,
    opset: int = 17,
    fold_batch_norm: bool = False,
    bias_codes: bool = False,
    integer_kernels: bool = False,
    calibration_input: torch.Tensor | None = None,
) -> Path:
    """Write ``model`` as ONNX with QuantizeLinear/DequantizeLinear (QDQ) nodes.

    Weights become int8 initializers read through DequantizeLinear (per-axis for per-channel
    steps); every quantized input becomes QuantizeLinear -> DequantizeLinear with the learned step
    as scale and zero point 0 (uint8 for unsigned codes, int8 for signed), with a Clip to the
    ``b``-bit range between them below 8 bits (the QCDQ form, exact). Batch norm and other
    modules export as usual. A weight-only layer (``activation_bits=0``) gets only its weight
    DequantizeLinear and a float input (with ``bias_codes`` its bias stays float: there is no
    ``s_x``). onnxruntime runs this graph exactly but not on integer kernels
    (slower than the float model); ``integer_kernels=True`` writes the form that it fuses into
    QLinearConv / QLinearAdd (faster: docs/quantization.md).

    Args:
        model: a calibrated quantized model with bit widths <= 8 and no LSQ+ offsets.
        path: output ``.onnx`` file.
        example_input: an input batch used for tracing; the batch axis is exported as dynamic.
        opset: ONNX opset (>= 13, for per-axis DequantizeLinear).
        fold_batch_norm: fold each batch norm whose only input is a quantized convolution (found
            by a ``torch.fx`` trace; a warning if tracing fails) into it: the int8 weight codes
            stay and become per-channel with scale ``s_w gamma_c / sigma_c``, the bias becomes
            ``gamma_c (b_c - mu_c) / sigma_c + beta_c``. Exact up to float rounding.
        bias_codes: with ``fold_batch_norm``, store those biases as int32 codes at scale
            ``s_x s_w,c`` behind DequantizeLinear, the form onnxruntime needs to fuse
            ``DequantizeLinear -> Conv -> [Relu] -> QuantizeLinear`` into QLinearConv (8-bit
            layers only: the Clip below 8 bits blocks the fusion). Not exact: rounding the bias to
            ``s_x s_w`` moves pre-activations by up to ``s_x s_w / 2``, which flips low-bit
            codes (3-bit digits model: argmax agreement 96.7%).
        integer_kernels: fold batch norms, write every bias as int32 codes, and add an 8-bit
            uint8 output quantizer after each quantized layer (after its ReLU/ReLU6) and each
            residual add: the consumer's input quantizer where the output reaches one (if it
            also feeds an add: one covering it finely), else min/max on ``calibration_input``.
            Each folded channel's weight codes are multiplied by the largest integer ``k_c``
            that keeps them in int8 (scale / ``k_c``: the same weights), so that its int32
            bias codes are ``k_c`` times finer. Bias rounding and calibrated quantizers are
            the inexact steps; :func:`deployment_model` is the fake model that has them (its
            export reuses its quantizers). See :mod:`stepsize.quantization._onnx_integer`.
        calibration_input: the batch that calibrates those extra quantizers (default
            ``example_input``); use several representative inputs.

    Returns:
        The path written.

    Raises:
        ValueError: a layer over 8 bits, with an offset, uncalibrated, or weight-only with
            ``integer_kernels`` (no input codes); ``bias_codes`` without ``fold_batch_norm``.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from stepsize.quantization import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), 4)
        >>> x = torch.randn(16, 4); _ = net(x)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     export_onnx(net.eval(), folder + "/net.onnx", x).suffix
        '.onnx'
    """
    _check_onnx_arguments(model, example_input, opset, fold_batch_norm, bias_codes,
                          integer_kernels, calibration_input)
    exported = _onnx_module(model, example_input, fold_batch_norm, bias_codes, integer_kernels,
                            calibration_input)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exported, (example_input,), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return path


def _onnx_module(model, example_input, fold_batch_norm, bias_codes, integer_kernels,
                 calibration_input) -> nn.Module:
    """A copy of ``model`` with batch norms folded, output quantizers placed and the LSQ
    quantizers replaced by their ONNX forms (the work of :func:`export_onnx`)."""
    exported = copy.deepcopy(model).eval()
    if _is_deployment_model(exported):
        strip_emulation(exported)  # its float32 arithmetic is onnxruntime's, not the graph's
    if fold_batch_norm or integer_kernels:
        _fold_batch_norms(exported, bias_codes or integer_kernels)
    redundant: set[str] = set()
    if integer_kernels and _is_deployment_model(exported):
        _bias_codes_everywhere(exported)
        for name, module in list(exported.named_modules()):
            if isinstance(module, _BiasRounding):  # carried by the int32 bias codes now
                exported.add_submodule(name, nn.Identity())
        redundant = absorb_placed(exported)
    elif integer_kernels:
        _bias_codes_everywhere(exported)
        exported = trace_for_onnx(exported)
        calibration = example_input if calibration_input is None else calibration_input
        redundant = place_output_quantizers(exported, (calibration,))
    _replace_quantizers(exported, redundant, integer_kernels)
    return _OneInput(exported) if integer_kernels else exported


class _OneInput(nn.Module):
    """``forward(x)`` only: the TorchScript exporter would otherwise pass a traced graph's
    other placeholders' defaults as tensors (timm's ``is_causal=False`` became a tensor)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def _check_onnx_arguments(model, example_input, opset, fold_batch_norm, bias_codes,
                          integer_kernels, calibration_input) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    layers = check_calibrated(model)
    for label, value in (("example_input", example_input),
                         ("calibration_input", calibration_input)):
        if not isinstance(value, torch.Tensor) and (value is not None or label == "example_input"):
            raise TypeError(f"{label} must be a torch.Tensor, got {describe(value)}")
    check_int(opset, "opset", low=13)
    for name, layer in layers:
        for role in ("weight_quantizer", "input_quantizer"):
            quantizer = getattr(layer, role)
            if quantizer is None:
                if integer_kernels:
                    raise ValueError(_WEIGHT_ONLY_KERNELS.format(name=name))
                continue
            if quantizer.bits > 8 or quantizer.offset is not None:
                raise ValueError(
                    f"layer {name!r}: {role} has {quantizer.bits} bits"
                    f"{' and an offset' if quantizer.offset is not None else ''}; ONNX export "
                    "supports up to 8 bits without offsets"
                )
    for flag, value in (("fold_batch_norm", fold_batch_norm), ("bias_codes", bias_codes),
                        ("integer_kernels", integer_kernels)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {describe(value)}")
    if bias_codes and not fold_batch_norm:
        raise ValueError("bias_codes=True needs fold_batch_norm=True")
    for name, attention in model.named_modules():
        if isinstance(attention, QuantMultiheadAttention):
            if attention.query_quantizer is None and integer_kernels:
                raise ValueError(_WEIGHT_ONLY_KERNELS.format(name=name))
            quantizers = [q for q in [attention.query_quantizer] + [
                getattr(attention, w + "_quantizer") for w in attention._weight_names()]
                if q is not None]
            if not all(q.is_initialized for q in quantizers):
                raise ValueError(f"attention {name!r} is not calibrated: run a forward pass")
            if any(q.bits > 8 or q.offset is not None for q in quantizers):
                raise ValueError(f"attention {name!r}: ONNX export supports up to 8 bits "
                                 "without offsets")


def _replace_quantizers(exported: nn.Module, redundant: set[str], uint8: bool = False) -> None:
    """LSQ quantizers -> their ONNX forms (an input quantizer whose input is already the same
    quantization, listed in ``redundant``, becomes an identity; with ``uint8`` signed codes are
    written as uint8 with zero point 128)."""
    activation = from_lsq if uint8 else _OnnxActivation
    for _, attention in list(exported.named_modules()):
        if isinstance(attention, QuantMultiheadAttention):
            for w in attention._weight_names():
                setattr(attention, w + "_quantizer", _OnnxWeight(
                    getattr(attention, w + "_quantizer"), getattr(attention, w)))
            for role in ("query", "key", "value"):
                quantizer = getattr(attention, role + "_quantizer")
                if quantizer is not None and quantizer.is_initialized:
                    setattr(attention, role + "_quantizer", _OnnxActivation(quantizer))
    for name, layer in list(exported.named_modules()):
        if isinstance(layer, _QuantMixin):
            if isinstance(layer.weight_quantizer, LSQQuantizer):
                layer.weight_quantizer = _OnnxWeight(layer.weight_quantizer, layer.weight)
            if layer.input_quantizer is not None:  # None: weight-only, the input stays float
                layer.input_quantizer = (nn.Identity() if name in redundant
                                         else activation(layer.input_quantizer))


def _bias_codes_forward(self, x):
    weight, bias = self.quantized_weight(), self.onnx_bias()
    if isinstance(self, nn.Linear):
        return torch.nn.functional.linear(self.quantized_input(x), weight, bias)
    return self._conv_forward(self.quantized_input(x), weight, bias)


def _bias_codes_everywhere(exported: nn.Module) -> None:
    """Every quantized layer's float bias -> int32 codes at ``s_x s_w,c`` (QLinearConv and
    QGemm take an int32 bias); the layers already folded keep theirs."""
    for _, layer in list(exported.named_modules()):
        if type(layer) not in _QUANT or layer.bias is None:
            continue
        layer.weight_quantizer, layer.onnx_bias, _ = _bias_codes(layer, None)
        layer.bias = None
        layer.forward = _bias_codes_forward.__get__(layer)


class _BiasRounding(nn.Module):
    """Adds the rounding error of the int32 bias codes that ``integer_kernels`` export writes
    for one layer (with its batch norm folded in): ``codes * scale - bias``, recomputed from
    the current parameters at each call and held constant for the gradient. Export folds it
    away (the codes carry it)."""

    folds_into_layer = True

    def __init__(self, layer: nn.Module, norm: nn.Module | None):
        super().__init__()
        self._pair = (layer, norm)  # a tuple: not registered as submodules

    def forward(self, x):
        layer, norm = self._pair
        with torch.no_grad():
            _, codes, bias = _bias_codes(layer, norm)
            error = (codes().double() - bias).to(x.dtype)
        shape = (-1,) + (1,) * (x.dim() - 2) if not isinstance(layer, nn.Linear) else (-1,)
        return x + error.view(shape)


def deployment_model(model: nn.Module, calibration_input: torch.Tensor) -> torch.fx.GraphModule:
    """The fake-quantized model with every quantization that ``export_onnx(...,
    integer_kernels=True)`` adds, so that it computes what onnxruntime runs.

    A ``torch.fx`` copy of ``model`` (quantized layers as leaves) with the output quantizers of
    :mod:`stepsize.quantization._onnx_integer` inserted (uint8 codes; those at residual adds and
    skip paths calibrated on ``calibration_input``, min/max; their steps are parameters that
    train with LSQ's gradient; a skip path that its consumer's own 8-bit min/max
    quantization covers is tied to that step instead) and, after each quantized layer (after
    its batch norm), the
    rounding error of its int32 bias codes added as a constant. In eval mode each fused
    kernel's output (QLinearConv, QLinearAdd, QLinearGlobalAveragePool, the QGemm logits) is
    computed as onnxruntime's CPU kernels compute it (the exact int32 accumulator, one float32
    requantization rounding half to even; :mod:`stepsize.quantization._onnx_emulation`), with
    the fake-quantized value's gradient (straight through), so it equals the exported graph
    run by onnxruntime code for code; in train mode (batch statistics) it is the fake model.
    ``export_onnx(deployment_model(...), integer_kernels=True)`` reuses its quantizers. Train
    it (``train_model``: QAT of what is deployed) or fine-tune it in eval mode (batch norm
    frozen) to recover what the extra quantizers cost: onnxruntime's integer kernels need
    those requantizations and int32 biases, which the model they are added to does not
    compute, so the export of ``model`` itself agrees with ``model`` only up to them
    (docs/quantization.md).

    Args:
        model: a calibrated quantized model (as for ``export_onnx(..., integer_kernels=True)``).
        calibration_input: a batch of representative inputs.

    Returns:
        The deployment model, in eval mode; ``model`` is not modified.

    Raises:
        ValueError, TypeError: as :func:`export_onnx` with ``integer_kernels=True``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from stepsize.quantization import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4),
        ...                                    nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)), 8)
        >>> x = torch.randn(8, 1, 4, 4); _ = net(x)
        >>> deployed = deployment_model(net.eval(), x)
        >>> [type(m).__name__ for m in deployed.modules()].count("OutputQuantizer")
        1
    """
    if not isinstance(calibration_input, torch.Tensor):
        raise TypeError(
            f"calibration_input must be a torch.Tensor, got {describe(calibration_input)}")
    _check_onnx_arguments(model, calibration_input, 17, False, False, True, None)
    copied = copy.deepcopy(model).eval()
    try:
        with torch.no_grad():
            copied(calibration_input)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"calibration_input does not fit the model: {exc}") from exc
    pairs = dict(_batch_norm_pairs(copied) or [])
    traced = trace_for_onnx(copied)
    modules = dict(traced.named_modules())
    norms = {norm: layer for layer, norm in pairs.items()}
    for node in list(traced.graph.nodes):
        target = str(node.target) if node.op == "call_module" else None
        layer = modules.get(norms.get(target, target))
        if target in norms or (type(layer) in _QUANT and layer.bias is not None
                               and target not in pairs):
            name = f"bias_rounding_{len([n for n in modules if n.startswith('bias_r')])}"
            modules[name] = _BiasRounding(layer, modules[target] if target in norms else None)
            traced.add_submodule(name, modules[name])
            with traced.graph.inserting_after(node):
                new = traced.graph.call_module(name, (node,))
            node.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
    traced.recompile()
    place_output_quantizers(traced, (calibration_input,), deployment=True)
    emulate_kernels(traced, {layer: modules[norm] for layer, norm in pairs.items()})
    return traced.eval()


def _is_deployment_model(model: nn.Module) -> bool:
    return isinstance(model, torch.fx.GraphModule) and any(
        isinstance(m, (OutputQuantizer, _BiasRounding)) for m in model.modules())
