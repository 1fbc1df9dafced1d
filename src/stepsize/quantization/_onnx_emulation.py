"""The arithmetic of onnxruntime's fused integer kernels, for a deployment model in eval mode.

A :func:`~stepsize.quantization.export.deployment_model` computes the integer-kernel graph's
quantizations in float32, as a fake-quantized model does: a convolution of dequantized values,
the batch norm, the bias rounding, then ``round(y / s_y)``. onnxruntime's CPU kernels compute the
same codes differently (``onnxruntime/core/mlas``: ``MlasRequantizeOutput``, the QLinearAdd and
QLinearGlobalAveragePool kernels, QGemm's scale output processor):

* QLinearConv / QGemm with uint8 output: the int32 accumulator ``acc = sum (x_bar - z_x) W_bar``
  plus the int32 bias codes, exact; then ``q = clamp(rne(f32(acc + b) * M) + z_y, 0, 255)`` with
  ``M = f32(f32(s_x s_w,c) / s_y)`` (one float32 rounding after an exact sum);
* QGemm with float output (logits): ``f32(acc + b) * f32(s_x s_w,c)``;
* QLinearAdd: ``rne(a r_A + (b r_B + k))`` with ``r_A = f32(s_A / s_C)``, ``r_B = f32(s_B /
  s_C)``, ``k = z_C - fma(r_A, z_A, r_B z_B)`` in float32 and fused multiply-adds (the AVX2
  kernel);
* QLinearGlobalAveragePool: ``rne(f32(sum q - n z_in) * f32(s_in / (s_out n))) + z_out``.

A float32 convolution differs from the exact accumulator by a few units in the last place, so
a code whose ``y / s_y`` lies that close to a rounding tie comes out one apart; on a network
that amplifies small changes (mobilenet_v2 on the digits) the argmax then differs. The modules
below are inserted after those quantizers: in eval mode their value is the kernels' result
computed from the same codes and parameters (so the deployment model equals onnxruntime code
for code), with the gradient of the fake-quantized value (straight through); in train mode
(batch statistics in batch norm, which the export does not fold) they pass the fake value on.

Reference: onnxruntime 1.32 MLAS (``quantize.cpp``, ``qladd_avx2.cpp``, ``qlgavgpool.cpp``,
``qlinearconv.cc``, ``quant_gemm.cc``).
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from stepsize.quantization._onnx_integer import OutputQuantizer, _kind, _tail
from stepsize.quantization.layers import QuantConv1d, QuantConv2d, QuantLinear

_PLAIN = (QuantConv1d, QuantConv2d, QuantLinear)


class _StraightThrough(torch.autograd.Function):
    """Value ``exact``, gradient of ``fake`` (both the same shape)."""

    @staticmethod
    def forward(ctx, fake, exact):
        return exact

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _f32(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32).detach()


def _codes(values: torch.Tensor, quantizer: OutputQuantizer) -> torch.Tensor:
    """The uint8 codes ``clamp(round(v / s) + z)`` of values on ``quantizer``'s grid (float64)."""
    step = _f32(quantizer.step())
    codes = torch.round(values.float() / step) + quantizer.zero_point
    return codes.clamp(quantizer.low, quantizer.high).double()


def _dequantize(codes: torch.Tensor, quantizer: OutputQuantizer, dtype) -> torch.Tensor:
    """``(q - z) s`` in float32 (DequantizeLinear), as ``dtype``."""
    return ((codes.float() - quantizer.zero_point) * _f32(quantizer.step())).to(dtype)


def _requantize(total: torch.Tensor, multiplier: torch.Tensor, zero: int) -> torch.Tensor:
    """``clamp(rne(f32(total) * M) + z, 0, 255)`` (``MlasRequantizeOutput``), float64 codes."""
    return (torch.round(total.float() * multiplier) + zero).clamp(0, 255).double()


def _activation_bounds(quantizer: OutputQuantizer, activation: str | None) -> tuple[int, int]:
    """The code range after a ReLU / ReLU6 applied to the codes (what the export writes)."""
    low, high, zero = quantizer.low, quantizer.high, quantizer.zero_point
    if activation in ("relu", "relu6"):
        low = max(low, zero)
    if activation == "relu6":
        high = min(high, zero + round(6 / float(quantizer.step().detach())))
    return low, high


class _Emulation(nn.Module):
    """Base: straight-through in eval mode, the fake value in train mode."""

    def forward(self, fake, *inputs):
        if self.training:
            return fake
        # integer arithmetic: never under autocast (bf16 products are not exact)
        with torch.no_grad(), torch.autocast(fake.device.type, enabled=False):
            exact = self.exact(*inputs).to(fake.dtype)
        if not torch.is_grad_enabled() or not fake.requires_grad:
            return exact
        return _StraightThrough.apply(fake, exact)


