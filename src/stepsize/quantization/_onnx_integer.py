"""QDQ placement that onnxruntime fuses into integer kernels (QLinearConv, QLinearAdd, ...).

onnxruntime's QDQ fusion turns ``DequantizeLinear -> Conv -> [Relu] -> QuantizeLinear`` into
QLinearConv, ``DQ, DQ -> Add -> [Relu] -> Q`` into QLinearAdd, ``DQ -> GlobalAveragePool -> Q``
into QLinearGlobalAveragePool: every operator needs its inputs dequantized and its output
quantized. A fake-quantized model only quantizes the inputs of its conv/linear layers, so this
pass (on a ``torch.fx`` trace) adds an output quantizer ``Q_o`` after each quantized layer (after
the ReLU/ReLU6 that follows it) and after each residual add:

* when the output reaches a layer's input quantizer (directly or through max pooling,
  flattening, identities), ``Q_o`` is that quantizer (step ``s'``): exact, and the consumer's
  own QuantizeLinear/DequantizeLinear pair becomes redundant; where the output is also the
  skip input of a residual add (directly or through those ops), only if that quantizer covers
  the recorded range at a step at most ``255/127`` times the calibrated one below, each to
  within 2% (min/max steps set on the calibration data do; the paper's coarser LSQ init does
  not), so that the skip path is not carried at a consumer's coarser step;
* otherwise (a branch into a residual add, a skip path, an output into average pooling) ``Q_o``
  is calibrated on the example input: ``[min, max]`` mapped onto uint8, ``s = (max - min) /
  255`` with zero point ``round(-min / s)``. This is the one inexact step (a consumer then
  requantizes to its own step: a DequantizeLinear/QuantizeLinear pair in onnxruntime);
* all activations are uint8 (a signed LSQ quantizer's int8 codes become uint8 with zero point
  128: the same values), as QLinearAdd needs one type for both inputs and the output;
* a max pooling of codes is quantized again at its input's quantization (exact), so that its
  readers share one QuantizeLinear and onnxruntime pools the uint8 codes (NhwcMaxPool);
* a ReLU6 (``clamp(y, 0, 6)``) whose range is wider than ``Q_o``'s is applied to the codes, as
  ``clamp(q, z, z + round(6 / s))``, which equals quantizing the clamped value because
  rounding is monotone; a ReLU before a zero point ``z > 0`` likewise becomes ``clamp(q, z, ...)``.

Reference: Jacob et al., CVPR 2018 (integer-arithmetic-only inference); onnxruntime's QDQ
format and its ``QDQSelectorActionTransformer``.
"""

from __future__ import annotations

import operator
import weakref

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from stepsize.quantization._fx_export import _Tracer
from stepsize.quantization.layers import _QuantMixin
from stepsize.quantization.quantizer import LSQQuantizer, _projected_value

# ops that commute with quantization (x -> clamp(round(x/s)+z)): the same codes pass through
_PASSTHROUGH_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Identity, nn.Dropout, nn.Flatten)
_PASSTHROUGH_FUNCTIONS = {F.max_pool1d, F.max_pool2d, torch.flatten, torch.reshape, F.dropout}
_PASSTHROUGH_METHODS = {"view", "reshape", "flatten", "contiguous"}
_ADDS = {operator.add, torch.add}
# average pooling: onnxruntime fuses DQ -> GlobalAveragePool -> Q into QLinearGlobalAveragePool
_POOL_MODULES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d)
_POOL_FUNCTIONS = {F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.avg_pool1d, F.avg_pool2d}
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)
#: how far (a fraction of its width) a skip path's recorded range may exceed a consumer's
#: codes, and its step the bound, for that quantization to carry the skip path too
#: (``_Placement.carries``)
SKIP_RANGE_SLACK = 0.02


