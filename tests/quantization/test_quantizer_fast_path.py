"""The training fast path of the LSQ quantizer (issue 16, step time on a small ViT) against a
straightforward reference implementation of LSQ, and the bookkeeping that came with it.

The reference is Esser et al. 2020, eq. 1-3 written out with explicit masks: forward
``round(clip(v/s, -Q_N, Q_P)) * s``; ``d/dv`` is 1 strictly inside the range and 0 outside;
``d/ds`` is ``-v/s + round(v/s)`` strictly inside, ``-Q_N`` at or below the range and ``Q_P`` at
or above it, summed and times ``g = 1/sqrt(N Q_P)``. The fast path keeps the step gradient's
local term from the forward for signed codes and recomputes ``v/s`` for unsigned ones; both
must give these values (forward and input gradient bitwise, the step gradient to the float
rounding of its sum). The reference runs in the input's dtype: in another precision ``v/s``
lands on the other side of a .5 tie now and then, a different code, not a rounding error."""

import gc
import math

import pytest
import torch

from stepsize.quantization import LSQQuantizer, lsq_quantize, quantization_range
from stepsize.quantization import quantizer as quantizer_module


def _reference_lsq(v, step, q_n, q_p, g, upstream):
    """Esser et al. eq. 1-3 term by term, with boolean masks (no kernel of the library)."""
    q = v / step
    out = torch.round(torch.clamp(q, -q_n, q_p)) * step
    inside = (q > -q_n) & (q < q_p)
    grad_v = torch.where(inside, upstream, torch.zeros_like(upstream))
    local = torch.where(inside, -q + torch.round(q),
                        torch.where(q <= -q_n, torch.full_like(q, -q_n),
                                    torch.full_like(q, q_p)))
    grad_step = (upstream * local).sum_to_size(step.shape) * g
    return out, grad_v, grad_step


def _data(q_n, q_p, shape, step, seed):
    """Inputs spread over and beyond the code range, with exact clip values and .5 ties."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(shape, generator=generator, dtype=torch.float64) * (q_n + q_p) * 0.6
    flat = codes.view(-1)
    k = flat.numel() // 10
    flat[:k] = -q_n
    flat[k:2 * k] = q_p
    flat[2 * k:3 * k] = torch.randint(-q_n, q_p, (k,), generator=generator) + 0.5
    v = (codes * step).float()
    return v, torch.randn(shape, generator=generator)


@pytest.mark.parametrize(("bits", "signed"), [(2, True), (3, True), (4, True), (8, True),
                                              (2, False), (4, False), (8, False)])
@pytest.mark.parametrize(("shape", "step_shape"),
                         [((8, 17, 64), ()), ((16, 3, 5, 5), (16, 1, 1, 1)), ((6, 7), (6, 7))])
def test_lsq_quantize_equals_the_reference(bits, signed, shape, step_shape):
    q_n, q_p = quantization_range(bits, signed)
    step = (torch.rand(step_shape, generator=torch.Generator().manual_seed(bits)) + 0.05)
    v, upstream = _data(q_n, q_p, shape, step.double(), seed=bits * 7 + len(shape))
    g = 0.37
    out_ref, grad_v_ref, grad_step_ref = _reference_lsq(v, step, q_n, q_p, g, upstream)
    x, s = v.clone().requires_grad_(), step.clone().requires_grad_()
    out = lsq_quantize(x, s, bits, signed, grad_scale=g)
    out.backward(upstream)
    assert torch.equal(out.detach(), out_ref)
    assert torch.equal(x.grad, grad_v_ref)
    torch.testing.assert_close(s.grad, grad_step_ref, rtol=2e-6, atol=1e-6 * g)


@pytest.mark.parametrize(("bits", "signed"), [(4, True), (2, True), (4, False), (8, False)])
def test_module_training_step_equals_the_reference(bits, signed):
    """The eager fast path of ``LSQQuantizer.forward`` (what a training step runs): forward,
    input gradient and the step gradient with the paper's ``g = 1/sqrt(N Q_P)``."""
    quantizer = LSQQuantizer(bits, signed, init=0.05)
    q_n, q_p = quantization_range(bits, signed)
    v, upstream = _data(q_n, q_p, (8, 17, 64), torch.tensor(0.05, dtype=torch.float64), seed=bits)
    quantizer(v)  # initializes the step at 0.05
    x = v.clone().requires_grad_()
    out = quantizer(x)
    out.backward(upstream)
    g = 1 / math.sqrt(v.numel() * q_p)
    step = quantizer.step_size.detach()
    out_ref, grad_v_ref, grad_step_ref = _reference_lsq(v, step, q_n, q_p, g, upstream)
    assert torch.equal(out.detach(), out_ref)
    assert torch.equal(x.grad, grad_v_ref)
    torch.testing.assert_close(quantizer.step_size.grad, grad_step_ref, rtol=2e-6, atol=0)


