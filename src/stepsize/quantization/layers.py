"""Quantized layers (weights and inputs through :class:`LSQQuantizer`) and model conversion.

A quantized layer computes ``layer(Q_x(x), Q_w(W)) + bias``: the input activation and the weight are
fake-quantized with their own learned step sizes, the bias stays in full precision, and so does
batch norm, which is a separate module (Esser et al. 2020, section 3).

Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from stepsize._validation import check_choice, check_int, describe
from stepsize.quantization.quantizer import (
    INIT_METHODS,
    STE_MODES,
    GradScale,
    LSQQuantizer,
    check_bits,
)

__all__ = [
    "FLOAT_LAYER_TYPES",
    "QUANTIZABLE_TYPES",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "QuantMultiheadAttention",
    "float_layers",
    "forward_order",
    "quant_layers",
    "quantize_model",
    "step_size_parameters",
]


def _activation_bits(activation_bits, weight_bits: int) -> int:
    """None: the weight bits; 0: no input quantization (weight-only); else 2..16."""
    if activation_bits is None:
        return weight_bits
    if check_int(activation_bits, "activation_bits", low=0, high=16) == 0:
        return 0
    return check_bits(activation_bits, "activation_bits")


def _input_quantizer(activation_bits, activation_signed, activation_init, grad_scale, offset,
                     ste, device) -> LSQQuantizer | None:
    """An input quantizer, or None for ``activation_bits=0`` (weight-only); ``activation_init=
    "auto"`` is ``"mse"`` below 8 bits and ``"minmax"`` at 8 bits and above."""
    if activation_bits == 0:
        return None
    if isinstance(activation_init, str):
        check_choice(activation_init, "activation_init", ("auto",) + INIT_METHODS)
        if activation_init == "auto":
            activation_init = "mse" if activation_bits < 8 else "minmax"
    return LSQQuantizer(activation_bits, activation_signed, init=activation_init,
                        grad_scale=grad_scale, offset=offset, ste=ste).to(device)


class _QuantMixin:
    """Adds ``weight_quantizer`` (signed) and ``input_quantizer`` (None in weight-only mode)
    to a conv/linear layer."""

    weight: nn.Parameter

    def _attach_quantizers(
        self,
        weight_bits: int,
        activation_bits: int | None,
        activation_signed: bool | None,
        per_channel: bool,
        weight_init: str | float,
        activation_init: str | float,
        grad_scale: GradScale,
        offset: bool,
        ste: str,
    ) -> None:
        weight_bits = check_bits(weight_bits, "weight_bits")
        activation_bits = _activation_bits(activation_bits, weight_bits)
        self.weight_quantizer = LSQQuantizer(
            weight_bits, True, per_channel=per_channel, channels=self.weight.shape[0],
            init=weight_init, grad_scale=grad_scale, ste=ste,
        ).to(self.weight.device)
        self.weight_quantizer.check_finite = False  # a parameter (LSQQuantizer.check_finite)
        self.add_module("input_quantizer", _input_quantizer(
            activation_bits, activation_signed, activation_init, grad_scale, offset, ste,
            self.weight.device))

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.weight)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        """``Q_x(x)``, or ``x`` itself in weight-only mode."""
        return x if self.input_quantizer is None else self.input_quantizer(x)

    @classmethod
    def from_float(cls, module: nn.Module, **quantization):
        """A quantized layer sharing the weight and bias tensors of the float ``module``.

        ``quantization`` takes the quantization keywords of the class (``weight_bits``, ...).
        """
        base = next(b for b, q in QUANTIZABLE_TYPES.items() if q is cls)
        if type(module) is not base:
            raise TypeError(
                f"{cls.__name__}.from_float needs an {base.__name__}, got {describe(module)}"
            )
        if isinstance(module, nn.Linear):
            args, kwargs = (module.in_features, module.out_features, module.bias is not None), {}
        else:
            args = (module.in_channels, module.out_channels, module.kernel_size)
            kwargs = dict(
                stride=module.stride, padding=module.padding, dilation=module.dilation,
                groups=module.groups, bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
        new = cls(*args, **kwargs, **quantization)
        new.weight, new.bias = module.weight, module.bias
        new.train(module.training)
        return new.to(module.weight.device)


_LAYER_DEFAULTS = dict(
    weight_bits=4, activation_bits=None, activation_signed=None, per_channel=False,
    weight_init="lsq", activation_init="auto", grad_scale=None, offset=False, ste="rounded",
)

_DOC_ARGS = """
    Quantization keyword arguments:
        weight_bits: bit width of the weight codes (signed, full two's-complement range).
        activation_bits: bit width of the input codes (default: ``weight_bits``); 0 leaves the
            input in full precision (weight-only quantization, ``input_quantizer`` is None).
        activation_signed: signed input codes (True), unsigned (False), or None to decide on the
            first batch (unsigned after a ReLU, signed for normalised images).
        per_channel: one weight step per output channel (an extension; the paper uses one).
        weight_init, activation_init: the :func:`initial_step_size` methods; default ``"lsq"``
            (the paper's ``2 mean|v| / sqrt(Q_P)``) for weights and ``"auto"`` for inputs:
            ``"mse"`` below 8 bits, where the paper's step clips much of a ReLU output (mnist1d
            CNN, 3 seeds: 2/3/4-bit QAT 90.9/92.9/94.7% -> 92.9/94.9/95.5%), ``"minmax"``
            (``max|v| / Q_P``, onnxruntime's and TFLite's calibration) at 8 bits and above,
            where rounding costs little and the paper's step is coarser (on mobilenet_v2 its
            ReLU6 readers' code ranges reached past 6: 34 Clips in the integer export).
        grad_scale: as in :func:`lsq_quantize` (default: the paper's ``1/sqrt(N Q_P)``).
        offset: learn an LSQ+ offset for the input quantizer (Bhalgat et al. 2020).
        ste: the straight-through band of every quantizer (see :class:`LSQQuantizer`):
            ``"rounded"`` (default; torch's learnable op and brevitas: the gradient passes
            where the rounded code is in range) or ``"paper"`` (eq. 3: strictly inside the
            clip range). Paired over seeds (same FP weights, steps, data order), ``"rounded"``
            gave +0.30 +- 0.14 points at 2 bits on mnist1d (10 seeds) and no difference at 3
            and 4 bits (docs/quantization.md, "The straight-through band").
"""


class QuantLinear(_QuantMixin, nn.Linear):
    __doc__ = (
        """``y = Q_x(x) Q_w(W)^T + b`` with LSQ quantizers for input and weight.

    Takes the arguments of ``nn.Linear`` plus the quantization keywords.

    Example:
        >>> import torch
        >>> layer = QuantLinear(8, 2, weight_bits=4)
        >>> layer(torch.randn(5, 8)).shape
        torch.Size([5, 2])
        >>> sorted(set((layer.quantized_weight() / layer.weight_quantizer.step_size).round()
        ...            .detach().flatten().tolist()))[0] >= -8
        True
    """
        + _DOC_ARGS
    )

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None,
                 dtype=None, **quantization):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        unknown = sorted(set(quantization) - set(_LAYER_DEFAULTS))
        if unknown:
            raise TypeError(f"QuantLinear got unexpected keyword arguments {unknown}")
        self._attach_quantizers(**{**_LAYER_DEFAULTS, **quantization})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


class _QuantConvMixin(_QuantMixin):
    """Construction and forward shared by the quantized convolutions (any dimension)."""

    def __init__(self, *args, device=None, dtype=None, **kwargs):
        quantization = {k: kwargs.pop(k) for k in list(kwargs) if k in _LAYER_DEFAULTS}
        super().__init__(*args, device=device, dtype=dtype, **kwargs)
        self._attach_quantizers(**{**_LAYER_DEFAULTS, **quantization})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantConv1d(_QuantConvMixin, nn.Conv1d):
    __doc__ = (
        """``nn.Conv1d`` on ``Q_x(x)`` with weight ``Q_w(W)``; the arguments of ``nn.Conv1d`` plus
    the quantization keywords.
    """
        + _DOC_ARGS
    )


class QuantConv2d(_QuantConvMixin, nn.Conv2d):
    __doc__ = (
        """``nn.Conv2d`` on ``Q_x(x)`` with weight ``Q_w(W)``; the arguments of ``nn.Conv2d`` plus
    the quantization keywords.

    Example:
        >>> import torch
        >>> conv = QuantConv2d(3, 4, 3, padding=1, weight_bits=2)
        >>> conv(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """
        + _DOC_ARGS
    )


#: float layer type -> its quantized counterpart
QUANTIZABLE_TYPES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: QuantLinear,
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
}
_QUANT_TYPES = tuple(QUANTIZABLE_TYPES.values())

#: layers with weights that :func:`quantize_model` cannot quantize: it leaves them in float and
#: warns, naming each (batch/layer/group norms are float by design and not listed)
FLOAT_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase, nn.Embedding, nn.EmbeddingBag,
    nn.Bilinear, nn.Linear, nn.modules.conv._ConvNd,
)


class _QuantSubclassMixin(_QuantMixin):
    """Quantization for a subclass of ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` (timm's
    ``Conv2dSame``, torch's ``NonDynamicallyQuantizableLinear``, ...), whose own ``forward`` may
    pad, reshape or call a functional op on ``self.weight``.

    ``forward(x)`` runs the subclass's ``forward`` on ``Q_x(x)`` with ``self.weight`` read as
    ``Q_w(W)``: the weight entry of ``_parameters`` is swapped for the quantized tensor during
    the call (as ``torch.func.functional_call`` does) and restored afterwards, so the gradient
    reaches ``W`` and both step sizes. Zero padding inside the subclass commutes with ``Q_x``
    (0 is a code).
    """

    def forward(self, x, *args, **kwargs):
        weight = self._parameters["weight"]
        quantized = self.weight_quantizer(weight)
        self._parameters["weight"] = quantized
        try:
            return super().forward(self.quantized_input(x), *args, **kwargs)
        finally:
            self._parameters["weight"] = weight


class QuantMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with LSQ quantizers on every matmul operand.

    Query, key and value pass through their own input quantizers (one call when two of them are
    the same tensor, as in self-attention), the packed input projection ``in_proj_weight`` (or
    ``q/k/v_proj_weight``) through a signed weight quantizer; ``out_proj`` is a quantized
    linear layer applied by this forward (``F.multi_head_attention_forward`` runs with an
    identity output projection, so its attention output reaches ``out_proj``'s own input
    quantizer). The attention scores and softmax stay in float. Built by :func:`quantize_model`
    (``from_float`` converts a float module in place); there is no fused fast path.
    """

    def _attach_quantizers(self, weight_bits, activation_bits, activation_signed, per_channel,
                           weight_init, activation_init, grad_scale, offset, ste) -> None:
        weight_bits = check_bits(weight_bits, "weight_bits")
        activation_bits = _activation_bits(activation_bits, weight_bits)

        def weight_quantizer(parameter):
            quantizer = LSQQuantizer(weight_bits, True, per_channel=per_channel,
                                     channels=parameter.shape[0], init=weight_init,
                                     grad_scale=grad_scale, ste=ste).to(parameter.device)
            quantizer.check_finite = False  # a parameter (LSQQuantizer.check_finite)
            return quantizer

        for name in self._weight_names():
            setattr(self, name + "_quantizer", weight_quantizer(getattr(self, name)))
        for role in ("query", "key", "value"):
            self.add_module(role + "_quantizer", _input_quantizer(
                activation_bits, activation_signed, activation_init, grad_scale, offset, ste,
                self.out_proj.weight.device))

    def _weight_names(self) -> tuple[str, ...]:
        if self._qkv_same_embed_dim:
            return ("in_proj_weight",)
        return ("q_proj_weight", "k_proj_weight", "v_proj_weight")

    @classmethod
    def from_float(cls, module: nn.MultiheadAttention, **quantization):
        """Convert a float ``nn.MultiheadAttention`` in place (its ``out_proj`` stays as it is:
        :func:`quantize_model` quantizes it as a linear layer); a quantized one gets new
        quantizers."""
        if type(module) not in (nn.MultiheadAttention, cls):
            raise TypeError(f"{cls.__name__}.from_float needs an nn.MultiheadAttention, got "
                            f"{describe(module)}")
        module.__class__ = cls
        module._attach_quantizers(**{**_LAYER_DEFAULTS, **quantization})
        return module

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        inputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        quantized = []
        for tensor, quantizer in ((query, self.query_quantizer), (key, self.key_quantizer),
                                  (value, self.value_quantizer)):
            same = next((q for t, q in inputs if t is tensor), None)
            if same is None:
                same = tensor if quantizer is None else quantizer(tensor)
            quantized.append(same)
            inputs.append((tensor, quantized[-1]))
        q, k, v = quantized
        batched = query.dim() == 3
        if self.batch_first and batched:
            q, k, v = (t.transpose(0, 1) for t in (q, k, v))
        weights = {name: getattr(self, name + "_quantizer")(getattr(self, name))
                   for name in self._weight_names()}
        identity = torch.eye(self.embed_dim, dtype=q.dtype, device=q.device)
        out, attention = F.multi_head_attention_forward(
            q, k, v, self.embed_dim, self.num_heads,
            weights.get("in_proj_weight"), self.in_proj_bias, self.bias_k, self.bias_v,
            self.add_zero_attn, self.dropout, identity, None, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=not self._qkv_same_embed_dim,
            q_proj_weight=weights.get("q_proj_weight"), k_proj_weight=weights.get("k_proj_weight"),
            v_proj_weight=weights.get("v_proj_weight"), average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        out = self.out_proj(out)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        return out, attention


_SUBCLASS_TYPES: dict[type[nn.Module], type[nn.Module]] = {}


def _quantized_subclass(cls: type[nn.Module]) -> type[nn.Module]:
    """The quantized class of a float subclass ``cls``.

    A subclass that keeps its base's ``forward`` (torch's ``NonDynamicallyQuantizableLinear``)
    becomes ``Quant<cls>(QuantLinear or QuantConvNd, cls)``, with the plain quantized forward;
    one with its own ``forward`` (timm's ``Conv2dSame``) ``Quant<cls>(_QuantSubclassMixin,
    cls)``."""
    if cls not in _SUBCLASS_TYPES:
        base = next(b for b in QUANTIZABLE_TYPES if issubclass(cls, b))
        mixin = QUANTIZABLE_TYPES[base] if cls.forward is base.forward else _QuantSubclassMixin
        _SUBCLASS_TYPES[cls] = type(
            f"Quant{cls.__name__}", (mixin, cls),
            {"__module__": __name__, "__doc__": f"{cls.__name__} with LSQ quantizers."},
        )
    return _SUBCLASS_TYPES[cls]


def _convert(module: nn.Module, **quantization) -> nn.Module:
    """The quantized version of a float Conv1d/Conv2d/Linear or subclass (shares its tensors);
    a quantized layer gets new quantizers (re-quantizing: step sizes initialize again)."""
    if type(module) in QUANTIZABLE_TYPES:
        return QUANTIZABLE_TYPES[type(module)].from_float(module, **quantization)
    if not isinstance(module, _QuantMixin):
        # a subclass: its constructor signature is unknown, so the module changes class in place
        module.__class__ = _quantized_subclass(type(module))
    module._attach_quantizers(**{**_LAYER_DEFAULTS, **quantization})
    return module


def quant_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, layer)`` for every quantized layer of ``model`` in registration order."""
    for name, module in model.named_modules():
        if isinstance(module, _QuantMixin):
            yield name, module


def step_size_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The step sizes and offsets of every :class:`LSQQuantizer` in ``model``."""
    for module in model.modules():
        if isinstance(module, LSQQuantizer):
            yield from module.parameters(recurse=False)


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` layers and their subclasses, float or
    already quantized, minus the output projections of ``nn.MultiheadAttention`` (converted
    with their attention module)."""
    attention = {f"{n}.out_proj" if n else "out_proj"
                 for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    return [
        (n, m) for n, m in model.named_modules()
        if isinstance(m, tuple(QUANTIZABLE_TYPES)) and n not in attention
        and not isinstance(m.weight, nn.parameter.UninitializedParameter)
    ]


def _call_order_by_hooks(model, layers, example_inputs) -> list[str]:
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda module, args, name=n: order.append(name))
               for n, m in layers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()  # no batch-norm statistics update, no dropout
        with torch.no_grad():
            model(*example_inputs) if isinstance(example_inputs, tuple) else model(example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    return list(dict.fromkeys(order))


def _call_order_by_fx(model, layers) -> list[str] | None:
    import torch.fx

    leaves = {id(m) for _, m in layers}

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module, qualified_name):
            return id(module) in leaves or super().is_leaf_module(module, qualified_name)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any failure of symbolic tracing means "order unknown"
        return None
    # a torch.nn module that fx keeps as a leaf (TransformerEncoderLayer, ...) stands for the
    # layers inside it, taken in registration order
    names = [n for n, _ in layers]
    order: list[str] = []
    for node in graph.nodes:
        if node.op == "call_module":
            target = str(node.target)
            order += [n for n in names if n == target or n.startswith(target + ".")]
    return list(dict.fromkeys(order))


def forward_order(model: nn.Module, example_inputs=None) -> list[str]:
    """Names of the float Conv1d/Conv2d/Linear layers of ``model`` in the order a forward pass
    calls them (the order that decides the first and last layer in :func:`quantize_model`).

    With ``example_inputs`` (a tensor, or a tuple of positional arguments) the model runs once in
    eval mode under ``no_grad`` with a pre-hook on every layer (modes are restored afterwards);
    without, the order is read from a ``torch.fx`` symbolic trace (a torch.nn module that fx
    keeps whole, such as ``nn.TransformerEncoderLayer``, contributes its layers in registration
    order). Layers a forward pass does not call are left out. If tracing fails, registration
    order is returned with a warning.

    Example:
        >>> from torch import nn
        >>> class StemLast(nn.Module):           # the stem is registered after the body
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body, self.head = nn.Linear(8, 8), nn.Linear(8, 2)
        ...         self.stem = nn.Linear(4, 8)
        ...     def forward(self, x):
        ...         return self.head(self.body(self.stem(x)).relu())
        >>> forward_order(StemLast())
        ['stem', 'body', 'head']
    """
    layers = _candidates(model)
    if example_inputs is not None:
        return _call_order_by_hooks(model, layers, example_inputs)
    order = _call_order_by_fx(model, layers)
    if order is None:
        warnings.warn(
            f"torch.fx could not trace {type(model).__name__}, so its first and last layers are "
            "taken in registration order; pass example_inputs to quantize_model to use the "
            "order of a forward pass", UserWarning, stacklevel=3,
        )
        order = [n for n, _ in layers]
    return order


_FLOAT_REASONS = (
    (nn.MultiheadAttention, "attention projections computed from raw weights"),
    (nn.RNNBase, "recurrent layer"),
    (nn.RNNCellBase, "recurrent cell"),
    (nn.Embedding, "embedding lookup"),
    (nn.EmbeddingBag, "embedding lookup"),
    (nn.Module, "no quantized version"),
)


def float_layers(model: nn.Module, skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(name, description)`` of every layer with weights that is not quantized.

    Layers of :data:`FLOAT_LAYER_TYPES` (attention, recurrent, embedding, bilinear, conv and
    linear layers) that are not quantized, except those named in ``skip`` and those inside a
    listed or quantized layer; normalization layers are not listed.

    >>> from torch import nn
    >>> float_layers(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)))
    [('0', 'Embedding (embedding lookup)'), ('1', 'Linear (not converted)')]
    """
    skip = set(skip)
    found: list[tuple[str, str]] = []
    covered: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in covered):
            continue
        if isinstance(module, (_QuantMixin, QuantMultiheadAttention)) or name in skip:
            covered.append(name)
            continue
        if isinstance(module, FLOAT_LAYER_TYPES):
            reason = next(text for kind, text in _FLOAT_REASONS if isinstance(module, kind))
            if isinstance(module, tuple(QUANTIZABLE_TYPES)) and reason == "no quantized version":
                reason = "not converted"
            found.append((name, f"{type(module).__name__} ({reason})"))
            covered.append(name)
    return found


def _disable_transformer_fast_paths(model: nn.Module) -> None:
    """Make ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder`` run their Python path.

    In eval mode under ``no_grad`` both have a fused "fast path"
    (``torch._transformer_encoder_layer_fwd``, nested tensors) that reads ``linear1.weight``,
    ``linear2.weight`` and the attention weights directly and never calls the layers' forward,
    so it would skip the quantizers. The layer takes the fast path only when
    ``activation_relu_or_gelu`` is nonzero (an attribute read nowhere else; the Python path calls
    ``self.activation``), and the encoder converts to nested tensors only when
    ``use_nested_tensor`` is true: both are cleared on modules holding a quantized layer.
    """
    for module in model.modules():
        if not any(isinstance(m, _QuantMixin) for m in module.modules()):
            continue
        if isinstance(module, nn.TransformerEncoderLayer):
            module.activation_relu_or_gelu = 0
        elif isinstance(module, nn.TransformerEncoder):
            module.use_nested_tensor = False


def _bits_rule(bits, names: list[str]):
    """``rule(name, module) -> (bits or None, explicit)`` from an int, a mapping or a callable."""
    if isinstance(bits, Mapping):
        if not bits:
            raise ValueError("bits must not be an empty mapping")
        table = {}
        for key, value in bits.items():
            if not isinstance(key, str):
                raise TypeError(f"bits keys must be layer names or patterns, got {describe(key)}")
            table[key] = None if value is None else check_bits(value, f"bits[{key!r}]")
        unused = [k for k in table if not any(fnmatch.fnmatchcase(n, k) for n in names)]
        if unused:
            raise ValueError(f"bits names no quantizable layer: {unused} (layers: {names[:8]}"
                             f"{' ...' if len(names) > 8 else ''})")

        def rule(name, module):
            if name in table:
                return table[name], True
            return next((v for k, v in table.items() if fnmatch.fnmatchcase(name, k)), 4), False

        return rule
    if callable(bits):
        def rule(name, module):
            value = bits(name, module)
            return (None if value is None else check_bits(value, f"bits({name!r})")), False

        return rule
    value = check_bits(bits)
    return lambda name, module: (value, False)


def _check_quantize_arguments(model, first_last_bits, activation_bits, example_inputs,
                              quantization) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    if first_last_bits is not None:
        check_bits(first_last_bits, "first_last_bits")
    _activation_bits(activation_bits, 2)
    unknown = set(quantization) - set(_LAYER_DEFAULTS) - {"weight_bits"}
    if unknown or "weight_bits" in quantization:
        raise TypeError(f"quantize_model got unexpected keyword arguments {sorted(unknown)}")
    check_choice(quantization.get("ste", _LAYER_DEFAULTS["ste"]), "ste", STE_MODES)
    if example_inputs is not None and not isinstance(example_inputs, (torch.Tensor, tuple)):
        raise TypeError(
            "example_inputs must be a tensor or a tuple of arguments, got "
            f"{describe(example_inputs)}"
        )


def _targets(model: nn.Module, exclude: set[str]):
    """``(candidates, attention)``: the layers and attention modules quantize_model converts."""
    candidates = _candidates(model)
    attention = [(n, m) for n, m in model.named_modules()
                 if type(m) in (nn.MultiheadAttention, QuantMultiheadAttention)
                 and n not in exclude]
    missing = exclude - {n for n, _ in candidates} - {
        n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    if missing:
        raise ValueError(f"exclude names no quantizable layer: {sorted(missing)}")
    if not candidates and not attention:
        left = float_layers(model)
        raise ValueError(
            f"model {type(model).__name__} has no quantizable layer (nn.Conv1d, nn.Conv2d, "
            "nn.Linear or a subclass) left to quantize"
            + (f"; layers with weights it has: {left[:8]}" if left else "")
        )
    return candidates, attention


class _LayerPlan:
    """The quantization keywords of each layer: the bits rule, the first/last layer rule and
    the keywords shared by every layer."""

    def __init__(self, rule, edges, first_last_bits, activation_bits, quantization):
        self.rule, self.edges, self.first_last_bits = rule, edges, first_last_bits
        self.activation_bits, self.quantization = activation_bits, quantization

    def settings(self, name: str, module: nn.Module, edge: bool = True) -> dict | None:
        """The layer's keywords for :func:`_convert`, or None to leave it in float."""
        width, explicit = self.rule(name, module)
        activation = self.activation_bits
        if edge and name in self.edges and not explicit:
            width = self.first_last_bits
            activation = 0 if activation == 0 else width  # weight-only stays weight-only
        if width is None:
            return None
        return dict(weight_bits=width, activation_bits=activation, **self.quantization)


def _warn_float_layers(model: nn.Module, intended_float: set[str]) -> None:
    left = float_layers(model, skip=intended_float)
    if left:
        listing = ", ".join(f"{name!r}: {text}" for name, text in left)
        warnings.warn(
            f"quantize_model left {len(left)} layer(s) with weights in full precision: {listing}",
            UserWarning, stacklevel=3,
        )


def _convert_all(model, candidates, attention, plan, exclude: set[str]) -> set[str]:
    """Convert the attention modules and layers in place; return the names left in float on
    purpose (excluded, or given no bits)."""
    intended_float = set(exclude)
    for name, module in attention:  # never first or last: attention sits inside the model
        settings = plan.settings(name, module, edge=False)
        if settings is None:
            intended_float.add(name)
            continue
        QuantMultiheadAttention.from_float(module, **settings)
        module.out_proj = _convert(module.out_proj, **settings)
    for name, module in candidates:
        settings = None if name in exclude else plan.settings(name, module)
        if settings is None:
            intended_float.add(name)
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child,
                _convert(module, **settings))
    return intended_float


def quantize_model(
    model: nn.Module,
    bits: int | Mapping[str, int | None] | Callable[[str, nn.Module], int | None] = 4,
    first_last_bits: int | None = 8,
    *,
    activation_bits: int | None = None,
    exclude: Iterable[str] = (),
    example_inputs=None,
    **quantization,
) -> nn.Module:
    """Swap every ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Linear`` of ``model`` (subclasses
    included) for its quantized version, in place; quantized layers get new quantizers.

    The first and last quantizable layers in forward order (:func:`forward_order`) get
    ``first_last_bits`` for weights and inputs, as in the paper (8-bit; None: full precision);
    every other layer gets ``bits`` for weights and ``activation_bits`` for its input. Batch
    norm, biases and other modules stay in full precision; step sizes initialize on the first
    forward pass. Subclasses (timm's ``Conv2dSame``, ...) keep their own ``forward``, run on
    quantized inputs and weights; ``nn.MultiheadAttention`` gets quantized inputs and
    projections (:class:`QuantMultiheadAttention`). Layers with weights left in float (LSTM/GRU,
    Embedding, Conv3d, transposed convolutions, ...) are named in one ``UserWarning``, except
    those left in float on purpose (``exclude``, bits None). ``nn.TransformerEncoderLayer`` /
    ``nn.TransformerEncoder`` holding a quantized layer lose their fused eval-mode fast path,
    which would read the float weights. Calling it again on a quantized model re-quantizes at
    the new settings (new quantizers; step sizes initialize again, so build a new optimizer).

    Args:
        model: the model (modified in place and returned).
        bits: weight bit width of the middle layers, 2..16; or a mapping from layer names or
            ``fnmatch`` patterns (``"layer3.*"``) to bit widths or None (float): an exact name
            wins (over ``first_last_bits`` too), then the first matching pattern, then 4; a key
            matching no layer is a ValueError; or a callable ``(name, module) -> bits or None``.
        first_last_bits: bit width of the first and last layers, or None for full precision.
        activation_bits: input bit width of the middle layers (None: the layer's bits; 0: no
            input quantization anywhere, i.e. weight-only).
        exclude: names (as in ``model.named_modules()``) of layers to leave in full precision.
        example_inputs: a batch (tensor or tuple of arguments) run once in eval mode without
            gradients to find the forward order; default: a torch.fx trace.
        **quantization: ``per_channel`` (weights), ``offset`` (LSQ+ input offsets),
            ``weight_init``, ``activation_init``, ``grad_scale``, ``activation_signed``, ``ste``
            for every layer (see :class:`QuantLinear`).

    Returns:
        ``model``.

    Raises:
        ValueError: if no layer is left to quantize, or ``exclude`` or ``bits`` name no layer.

    Example:
        >>> from torch import nn
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8),
        ...                                    nn.ReLU(), nn.Linear(8, 2)), bits=2)
        >>> [layer.weight_quantizer.bits for _, layer in quant_layers(net)]
        [8, 2, 8]
        >>> net = quantize_model(net, bits=3, activation_bits=0)    # re-quantized, weight-only
        >>> [(layer.weight_quantizer.bits, layer.input_quantizer) for _, layer in quant_layers(net)]
        [(8, None), (3, None), (8, None)]

    Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020, section 3.
    """
    _check_quantize_arguments(model, first_last_bits, activation_bits, example_inputs,
                              quantization)
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)  # one name, not its letters
    candidates, attention = _targets(model, exclude)
    rule = _bits_rule(bits, [n for n, _ in candidates] + [n for n, _ in attention])
    order = (forward_order(model, example_inputs) if candidates else []) or \
        [n for n, _ in candidates] or [""]
    plan = _LayerPlan(rule, (order[0], order[-1]), first_last_bits, activation_bits, quantization)
    intended_float = _convert_all(model, candidates, attention, plan, exclude)
    if not any(True for _ in quant_layers(model)):
        raise ValueError("quantize_model left every layer in full precision (check exclude)")
    _disable_transformer_fast_paths(model)
    _warn_float_layers(model, intended_float)
    return model


def check_calibrated(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Quantized layers of ``model``; raise naming the first with an uninitialized step size."""
    layers = list(quant_layers(model))
    if not layers:
        raise ValueError(
            f"model {type(model).__name__} has no quantized layer: call quantize_model"
        )
    for name, layer in layers:
        for role in ("weight_quantizer", "input_quantizer"):
            quantizer = getattr(layer, role)
            if quantizer is not None and not quantizer.is_initialized:
                raise ValueError(
                    f"layer {name!r} is not calibrated ({role} has no step size yet): run at least "
                    "one forward pass (training or calibration) before exporting"
                )
    return layers