class _QuantizeDequantizeAffine(torch.autograd.Function):
    """``(clamp(round(x / s) + z, low, high) - z) * s``; exported as QuantizeLinear [-> Clip]
    -> DequantizeLinear with zero point ``z`` of type int8 or uint8. The backward is LSQ's
    (straight-through inside the code range; for ``s``, ``round(v) - v`` inside and the
    clamped code outside, with ``v = x / s``, scaled by ``1 / sqrt(numel (high - z))``)."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, low, high, signed):
        ctx.save_for_backward(x, scale)
        ctx.bounds = (zero_point, low, high)
        if not zero_point:  # adding a literal 0 trips the TorchScript exporter's peephole pass
            return torch.clamp(torch.round(x / scale), low, high) * scale
        codes = torch.clamp(torch.round(x / scale) + zero_point, low, high)
        return (codes - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        zero, low, high = ctx.bounds
        v = x / scale + zero
        inside = (v >= low) & (v <= high)
        grad_x = grad * inside
        steps = torch.where(inside, torch.round(v) - v, torch.clamp(v, low, high) - zero)
        factor = (x.numel() * max(high - zero, 1)) ** -0.5
        grad_scale = (grad * steps).sum().reshape(scale.shape) * factor
        return grad_x, grad_scale, None, None, None, None

    @staticmethod
    def symbolic(g, x, scale, zero_point, low, high, signed):
        dtype = torch.int8 if signed else torch.uint8
        zero = g.op("Constant", value_t=torch.tensor(zero_point, dtype=dtype))
        codes = g.op("QuantizeLinear", x, scale, zero)
        if (low, high) != (torch.iinfo(dtype).min, torch.iinfo(dtype).max):
            codes = g.op("Clip", codes, g.op("Constant", value_t=torch.tensor(low, dtype=dtype)),
                         g.op("Constant", value_t=torch.tensor(high, dtype=dtype)))
        return g.op("DequantizeLinear", codes, scale, zero)


class OutputQuantizer(nn.Module):
    """An 8-bit quantize-dequantize ``Q_o`` (scale, zero point, code range) for ONNX export."""

    def __init__(self, scale: float, zero_point: int, signed: bool, low=None, high=None,
                 learnable: bool = False):
        super().__init__()
        value = torch.tensor(float(scale), dtype=torch.float32)
        if learnable:  # a step trained with the model (LSQ's gradient), as in deployment_model
            self.scale = nn.Parameter(value)
            _register_scale(self)
        else:
            self.register_buffer("scale", value)
        info = torch.iinfo(torch.int8 if signed else torch.uint8)
        self.zero_point, self.signed = int(zero_point), bool(signed)
        self._source = ()  # (quantizer,) whose step this one uses (tied), in a deployment model
        self.low = info.min if low is None else max(int(low), info.min)
        self.high = info.max if high is None else min(int(high), info.max)

    def __setstate__(self, state) -> None:  # copy.deepcopy and pickle: a new parameter
        super().__setstate__(state)
        if isinstance(self._parameters.get("scale"), nn.Parameter):
            _register_scale(self)

    @torch.no_grad()
    def project_scale(self) -> None:
        """Keep a learnable step positive, by :class:`LSQQuantizer`'s rule: a value that is not
        above float32 eps, or not finite, becomes half the value after the previous
        projection. Run after every optimizer step that updates it (a global optimizer hook,
        as for the LSQ steps)."""
        scale = self._parameters.get("scale")
        if scale is None:
            return
        value = float(scale)
        new = _projected_value(value, self.__dict__.get("_last_scale", value), None)
        if new != value:
            scale.fill_(new)
        self.__dict__["_last_scale"] = new

    def step(self) -> torch.Tensor:
        """The scale: this module's, or the step of the quantizer it is tied to."""
        if not self._source:
            return self.scale
        source = self._source[0]
        if isinstance(source, OutputQuantizer):
            return source.step()
        return source.step_size.reshape(()).float()

    def freeze(self) -> None:
        """Keep the current step as a constant (untied, not trainable): the form that exports."""
        value = self.step().detach().clone()
        self._source = ()
        self._parameters.pop("scale", None)
        self.register_buffer("scale", value)

    def same_as(self, quantizer: LSQQuantizer) -> bool:
        """Whether ``quantizer`` computes exactly this quantization (same step and codes)."""
        other = from_lsq(quantizer)
        return (self.zero_point, self.low, self.high, self.signed, float(self.step().detach())) \
            == (other.zero_point, other.low, other.high, other.signed, float(other.scale))

    def copy(self, learnable: bool = False, tied: bool = False) -> OutputQuantizer:
        """The same quantization as a new module (``tied``: using this one's step for good)."""
        new = OutputQuantizer(float(self.step().detach()), self.zero_point, self.signed,
                              self.low, self.high, learnable)
        new._source = (self,) if tied else self._source
        return new

    def forward(self, x):
        return _QuantizeDequantizeAffine.apply(x, self.step(), self.zero_point, self.low,
                                               self.high, self.signed)


