"""The LSQ autograd kernel without boolean masks: bitwise equal to the mask-based reference
(forward, input and step gradients; every float dtype; boundaries and .5 ties), no full-size
mask in its backward, and a compiled forward that never uses a non-positive step size."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from stepsize.quantization import LSQQuantizer, lsq_quantize, quantization_range

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def _reference(v, step, q_n, q_p, g, upstream, ste="paper"):
    """The paper's eq. 1-3 with explicit masks (the kernel before this change), same dtype;
    ``ste="rounded"``: inside where the code ``round(v/s)`` is in ``[-Q_N, Q_P]``."""
    scaled = v / step
    out = torch.clamp(scaled, -q_n, q_p).round() * step
    if ste == "rounded":
        inside = (scaled.round() >= -q_n) & (scaled.round() <= q_p)
    else:
        inside = (scaled > -q_n) & (scaled < q_p)
    grad_v = torch.where(inside, upstream, 0.0)
    local = torch.clamp(scaled, -q_n, q_p).round() - torch.where(inside, scaled, 0.0)
    grad_step = (upstream * local).sum_to_size(step.shape) * g
    return out, grad_v, grad_step


def _inputs(dtype, q_n, q_p, shape, step_shape, seed):
    generator = torch.Generator().manual_seed(seed)
    step = (torch.rand(step_shape, generator=generator) + 0.1).to(dtype)
    v = (torch.randn(shape, generator=generator) * (q_n + q_p) / 2).to(dtype) * step
    flat, steps = v.view(-1), step.expand(shape).reshape(-1)
    k = flat.numel() // 8
    flat[:k] = steps[:k] * -q_n  # exactly at the lower clip (outside in eq. 3)
    flat[k:2 * k] = steps[k:2 * k] * q_p  # exactly at the upper clip
    # .5 ties (half to even), from -Q_N - 1/2 to Q_P + 1/2 (the ends of the rounded band)
    ties = torch.randint(-q_n - 1, q_p + 1, (k,), generator=generator) + 0.5
    flat[2 * k:3 * k] = steps[2 * k:3 * k] * ties.to(dtype)
    return v, step, torch.randn(shape, generator=generator).to(dtype)


@pytest.mark.parametrize("ste", ["paper", "rounded"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("bits", "signed"), [(2, True), (2, False), (4, True), (8, False)])
@pytest.mark.parametrize(("shape", "step_shape"),
                         [((40, 25), ()), ((6, 30, 3), (6, 1, 1)), ((4, 5), (4, 5))])
def test_kernel_is_bitwise_the_mask_reference(dtype, bits, signed, shape, step_shape, ste):
    q_n, q_p = quantization_range(bits, signed)
    v, step, upstream = _inputs(dtype, q_n, q_p, shape, step_shape, seed=bits + 17 * len(shape))
    expected = _reference(v, step, q_n, q_p, 0.37, upstream, ste)
    x, s = v.clone().requires_grad_(), step.clone().requires_grad_()
    out = lsq_quantize(x, s, bits, signed, grad_scale=0.37, ste=ste)
    out.backward(upstream)
    for got, want in zip((out.detach(), x.grad, s.grad), expected, strict=True):
        assert got.dtype == dtype
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_boundaries_get_the_clip_values_and_no_input_gradient(dtype):
    # 3-bit signed, s = 0.5: v/s = -4 and 3 sit exactly on the clips; 0.5 and 1.5 are ties
    v = (torch.tensor([-4.0, 3.0, 0.5, 1.5]) * 0.5).to(dtype).requires_grad_()
    step = torch.full((4,), 0.5, dtype=dtype, requires_grad=True)
    out = lsq_quantize(v, step, 3, True, grad_scale=1.0)
    out.sum().backward()
    assert out.detach().float().tolist() == [-2.0, 1.5, 0.0, 1.0]
    assert v.grad.float().tolist() == [0.0, 0.0, 1.0, 1.0]
    assert step.grad.float().tolist() == [-4.0, 3.0, -0.5, 0.5]


@pytest.mark.parametrize("ste", ["paper", "rounded"])
def test_lsq_plus_offset_matches_the_reference_on_shifted_input(ste):
    torch.manual_seed(3)
    quantizer = LSQQuantizer(4, False, offset=True, init=0.2, ste=ste)
    v = torch.randn(8, 30) + 0.7
    quantizer(v)
    with torch.no_grad():
        quantizer.offset.fill_(-0.35)
    upstream = torch.randn(8, 30)
    x = v.clone().requires_grad_()
    out = quantizer(x)
    out.backward(upstream)
    g = quantizer.gradient_scale(v)
    beta = torch.tensor(-0.35)
    want, grad_v, grad_step = _reference(v - beta, torch.tensor(0.2), 0, 15, g, upstream, ste)
    ratio = (v - beta) / 0.2
    assert int(((ratio > -0.5) & (ratio < 0)).sum()) > 0  # inputs in the band below the range
    torch.testing.assert_close(out.detach(), want + beta, rtol=0, atol=1e-6)
    assert torch.equal(x.grad, grad_v)
    assert quantizer.step_size.grad.item() == pytest.approx(grad_step.item(), rel=1e-6)
    # d v_hat / d beta = 1 outside the range, 0 inside (LSQ+), times g
    outside = upstream.sum() - grad_v.sum()
    assert quantizer.offset.grad.item() == pytest.approx(g * outside.item(), rel=1e-5)


class _RecordOutputs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(tensor, torch.Tensor):
                self.outputs.append((str(func), tensor.dtype, tensor.numel()))
        return result


def test_backward_builds_no_full_size_boolean_mask():
    # torch.where on a bool mask took 7-17 ms per 1M float32 entries on one CPU thread, the whole
    # mask-free backward about 11 ms with the forward: the speed of the kernel rests on this
    v = torch.randn(64, 64, requires_grad=True)
    step = torch.tensor(0.1, requires_grad=True)
    out = lsq_quantize(v, step, 4, True)
    with _RecordOutputs() as record:
        out.backward(torch.randn(64, 64))
    masks = [op for op, dtype, numel in record.outputs if dtype == torch.bool and numel > 1]
    assert masks == []
    assert any("hardtanh_backward" in op for op, _, _ in record.outputs)


@pytest.mark.slow
def test_compiled_forward_never_uses_a_non_positive_step():
    """A write outside an optimizer step (``step_size.data.fill_``) used to reach the compiled
    forward as it was (the eager forward projects it, the compiled one skipped that)."""
    torch.manual_seed(0)
    quantizer = LSQQuantizer(4, True)
    v = torch.randn(200)
    quantizer(v)  # initializes
    previous = float(quantizer.previous_step)
    compiled = torch.compile(quantizer, backend="aot_eager", fullgraph=True)
    for bad in (-1.0, 0.0, float("nan")):
        quantizer.step_size.data.fill_(bad)
        quantizer.step_size.grad = None
        out = compiled(v)
        out.sum().backward()
        assert torch.equal(out.detach(), lsq_quantize(v, previous / 2, 4, True)), bad
        assert quantizer.step_size.grad.item() == 0.0  # the fallback is not the parameter
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_forward_with_a_good_step_is_the_eager_one():
    torch.manual_seed(1)
    eager = LSQQuantizer(3, False, per_channel=True, channels=4, channel_axis=1)
    v = torch.rand(5, 4, 6)
    eager(v)
    twin = LSQQuantizer(3, False, per_channel=True, channels=4, channel_axis=1)
    twin.load_state_dict(eager.state_dict())
    upstream = torch.randn(5, 4, 6)
    eager(v).backward(upstream)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    compiled(v).backward(upstream)
    assert torch.equal(twin.step_size.grad, eager.step_size.grad)
    torch._dynamo.reset()