class KernelOutput(_Emulation):
    """A quantized conv/linear layer (batch norm folded, int32 bias codes) and its output
    quantizer as QLinearConv / QGemm compute them; ``quantizer`` None: QGemm's float output."""

    def __init__(self, layer, norm, quantizer: OutputQuantizer | None, activation: str | None):
        super().__init__()
        self._parts = (layer, norm, quantizer)  # a tuple: not registered as submodules
        self.activation = activation

    def accumulator(self, x: torch.Tensor):
        """``acc + b`` (float64, exact) and the float32 weight scale per output channel."""
        from stepsize.quantization.export import _kernel_weights

        layer, norm, _ = self._parts
        codes, scale, bias = _kernel_weights(layer, norm)
        quantizer = layer.input_quantizer
        q_n, q_p = quantizer.bounds
        step = _f32(quantizer.step_size.reshape(()))
        x_codes = (x.float() / step).clamp(-q_n, q_p).round()
        # float32 sums of integers are exact below 2^24: one float32 product where every
        # partial sum stays below it, else the input codes split as 16 h + l (|h|, l < 16),
        # two float32 products, else float64
        terms = codes[0].numel() * int(codes.to(torch.int32).abs().max())  # int8 -128: abs
        if terms * max(q_n, q_p) < 2**24:
            parts = [(1, x_codes)]
        elif terms * 16 < 2**24:
            high = torch.floor(x_codes / 16)
            parts = [(16, high), (1, x_codes - 16 * high)]
        else:
            parts = [(1, x_codes.double())]
        acc = sum(factor * _integer_product(layer, part, codes.to(part.dtype)).double()
                  for factor, part in parts)
        shape = (-1,) + (1,) * (codes.dim() - 2)
        return acc + bias.double().view(shape), (step * scale).view(shape)

    def exact(self, x):
        total, scale = self.accumulator(x)
        quantizer = self._parts[2]
        if quantizer is None:  # QGemm, float output
            return total.float() * scale
        codes = _requantize(total, scale / _f32(quantizer.step()), quantizer.zero_point)
        codes = codes.clamp(*_activation_bounds(quantizer, self.activation))
        return _dequantize(codes, quantizer, torch.float32)