#: id(learnable scale parameter) -> weak reference to its OutputQuantizer (the optimizer hook)
_SCALE_OWNERS: dict[int, weakref.ref] = {}


def _register_scale(quantizer: OutputQuantizer) -> None:
    key = id(quantizer.scale)
    quantizer.__dict__["_last_scale"] = float(quantizer.scale.detach())

    def forget(reference, key=key):
        if _SCALE_OWNERS.get(key) is reference:
            del _SCALE_OWNERS[key]

    _SCALE_OWNERS[key] = weakref.ref(quantizer, forget)


def _project_scales_after_step(optimizer, args, kwargs) -> None:
    """Global ``torch.optim`` step post-hook: project every learnable output-quantizer step
    (a deployment model's calibrated steps) that the step updated; nothing to do, and one
    dict test, while no such step exists."""
    if not _SCALE_OWNERS:
        return
    find = _SCALE_OWNERS.get
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            reference = find(id(parameter))
            owner = None if reference is None else reference()
            if owner is not None and owner._parameters.get("scale") is parameter:
                owner.project_scale()


register_optimizer_step_post_hook(_project_scales_after_step)


def _calibrated(low: float, high: float) -> OutputQuantizer:
    """uint8 quantizer covering ``[low, high]`` (and 0): ``s = (high - low) / 255``, zero point
    ``round(-low / s)``."""
    low = min(low, 0.0)
    scale = max(high - low, 1e-12) / 255
    return OutputQuantizer(scale, round(-low / scale), False)


def from_lsq(quantizer: LSQQuantizer, tied: bool = False) -> OutputQuantizer:
    """The LSQ quantizer as uint8 codes: zero point 0 (unsigned) or 128 (signed, the int8 codes
    shifted by 128: the same values, and uint8 is the activation type of onnxruntime's fastest
    u8s8 kernels and the one type QLinearAdd fuses here); ``tied``: using its step for good
    (so that the two stay one quantization while the step trains)."""
    q_n, q_p = quantizer.bounds
    zero = 128 if quantizer.signed else 0
    new = OutputQuantizer(float(quantizer.step_size.detach().float()), zero, False,
                          zero - q_n, zero + q_p)
    new._source = (quantizer,) if tied else ()
    return new


class _Recorder(torch.fx.Interpreter):
    """Runs the graph and keeps ``(min, max)`` of every tensor a node produces."""

    def __init__(self, module):
        super().__init__(module)
        self.ranges: dict[str, tuple[float, float, int]] = {}

    def run_node(self, node):
        result = super().run_node(node)
        if torch.is_tensor(result) and result.is_floating_point() and result.numel():
            self.ranges[node.name] = (float(result.min()), float(result.max()), result.dim())
        return result


