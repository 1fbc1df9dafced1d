"""Integer inference of any ``torch.fx``-traceable quantized model, in graph order.

Every quantized layer (``QuantConv1d``, ``QuantConv2d``, ``QuantLinear``, their plain subclasses,
and the projections of ``QuantMultiheadAttention``) becomes an integer layer. With input codes
``x_bar = clamp(round(x / s_x), -Q_N, Q_P)``, weight codes ``W_bar`` (step ``s_w,c`` per tensor or
per output channel ``c``), bias ``b`` and a batch norm ``(gamma, beta, mu, sigma)`` that directly
follows a convolution (folded)::

    acc    = W_bar * x_bar                              (exact, checked to fit int32)
    y_c    = M_c acc + B_c,   M_c = gamma_c s_w,c s_x / sigma_c,
                              B_c = gamma_c (b_c - mu_c) / sigma_c + beta_c

Between integer layers the graph runs as traced: residual adds, concatenations, pooling, ReLU
and reshapes act on ``y``, and each consumer requantizes what reaches it,
``x_bar' = clamp(round(y / s'), -Q_N', Q_P')`` (for a plain chain this is the folded
requantization ``round(M_c / s' acc + B_c / s')``). ``y`` is carried in float64, so the
integer model equals the fake-quantized model evaluated in float64. Operations without an
integer form (SiLU, GELU, hardswish, sigmoid, softmax inside attention, layer norm, a batch
norm that follows no convolution, multiplication by a learned scale) run in float between
integer layers and are listed in :attr:`IntegerModel.float_ops`.

Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020 (``y_bar = W_bar x_bar``);
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018 (batch-norm folding, requantization).
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from stepsize.quantization.layers import (
    QuantMultiheadAttention,
    _QuantMixin,
    _QuantSubclassMixin,
    check_calibrated,
)
from stepsize.quantization.quantizer import LSQQuantizer

_INT32_MAX = 2**31 - 1
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_FLOAT_BASES = (nn.Linear, nn.Conv1d, nn.Conv2d)
# call_module types that are exact on requantized values (no float-only arithmetic)
_EXACT_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Unflatten, nn.Dropout,
    nn.Identity,
)
_EXACT_FUNCTIONS = {
    operator.add, operator.sub, operator.getitem, operator.neg, torch.add, torch.cat,
    torch.concat, torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.relu,
    torch.clamp, torch.stack, torch.chunk, torch.split, torch.squeeze, torch.unsqueeze,
    getattr, F.relu, F.relu6, F.hardtanh, F.max_pool1d, F.max_pool2d, F.avg_pool1d,
    F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.dropout, torch._assert,
    # shape arithmetic on Python ints (traced from asserts and reshapes)
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    operator.floordiv, operator.mod,
}
_EXACT_METHODS = {
    "add", "add_", "view", "reshape", "flatten", "permute", "transpose", "contiguous", "size",
    "expand", "unsqueeze", "squeeze", "relu", "relu_", "clamp", "chunk", "split", "unbind",
    "mean", "dim", "__getitem__", "repeat", "flip",
}
# layers with weights that have no integer form here
_WEIGHTED_FLOAT = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNBase, nn.RNNCellBase, nn.Embedding,
                   nn.EmbeddingBag, nn.Bilinear, nn.MultiheadAttention)


def _codes(values: torch.Tensor, bounds: tuple[int, int]) -> torch.Tensor:
    q_n, q_p = bounds
    return torch.clamp(torch.round(values), -q_n, q_p)


def _code_dtype(bits: int) -> torch.dtype:
    return torch.int8 if bits <= 8 else torch.int16


def _weight_codes(quantizer: LSQQuantizer, weight: torch.Tensor):
    """Integer weight codes and the step per output row (float64)."""
    step = quantizer.step_size.detach().double()
    shape = (-1,) + (1,) * (weight.dim() - 1) if quantizer.per_channel else ()
    codes = _codes(weight.detach().double() / step.reshape(shape), quantizer.bounds)
    return codes.to(_code_dtype(quantizer.bits)), step.expand(weight.shape[0]).clone()


def _check_int32(acc: torch.Tensor, name: str) -> torch.Tensor:
    peak = float(acc.abs().max()) if acc.numel() else 0.0
    if peak > _INT32_MAX:
        raise OverflowError(f"layer {name!r}: accumulator {peak:.3g} overflows int32")
    return acc.to(torch.int32)


def _plain_base(layer: nn.Module) -> type[nn.Module] | None:
    """The float class whose ``forward`` a quantized layer runs, if that is the base class's own
    (``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d``), else None (a subclass with its own forward)."""
    base = next((b for b in _FLOAT_BASES if isinstance(layer, b)), None)
    if base is None:
        return None
    if isinstance(layer, _QuantSubclassMixin):
        float_class = next(c for c in type(layer).__mro__
                           if issubclass(c, base) and not issubclass(c, _QuantMixin))
        if float_class.forward is not base.forward or (
                base is not nn.Linear and float_class._conv_forward is not base._conv_forward):
            return None
    return base


class IntegerLayer(nn.Module):
    """One quantized conv/linear layer in integer arithmetic (see the module docstring).

    ``forward(y)`` requantizes its float input to the input codes, accumulates ``W_bar * x_bar``
    exactly (integer-valued float64, stored as int32) and returns ``M_c acc + B_c`` (float64).
    """

    def __init__(self, name: str, layer: nn.Module, batch_norm: nn.Module | None = None):
        super().__init__()
        self.name = name
        self.linear = isinstance(layer, nn.Linear)
        codes, weight_step = _weight_codes(layer.weight_quantizer, layer.weight)
        self.register_buffer("weight_codes", codes)
        self.register_buffer("input_step", layer.input_quantizer.step_size.detach().double())
        self.input_bounds = layer.input_quantizer.bounds
        channels = layer.weight.shape[0]
        scale = weight_step * self.input_step
        bias = (layer.bias.detach().double() if layer.bias is not None
                else torch.zeros(channels, dtype=torch.float64, device=scale.device))
        if batch_norm is not None:
            sigma = torch.sqrt(batch_norm.running_var.double() + batch_norm.eps)
            gamma = (batch_norm.weight.detach().double() if batch_norm.weight is not None
                     else torch.ones_like(sigma))
            beta = (batch_norm.bias.detach().double() if batch_norm.bias is not None
                    else torch.zeros_like(sigma))
            scale = gamma * scale / sigma
            bias = gamma * (bias - batch_norm.running_mean.double()) / sigma + beta
        self.register_buffer("multiplier", scale)
        self.register_buffer("offset", bias)
        if not self.linear:
            self.conv = {key: getattr(layer, key) for key in (
                "stride", "padding", "dilation", "groups", "padding_mode",
                "_reversed_padding_repeated_twice")}
            self.conv["dims"] = layer.weight.dim() - 2
        self.recorder: list | None = None

    def quantize_input(self, values: torch.Tensor) -> torch.Tensor:
        """Input codes ``clamp(round(y / s_x), -Q_N, Q_P)`` (int32): the requantization."""
        return _codes(values.double() / self.input_step, self.input_bounds).to(torch.int32)

    def accumulate(self, codes: torch.Tensor) -> torch.Tensor:
        """The integer accumulator ``W_bar * x_bar`` (int32), computed exactly."""
        weight = self.weight_codes.double()
        if self.linear:
            return _check_int32(codes.double() @ weight.T, self.name)
        conv = self.conv
        padding, values = conv["padding"], codes.double()
        if conv["padding_mode"] != "zeros":
            values = F.pad(values, conv["_reversed_padding_repeated_twice"],
                           mode=conv["padding_mode"])
            padding = 0
        function = F.conv1d if conv["dims"] == 1 else F.conv2d
        acc = function(values, weight, None, conv["stride"], padding, conv["dilation"],
                       conv["groups"])
        return _check_int32(acc, self.name)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        codes = self.quantize_input(values)
        if self.recorder is not None:
            self.recorder.append(codes)
        acc = self.accumulate(codes).double()
        shape = (-1,) if self.linear else (-1,) + (1,) * self.conv["dims"]
        return acc * self.multiplier.view(shape) + self.offset.view(shape)


class IntegerAttention(nn.Module):
    """``QuantMultiheadAttention`` with integer input and output projections: query, key and
    value codes times the weight codes (``acc * s_x s_w,c + b``), then the scaled dot-product
    attention and softmax in float, then ``out_proj`` as an :class:`IntegerLayer`."""

    def __init__(self, name: str, attention: QuantMultiheadAttention):
        super().__init__()
        self.name = name
        self.attention = attention  # for its settings and bias_k/bias_v; projections run here
        self.out_proj = IntegerLayer(f"{name}.out_proj", attention.out_proj)
        self.input_bounds = []
        for index, role in enumerate(("query", "key", "value")):
            quantizer = getattr(attention, role + "_quantizer")
            ready = quantizer.is_initialized
            self.register_buffer(f"input_step_{index}", quantizer.step_size.detach().double()
                                 if ready else None)
            self.input_bounds.append(quantizer.bounds if ready else None)
        embed = attention.embed_dim
        if attention._qkv_same_embed_dim:
            codes, steps = _weight_codes(attention.in_proj_weight_quantizer,
                                         attention.in_proj_weight)
            parts = [(codes[i * embed:(i + 1) * embed], steps[i * embed:(i + 1) * embed])
                     for i in range(3)]
        else:
            parts = [_weight_codes(getattr(attention, f"{p}_proj_weight_quantizer"),
                                   getattr(attention, f"{p}_proj_weight")) for p in "qkv"]
        bias = attention.in_proj_bias
        for index, (codes, steps) in enumerate(parts):
            self.register_buffer(f"weight_codes_{index}", codes)
            self.register_buffer(f"weight_step_{index}", steps)
            self.register_buffer(f"bias_{index}", None if bias is None else
                                 bias.detach().double()[index * embed:(index + 1) * embed])

    def _project(self, tensor, part, quantized):
        role = min(quantized.get(id(tensor), part), part)
        quantized.setdefault(id(tensor), part)
        input_step = getattr(self, f"input_step_{role}")
        codes = _codes(tensor.double() / input_step, self.input_bounds[role])
        weight_codes = getattr(self, f"weight_codes_{part}").double()
        acc = _check_int32(codes @ weight_codes.T, self.name).double()
        out = acc * (getattr(self, f"weight_step_{part}") * input_step)
        bias = getattr(self, f"bias_{part}")
        return out if bias is None else out + bias

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        attention, quantized = self.attention, {}
        q, k, v = (self._project(t, i, quantized) for i, t in enumerate((query, key, value)))
        batched = query.dim() == 3
        if attention.batch_first and batched:
            q, k, v = (t.transpose(0, 1) for t in (q, k, v))
        eye = torch.eye(attention.embed_dim, dtype=q.dtype, device=q.device)
        out, weights = F.multi_head_attention_forward(
            q, k, v, attention.embed_dim, attention.num_heads, None, None, attention.bias_k,
            attention.bias_v, attention.add_zero_attn, 0.0, eye, None, training=False,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=True, q_proj_weight=eye, k_proj_weight=eye,
            v_proj_weight=eye, average_attn_weights=average_attn_weights, is_causal=is_causal,
        )
        out = self.out_proj(out)
        if attention.batch_first and batched:
            out = out.transpose(0, 1)
        return out, weights


class _Tracer(torch.fx.Tracer):
    """Quantized layers, quantized attention and quantizers stay whole (leaves); torch.nn
    containers that hold a quantized layer are traced through."""

    def is_leaf_module(self, module, qualified_name):
        if isinstance(module, (_QuantMixin, QuantMultiheadAttention, LSQQuantizer)):
            return True
        holds = any(isinstance(m, (_QuantMixin, QuantMultiheadAttention))
                    for m in module.modules())
        return not holds and super().is_leaf_module(module, qualified_name)


def trace_quantized(model: nn.Module) -> torch.fx.GraphModule:
    """A ``torch.fx`` trace of a copy of ``model`` in eval mode, quantized layers as leaves."""
    copied = copy.deepcopy(model).eval()
    try:
        graph = _Tracer().trace(copied)
    except Exception as error:  # noqa: BLE001 - any tracing failure is reported the same way
        raise TypeError(
            f"integer export needs a model that torch.fx can trace; tracing "
            f"{type(model).__name__} failed ({type(error).__name__}: {error}). Make the "
            "data-dependent part a leaf module or export a traceable sub-model"
        ) from error
    return torch.fx.GraphModule(copied, graph)


def _describe_node(node: torch.fx.Node, module: nn.Module | None) -> str:
    if module is not None:
        return f"{node.target} ({type(module).__name__})"
    target = node.target if isinstance(node.target, str) else getattr(
        node.target, "__name__", str(node.target))
    return f"{node.name} ({target})"


def _foldable_batch_norms(graph_module, modules) -> dict[str, torch.fx.Node]:
    """conv target -> batch-norm node, for batch norms whose only input is a quantized
    convolution that nothing else reads (each called once)."""
    calls = [n.target for n in graph_module.graph.nodes if n.op == "call_module"]
    folds = {}
    for node in graph_module.graph.nodes:
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, _BATCH_NORM) or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        conv = modules.get(source.target) if isinstance(source, torch.fx.Node) and \
            source.op == "call_module" else None
        if (isinstance(conv, _QuantMixin) and not isinstance(conv, nn.Linear)
                and len(source.users) == 1 and norm.running_var is not None
                and calls.count(node.target) == 1 and calls.count(source.target) == 1):
            folds[source.target] = node
    return folds


def _integer_module(target: str, module: nn.Module, batch_norm) -> nn.Module | None:
    """The integer replacement of a call_module target, None to keep it, or an error."""
    if isinstance(module, _QuantMixin):
        if _plain_base(module) is None:
            raise ValueError(
                f"layer {target!r} ({type(module).__name__}) is a quantized subclass with its own "
                "forward, which integer export cannot map to integer arithmetic"
            )
        return IntegerLayer(target, module, batch_norm)
    if isinstance(module, QuantMultiheadAttention):
        return IntegerAttention(target, module)
    if isinstance(module, _WEIGHTED_FLOAT):
        raise ValueError(
            f"layer {target!r} ({type(module).__name__}) is not quantized: integer export needs "
            "every conv/linear/attention layer quantized (quantize_model with first_last_bits=8) "
            "and has no integer form for other layers with weights"
        )
    return None


def _set_module(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, child = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _convert_graph(graph_module: torch.fx.GraphModule) -> list[str]:
    """Replace quantized layers by integer ones in place, fold batch norms; the float ops."""
    modules = dict(graph_module.named_modules())
    folds = _foldable_batch_norms(graph_module, modules)
    float_ops, done = [], set()
    for node in list(graph_module.graph.nodes):
        module = modules.get(node.target) if node.op == "call_module" else None
        if module is not None and node.target not in done:
            norm_node = folds.get(node.target)
            replacement = _integer_module(
                node.target, module, None if norm_node is None else modules[norm_node.target])
            if replacement is not None:
                _set_module(graph_module, node.target, replacement)
                done.add(node.target)
                if norm_node is not None:
                    norm_node.replace_all_uses_with(node)
                    graph_module.graph.erase_node(norm_node)
                    done.add(norm_node.target)
                if isinstance(replacement, IntegerAttention):
                    float_ops.append(f"{node.target} (softmax attention)")
                continue
        if node.op in ("placeholder", "output", "get_attr") or node.target in done:
            continue
        if module is not None:
            exact = isinstance(module, _EXACT_MODULES)
        elif node.op == "call_function":
            exact = node.target in _EXACT_FUNCTIONS
        else:
            exact = node.target in _EXACT_METHODS
        if not exact:
            float_ops.append(_describe_node(node, module))
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return float_ops


class IntegerModel(nn.Module):
    """Integer-arithmetic inference of a quantized model, run as its ``torch.fx`` graph.

    Attributes:
        graph_module: the traced graph with :class:`IntegerLayer` / :class:`IntegerAttention`
            in place of the quantized layers and folded batch norms removed.
        float_ops: the operations computed in float between integer layers, one string per
            graph node (``"features.1.2 (SiLU)"``, ``"mul (mul)"``, ...); empty when the whole
            model is integer layers and exact operations (ReLU, pooling, add, cat, reshapes).
    """

    def __init__(self, graph_module: torch.fx.GraphModule, float_ops: list[str]):
        super().__init__()
        self.graph_module = graph_module.double()
        self.float_ops = list(float_ops)

    @property
    def stages(self) -> list[IntegerLayer]:
        """The integer layers in graph order (an attention's ``out_proj`` at its place)."""
        layers = []
        for node in self.graph_module.graph.nodes:
            module = (self.graph_module.get_submodule(node.target)
                      if node.op == "call_module" else None)
            module = module.out_proj if isinstance(module, IntegerAttention) else module
            if isinstance(module, IntegerLayer) and module not in layers:
                layers.append(module)
        return layers

    @torch.no_grad()
    def input_codes(self, *inputs, **kwargs) -> list[torch.Tensor]:
        """Integer codes (int32) entering each integer layer, in the order they are called."""
        recorded: list[torch.Tensor] = []
        stages = self.stages
        for stage in stages:
            stage.recorder = recorded
        try:
            self.graph_module(*_to_double(inputs), **_to_double(kwargs))
        finally:
            for stage in stages:
                stage.recorder = None
        return recorded

    @torch.no_grad()
    def forward(self, *inputs, **kwargs):
        dtype = next((t.dtype for t in inputs if torch.is_tensor(t) and t.is_floating_point()),
                     torch.float32)
        outputs = self.graph_module(*_to_double(inputs), **_to_double(kwargs))
        return torch.utils._pytree.tree_map(
            lambda t: t.to(dtype) if torch.is_tensor(t) and t.is_floating_point() else t, outputs)


def _to_double(tree):
    return torch.utils._pytree.tree_map(
        lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t, tree)


def _refuse_weight_only(model: nn.Module) -> None:
    """ValueError naming the first layer without an input quantizer (weight-only mode)."""
    for name, module in model.named_modules():
        if isinstance(module, _QuantMixin):
            missing = module.input_quantizer is None
        elif isinstance(module, QuantMultiheadAttention):
            missing = module.query_quantizer is None
        else:
            continue
        if missing:
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) is weight-only (activation_bits=0, "
                "no input quantizer): integer export needs integer input codes x_bar = "
                "round(x / s_x), and this layer's input has no step s_x. Quantize the "
                "activations too, or use export_onnx (weights as int8 codes, float inputs)"
            )


def build_integer_model(model: nn.Module) -> IntegerModel:
    """Check, trace and convert ``model`` (the work of :func:`export_integer`)."""
    check_calibrated(model)
    _refuse_weight_only(model)
    for name, module in model.named_modules():
        if isinstance(module, LSQQuantizer) and module.offset is not None:
            raise ValueError(f"quantizer {name!r} has an LSQ+ offset, which integer export does "
                             "not fold; export a model without offsets")
    graph_module = trace_quantized(model)
    float_ops = _convert_graph(graph_module)
    return IntegerModel(graph_module, float_ops).eval()