def _integer_product(layer: nn.Module, x_codes: torch.Tensor, codes: torch.Tensor):
    """``layer``'s convolution or matrix product of input codes with weight codes (no bias)."""
    if isinstance(layer, nn.Linear):
        return x_codes @ codes.T
    conv = F.conv1d if codes.dim() == 3 else F.conv2d
    padding = layer.padding
    if layer.padding_mode != "zeros":
        x_codes = F.pad(x_codes, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        padding = 0
    return conv(x_codes, codes, None, layer.stride, padding, layer.dilation, layer.groups)


class AddOutput(_Emulation):
    """A residual add of two quantized tensors and its output quantizer, as QLinearAdd."""

    def __init__(self, first: OutputQuantizer, second: OutputQuantizer,
                 out: OutputQuantizer, activation: str | None):
        super().__init__()
        self._parts = (first, second, out)
        self.activation = activation

    def exact(self, a, b):
        first, second, out = self._parts
        ratio_a = _f32(first.step()) / _f32(out.step())
        ratio_b = _f32(second.step()) / _f32(out.step())
        # fused multiply-adds (the kernel's and the compiler's contraction of the constant
        # part): a float32 times an integer up to 255 and the sums here are exact in float64,
        # so rounding the float64 result once to float32 is the fused result
        product = (ratio_a.double() * first.zero_point + (ratio_b * second.zero_point).double())
        fixed = _f32(out.zero_point) - product.float()
        inner = (_codes(b, second) * ratio_b.double() + fixed.double()).float()
        total = (_codes(a, first) * ratio_a.double() + inner.double()).float()
        codes = (torch.round(total)).clamp(0, 255).double()
        codes = codes.clamp(*_activation_bounds(out, self.activation))
        return _dequantize(codes, out, torch.float32)


class PoolOutput(_Emulation):
    """A global average pooling of quantized codes and its output quantizer, as
    QLinearGlobalAveragePool (other poolings pass the fake value on)."""

    def __init__(self, source: OutputQuantizer, out: OutputQuantizer):
        super().__init__()
        self._parts = (source, out)

    def forward(self, fake, x):
        if fake.shape[2:].numel() != 1 or x.dim() < 3:
            return fake
        return super().forward(fake, x)

    def exact(self, x):
        source, out = self._parts
        size = x.shape[2:].numel()
        total = _codes(x, source).flatten(2).sum(2) - source.zero_point * size
        scale = _f32(source.step()) / (_f32(out.step()) * _f32(float(size)))
        codes = _requantize(total, scale, out.zero_point)
        return _dequantize(codes, out, torch.float32).view(*x.shape[:2], *([1] * (x.dim() - 2)))


def _activation(node, modules) -> str | None:
    return None if node is None else _kind(node, modules)


def _output_quantizer(node: torch.fx.Node, modules: dict) -> tuple | None:
    """``(node, quantizer)`` of the output quantizer that is ``node``'s only user, else None."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    module = modules.get(user.target) if user.op == "call_module" else None
    return (user, module) if isinstance(module, OutputQuantizer) else None


def _source_quantizer(node, modules) -> OutputQuantizer | None:
    """The output quantizer whose codes ``node`` carries: its own, or the one an emulation
    node (inserted earlier in this pass) follows."""
    while isinstance(node, torch.fx.Node) and node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, OutputQuantizer):
            return module
        if not isinstance(module, _Emulation) or not node.args:
            return None
        node = node.args[0]
    return None


def _layer_emulation(node, modules, norms: dict):
    """``(after, module, args)`` for a quantized layer node, or None."""
    layer = modules[node.target]
    # the plain 8-bit layers, which export writes as QLinearConv / QGemm (a subclass may pad
    # or compute in its own way; below 8 bits the codes take a Clip)
    if type(layer) not in _PLAIN or not node.args or layer.input_quantizer is None or \
            (layer.input_quantizer.bits, layer.weight_quantizer.bits) != (8, 8) or \
            layer.input_quantizer.step_size.numel() != 1:
        return None
    tail, activation = _tail(node, modules)
    found = _output_quantizer(tail, modules)
    if found is not None:
        return found[0], KernelOutput(layer, norms.get(node.target), found[1],
                                      _activation(activation, modules)), (node.args[0],)
    if isinstance(layer, nn.Linear) and activation is None and tail.users and all(
            user.op == "output" for user in tail.users):
        return tail, KernelOutput(layer, norms.get(node.target), None, None), (node.args[0],)
    return None


def _add_emulation(node, modules):
    quantizers = [_source_quantizer(a, modules) for a in node.args[:2]]
    if not all(isinstance(q, OutputQuantizer) for q in quantizers):
        return None
    tail, activation = _tail(node, modules)
    found = _output_quantizer(tail, modules)
    if found is None:
        return None
    return found[0], AddOutput(*quantizers, found[1], _activation(activation, modules)), \
        tuple(node.args[:2])


def _global_pool(node, modules) -> bool:
    """An adaptive average pooling to one element per channel (what QLinearGlobalAveragePool
    computes); a windowed pooling that happens to end at 1 x 1 averages only its window."""
    if node.op == "call_module":
        module = modules[node.target]
        if not isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            return False
        size = module.output_size
    elif node.target in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d):
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
    else:
        return False
    sizes = size if isinstance(size, (tuple, list)) else (size,)
    return all(s == 1 for s in sizes)


def _pool_emulation(node, modules):
    if not _global_pool(node, modules):
        return None
    source = node.args[0] if node.args else None
    quantizer = _source_quantizer(source, modules)
    found = _output_quantizer(node, modules)
    if quantizer is None or found is None:
        return None
    return found[0], PoolOutput(quantizer, found[1]), (source,)


def emulate_kernels(graph_module: torch.fx.GraphModule, norms: dict) -> int:
    """Insert the emulation modules after every fused kernel's output quantizer of a
    deployment graph, in graph order (so each reads the emulated values before it), in place.
    ``norms``: layer target -> the batch norm folded into it. Returns how many."""
    modules = dict(graph_module.named_modules())
    count = 0
    for node in list(graph_module.graph.nodes):
        kind = _kind(node, modules)
        plan = (_layer_emulation(node, modules, norms) if kind == "layer" else
                _add_emulation(node, modules) if kind == "add" else
                _pool_emulation(node, modules) if kind == "pool" else None)
        if plan is None:
            continue
        after, emulation, args = plan
        name = f"kernel_emulation_{count}"
        graph_module.add_submodule(name, emulation)
        modules[name] = emulation
        with graph_module.graph.inserting_after(after):
            new = graph_module.graph.call_module(name, (after, *args))
        after.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
        count += 1
    graph_module.graph.lint()
    graph_module.recompile()
    return count


def strip_emulation(graph_module: torch.fx.GraphModule) -> None:
    """Remove the emulation nodes (each passes its first input on), in place: the graph that
    export writes."""
    for node in list(graph_module.graph.nodes):
        module = graph_module.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, _Emulation):
            node.replace_all_uses_with(node.args[0])
            graph_module.graph.erase_node(node)
    graph_module.delete_all_unused_submodules()
    graph_module.graph.lint()
    graph_module.recompile()