def _kind(node: torch.fx.Node, modules: dict) -> str | None:
    """'layer', 'relu', 'relu6', 'pass' (commutes with quantization), 'add', 'pool', 'fold'
    (a batch norm or bias rounding that export folds into the layer before it), or None."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, _QuantMixin):
            return "layer"
        if getattr(module, "folds_into_layer", False) or isinstance(module, _BATCH_NORM) and \
                len(node.users) == 1 and _kind(next(iter(node.users)), modules) == "fold":
            return "fold"  # a batch norm counts only where a bias rounding marks it foldable
        if isinstance(module, nn.ReLU):
            return "relu"
        if isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0.0, 6.0):
            return "relu6"
        if isinstance(module, _POOL_MODULES):
            return "pool"
        return "pass" if isinstance(module, _PASSTHROUGH_MODULES) else None
    tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu):
            return "relu"
        if node.target is F.relu6:
            return "relu6"
        if node.target in _ADDS and len(tensors) == 2 and not node.kwargs:
            return "add"
        if node.target in _POOL_FUNCTIONS:
            return "pool"
        return "pass" if node.target in _PASSTHROUGH_FUNCTIONS else None
    if node.op == "call_method":
        if node.target == "relu":
            return "relu"
        if node.target == "add" and len(tensors) == 2 and not node.kwargs:
            return "add"
        return "pass" if node.target in _PASSTHROUGH_METHODS else None
    return None


def _is_max_pool(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], (nn.MaxPool1d, nn.MaxPool2d))
    return node.op == "call_function" and node.target in (F.max_pool1d, F.max_pool2d)


def _tail(node: torch.fx.Node, modules: dict) -> tuple[torch.fx.Node, torch.fx.Node | None]:
    """The last node of ``node -> [Identity | batch norm | bias rounding ...] -> [ReLU |
    ReLU6]`` (batch norm and bias rounding only after a layer) and the activation node."""
    activation, folds = None, _kind(node, modules) == "layer"
    while len(node.users) == 1:
        user = next(iter(node.users))
        kind = _kind(user, modules)
        if user.args[:1] != (node,) or (kind == "pass" and not isinstance(
                modules.get(user.target), nn.Identity)):
            break
        if kind in ("relu", "relu6") and activation is None:
            activation, folds = user, False
        elif kind != "pass" and not (kind == "fold" and folds):
            break
        node = user
    return node, activation


def _consumer_quantizers(node: torch.fx.Node, modules: dict) -> list[LSQQuantizer]:
    """Input quantizers of the layers that read ``node`` directly or through pass-through ops."""
    found = []
    for user in node.users:
        kind = _kind(user, modules)
        if user.args[:1] != (node,):
            continue
        if kind == "layer":
            found.append(modules[user.target].input_quantizer)
        elif kind == "pass":
            found.extend(_consumer_quantizers(user, modules))
    return found


class _Placement:
    """The state of one placement pass over a traced, calibrated graph module."""

    def __init__(self, graph_module: torch.fx.GraphModule, ranges: dict, deployment=False):
        self.module, self.graph, self.ranges = graph_module, graph_module.graph, ranges
        self.modules = dict(graph_module.named_modules())
        self.specs: dict[torch.fx.Node, OutputQuantizer] = {}
        # deployment: learnable steps, activations kept (export absorbs them: absorb_placed)
        self.deployment = deployment

    def spec_of(self, node) -> OutputQuantizer | None:
        """The output quantizer whose codes ``node`` carries (through pass-through ops)."""
        while isinstance(node, torch.fx.Node):
            if node in self.specs:
                return self.specs[node]
            if _kind(node, self.modules) != "pass" or not node.args:
                return None
            node = node.args[0]
        return None

    def insert(self, source: torch.fx.Node, quantizer: OutputQuantizer, users=None):
        """Insert ``quantizer`` after ``source``, for all its users (or only ``users``)."""
        name = f"output_quantizer_{len(self.specs)}"
        if self.deployment and not quantizer._source:  # a calibrated step: trainable
            quantizer = quantizer.copy(learnable=True)
        self.module.add_submodule(name, quantizer)
        self.modules[name] = quantizer
        with self.graph.inserting_after(source):
            new = self.graph.call_module(name, (source,))
        targets = set(source.users if users is None else users) - {new}
        for user in targets:
            user.replace_input_with(source, new)
        self.specs[new] = quantizer
        return new

    def reaches_output(self, node: torch.fx.Node) -> bool:
        """Whether ``node`` is a model output, directly or through pass-through ops."""
        return any(user.op == "output" or (_kind(user, self.modules) == "pass"
                                           and self.reaches_output(user))
                   for user in node.users)

    def feeds_add(self, node: torch.fx.Node) -> bool:
        """Whether ``node`` is an input of a residual add, directly or through pass-through
        ops (resnet's max pooling feeds the first block's conv and its skip path)."""
        return any(_kind(user, self.modules) == "add" or (
            _kind(user, self.modules) == "pass" and user.args[:1] == (node,)
            and self.feeds_add(user)) for user in node.users)

    def choose(self, tail: torch.fx.Node) -> OutputQuantizer:
        """The consumer's input quantizer (8 bits or fewer) if the output reaches one, unless
        the output is also the skip input of a residual add and that quantizer cannot carry
        it there (:meth:`carries`); else one calibrated on the recorded range."""
        consumers = [q for q in _consumer_quantizers(tail, self.modules)
                     if q.bits <= 8 and q.step_size.numel() == 1 and q.offset is None]
        calibrated = _calibrated(*self.ranges[tail.name][:2])
        if consumers:
            chosen = from_lsq(consumers[0], tied=self.deployment)
            if not self.feeds_add(tail) or self.carries(chosen, calibrated, tail):
                return chosen
        return calibrated

    def carries(self, quantizer: OutputQuantizer, calibrated: OutputQuantizer,
                node: torch.fx.Node) -> bool:
        """Whether a consumer's quantization can also carry ``node`` on a skip path (one
        quantization of the tensor: no requantization, QuantizeLinear/DequantizeLinear pair,
        between the add and the consumer): its step is at most ``255/127`` times the
        calibrated one's (at most the one bit that a signed 8-bit code range spends on a
        one-sided tensor; min/max steps set on the calibration data pass, the paper's
        ``2 mean|v| / sqrt(Q_P)`` at 8 bits is coarser and would carry the whole residual
        stream at it) and its codes cover the recorded range, both to within
        ``SKIP_RANGE_SLACK``. The recorded range is that of the graph being placed on the
        calibration input (in the export batch norm is folded into per-channel weight codes;
        in :func:`~stepsize.quantization.export.deployment_model` the bias rounding is
        added), whose extremes lie up to a few percent beyond the fake model's that set a
        min/max step: the few skip-path values beyond the codes are clipped, a quantization
        the deployment model computes too."""
        low, high = self.ranges[node.name][:2]
        step, zero = float(quantizer.step().detach()), quantizer.zero_point
        slack = SKIP_RANGE_SLACK * (high - low)
        fine = step <= float(calibrated.scale) * 255 / 127 * (1 + SKIP_RANGE_SLACK)
        return fine and (quantizer.low - zero) * step <= low + slack and \
            high - slack <= (quantizer.high - zero) * step

    def absorb(self, activation: torch.fx.Node, quantizer: OutputQuantizer) -> bool:
        """Apply a ReLU/ReLU6 to the codes (and drop it) unless onnxruntime removes it itself
        (zero point 0 for ReLU, a range within [0, 6] for ReLU6)."""
        relu6 = _kind(activation, self.modules) == "relu6"
        step, zero = float(quantizer.step().detach()), quantizer.zero_point
        if zero == 0 and (not relu6 or quantizer.high * step <= 6):
            return False
        quantizer.low = max(quantizer.low, zero)
        if relu6:
            quantizer.high = min(quantizer.high, zero + round(6 / step))
        activation.replace_all_uses_with(activation.args[0])
        self.graph.erase_node(activation)
        return True

    def place(self, node: torch.fx.Node) -> None:
        """Quantize the output of a layer or add (after its ReLU/ReLU6), unless it is a model
        output, or a linear layer on more than 2 dimensions (MatMul, not fused)."""
        tail, activation = _tail(node, self.modules)
        if tail.name not in self.ranges or self.reaches_output(tail):
            return
        module = self.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Linear) and self.ranges[tail.name][2] != 2:
            return
        quantizer = self.choose(tail)
        if activation is not None and not self.deployment and self.absorb(activation,
                                                                            quantizer):
            tail = _tail(node, self.modules)[0]
        self.insert(tail, quantizer)

    def place_pool(self, node: torch.fx.Node) -> None:
        """Quantize an average pooling of quantized codes at the step of the layer it feeds
        (exact: that layer quantizes the pooled values anyway)."""
        consumers = [q for q in _consumer_quantizers(node, self.modules)
                     if q.bits <= 8 and q.step_size.numel() == 1 and q.offset is None]
        if consumers and node.args and self.spec_of(node.args[0]) is not None:
            self.insert(node, from_lsq(consumers[0], tied=self.deployment))

    def place_max_pool(self, node: torch.fx.Node) -> None:
        """Quantize a max pooling of codes again at its input's quantization (exact: max
        commutes with it), so that every reader shares one QuantizeLinear and onnxruntime runs
        ``DQ -> MaxPool -> Q`` on the uint8 codes (NhwcMaxPool) instead of in float."""
        spec = self.spec_of(node.args[0]) if node.args else None
        if spec is not None:
            self.insert(node, spec.copy(tied=self.deployment))

    def quantize_add_inputs(self, node: torch.fx.Node) -> None:
        """Give both inputs of an add a DequantizeLinear (uint8 codes)."""
        for argument in node.args:
            if not isinstance(argument, torch.fx.Node) or argument in self.specs:
                continue
            spec = self.spec_of(argument)
            if spec is None:
                if argument.name not in self.ranges:
                    continue
                spec = _calibrated(*self.ranges[argument.name][:2])
            else:
                spec = spec.copy(tied=self.deployment)
            self.insert(argument, spec, users=[node])


def place_output_quantizers(graph_module: torch.fx.GraphModule, example_inputs,
                            deployment: bool = False) -> set[str]:
    """Insert the output quantizers (see the module docstring) into ``graph_module`` in place;
    with ``deployment`` their steps are learnable parameters and ReLU/ReLU6 stay in the graph
    (a trainable model that computes what the export computes; see ``deployment_model``).

    Returns:
        The names of the quantized layers whose input quantizer is now redundant (their input
        is already the output quantizer's dequantized codes).
    """
    recorder = _Recorder(graph_module)
    with torch.no_grad():
        recorder.run(*example_inputs)
    placement = _Placement(graph_module, recorder.ranges, deployment)
    for node in list(placement.graph.nodes):
        kind = _kind(node, placement.modules)
        if kind == "add":
            placement.quantize_add_inputs(node)
            placement.place(node)
        elif kind == "layer":
            placement.place(node)
        elif kind == "pool":
            placement.place_pool(node)
        elif kind == "pass" and _is_max_pool(node, placement.modules):
            placement.place_max_pool(node)
    return _redundant(placement, graph_module)


def absorb_placed(graph_module: torch.fx.GraphModule) -> set[str]:
    """For a graph whose output quantizers are already placed (``deployment_model``, batch norm
    and bias rounding folded away): apply each ReLU/ReLU6 right before one to its codes where
    onnxruntime would not remove it (exact, see the module docstring), in place.

    Returns:
        As :func:`place_output_quantizers`.
    """
    placement = _Placement(graph_module, {})
    for node in list(placement.graph.nodes):
        module = placement.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, OutputQuantizer):
            placement.specs[node] = module
            module.freeze()
            source = node.args[0]
            if _kind(source, placement.modules) in ("relu", "relu6") and len(source.users) == 1:
                placement.absorb(source, module)
    return _redundant(placement, graph_module)


def _redundant(placement: _Placement, graph_module: torch.fx.GraphModule) -> set[str]:
    """Layers whose input is already their own quantization (an output quantizer equal to
    their input quantizer); lints and recompiles ``graph_module``."""
    redundant = set()
    for node in placement.graph.nodes:
        if _kind(node, placement.modules) == "layer" and node.args[:1] and \
                node.args[0] in placement.specs:
            layer = placement.modules[node.target]
            if placement.specs[node.args[0]].same_as(layer.input_quantizer):
                redundant.add(node.target)
    placement.graph.lint()
    graph_module.recompile()
    return redundant


def trace_for_onnx(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx`` trace of ``model`` (already copied) with quantized layers as leaves."""
    return torch.fx.GraphModule(model, _Tracer().trace(model))
