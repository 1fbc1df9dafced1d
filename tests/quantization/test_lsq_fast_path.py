"""Issue 16's step-time work on the quantizer: the batched projection of the optimizer hook, the
eager fast path of ``forward`` (its cache follows ``bits``, the sign and ``grad_scale``), weight
quantizers without the per-call finite check; and the MSE initialization of inputs (the default
of the quantized layers), measured on a strided sample of large tensors."""

import math

import pytest
import torch
from torch import nn

from stepsize.quantization import LSQQuantizer, initial_step_size, lsq_quantize, quantize_model
from stepsize.quantization.quantizer import MSE_SAMPLE, project_step_sizes


def _quantizers(values, previous, training=True):
    out = []
    for value, last in zip(values, previous, strict=True):
        quantizer = LSQQuantizer(4, True, init=1.0)
        quantizer(torch.randn(6))
        quantizer.train(training)
        with torch.no_grad():
            quantizer.previous_step.fill_(last)
            quantizer.step_size.fill_(value)
        out.append(quantizer)
    return out


@pytest.mark.parametrize("training", [True, False])
def test_batched_projection_equals_one_at_a_time(training):
    values = [0.3, -1.0, 0.0, float("nan"), float("inf"), 100.0, 1e-3, 0.25]
    previous = [0.2, 0.4, 1e-9, 0.8, 0.5, 1.0, 0.5, 0.25]
    batched, single = _quantizers(values, previous, training), _quantizers(values, previous,
                                                                           training)
    per_channel = LSQQuantizer(4, True, per_channel=True, channels=3, init=0.5)
    per_channel(torch.randn(3, 4))
    with torch.no_grad():
        per_channel.step_size.copy_(torch.tensor([-1.0, 0.6, 0.5]))
    project_step_sizes([*batched, per_channel])
    for quantizer in single:
        quantizer.project_step_size()
    got = [float(q.step_size.detach()) for q in batched]
    assert got == [float(q.step_size.detach()) for q in single]
    assert [float(q.previous_step) for q in batched] == got
    # the rule itself: half the previous step for bad values, a factor 2 at most in training
    # (training: within [previous / 2, 2 previous], even below eps when previous is)
    expected = [0.3, 0.2, 2e-9, 0.4, 0.25, 2.0, 0.25, 0.25] if training else \
        [0.3, 0.2, 2 ** -23, 0.4, 0.25, 100.0, 1e-3, 0.25]
    assert got == pytest.approx(expected, rel=1e-6)
    assert per_channel.step_size.detach().tolist() == pytest.approx([0.25, 0.6, 0.5])
    # projected now: the next eager forward does not project again
    assert all(q._projected_version == q.step_size._version for q in batched)


def test_optimizer_hook_projects_every_quantizer_of_the_step():
    torch.manual_seed(0)
    net = quantize_model(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                                       nn.Linear(8, 2)), bits=3)
    net(torch.randn(16, 5))
    steps = [m.step_size for m in net.modules() if isinstance(m, LSQQuantizer)]
    before = [float(s.detach()) for s in steps]
    optimizer = torch.optim.SGD(steps, lr=1.0)
    for step in steps:
        step.grad = torch.tensor(10.0)  # every step goes far below zero
    optimizer.step()
    assert [float(s.detach()) for s in steps] == pytest.approx([b / 2 for b in before])


def test_fast_path_follows_bits_sign_and_grad_scale():
    torch.manual_seed(1)
    v = torch.randn(50)
    quantizer = LSQQuantizer(4, True, init=0.1)
    assert torch.equal(quantizer(v), lsq_quantize(v, 0.1, 4, True))
    quantizer.bits = 2  # the cached (Q_N, Q_P, g) of 4 bits must not be reused
    assert torch.equal(quantizer(v), lsq_quantize(v, 0.1, 2, True))
    for grad_scale in (0.5, lambda n, q_p: 3.0 / n):
        quantizer.grad_scale = grad_scale
        quantizer.step_size.grad = None
        quantizer(v).sum().backward()
        reference = torch.tensor(0.1, requires_grad=True)
        lsq_quantize(v, reference, 2, True, grad_scale=grad_scale).sum().backward()
        assert quantizer.step_size.grad.item() == reference.grad.item()
    calls = []
    quantizer.grad_scale = lambda n, q_p: calls.append(n) or 1.0
    quantizer(v)
    quantizer(v[:10])
    assert calls == [50, 10]  # a callable grad_scale is called on every forward


def test_weight_quantizers_skip_the_finite_check_input_quantizers_keep_it():
    torch.manual_seed(2)
    layer = quantize_model(nn.Sequential(nn.Linear(4, 4)), bits=4)[0]
    x = torch.randn(8, 4)
    layer(x)
    assert layer.weight_quantizer.check_finite is False
    assert layer.input_quantizer.check_finite is True
    with pytest.raises(ValueError, match="LSQQuantizer must be finite"):
        layer(x * float("nan"))
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    assert torch.isnan(layer(x)).any()  # no error: the NaN is the weight's, not the batch's
    standalone = LSQQuantizer(4, True)
    standalone(x)
    with pytest.raises(ValueError, match="LSQQuantizer must be finite"):
        standalone(x * float("inf"))
    with pytest.raises(TypeError, match="floating-point"):
        layer.weight_quantizer(torch.ones(3, dtype=torch.long))


def test_layers_initialize_inputs_by_mse_and_weights_by_lsq():
    torch.manual_seed(3)
    net = quantize_model(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                                       nn.Linear(8, 3)), bits=2)
    x = torch.randn(32, 6)
    net(x)
    hidden = torch.relu(net[0](x)).detach()
    middle = net[2]
    assert float(middle.input_quantizer.step_size.detach()) == pytest.approx(
        float(initial_step_size(hidden, 2, signed=False, method="mse")), rel=1e-6)
    assert float(middle.weight_quantizer.step_size.detach()) == pytest.approx(
        float(initial_step_size(middle.weight, 2, signed=True, method="lsq")), rel=1e-6)


def test_mse_init_measures_the_error_on_a_strided_sample():
    generator = torch.Generator().manual_seed(4)
    small = torch.relu(torch.randn(MSE_SAMPLE, generator=generator))
    big = torch.relu(torch.randn(3 * MSE_SAMPLE + 5, generator=generator))
    # below the sample size the whole tensor is used: the brute-force grid minimum
    lsq = float(initial_step_size(small, 3, signed=False, method="lsq"))
    grid = torch.linspace(0.01, 2.0, 100)
    errors = [float(((torch.clamp(small / (f * lsq), 0, 7).round() * (f * lsq) - small) ** 2)
                    .mean()) for f in grid]
    best = float(grid[int(torch.tensor(errors).argmin())]) * lsq
    assert float(initial_step_size(small, 3, signed=False, method="mse")) == pytest.approx(
        best, rel=1e-5)
    # above it, every 4th entry (ceil of 3 + 5 / MSE_SAMPLE): the same search on that sample,
    # scaled from the LSQ step of the whole tensor
    stride = math.ceil(big.numel() / MSE_SAMPLE)
    assert stride == 4
    lsq_big = float(initial_step_size(big, 3, signed=False, method="lsq"))
    sample = big[::stride]
    errors = [float(((torch.clamp(sample / (f * lsq_big), 0, 7).round() * (f * lsq_big)
                      - sample) ** 2).mean()) for f in grid]
    best = float(grid[int(torch.tensor(errors).argmin())]) * lsq_big
    assert float(initial_step_size(big, 3, signed=False, method="mse")) == pytest.approx(
        best, rel=1e-5)
