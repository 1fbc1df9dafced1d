"""The LSQ quantizer: forward ``round(clip(v/s, -Q_N, Q_P)) * s`` with a learned step size ``s``.

Forward (Esser et al. 2020, eq. 1-2)::

    v_bar = round(clip(v / s, -Q_N, Q_P)),     v_hat = v_bar * s

with ``Q_N = 0, Q_P = 2^b - 1`` for unsigned data and ``Q_N = 2^(b-1), Q_P = 2^(b-1) - 1`` for
signed data (the full two's-complement range). Backward (straight-through estimator, eq. 3)::

    d v_hat / d v = 1 if -Q_N < v/s < Q_P else 0
    d v_hat / d s = round(v/s) - v/s   if -Q_N < v/s < Q_P
                  = -Q_N               if v/s <= -Q_N
                  = Q_P                if v/s >= Q_P

and the step-size gradient is multiplied by ``g = 1 / sqrt(N * Q_P)`` (section 2.2), where ``N`` is
the number of elements quantized with that step size (the ``v.numel()`` of the paper's pseudocode,
batch dimension included for activations; per channel when the step is per channel).

Reference: S. K. Esser, J. L. McKinstry, D. Bablani, R. Appuswamy, D. S. Modha, "Learned Step Size
Quantization", ICLR 2020, arXiv:1902.08153. The optional offset is LSQ+ (Bhalgat et al. 2020,
arXiv:2004.09576).
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from stepsize._validation import check_choice, check_int, check_real, describe

__all__ = [
    "INIT_METHODS",
    "LSQQuantizer",
    "initial_step_size",
    "lsq_quantize",
    "quantization_range",
]

INIT_METHODS = ("lsq", "minmax", "three_sigma", "mse")

#: the straight-through bands: ``"paper"`` (eq. 3: where ``v/s`` is inside ``(-Q_N, Q_P)``) and
#: ``"rounded"`` (where the code ``round(v/s)`` is in ``[-Q_N, Q_P]``, torch's learnable op)
STE_MODES = ("paper", "rounded")

#: smallest step size kept by :class:`LSQQuantizer` (float32 machine epsilon, as torch does)
MIN_STEP_SIZE = float(torch.finfo(torch.float32).eps)

#: entries per step on which the ``"mse"`` initialization measures the error (evenly strided)
MSE_SAMPLE = 65536

#: largest initial step size (the float32 maximum)
MAX_STEP_SIZE = float(torch.finfo(torch.float32).max)

GradScale = float | Callable[[int, int], float] | None


def check_bits(bits, name: str = "bits") -> int:
    """Bit widths the quantizer supports: integers in 2..16."""
    return check_int(bits, name, low=2, high=16)


def quantization_range(bits: int, signed: bool) -> tuple[int, int]:
    """Return ``(Q_N, Q_P)``: the code range is ``-Q_N .. Q_P``.

    Unsigned: ``(0, 2^b - 1)``; signed: ``(2^(b-1), 2^(b-1) - 1)`` (full two's complement).

    >>> quantization_range(2, signed=True), quantization_range(4, signed=False)
    ((2, 1), (0, 15))
    """
    bits = check_bits(bits)
    if not isinstance(signed, (bool, int)):
        raise TypeError(f"signed must be a bool, got {describe(signed)}")
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _check_tensor(value, name: str, finite: bool = True) -> torch.Tensor:
    """A non-empty, finite (unless ``finite=False``), floating-point tensor with data (not on
    the meta device)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(value)}")
    if value.is_meta:
        raise ValueError(
            f"{name} is a tensor on the meta device (it has no data), got {describe(value)}"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if finite and not _all_finite(value):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, but it has {bad} NaN or infinite entries")
    return value


def _all_finite(value: torch.Tensor) -> bool:
    """Whether every entry is finite, by one sum: a NaN or inf entry makes the sum non-finite.

    A non-finite sum of finite entries (overflow) is settled by the exact elementwise test. The
    sum reads the tensor once and allocates no mask: on 1M float32 entries it took 0.36 ms
    against 11 ms for ``torch.isfinite(v).all()`` (one CPU thread).
    """
    accumulate = torch.float64 if value.dtype == torch.float64 else torch.float32
    # detached: a sum of an input that requires grad would record an autograd node per call
    if math.isfinite(value.detach().sum(dtype=accumulate).item()):
        return True
    return bool(torch.isfinite(value).all())


def _check_grad_scale(grad_scale) -> GradScale:
    if grad_scale is None or callable(grad_scale):
        return grad_scale
    if isinstance(grad_scale, torch.Tensor) and grad_scale.dim() == 0:
        # a 0-d tensor is read as the number it holds (device and dtype do not matter)
        if grad_scale.is_meta or grad_scale.is_complex() or grad_scale.dtype == torch.bool:
            raise TypeError(f"grad_scale must be a real number, got {describe(grad_scale)}")
        grad_scale = grad_scale.item()
    if isinstance(grad_scale, numbers.Real) and not isinstance(grad_scale, bool):
        return check_real(grad_scale, "grad_scale", low=0, low_inclusive=False)
    raise TypeError(
        f"grad_scale must be None (the paper's 1/sqrt(N Q_P)), a positive number or a callable "
        f"(N, Q_P) -> g, got {describe(grad_scale)}"
    )


def _resolve_grad_scale(grad_scale: GradScale, elements_per_step: int, q_p: int) -> float:
    if grad_scale is None:
        return 1.0 / math.sqrt(elements_per_step * q_p)
    if callable(grad_scale):
        g = grad_scale(elements_per_step, q_p)
        try:
            return check_real(g, "grad_scale(N, Q_P)", low=0, low_inclusive=False)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{error} (N={elements_per_step}, Q_P={q_p})") from None
    return grad_scale


#: ``grad * (low < x < high)`` in one pass, without a mask tensor (ReLU6's backward kernel)
_masked_gradient = torch.ops.aten.hardtanh_backward


class _LSQFunction(torch.autograd.Function):
    """Fused LSQ forward/backward without boolean masks.

    ``hardtanh_backward(grad, x, -Q_N, Q_P)`` is ``grad`` where ``-Q_N < x < Q_P`` and 0
    elsewhere, the paper's strict inside test, in one pass (on one CPU thread ``torch.where`` on
    a mask took 7-17 ms per 1M float32 entries against 0.3 ms for it).

    With ``Q_N >= 1`` (signed codes) the forward keeps one tensor, the step gradient's local
    term ``local = round(clip(v/s)) - (v/s inside, 0 outside)`` (eq. 3's three branches),
    negated; the backward is ``hardtanh_backward(grad, -local, -1, 1)`` for ``v`` and
    ``sum(-local * grad) * -g`` for ``s``. Inside the range ``|local| <= 1/2`` (the code and
    ``v/s`` differ by at most half a step, exactly); outside, ``local`` is the clip code
    ``-Q_N <= -1`` or ``Q_P >= 1``; so ``-1 < -local < 1`` is the inside test. The results are
    bitwise those of the mask formula (up to the sign of a zero). The backward is four tensor
    ops instead of nine, the forward six instead of four (on a small ViT's training step, 36
    quantizers of 4k-12k entries, each op costs 5-10 us, most of it allocating its output).
    Autograd keeps one tensor of ``v``'s size, as before; where ``v`` stays alive anyway (a
    weight) that is one more. Unsigned codes (``Q_N = 0``: a clip at 0 leaves ``local = 0``, as
    an exact integer code inside does)
    keep ``v`` and recompute ``v/s``.

    ``rounded`` (``ste="rounded"``) takes the inside test on the code instead:
    ``hardtanh_backward(v/s, round(v/s), -Q_N - 1, Q_P + 1)``, i.e. ``-Q_N <= round(v/s) <= Q_P``.
    Inside, ``|local| <= 1/2`` still holds, so the signed backward is the same.
    """

    @staticmethod
    def forward(ctx, v, step_size, q_n, q_p, grad_scale, check=False, rounded=False):
        # plain tensors: each op with an nn.Parameter operand (a weight, the step size) costs
        # about 3 us more, which is most of the op's time on small tensors
        v, step_size = v.detach(), step_size.detach()
        if check:
            _require_finite(v)
        ctx.bounds = (q_n, q_p, grad_scale, step_size.shape, rounded)
        scaled = v / step_size
        if q_n >= 1:
            if rounded:  # the band where the rounded code is in range: -Q_N-1 < round(v/s) < Q_P+1
                code = scaled.round()
                inside = _masked_gradient(scaled, code, -q_n - 1, q_p + 1)
                code.clamp_(-q_n, q_p)
            else:
                inside = _masked_gradient(scaled, scaled, -q_n, q_p)
                code = scaled.clamp_(-q_n, q_p).round_()
            # -local = inside - code, in inside's buffer (no new one, one op; no out= argument:
            # dynamo breaks the graph on one that is not contiguous)
            ctx.save_for_backward(inside.sub_(code))
            return code.mul_(step_size)
        ctx.save_for_backward(v, step_size)
        return scaled.clamp_(-q_n, q_p).round_().mul_(step_size)

    @staticmethod
    def backward(ctx, grad_output):
        q_n, q_p, grad_scale, step_shape, rounded = ctx.bounds
        needs_v, needs_step = ctx.needs_input_grad[:2]
        if q_n >= 1:
            (negated,) = ctx.saved_tensors  # -local: the inside test is symmetric
            grad_v = _masked_gradient(grad_output, negated, -1, 1) if needs_v else None
            grad_step = None
            if needs_step:
                # sum(-x) is -sum(x) exactly (rounding to nearest is symmetric), so this is
                # sum(local * grad) * g up to the sign of a zero; per tensor, sum() is
                # sum_to_size(()) without its view (bitwise the same)
                product = negated * grad_output
                grad_step = (product.sum_to_size(step_shape) if step_shape else product.sum()
                             ).mul_(-grad_scale)
            return grad_v, grad_step, None, None, None, None, None
        v, step_size = ctx.saved_tensors
        scaled = v / step_size
        # the inside test on v/s (the paper's) or on round(v/s) (rounded), strict either way
        test, low, high = (scaled.round(), -1, q_p + 1) if rounded else (scaled, 0, q_p)
        grad_v = _masked_gradient(grad_output, test, low, high) if needs_v else None
        grad_step = None
        if needs_step:
            # round(clip(v/s)) - (v/s inside, 0 outside) gives all three branches of eq. 3 at
            # once; inside, the difference of the code and v/s (within 1/2) is exact
            inside = _masked_gradient(scaled, test, low, high)
            local = scaled.clamp_(-q_n, q_p).round_().sub_(inside).mul_(grad_output)
            grad_step = local.sum_to_size(step_shape).mul_(grad_scale)
        return grad_v, grad_step, None, None, None, None, None


def _require_finite(v: torch.Tensor) -> None:
    """The finite check of :meth:`LSQQuantizer.forward` on a tensor without autograd history:
    one sum (a non-finite entry makes it non-finite; a finite sum that overflowed is settled by
    the exact test of :func:`_check_tensor`, which raises naming the input)."""
    if not math.isfinite(v.sum().item()):
        _check_tensor(v, "input of LSQQuantizer")


def _lsq(v: torch.Tensor, step_size: torch.Tensor, q_n: int, q_p: int, g: float,
         check: bool = False, rounded: bool = False) -> torch.Tensor:
    """The LSQ forward (and its autograd node when a gradient is wanted); ``check``: refuse a
    non-finite ``v`` first (the eager forward's check, made where ``v`` is already detached:
    the separate detach and call cost a few us per quantizer call); ``rounded``: the
    ``ste="rounded"`` gradients."""
    if torch.is_grad_enabled() and (v.requires_grad or step_size.requires_grad):
        return _LSQFunction.apply(v, step_size, q_n, q_p, g, check, rounded)
    # nothing to differentiate (inference, no_grad): the forward alone, no autograd node
    if check:
        _require_finite(v)
    return (v / step_size).clamp_(-q_n, q_p).round_().mul_(step_size)


def lsq_quantize(
    v: torch.Tensor,
    step_size: torch.Tensor | float,
    bits: int,
    signed: bool = True,
    grad_scale: GradScale = None,
    ste: str = "paper",
) -> torch.Tensor:
    """Fake-quantize ``v`` with step size ``s``: ``round(clip(v/s, -Q_N, Q_P)) * s``.

    Gradients are the paper's (eq. 3): ``v`` gets 1 strictly inside the range and 0 outside; ``s``
    gets ``round(v/s) - v/s`` inside, ``-Q_N`` at or below the range and ``Q_P`` at or above it,
    summed over the elements that share the step and multiplied by ``g``. With
    ``ste="rounded"`` "inside" means that the code ``round(v/s)`` is in ``[-Q_N, Q_P]`` (half a
    step further at each end), as in torch's ``_fake_quantize_learnable_per_tensor_affine``.

    Args:
        v: floating-point tensor to quantize (finite).
        step_size: positive step, a float or a tensor broadcastable to ``v`` (a scalar for
            per-tensor quantization, e.g. shape ``(C, 1, 1, 1)`` for per-channel weights).
        bits: bit width ``b`` in 2..16.
        signed: two's-complement codes ``-2^(b-1)..2^(b-1)-1`` if True, ``0..2^b-1`` if False.
        grad_scale: ``None`` for the paper's ``g = 1/sqrt(N Q_P)`` with ``N = v.numel() /
            step_size.numel()``; a positive finite number (or 0-d tensor) for a fixed ``g``; or
            a callable ``(N, Q_P) -> g``, whose value is checked the same way at every call.
        ste: the straight-through band, ``"paper"`` or ``"rounded"`` (the forward is the same).

    Returns:
        The fake-quantized tensor ``v_hat`` (same shape as ``v``).

    Example:
        >>> import torch
        >>> lsq_quantize(torch.tensor([-0.26, 0.04, 0.3, 9.0]), 0.1, bits=3, signed=True)
        tensor([-0.3000,  0.0000,  0.3000,  0.3000])

    Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. 1-3 and section 2.2.
    """
    v = _check_tensor(v, "v")
    q_n, q_p = quantization_range(bits, signed)
    grad_scale = _check_grad_scale(grad_scale)
    check_choice(ste, "ste", STE_MODES)
    if not isinstance(step_size, torch.Tensor):
        step_size = torch.tensor(check_real(step_size, "step_size"), dtype=v.dtype, device=v.device)
    _check_tensor(step_size, "step_size")
    if not bool((step_size > 0).all()):
        raise ValueError(f"step_size must be positive, got minimum {float(step_size.min())!r}")
    try:
        broadcast = torch.broadcast_shapes(step_size.shape, v.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != v.shape:  # one step per element or per group of v, never more than v has
        raise ValueError(
            f"step_size of shape {tuple(step_size.shape)} does not broadcast to v of shape "
            f"{tuple(v.shape)}"
        )
    g = _resolve_grad_scale(grad_scale, v.numel() // step_size.numel(), q_p)
    return _lsq(v, step_size, q_n, q_p, g, rounded=ste == "rounded")


def _channel_view(values: torch.Tensor, channel_axis: int | None) -> torch.Tensor:
    """``(C, elements per channel)`` for per-channel statistics, ``(1, numel)`` per tensor."""
    if channel_axis is None:
        return values.reshape(1, -1)
    return values.transpose(0, channel_axis).reshape(values.shape[channel_axis], -1)


def _quantization_mse(values: torch.Tensor, step: torch.Tensor, q_n: int, q_p: int) -> torch.Tensor:
    step = step[:, None]
    error = torch.clamp(values / step, -q_n, q_p).round() * step - values
    return error.square().mean(dim=1)


def initial_step_size(
    v: torch.Tensor,
    bits: int,
    signed: bool,
    method: str | float = "lsq",
    channel_axis: int | None = None,
) -> torch.Tensor:
    """Initial step size(s) from data ``v``.

    * ``"lsq"``: ``2 mean|v| / sqrt(Q_P)`` (the paper, section 2.1);
    * ``"minmax"``: ``max|v| / Q_P``;
    * ``"three_sigma"``: ``max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(b-1)`` (LSQ+ weight
      init as quoted in zhutmost/lsq-net#14);
    * ``"mse"``: the step on a 100-point grid from 0.01x to 2x the LSQ value that minimises
      ``||v_hat - v||^2`` (LSQ+ activation init), the error measured on at most
      ``MSE_SAMPLE`` (65,536) evenly strided entries per step;
    * a positive number: that constant.

    Args:
        v: data (weights, or the first batch of activations).
        bits: bit width in 2..16.
        signed: code range, as in :func:`quantization_range`.
        method: one of the names above, or a positive number.
        channel_axis: compute one step per index of this axis (per-channel) instead of one in all.

    Returns:
        A float32 tensor of shape ``()`` (per tensor) or ``(C,)`` (per channel); all-zero data gives
        the smallest allowed step instead of zero, data near the float32 maximum at most that
        maximum.

    Example:
        >>> import torch
        >>> float(initial_step_size(torch.tensor([1.0, -3.0]), bits=3, signed=True))
        2.309401035308838
    """
    v = _check_tensor(v, "v")
    q_n, q_p = quantization_range(bits, signed)
    if isinstance(method, numbers.Real) and not isinstance(method, bool):
        constant = check_real(method, "init", low=0, low_inclusive=False)
        count = 1 if channel_axis is None else v.shape[channel_axis]
        step = torch.full((count,), constant)
    else:
        check_choice(method, "init", INIT_METHODS)
        with torch.no_grad():
            values = _channel_view(v.detach().float(), channel_axis)
            # Statistics of values / 2^e (exact), 2^e <= max|v| < 2^(e+1): sums of entries near
            # the float32 maximum do not overflow, and every statistic scales by 2^e.
            power = math.ldexp(1.0, math.frexp(float(values.abs().amax()))[1] - 1)
            values = values / power
            lsq_step = 2 * values.abs().mean(dim=1) / math.sqrt(q_p)
            if method == "lsq":
                step = lsq_step
            elif method == "minmax":
                step = values.abs().amax(dim=1) / q_p
            elif method == "three_sigma":
                mean, std = values.mean(dim=1), values.std(dim=1, correction=0)
                spread = torch.maximum((mean - 3 * std).abs(), (mean + 3 * std).abs())
                step = spread / 2 ** (bits - 1)
            else:
                grid = torch.linspace(0.01, 2.0, 100)
                # the error on at most MSE_SAMPLE entries per step: 100 passes over a large
                # activation (6.4M entries) took 25 s, over the sample 0.03 s. A fixed random
                # subset, not a stride: a stride that divides an image's width samples one
                # column of every image (all zero padding, say).
                sample = values
                if values.shape[1] > MSE_SAMPLE:
                    generator = torch.Generator().manual_seed(0)
                    index = torch.randint(values.shape[1], (MSE_SAMPLE,), generator=generator)
                    sample = values[:, index.to(values.device)]
                errors = torch.stack(
                    [_quantization_mse(sample, factor * lsq_step, q_n, q_p) for factor in grid]
                )
                step = grid[errors.argmin(dim=0)] * lsq_step
            step = step.double() * power
    step = step.clamp(MIN_STEP_SIZE, MAX_STEP_SIZE).float().cpu()
    return step.reshape(()) if channel_axis is None else step


def _all_reduce_(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """Average (or max) ``tensor`` over the processes of torch.distributed, in place."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if op == "mean":
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= dist.get_world_size()
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def _scale_gradient(x: torch.Tensor, g: float) -> torch.Tensor:
    """Identity forward, gradient times ``g`` (the paper's ``gradscale``)."""
    scaled = x * g
    return (x - scaled).detach() + scaled


class LSQQuantizer(nn.Module):
    """A learned-step-size quantizer: ``forward(v) = round(clip(v/s, -Q_N, Q_P)) * s``.

    The step size ``s`` is an ``nn.Parameter`` initialized from the first tensor seen by
    ``forward`` (weights or the first training batch), by default to ``2 mean|v| / sqrt(Q_P)``.
    Its gradient is scaled by ``g = 1/sqrt(N Q_P)`` with ``N`` the number of elements sharing one
    step (for activations the whole batch tensor, as in the paper's pseudocode and torch's
    ``_LearnableFakeQuantize``).

    Positivity: an optimizer step can drive ``s`` to zero or below (SGD with momentum on a small
    batch does, on depthwise networks). Before every use ``s`` is projected back: an entry that
    is not above float32 eps, or not finite, is replaced by half its value at the previous
    forward pass (kept in the buffer ``previous_step``), never by eps itself. Clamping to eps
    (what torch's ``_LearnableFakeQuantize`` does) saturates every code, whose step gradient
    ``Q_P sum dL/dv_hat`` then throws ``s`` far off again; halving keeps the codes and the
    gradient on the scale of the last good step. The projection changes only the value, not
    the gradient formula. Where the forward cannot write the parameter (inside
    ``torch.compile`` or ``torch.jit.trace``: an in-place write there breaks the compiled
    backward) it uses the same rule out of place, ``where(s > eps and finite, s, previous/2)``,
    so a step written outside an optimizer step (``step_size.data.fill_(-1)``) is never used
    as it is; the optimizer hook still projects the parameter itself after every step.

    Initialization needs a batch with information: a first batch whose entries are all equal
    (all zeros from a shape check, a constant image) would fix the sign as unsigned and the
    step at eps for good. Such a batch is passed through unquantized with a ``RuntimeWarning``
    and initialization waits for the next non-constant one. Every input is checked (a
    floating-point tensor, finite, on a device with data): a NaN batch is refused, not quantized
    to NaN. Under ``torch.distributed`` the initial step is averaged over processes, so all ranks
    start, and therefore stay, identical (a constant batch on any rank defers all ranks).

    Args:
        bits: bit width ``b`` in 2..16.
        signed: two's-complement codes (True), unsigned codes (False), or None to decide on the
            first batch (signed if it has a negative entry).
        per_channel: one step per channel along ``channel_axis`` (needs ``channels``); an
            extension beyond the paper, whose steps are per tensor.
        channels: number of channels for ``per_channel``.
        channel_axis: the channel axis of the quantized tensor (0 for conv/linear weights);
            checked against the rank of every input (ValueError naming ``channel_axis``).
        init: the :func:`initial_step_size` method, or a positive constant.
        grad_scale: as in :func:`lsq_quantize`.
        offset: learn an LSQ+ offset ``beta``: ``v_hat = round(clip((v-beta)/s)) * s + beta``
            (for activations; it has the same gradient scale as ``s``).
        ste: the straight-through band. ``"paper"`` (eq. 3): the gradient passes where ``v/s``
            is strictly inside ``(-Q_N, Q_P)``. ``"rounded"``: where the code ``round(v/s)`` is
            in ``[-Q_N, Q_P]``, half a step further at each end, where ``s`` gets
            ``round(v/s) - v/s`` instead of the clip code, as in torch's
            ``_LearnableFakeQuantize``. The forward is the same.

    Example:
        >>> import torch
        >>> quantizer = LSQQuantizer(bits=4, signed=False)
        >>> out = quantizer(torch.tensor([0.0, 0.5, 1.0, 2.0]))
        >>> round(float(quantizer.step_size.detach()), 4)   # 2 * 0.875 / sqrt(15)
        0.4518
        >>> quantizer
        LSQQuantizer(bits=4, signed=False, step_size=0.4518)

    Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020; LSQ+ (Bhalgat et al.,
    CVPRW 2020) for the offset.
    """

    #: check every input of an initialized quantizer for NaN/inf (ValueError naming it); the
    #: quantized layers turn it off on their weight quantizers: a weight is a parameter, NaN
    #: only after a diverged step (whose loss is NaN first; ``train_model`` raises there), and
    #: the check, a sum and a host read per call, was 2% of a small ViT's training step
    check_finite: bool = True

    #: in training mode, the most ``s`` may change by one optimizer step: a factor in
    #: ``[1/max_change, max_change]`` from its value at the previous forward pass (None: no bound)
    max_change: float | None = 2.0

    def __init__(
        self,
        bits: int,
        signed: bool | None = True,
        *,
        per_channel: bool = False,
        channels: int | None = None,
        channel_axis: int = 0,
        init: str | float = "lsq",
        grad_scale: GradScale = None,
        offset: bool = False,
        ste: str = "paper",
    ):
        super().__init__()
        self.bits = check_bits(bits)
        self.ste = ste  # checked by the property
        if signed is not None and not isinstance(signed, bool):
            raise TypeError(f"signed must be True, False or None, got {describe(signed)}")
        if isinstance(init, str):
            check_choice(init, "init", INIT_METHODS)
        else:
            check_real(init, "init", low=0, low_inclusive=False)
        self.init = init
        self.grad_scale = _check_grad_scale(grad_scale)
        self.per_channel = bool(per_channel)
        self.channel_axis = check_int(channel_axis, "channel_axis")
        shape: tuple[int, ...] = ()
        if self.per_channel:
            if channels is None:
                raise ValueError("channels must be given when per_channel=True")
            shape = (check_int(channels, "channels", low=1),)
        self.step_size = nn.Parameter(torch.ones(shape))
        self.offset = nn.Parameter(torch.zeros(shape)) if offset else None
        self.register_buffer("initialized", torch.tensor(False))
        # the step size at the previous forward pass: the projection's fallback (see the class doc)
        self.register_buffer("previous_step", torch.ones(shape))
        # -1: decided by the first batch; 0: unsigned; 1: signed. A buffer, so state_dict keeps it.
        self.register_buffer("signed_code", torch.tensor(-1 if signed is None else int(signed)))
        # Python mirrors of the two buffers above, read by forward: branching on a buffer's
        # value would be a data-dependent branch, a graph break under torch.compile
        self._initialized, self._signed = False, signed
        self._bounds: tuple | None = None  # ((bits, signed), (Q_N, Q_P)) cached for forward
        # ((numel, bits, signed, grad_scale), Q_N, Q_P, g) of the last eager forward
        self._scale_cache: tuple | None = None
        # the version counter of step_size at its last projection: forward skips the
        # projection while no in-place write (optimizer step, fill_, load) has happened since
        self._projected_version = -1
        _register_step_size(self)

    @property
    def signed(self) -> bool | None:
        """The code range in use (None until decided by the first batch)."""
        return self._signed

    @property
    def ste(self) -> str:
        """The straight-through band, ``"paper"`` or ``"rounded"`` (see the class doc); a new
        value is checked. Kept out of ``vars()``, so a model's structural fingerprint (which
        ``train_model`` checkpoints record) is that of the releases before the option;
        ``train_model`` records a non-paper band as its own setting."""
        return self._ste

    @ste.setter
    def ste(self, value: str) -> None:
        self.__dict__["_ste"] = check_choice(value, "ste", STE_MODES)

    @property
    def is_initialized(self) -> bool:
        return self._initialized

    @property
    def bounds(self) -> tuple[int, int]:
        """``(Q_N, Q_P)`` of the current range."""
        if self._signed is None:
            raise RuntimeError("the quantizer's sign is decided by its first forward pass")
        key = (self.bits, self._signed)
        if self._bounds is None or self._bounds[0] != key:  # bits may be reassigned
            self._bounds = (key, quantization_range(self.bits, self._signed))
        return self._bounds[1]

    def __setstate__(self, state) -> None:  # copy.deepcopy and pickle: a new step_size
        super().__setstate__(state)
        self.__dict__.setdefault("_scale_cache", None)  # pickled before the cache existed
        # pickled before the option: the paper's band (the only one there was)
        self.__dict__.setdefault("_ste", self.__dict__.pop("ste", "paper"))
        _register_step_size(self)

    def _sync_flags(self) -> None:
        """Read the Python mirrors from the buffers (after loading a state dict)."""
        code = int(self.signed_code)
        self._signed = None if code < 0 else bool(code)
        self._initialized = bool(self.initialized)
        _REGISTRY_VERSION[0] += 1

    def _step_shape(self, v: torch.Tensor) -> tuple[int, ...]:
        if not self.per_channel:
            return ()
        axis = self.channel_axis % v.dim()
        return tuple(-1 if d == axis else 1 for d in range(v.dim()))

    def _check_input(self, v, finite: bool = True) -> torch.Tensor:
        """Every forward: a floating tensor, finite if ``finite``, whose channel axis fits the
        step sizes."""
        v = _check_tensor(v, "input of LSQQuantizer", finite)
        if self.per_channel:
            if not -v.dim() <= self.channel_axis < v.dim():
                raise ValueError(
                    f"channel_axis={self.channel_axis} is out of range for an input with "
                    f"{v.dim()} dimensions (shape {tuple(v.shape)}); it must be in "
                    f"[{-v.dim()}, {v.dim() - 1}]"
                )
            if v.shape[self.channel_axis] != self.step_size.numel():
                raise ValueError(
                    f"per-channel quantizer has {self.step_size.numel()} channels, input has "
                    f"{v.shape[self.channel_axis]} along axis {self.channel_axis} "
                    f"(channel_axis)"
                )
        return v

    @torch.no_grad()
    def initialize(self, v: torch.Tensor) -> None:
        """Set the sign (if undecided), the step size and the offset from data ``v``."""
        v = self._check_input(v)
        if self.signed is None:
            negative = torch.tensor(float(bool((v < 0).any())), device=v.device)
            self.signed_code.fill_(int(_all_reduce_(negative, "max").item()))
            self._signed = bool(self.signed_code)
        q_n, q_p = self.bounds
        axis = self.channel_axis if self.per_channel else None
        shift = None
        if self.offset is not None and self.init == "minmax":
            # LSQ+ min-max init: the range [min, max] maps onto the whole code range
            values = _channel_view(v.detach().float(), axis)
            low, high = values.amin(dim=1), values.amax(dim=1)
            step = ((high - low) / (q_n + q_p)).clamp_min(MIN_STEP_SIZE)
            shift = low + q_n * step
            step = step.reshape(self.step_size.shape)
        else:
            step = initial_step_size(v, self.bits, self.signed, self.init, axis)
        step = _all_reduce_(step.to(self.step_size), "mean")
        self.step_size.copy_(step)
        self.previous_step.copy_(step)
        if self.offset is not None:
            if shift is None:
                shift = torch.zeros_like(self.offset)
            shift = shift.reshape(self.offset.shape)
            self.offset.copy_(_all_reduce_(shift.to(self.offset), "mean"))
        self.initialized.fill_(True)
        self._initialized = True
        _REGISTRY_VERSION[0] += 1  # the optimizer hook projects it from now on

    def gradient_scale(self, v: torch.Tensor) -> float:
        """The ``g`` applied to this call's step-size gradient."""
        elements = v.numel() // self.step_size.numel()
        return _resolve_grad_scale(self.grad_scale, elements, self.bounds[1])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, *args):
        # state dicts written before ``previous_step`` existed: start it at the loaded step
        key = prefix + "previous_step"
        if key not in state_dict and prefix + "step_size" in state_dict:
            state_dict[key] = state_dict[prefix + "step_size"].detach().clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, *args)
        self._sync_flags()
        _register_step_size(self)  # load_state_dict(assign=True) puts in a new parameter

    @torch.no_grad()
    def _degenerate(self, v: torch.Tensor) -> bool:
        """Whether ``v`` is constant (all entries equal) on this or any other process."""
        constant = torch.tensor(float(bool(v.amax() == v.amin())), device=v.device)
        return bool(_all_reduce_(constant, "max").item())

    @torch.no_grad()
    def project_step_size(self) -> None:
        """Keep ``s`` positive: entries ``<= eps`` or not finite become half their previous value.

        Called after every optimizer step that updates ``s`` (a global optimizer hook, so any
        training loop, compiled model or not) and by the eager :meth:`forward` before every use;
        see the class doc.
        """
        step, previous = self.step_size, self.previous_step
        bound = self.max_change if self.training else None
        if step.numel() == 1 and not torch.compiler.is_compiling():
            # one step size: the same rule on Python floats (about 10x fewer tensor ops)
            value, last = step.detach().item(), previous.item()
            new = _projected_value(value, last, bound)
            if new != value:
                step.fill_(new)
            if new != last:
                previous.fill_(new)
            self._projected_version = step._version
            return
        fallback = (previous * 0.5).clamp_(MIN_STEP_SIZE, MAX_STEP_SIZE)
        good = (step > MIN_STEP_SIZE) & torch.isfinite(step)
        projected = torch.where(good, step, fallback)
        if bound is not None:
            low = (previous / bound).clamp_(MIN_STEP_SIZE, MAX_STEP_SIZE)
            projected = torch.minimum(torch.maximum(projected, low), previous * bound)
        # written only when it changes: an in-place write bumps the parameter's version and
        # would invalidate an earlier use of s in the same autograd graph (a quantizer called
        # twice before backward); where control flow cannot run, it is always written
        if torch.compiler.is_compiling() or not torch.equal(projected, step):
            step.copy_(projected)
        previous.copy_(step)
        self._projected_version = step._version

    def _positive_step(self) -> torch.Tensor:
        """The projection of :meth:`project_step_size` without writing ``s`` (for compiled and
        traced forwards): entries ``<= eps`` or not finite read as half the previous step. The
        gradient reaches ``s`` where it is used as it is."""
        step = self.step_size
        fallback = (self.previous_step * 0.5).clamp(MIN_STEP_SIZE, MAX_STEP_SIZE)
        return torch.where((step > MIN_STEP_SIZE) & torch.isfinite(step), step, fallback)

    def _eager_forward(self, v: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of an initialized quantizer in eager mode, per tensor and without
        offset (the common case), with the fewest Python steps: the checks of
        :meth:`_check_input` (its errors where one fails), the projection when ``s`` was
        written, and ``(Q_N, Q_P, g)`` cached per input size while ``bits``, the sign and a
        numeric ``grad_scale`` stay the same (a callable one is called every time)."""
        step = self._parameters["step_size"]
        if not (isinstance(v, torch.Tensor) and v.is_floating_point() and not v.is_meta
                and v.numel()):
            self._check_input(v, self.check_finite)  # raises, naming what is wrong
        if step._version != self._projected_version:  # written since projected
            self.project_step_size()
        key = (v.numel(), self.bits, self._signed, self.grad_scale)
        cached = self._scale_cache
        if cached is None or cached[0] != key or callable(self.grad_scale):
            q_n, q_p = self.bounds
            cached = (key, q_n, q_p, _resolve_grad_scale(self.grad_scale, v.numel(), q_p))
            self.__dict__["_scale_cache"] = cached
        return _lsq(v, step, cached[1], cached[2], cached[3], self.check_finite,
                    self._ste == "rounded")

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if (self._initialized and self.offset is None and not self.per_channel
                and not (torch.jit.is_tracing() or torch.compiler.is_compiling())):
            return self._eager_forward(v)
        step = self.step_size
        if not self._initialized:
            v = self._check_input(v)
            if self._degenerate(v):
                warnings.warn(
                    f"LSQQuantizer(bits={self.bits}) got a constant first batch (every entry "
                    f"{float(v.detach().flatten()[0])!r}, shape {tuple(v.shape)}): it passes "
                    "through unquantized and the step size initializes on the next non-constant "
                    "batch",
                    RuntimeWarning, stacklevel=2,
                )
                return v
            self.initialize(v)
        elif not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            # a NaN batch after the first would otherwise come out as NaN; the check is one sum
            # (about 8% of the forward on 1M float32 entries, on CPU) and, on an accelerator, one
            # host sync; it is skipped where Python control flow cannot run (tracing, compiling),
            # as is the projection, which the optimizer hook applies after every step instead
            # (writing a parameter inside a compiled forward bumps its version after autograd
            # saved it: "modified by an inplace operation" in backward)
            self._check_input(v, self.check_finite)
            if self.step_size._version != self._projected_version:  # written since projected
                self.project_step_size()
        else:
            step = self._positive_step()
        q_n, q_p = self.bounds
        g = _resolve_grad_scale(self.grad_scale, v.numel() // self.step_size.numel(), q_p)
        shape = self._step_shape(v)
        if shape:  # per channel; per tensor the 0-d step broadcasts (a view is a graph node)
            step = step.view(shape)
        rounded = self._ste == "rounded"
        if self.offset is None:
            return _lsq(v, step, q_n, q_p, g, rounded=rounded)
        shift = _scale_gradient(self.offset, g).view(shape)
        return _lsq(v - shift, step, q_n, q_p, g, rounded=rounded) + shift

    def extra_repr(self) -> str:
        sign = "auto" if self.signed is None else self.signed
        text = f"bits={self.bits}, signed={sign}"
        if self.per_channel:
            text += f", per_channel={self.step_size.numel()}"
        if self.ste != "paper":
            text += f", ste={self.ste!r}"
        if not self.is_initialized:
            return text + ", step_size=uninitialized"
        if self.per_channel:
            step = self.step_size.detach()
            text += f", step_size=[{float(step.min()):.4g}..{float(step.max()):.4g}]"
        else:
            text += f", step_size={float(self.step_size.detach()):.4g}"
        if self.offset is not None:
            text += f", offset={self.offset.detach().flatten()[:4].tolist()}"
        return text


#: id(step_size parameter) -> weak reference to its quantizer, for the optimizer hook: a plain
#: dict, whose ``get`` runs in C (a ``WeakValueDictionary.get`` is Python code, about 0.5 us per
#: parameter of every optimizer step); an entry goes when its quantizer is collected
_STEP_OWNERS: dict[int, weakref.ref] = {}


def _register_step_size(quantizer: LSQQuantizer) -> None:
    key = id(quantizer.step_size)

    def forget(reference, key=key):
        if _STEP_OWNERS.get(key) is reference:
            del _STEP_OWNERS[key]

    _STEP_OWNERS[key] = weakref.ref(quantizer, forget)
    _REGISTRY_VERSION[0] += 1


def _projected_value(value: float, last: float, bound: float | None) -> float:
    """:meth:`LSQQuantizer.project_step_size`'s rule for one step size, on Python floats."""
    new = value
    if not (value > MIN_STEP_SIZE and math.isfinite(value)):
        new = min(max(last * 0.5, MIN_STEP_SIZE), MAX_STEP_SIZE)
    if bound is not None:
        new = min(max(new, last / bound, MIN_STEP_SIZE), last * bound)
    return new


def _projection_plan(quantizers) -> tuple[list, list]:
    """``(groups, others)``: the quantizers with a single step size grouped by device and shape
    as ``(quantizers, steps, previous steps, steps + previous steps)``, one stacked host read
    each, and the others (per channel), projected one at a time."""
    groups: dict[tuple, tuple[list, list, list]] = {}
    others = []
    for quantizer in quantizers:
        step = quantizer._parameters["step_size"]
        if step.numel() != 1:
            others.append(quantizer)
            continue
        previous = quantizer._buffers["previous_step"]
        owners, steps, lasts = groups.setdefault((step.device, step.shape, previous.shape),
                                                 ([], [], []))
        owners.append(quantizer)
        steps.append(step)
        lasts.append(previous)
    return [(o, s, p, s + p) for o, s, p in groups.values()], others


@torch.no_grad()
def _run_projection(groups: list, others: list) -> None:
    """Project the step sizes of a :func:`_projection_plan`."""
    if torch.compiler.is_compiling():
        others = [quantizer for group in groups for quantizer in group[0]] + others
        groups = []
    for owners, steps, previous, both in groups:
        values = torch.stack(both).reshape(-1).tolist()  # one host read (dtypes promote)
        count = len(steps)
        bounds = [quantizer.max_change if quantizer.training else None for quantizer in owners]
        # the common case: every step finite, above eps and within its bound, kept as it is
        # (one comprehension: a loop of Python statements per quantizer cost 1 us each)
        if not all(MIN_STEP_SIZE < value < math.inf
                   and (bound is None or last / bound <= value <= last * bound)
                   for value, last, bound in zip(values, values[count:], bounds)):
            for step, value, last, bound in zip(steps, values, values[count:], bounds):
                new = _projected_value(value, last, bound)
                if new != value:
                    step.fill_(new)
        torch._foreach_copy_(previous, steps)
        for quantizer, version in zip(owners, [step._version for step in steps]):
            quantizer.__dict__["_projected_version"] = version
    for quantizer in others:
        quantizer.project_step_size()


def project_step_sizes(quantizers) -> None:
    """:meth:`LSQQuantizer.project_step_size` of every quantizer in ``quantizers``, those with a
    single step size together: their steps and previous steps are read by one stacked read per
    device and shape, and the previous steps written by one ``_foreach_copy_``, instead of
    two host reads and a write per quantizer (what the optimizer hook runs after every step).

    The attributes are read and written through the modules' ``__dict__`` and ``_parameters``:
    ``nn.Module``'s ``__getattr__``/``__setattr__`` cost microseconds per call, which on the 36
    quantizers of a small ViT was most of the hook's time.

    >>> project_step_sizes([torch.nn.Linear(2, 2)])
    Traceback (most recent call last):
    TypeError: quantizers must hold LSQQuantizer modules, got Linear at position 0
    """
    if isinstance(quantizers, LSQQuantizer) or not hasattr(quantizers, "__iter__"):
        raise TypeError(f"quantizers must be an iterable of LSQQuantizer modules, got "
                        f"{describe(quantizers)}")
    quantizers = list(quantizers)
    for position, quantizer in enumerate(quantizers):
        if not isinstance(quantizer, LSQQuantizer):
            raise TypeError(f"quantizers must hold LSQQuantizer modules, got "
                            f"{type(quantizer).__name__} at position {position}")
    _run_projection(*_projection_plan(quantizers))


#: bumped whenever the step sizes the optimizer hook projects may change (a quantizer registered,
#: initialized or loaded): the hook's cached plans are then rebuilt
_REGISTRY_VERSION = [0]

#: optimizer -> (signature, groups, others): the hook's projection plan for that optimizer
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _step_owners(optimizer) -> list:
    """The initialized quantizers whose step size ``optimizer`` updates."""
    owners = []
    find = _STEP_OWNERS.get
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            reference = find(id(parameter))
            if reference is None:
                continue
            owner = reference()
            if (owner is not None and owner._parameters.get("step_size") is parameter
                    and owner._initialized):
                owners.append(owner)
    return owners


def _plan_is_current(groups: list) -> bool:
    """Whether every quantizer of a cached plan still has the step size the plan holds."""
    return all(all(map(operator.is_, [q._parameters.get("step_size") for q in owners], steps))
               for owners, steps, _, _ in groups)


def _project_after_step(optimizer, args, kwargs) -> None:
    """Global ``torch.optim`` step post-hook: project every LSQ step size the step updated
    (:func:`project_step_sizes`).

    The plan (which quantizers, grouped how) is cached per optimizer while its parameter lists
    and the set of registered, initialized quantizers stay the same: scanning every parameter
    of the optimizer and grouping the quantizers took most of the hook's 0.3 ms per step on a
    small ViT (36 quantizers, 100 parameters), about 2% of its training step.
    """
    if not _STEP_OWNERS:
        return
    signature = (_REGISTRY_VERSION[0],
                 tuple((id(group["params"]), len(group["params"]))
                       for group in optimizer.param_groups))
    cached = _PLANS.get(optimizer)
    if cached is None or cached[0] != signature or not _plan_is_current(cached[1]):
        owners = _step_owners(optimizer)
        cached = (signature, *(_projection_plan(owners) if owners else ([], [])))
        _PLANS[optimizer] = cached
    if cached[1] or cached[2]:
        _run_projection(cached[1], cached[2])


register_optimizer_step_post_hook(_project_after_step)