@pytest.mark.parametrize("signed", [True, False])
def test_inference_path_is_the_training_forward_without_a_graph(signed):
    torch.manual_seed(2)
    quantizer = LSQQuantizer(4, signed)
    v = torch.randn(4, 33) + (0 if signed else 1.5)
    quantizer(v)
    trained = quantizer(v)
    assert trained.grad_fn is not None
    with torch.no_grad():
        inferred = quantizer(v)
    assert inferred.grad_fn is None
    assert torch.equal(inferred, trained.detach())
    frozen = quantizer.step_size.detach()
    plain = lsq_quantize(v, frozen, 4, signed)  # nothing requires grad: no autograd node
    assert plain.grad_fn is None and torch.equal(plain, inferred)


@pytest.mark.parametrize("signed", [True, False])
def test_retained_graph_gives_the_same_gradients_twice(signed):
    torch.manual_seed(3)
    v = (torch.randn(64, 9) * 0.4 + (0 if signed else 0.5)).requires_grad_()
    step = torch.tensor(0.1, requires_grad=True)
    out = lsq_quantize(v, step, 3, signed, grad_scale=0.5)
    upstream = torch.randn(64, 9)
    out.backward(upstream, retain_graph=True)
    first = (v.grad.clone(), step.grad.clone())
    v.grad, step.grad = None, None
    out.backward(upstream)
    assert torch.equal(v.grad, first[0]) and torch.equal(step.grad, first[1])


@pytest.mark.parametrize(("signed", "expected"), [(True, 1), (False, 2)])
def test_autograd_keeps_one_input_sized_tensor(signed, expected):
    """Signed codes keep the local term only (as many bytes as ``v``); unsigned ones keep ``v``
    and the step."""
    v = torch.randn(32, 16).requires_grad_()
    step = torch.tensor(0.2, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t,
                                                  lambda t: t):
        lsq_quantize(v, step, 4, signed)
    assert len(saved) == expected
    assert saved[0] == v.shape


def test_optimizer_hook_caches_its_plan_and_follows_new_quantizers():
    torch.manual_seed(4)
    first = LSQQuantizer(4, True, init=0.5)
    first(torch.randn(10))
    late = LSQQuantizer(4, True, init=0.5)  # initialized only after the first step
    optimizer = torch.optim.SGD([first.step_size, late.step_size], lr=1.0)
    for step in (first.step_size, late.step_size):
        step.grad = torch.tensor(10.0)  # far below zero: the hook halves the previous step
    optimizer.step()
    assert float(first.step_size.detach()) == pytest.approx(0.25)
    # not initialized: not projected
    assert float(late.step_size.detach()) == pytest.approx(1.0 - 10.0)
    late(torch.randn(10))
    late.step_size.grad = torch.tensor(10.0)
    first.step_size.grad = torch.tensor(0.01)  # a small step, within the bound: kept as it is
    optimizer.step()
    assert float(late.step_size.detach()) == pytest.approx(0.25)
    assert float(first.step_size.detach()) == pytest.approx(0.24)
    assert float(first.previous_step) == pytest.approx(0.24)
    assert first._projected_version == first.step_size._version


def test_step_registry_forgets_collected_quantizers():
    gc.collect()  # quantizers of earlier tests, in reference cycles, go first
    before = len(quantizer_module._STEP_OWNERS)
    quantizer = LSQQuantizer(4, True)
    key = id(quantizer.step_size)
    assert quantizer_module._STEP_OWNERS[key]() is quantizer
    del quantizer
    gc.collect()
    assert key not in quantizer_module._STEP_OWNERS
    assert len(quantizer_module._STEP_OWNERS) == before


def test_compiled_quantizer_on_a_permuted_input_has_no_graph_break():
    """timm's ConvNeXt quantizes channels-last views: the kernel's forward must not pass a
    non-contiguous ``out=`` tensor, on which dynamo breaks the graph (31 breaks there)."""
    from torch._dynamo.utils import counters

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quantizer = LSQQuantizer(4, True)

        def forward(self, x):
            return self.quantizer(x.permute(0, 2, 3, 1))

    torch.manual_seed(5)
    net = Net()
    x = torch.randn(2, 3, 4, 5)
    net(x)
    eager_in = x.clone().requires_grad_()
    net(eager_in).square().sum().backward()
    eager_grads = (eager_in.grad, net.quantizer.step_size.grad.clone())
    net.quantizer.step_size.grad = None
    torch._dynamo.reset()
    counters.clear()
    compiled_in = x.clone().requires_grad_()
    out = torch.compile(net, backend="aot_eager")(compiled_in)
    out.square().sum().backward()
    assert sum(counters["graph_break"].values()) == 0
    torch._dynamo.reset()
    assert torch.equal(out.detach(), net(x).detach())
    torch.testing.assert_close(compiled_in.grad, eager_grads[0], rtol=0, atol=0)
    torch.testing.assert_close(net.quantizer.step_size.grad, eager_grads[1], rtol=1e-6, atol=0)
