"""Issue 16's step-time work on the quantizer: the batched projection of the optimizer hook, the
eager fast path of ``forward`` (its cache follows ``bits``, the sign and ``grad_scale``), weight
quantizers without the per-call finite check; and the MSE initialization of inputs (the default
of the quantized layers), measured on a strided sample of large tensors."""


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


def test_mse_init_measures_the_error_on_a_fixed_random_sample():
    generator = torch.Generator().manual_seed(4)
    small = torch.relu(torch.randn(MSE_SAMPLE, generator=generator))
    big = torch.relu(torch.randn(3 * MSE_SAMPLE + 5, generator=generator))
    grid = torch.linspace(0.01, 2.0, 100)

    def grid_minimum(sample, lsq):
        errors = [float(((torch.clamp(sample / (f * lsq), 0, 7).round() * (f * lsq) - sample)
                         ** 2).mean()) for f in grid]
        return float(grid[int(torch.tensor(errors).argmin())]) * lsq

    # below the sample size the whole tensor is used: the brute-force grid minimum
    lsq = float(initial_step_size(small, 3, signed=False, method="lsq"))
    assert float(initial_step_size(small, 3, signed=False, method="mse")) == pytest.approx(
        grid_minimum(small, lsq), rel=1e-5)
    # above it, MSE_SAMPLE entries drawn with torch.Generator seed 0: the same search on that
    # sample, scaled from the LSQ step of the whole tensor
    index = torch.randint(big.numel(), (MSE_SAMPLE,), generator=torch.Generator().manual_seed(0))
    lsq_big = float(initial_step_size(big, 3, signed=False, method="lsq"))
    assert float(initial_step_size(big, 3, signed=False, method="mse")) == pytest.approx(
        grid_minimum(big[index], lsq_big), rel=1e-5)


def test_mse_init_of_an_image_batch_is_not_one_column():
    """Review finding: an evenly strided sample of a (64, 64, 32, 32) ReLU activation (stride
    64 divides the width) read one image column, all zero padding here, and gave a step 1/8 of
    the optimum (45x its squared error). The random sample's step is within 1% of the best
    squared error of a fine search over the whole tensor."""
    torch.manual_seed(0)
    activation = torch.relu(torch.randn(64, 64, 32, 32))
    activation[..., 0] = 0  # the left column, zero as after padding
    values = activation.reshape(-1)

    def error(c):
        return float(((torch.clamp(values / c, 0, 7).round() * c - values) ** 2).mean())

    step = float(initial_step_size(activation, 3, signed=False, method="mse"))
    best = min(error(c) for c in torch.linspace(0.2, 0.6, 81).tolist())
    assert error(step) <= 1.01 * best
    assert error(step) < 0.2 * error(float(values.max()) / 7 / 8)  # a step 1/8 of max/7 is poor


def test_activation_init_names_itself_and_lists_auto():
    with pytest.raises(ValueError, match="activation_init must be one of 'auto', 'lsq'"):
        quantize_model(nn.Sequential(nn.Linear(3, 3)), 4, activation_init="Auto")


def test_auto_init_is_min_max_at_8_bits_mse_below_and_lsq_plus_with_offset():
    """activation_init="auto": min/max (max|v| / Q_P) at 8 bits, MSE below; with an LSQ+
    offset at 8 bits the min/max init maps [min, max] onto the whole code range."""
    from stepsize.quantization import QuantLinear

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    eight, four = QuantLinear(4, 2, weight_bits=8), QuantLinear(4, 2, weight_bits=4)
    eight(x), four(x)
    assert (eight.input_quantizer.init, four.input_quantizer.init) == ("minmax", "mse")
    q_p = eight.input_quantizer.bounds[1]
    assert float(eight.input_quantizer.step_size) == pytest.approx(float(x.abs().max()) / q_p,
                                                                   rel=1e-6)
    offset = QuantLinear(4, 2, weight_bits=8, offset=True)
    offset(x)
    quantizer = offset.input_quantizer
    q_n, q_p = quantizer.bounds
    step = (float(x.max()) - float(x.min())) / (q_n + q_p)
    assert float(quantizer.step_size) == pytest.approx(step, rel=1e-5)
    assert float(quantizer.offset) == pytest.approx(float(x.min()) + q_n * step, rel=1e-5)


def test_project_step_sizes_refuses_other_modules():
    """The public projection names the argument and the position of a non-quantizer."""
    with pytest.raises(TypeError, match=r"quantizers must hold LSQQuantizer modules, got Linear "
                                        r"at position 1"):
        project_step_sizes([LSQQuantizer(4), torch.nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="quantizers must be an iterable"):
        project_step_sizes(LSQQuantizer(4))
