"""Quantized layers (weights and inputs through :class:`LSQQuantizer`) and model conversion.

A quantized layer computes ``layer(Q_x(x), Q_w(W)) + bias``: the input activation and the weight are
fake-quantized with their own learned step sizes, the bias stays in full precision, and so does
batch norm, which is a separate module (Esser et al. 2020, section 3).

Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stepsize._validation import describe
from stepsize.quantization.quantizer import GradScale, LSQQuantizer, check_bits

__all__ = [
    "QUANTIZABLE_TYPES",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "quant_layers",
    "quantize_model",
    "step_size_parameters",
]


class _QuantMixin:
    """Adds ``weight_quantizer`` (signed) and ``input_quantizer`` to a conv/linear layer."""

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
    ) -> None:
        weight_bits = check_bits(weight_bits, "weight_bits")
        activation_bits = weight_bits if activation_bits is None else activation_bits
        activation_bits = check_bits(activation_bits, "activation_bits")
        self.weight_quantizer = LSQQuantizer(
            weight_bits, True, per_channel=per_channel, channels=self.weight.shape[0],
            init=weight_init, grad_scale=grad_scale,
        )
        self.input_quantizer = LSQQuantizer(
            activation_bits, activation_signed, init=activation_init, grad_scale=grad_scale
        )

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.weight)

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
    weight_init="lsq", activation_init="lsq", grad_scale=None,
)

_DOC_ARGS = """
    Quantization keyword arguments:
        weight_bits: bit width of the weight codes (signed, full two's-complement range).
        activation_bits: bit width of the input codes (default: ``weight_bits``).
        activation_signed: signed input codes (True), unsigned (False), or None to decide on the
            first batch (unsigned after a ReLU, signed for normalised images).
        per_channel: one weight step per output channel (an extension; the paper uses one).
        weight_init, activation_init: the :func:`initial_step_size` methods (default ``"lsq"``).
        grad_scale: as in :func:`lsq_quantize` (default: the paper's ``1/sqrt(N Q_P)``).
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
        return F.linear(self.input_quantizer(x), self.quantized_weight(), self.bias)


class _QuantConvMixin(_QuantMixin):
    """Construction and forward shared by the quantized convolutions (any dimension)."""

    def __init__(self, *args, device=None, dtype=None, **kwargs):
        quantization = {k: kwargs.pop(k) for k in list(kwargs) if k in _LAYER_DEFAULTS}
        super().__init__(*args, device=device, dtype=dtype, **kwargs)
        self._attach_quantizers(**{**_LAYER_DEFAULTS, **quantization})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_quantizer(x), self.quantized_weight(), self.bias)


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


def quant_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, layer)`` for every quantized layer of ``model`` in registration order."""
    for name, module in model.named_modules():
        if isinstance(module, _QUANT_TYPES):
            yield name, module


def step_size_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The step sizes and offsets of every :class:`LSQQuantizer` in ``model``."""
    for module in model.modules():
        if isinstance(module, LSQQuantizer):
            yield from module.parameters(recurse=False)


def quantize_model(
    model: nn.Module,
    bits: int = 4,
    first_last_bits: int | None = 8,
    *,
    activation_bits: int | None = None,
    exclude: Iterable[str] = (),
    **quantization,
) -> nn.Module:
    """Swap every ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Linear`` of ``model`` for its quantized
    version, in place.

    The first and last quantizable layers (in registration order, which is the forward order of
    ``nn.Sequential`` models) get ``first_last_bits`` for weights and inputs, as in the paper
    (8-bit); ``first_last_bits=None`` leaves them in full precision. Every other layer gets ``bits``
    for weights and ``activation_bits`` (default ``bits``) for its input. Batch norm, biases and
    all other modules are left in full precision. Step sizes initialize on the first forward pass.

    Args:
        model: the float model (modified in place and returned).
        bits: bit width of the middle layers, 2..16.
        first_last_bits: bit width of the first and last layers, or None for full precision.
        activation_bits: input bit width of the middle layers (default ``bits``).
        exclude: names (as in ``model.named_modules()``) of layers to leave in full precision;
            a single string is one name.
        **quantization: ``per_channel``, ``weight_init``, ``activation_init``, ``grad_scale``,
            ``activation_signed`` for every layer (see :class:`QuantLinear`).

    Returns:
        ``model``.

    Raises:
        ValueError: if ``model`` has no layer left to quantize, or ``exclude`` names no layer.

    Example:
        >>> from torch import nn
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8),
        ...                                    nn.ReLU(), nn.Linear(8, 2)), bits=2)
        >>> [layer.weight_quantizer.bits for _, layer in quant_layers(net)]
        [8, 2, 8]

    Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020, section 3.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    bits = check_bits(bits)
    if first_last_bits is not None:
        first_last_bits = check_bits(first_last_bits, "first_last_bits")
    if activation_bits is not None:
        activation_bits = check_bits(activation_bits, "activation_bits")
    unknown = set(quantization) - set(_LAYER_DEFAULTS) - {"weight_bits"}
    if unknown or "weight_bits" in quantization:
        raise TypeError(f"quantize_model got unexpected keyword arguments {sorted(unknown)}")
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)  # one name, not its letters
    candidates = [(n, m) for n, m in model.named_modules() if type(m) in QUANTIZABLE_TYPES]
    missing = exclude - {n for n, _ in candidates}
    if missing:
        raise ValueError(f"exclude names no quantizable layer: {sorted(missing)}")
    if not candidates:
        raise ValueError(
            f"model {type(model).__name__} has no quantizable layer (nn.Conv1d, nn.Conv2d or "
            "nn.Linear) left to quantize"
        )
    first, last = candidates[0][0], candidates[-1][0]
    for name, module in candidates:
        if name in exclude:
            continue
        if name in (first, last):
            if first_last_bits is None:
                continue
            layer_bits = dict(weight_bits=first_last_bits, activation_bits=first_last_bits)
        else:
            layer_bits = dict(weight_bits=bits, activation_bits=activation_bits)
        quantized = QUANTIZABLE_TYPES[type(module)].from_float(module, **layer_bits, **quantization)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, quantized)
    if not any(True for _ in quant_layers(model)):
        raise ValueError("quantize_model left every layer in full precision (check exclude)")
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
            if not getattr(layer, role).is_initialized:
                raise ValueError(
                    f"layer {name!r} is not calibrated ({role} has no step size yet): run at least "
                    "one forward pass (training or calibration) before exporting"
                )
    return layers
