"""Learned Step Size Quantization (Esser et al., ICLR 2020) in torch.

Quantizer (:func:`lsq_quantize`, :class:`LSQQuantizer`), quantized layers and model conversion
(:func:`quantize_model`), the training recipe with checkpoints and DDP (:func:`train_model`,
configured by a :class:`TrainingOptions`), integer inference (:func:`export_integer`) and ONNX
export (:func:`export_onnx`).

Needs torch: ``pip install 'stepsize[torch]'``.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "stepsize.quantization needs PyTorch; install the extra: pip install 'stepsize[torch]'"
    ) from exc

from stepsize._results import TrainingProgress, TrainingResult
from stepsize.quantization._fx_export import IntegerAttention, IntegerLayer
from stepsize.quantization.export import (
    IntegerModel,
    deployment_model,
    export_integer,
    export_onnx,
    onnx_kernels,
    onnx_latencies,
)
from stepsize.quantization.layers import (
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    QuantMultiheadAttention,
    float_layers,
    forward_order,
    quant_layers,
    quantize_model,
    step_size_parameters,
)
from stepsize.quantization.quantizer import (
    LSQQuantizer,
    initial_step_size,
    lsq_quantize,
    quantization_range,
)
from stepsize.quantization.training import (
    TrainingOptions,
    default_weight_decay,
    evaluate,
    train_model,
)

__all__ = [
    "IntegerAttention",
    "IntegerLayer",
    "IntegerModel",
    "LSQQuantizer",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "QuantMultiheadAttention",
    "TrainingOptions",
    "TrainingProgress",
    "TrainingResult",
    "default_weight_decay",
    "deployment_model",
    "evaluate",
    "export_integer",
    "export_onnx",
    "float_layers",
    "forward_order",
    "initial_step_size",
    "lsq_quantize",
    "onnx_kernels",
    "onnx_latencies",
    "quant_layers",
    "quantization_range",
    "quantize_model",
    "step_size_parameters",
    "train_model",
]
