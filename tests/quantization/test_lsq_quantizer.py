"""LSQ quantizer: forward, the paper's gradients (closed form and torch's native op), init,
gradient scale, state, repr and input validation."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stepsize.quantization import (
    LSQQuantizer,
    initial_step_size,
    lsq_quantize,
    quantization_range,
)

NATIVE = getattr(torch, "_fake_quantize_learnable_per_tensor_affine", None)


@pytest.mark.parametrize(
    ("bits", "signed", "expected"),
    [(2, True, (2, 1)), (3, True, (4, 3)), (4, True, (8, 7)), (8, True, (128, 127)),
     (2, False, (0, 3)), (3, False, (0, 7)), (4, False, (0, 15)), (8, False, (0, 255)),
     (16, True, (32768, 32767))],
)
def test_ranges_and_code_counts(bits, signed, expected):
    assert quantization_range(bits, signed) == expected
    v = torch.arange(-expected[0] - 3, expected[1] + 3, 0.25, dtype=torch.float64) * 0.5
    distinct = torch.unique(lsq_quantize(v, 0.5, bits, signed) / 0.5)
    assert len(distinct) == 2**bits
    assert distinct.min() == -expected[0] and distinct.max() == expected[1]


def test_step_gradient_matches_paper_piecewise_formula():
    # s = 0.5, 3-bit signed: Q_N = 4, Q_P = 3; one step per element exposes each element's gradient
    ratios = torch.tensor([-5.0, -4.0, -1.51, -0.49, 0.49, 1.49, 1.51, 3.0, 10.0])
    step = torch.full((9,), 0.5, requires_grad=True)
    v = (ratios * 0.5).requires_grad_()
    lsq_quantize(v, step, 3, True, grad_scale=1.0).sum().backward()
    expected_step = [-4.0, -4.0, -0.49, 0.49, -0.49, -0.49, 0.49, 3.0, 3.0]
    np.testing.assert_allclose(step.grad.numpy(), expected_step, atol=1e-5)
    np.testing.assert_array_equal(v.grad.numpy(), [0, 0, 1, 1, 1, 1, 1, 0, 0])


def test_unsigned_gradient_below_zero_is_minus_q_n_which_is_zero():
    step = torch.full((3,), 0.25, requires_grad=True)
    v = torch.tensor([-1.0, 0.3, 5.0], requires_grad=True)
    lsq_quantize(v, step, 2, False, grad_scale=1.0).sum().backward()
    # v/s = -4 (below, -Q_N = 0), 1.2 (inside, 1 - 1.2), 20 (above, Q_P = 3)
    np.testing.assert_allclose(step.grad.numpy(), [0.0, -0.2, 3.0], atol=1e-6)
    np.testing.assert_array_equal(v.grad.numpy(), [0, 1, 0])


def test_rounding_is_half_to_even_like_onnx():
    v = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    np.testing.assert_array_equal(lsq_quantize(v, 1.0, 4, True).numpy(), [0, 2, 2, 0, -2, -2])


def test_grad_scale_changes_only_the_step_gradient():
    v = torch.randn(500)
    upstream = torch.randn(500)
    results = {}
    for g in (1.0, 0.037):
        step = torch.tensor(0.4, requires_grad=True)
        x = v.clone().requires_grad_()
        out = lsq_quantize(x, step, 3, True, grad_scale=g)
        out.backward(upstream)
        results[g] = (out.detach(), x.grad, step.grad)
    assert torch.equal(results[1.0][0], results[0.037][0])
    assert torch.equal(results[1.0][1], results[0.037][1])
    assert results[0.037][2].item() == pytest.approx(0.037 * results[1.0][2].item(), rel=1e-6)


def test_default_grad_scale_is_one_over_sqrt_numel_q_p():
    v = torch.randn(4, 3, 5)
    explicit = torch.tensor(0.3, requires_grad=True)
    lsq_quantize(v, explicit, 4, False, grad_scale=1.0).sum().backward()
    default = torch.tensor(0.3, requires_grad=True)
    lsq_quantize(v, default, 4, False).sum().backward()
    g = 1 / math.sqrt(60 * 15)
    assert default.grad.item() == pytest.approx(g * explicit.grad.item(), rel=1e-6)
    # the module uses the same g (N = numel of the batch tensor for activations)
    quantizer = LSQQuantizer(4, False, init=0.3)
    torch.testing.assert_close(quantizer(v), lsq_quantize(v, torch.tensor(0.3), 4, False))
    assert quantizer.gradient_scale(v) == pytest.approx(g)
    callable_scale = LSQQuantizer(4, False, init=0.3, grad_scale=lambda n, q_p: 1 / math.sqrt(n))
    step = torch.tensor(0.3, requires_grad=True)
    lsq_quantize(v, step, 4, False, grad_scale=1 / math.sqrt(60)).sum().backward()
    callable_scale(v).sum().backward()
    assert callable_scale.step_size.grad.item() == pytest.approx(step.grad.item(), rel=1e-6)
    assert callable_scale.gradient_scale(v) == pytest.approx(1 / math.sqrt(60))


def _band(ratio, q_n, q_p):
    """Where rounding before clamping (torch, brevitas) and the paper's clip-then-round differ."""
    return ((ratio >= q_p) & (ratio < q_p + 0.5)) | ((ratio <= -q_n) & (ratio > -q_n - 0.5))


@pytest.mark.skipif(NATIVE is None, reason="torch has no native learnable fake-quant op")
@pytest.mark.parametrize(("bits", "signed"), [(2, True), (3, False), (4, True), (8, False)])
def test_parity_with_torch_native_learnable_fake_quant(bits, signed):
    q_n, q_p = quantization_range(bits, signed)
    generator = torch.Generator().manual_seed(bits)
    v = torch.randn(64, 50, generator=generator) * 1.5
    step_value = float(2 * v.abs().mean() / math.sqrt(q_p))
    v[0, :5] = (q_p + 0.25) * step_value  # inside the half-step band above the range
    v[1, :5] = -(q_n + 0.25) * step_value  # and below it
    ratio = v / step_value
    mask = ~_band(ratio, q_n, q_p) & ((ratio - ratio.floor() - 0.5).abs() > 1e-3)
    upstream = torch.randn(64, 50, generator=generator) * mask
    g = 1 / math.sqrt(v.numel() * q_p)

    ours_v, ours_s = v.clone().requires_grad_(), torch.tensor(step_value, requires_grad=True)
    ours = lsq_quantize(ours_v, ours_s, bits, signed)
    ours.backward(upstream)
    theirs_v, theirs_s = v.clone().requires_grad_(), torch.tensor([step_value], requires_grad=True)
    theirs = NATIVE(theirs_v, theirs_s, torch.zeros(1), -q_n, q_p, g)
    theirs.backward(upstream)

    assert torch.equal(ours[mask], theirs.detach()[mask])
    assert torch.equal(ours_v.grad, theirs_v.grad)
    assert ours_s.grad.item() == pytest.approx(theirs_s.grad.item(), rel=1e-5, abs=1e-7)
    assert int(_band(ratio, q_n, q_p).sum()) > 0  # the band exists and was excluded


@pytest.mark.skipif(NATIVE is None, reason="torch has no native learnable fake-quant op")
def test_native_op_differs_from_paper_in_the_half_step_band():
    # v/s = 3.2 with Q_P = 3: the paper clips first (gradient Q_P = 3, none to v); torch rounds
    # first, sees code 3 inside the range and returns round(3.2) - 3.2 = -0.2 and 1 to v
    ours_v, ours_s = torch.tensor([3.2], requires_grad=True), torch.tensor(1.0, requires_grad=True)
    lsq_quantize(ours_v, ours_s, 3, True, grad_scale=1.0).sum().backward()
    theirs_v, theirs_s = torch.tensor([3.2], requires_grad=True), torch.tensor([1.0],
                                                                              requires_grad=True)
    NATIVE(theirs_v, theirs_s, torch.zeros(1), -4, 3, 1.0).sum().backward()
    assert ours_s.grad.item() == pytest.approx(3.0)
    assert theirs_s.grad.item() == pytest.approx(-0.2, abs=1e-6)
    assert (ours_v.grad.item(), theirs_v.grad.item()) == (0.0, 1.0)


@pytest.mark.skipif(NATIVE is None, reason="torch has no native learnable fake-quant op")
@pytest.mark.parametrize(("bits", "signed"), [(2, True), (2, False), (3, False), (4, True),
                                              (8, False)])
def test_rounded_ste_equals_torch_native_op_including_the_half_step_band(bits, signed):
    q_n, q_p = quantization_range(bits, signed)
    generator = torch.Generator().manual_seed(10 + bits)
    v = torch.randn(64, 50, generator=generator) * 1.5
    step_value = float(2 * v.abs().mean() / math.sqrt(q_p))
    v[0, :5] = (q_p + 0.25) * step_value  # the band above the range: native passes it
    v[1, :5] = -(q_n + 0.25) * step_value  # and below it
    v[2, :5] = (q_p + 0.75) * step_value  # past the band: native blocks it
    # a near-tie of round(v/s) is decided by float rounding (torch computes v * (1/s)): moved
    ratio = v / step_value
    v = torch.where((ratio - ratio.floor() - 0.5).abs() < 1e-3, v + 0.01 * step_value, v)
    ratio = v / step_value
    upstream = torch.randn(64, 50, generator=generator)
    g = 1 / math.sqrt(v.numel() * q_p)

    ours_v, ours_s = v.clone().requires_grad_(), torch.tensor(step_value, requires_grad=True)
    ours = lsq_quantize(ours_v, ours_s, bits, signed, ste="rounded")
    ours.backward(upstream)
    theirs_v, theirs_s = v.clone().requires_grad_(), torch.tensor([step_value], requires_grad=True)
    NATIVE(theirs_v, theirs_s, torch.zeros(1), -q_n, q_p, g).backward(upstream)
    paper_v, paper_s = v.clone().requires_grad_(), torch.tensor(step_value, requires_grad=True)
    lsq_quantize(paper_v, paper_s, bits, signed).backward(upstream)

    assert torch.equal(ours_v.grad, theirs_v.grad)
    assert ours_s.grad.item() == pytest.approx(theirs_s.grad.item(), rel=1e-5, abs=1e-6)
    assert torch.equal(ours, lsq_quantize(v, step_value, bits, signed))  # the same forward
    assert ours_v.grad[0, :5].abs().sum() > 0 and ours_v.grad[2, :5].abs().sum() == 0
    band = _band(ratio, q_n, q_p)
    assert int(band.sum()) > 0 and torch.equal(paper_v.grad[~band], ours_v.grad[~band])
    assert not torch.equal(paper_v.grad[band], ours_v.grad[band])  # where the two differ


@pytest.mark.skipif(NATIVE is None, reason="torch has no native learnable fake-quant op")
@pytest.mark.parametrize("signed", [True, False])
def test_rounded_ste_quantizer_trains_like_the_native_op(signed):
    """A per-channel LSQQuantizer(ste="rounded") and torch's per-channel learnable op: the same
    outputs and gradients through three SGD steps on the step sizes and the input."""
    q_n, q_p = quantization_range(3, signed)
    generator = torch.Generator().manual_seed(3)
    v = torch.randn(4, 30, generator=generator) + (0 if signed else 1.0)
    ours = LSQQuantizer(3, signed, per_channel=True, channels=4, ste="rounded")
    ours(v)  # initializes the steps
    assert repr(ours).startswith(
        f"LSQQuantizer(bits=3, signed={signed}, per_channel=4, ste='rounded'")
    theirs = ours.step_size.detach().clone().requires_grad_()
    ours_v, theirs_v = v.clone().requires_grad_(), v.clone().requires_grad_()
    for _ in range(3):
        upstream = torch.randn(4, 30, generator=generator)
        out = ours(ours_v)
        out.backward(upstream)
        native = torch._fake_quantize_learnable_per_channel_affine(
            theirs_v, theirs, torch.zeros(4), 0, -q_n, q_p, 1 / math.sqrt(30 * q_p))
        native.backward(upstream)
        np.testing.assert_allclose(out.detach(), native.detach(), rtol=1e-6, atol=1e-7)
        assert torch.equal(ours_v.grad, theirs_v.grad)
        np.testing.assert_allclose(ours.step_size.grad, theirs.grad, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            for variable in (ours.step_size, theirs, ours_v, theirs_v):
                variable -= 0.05 * variable.grad
                variable.grad = None


@pytest.mark.parametrize("signed", [True, False])
def test_rounded_ste_on_the_quantizers_fast_path(signed):
    """An initialized per-tensor quantizer takes the eager fast path: the same gradients as
    :func:`lsq_quantize` with ``ste="rounded"``, which differ from the paper's."""
    v = torch.randn(300, generator=torch.Generator().manual_seed(5)) * 2 + (0 if signed else 1)
    quantizer = LSQQuantizer(2, signed, ste="rounded", init=0.4, grad_scale=1.0)
    quantizer(v)  # initializes
    x, reference = v.clone().requires_grad_(), v.clone().requires_grad_()
    step = torch.tensor(0.4, requires_grad=True)
    quantizer(x).sum().backward()
    lsq_quantize(reference, step, 2, signed, grad_scale=1.0, ste="rounded").sum().backward()
    assert torch.equal(x.grad, reference.grad)
    assert quantizer.step_size.grad.item() == pytest.approx(step.grad.item(), rel=1e-6)
    paper = v.clone().requires_grad_()
    lsq_quantize(paper, 0.4, 2, signed, grad_scale=1.0).sum().backward()
    assert not torch.equal(paper.grad, x.grad)


def test_quantizer_pickled_before_the_ste_option_keeps_the_papers_band():
    quantizer = LSQQuantizer(2, True, ste="rounded", init=0.5)
    quantizer(torch.randn(10))
    state = quantizer.__getstate__()
    del state["_ste"]  # as pickled by a release without the option
    old = LSQQuantizer.__new__(LSQQuantizer)
    old.__setstate__(state)
    assert old.ste == "paper"
    v = torch.tensor([0.7], requires_grad=True)  # v/s = 1.4: the rounded band's, not the paper's
    old(v).sum().backward()
    assert v.grad.item() == 0.0


def test_rounded_ste_in_the_band_closed_form():
    # v/s = 3.2 with Q_P = 3: the code round(3.2) = 3 is in range, so v gets 1 and s gets
    # round(3.2) - 3.2 = -0.2; at 3.6 the code 4 is out: v gets 0 and s gets Q_P = 3; at
    # -4.4 (Q_N = 4) the code -4 is in: v gets its gradient and s gets -4 + 4.4 = 0.4
    v, step = torch.tensor([3.2, 3.6, -4.4], requires_grad=True), torch.tensor(
        1.0, requires_grad=True)
    lsq_quantize(v, step, 3, True, grad_scale=1.0, ste="rounded").backward(
        torch.tensor([1.0, 10.0, 100.0]))
    assert v.grad.tolist() == [1.0, 0.0, 100.0]  # the upstream gradient where it passes
    assert step.grad.item() == pytest.approx(-0.2 + 30.0 + 100 * 0.4, abs=1e-5)


def test_per_channel_step_gradient_sums_each_channel():
    v = torch.randn(3, 4, 2)
    step = torch.tensor([0.2, 0.5, 1.0], requires_grad=True)
    lsq_quantize(v, step.view(3, 1, 1), 3, True, grad_scale=1.0).sum().backward()
    for c in range(3):
        single = step[c].detach().clone().requires_grad_()
        lsq_quantize(v[c], single, 3, True, grad_scale=1.0).sum().backward()
        assert step.grad[c].item() == pytest.approx(single.grad.item(), rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.booleans(), st.floats(0.01, 3.0), st.integers(0, 2**31 - 1))
def test_codes_are_integers_in_range_and_error_is_half_a_step(bits, signed, step, seed):
    v = torch.randn(200, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4
    q_n, q_p = quantization_range(bits, signed)
    out = lsq_quantize(v, step, bits, signed)
    codes = out / step
    assert torch.allclose(codes, codes.round(), atol=1e-9)
    assert codes.min() >= -q_n - 1e-9 and codes.max() <= q_p + 1e-9
    inside = (v / step > -q_n) & (v / step < q_p)
    assert bool(((out - v)[inside].abs() <= step / 2 + 1e-12).all())


def test_initial_step_size_formulas():
    v = torch.tensor([[1.0, -3.0, 0.5, 2.0], [0.1, 0.2, -0.3, 0.4]])
    flat = v.numpy().ravel()
    assert float(initial_step_size(v, 4, True)) == pytest.approx(2 * np.abs(flat).mean()
                                                                 / math.sqrt(7), rel=1e-6)
    assert float(initial_step_size(v, 4, True, "minmax")) == pytest.approx(3.0 / 7)
    mu, sigma = flat.mean(), flat.std()
    assert float(initial_step_size(v, 3, True, "three_sigma")) == pytest.approx(
        max(abs(mu - 3 * sigma), abs(mu + 3 * sigma)) / 4, rel=1e-6)
    per_channel = initial_step_size(v, 2, False, "lsq", channel_axis=0)
    np.testing.assert_allclose(per_channel.numpy(),
                               2 * np.abs(v.numpy()).mean(axis=1) / math.sqrt(3), rtol=1e-6)
    assert float(initial_step_size(v, 4, True, 0.7)) == pytest.approx(0.7)


def test_mse_init_minimises_quantization_error_on_its_grid():
    v = torch.randn(5000, generator=torch.Generator().manual_seed(3)).abs()
    best = float(initial_step_size(v, 2, False, "mse"))
    lsq = float(initial_step_size(v, 2, False, "lsq"))

    def error(step):
        return float((lsq_quantize(v, step, 2, False) - v).square().mean())

    grid_errors = [error(f * lsq) for f in np.linspace(0.01, 2.0, 100)]
    assert error(best) == pytest.approx(min(grid_errors), rel=1e-5)
    assert error(best) < error(lsq)


def test_quantizer_initializes_on_first_forward_and_then_learns():
    quantizer = LSQQuantizer(4, signed=False)
    assert not quantizer.is_initialized
    first = torch.rand(32, 10) * 2
    quantizer(first)
    expected = 2 * first.abs().mean() / math.sqrt(15)
    assert quantizer.step_size.item() == pytest.approx(expected.item(), rel=1e-6)
    quantizer(torch.rand(32, 10) * 100)  # a second batch does not re-initialize
    assert quantizer.step_size.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sign_is_decided_by_the_first_batch():
    relu_like, image_like = LSQQuantizer(3, signed=None), LSQQuantizer(3, signed=None)
    relu_like(torch.rand(8, 4))
    image_like(torch.randn(8, 4))
    assert (relu_like.signed, relu_like.bounds) == (False, (0, 7))
    assert (image_like.signed, image_like.bounds) == (True, (4, 3))


def test_step_size_is_kept_positive():
    quantizer = LSQQuantizer(4, signed=True, init=0.5)
    quantizer(torch.randn(10))
    with torch.no_grad():
        quantizer.step_size.fill_(-2.0)
    out = quantizer(torch.randn(10))
    # projected to half the previous step (issue 16), not to float32 eps
    assert quantizer.step_size.item() == 0.25
    assert torch.isfinite(out).all()


def test_state_dict_round_trip_and_extra_repr():
    quantizer = LSQQuantizer(4, signed=None)
    assert repr(quantizer) == "LSQQuantizer(bits=4, signed=auto, step_size=uninitialized)"
    quantizer(torch.tensor([0.0, 0.5, 1.0, 2.0]))
    assert repr(quantizer) == "LSQQuantizer(bits=4, signed=False, step_size=0.4518)"
    state = quantizer.state_dict()
    assert set(state) == {"step_size", "initialized", "signed_code", "previous_step"}
    fresh = LSQQuantizer(4, signed=None)
    fresh.load_state_dict(state)
    assert fresh.is_initialized and fresh.signed is False
    x = torch.rand(20) * 50  # would give a very different step if it re-initialized
    assert torch.equal(fresh(x), quantizer(x))
    channels = LSQQuantizer(2, True, per_channel=True, channels=3)
    channels(torch.randn(3, 5))
    assert "per_channel=3" in repr(channels) and "step_size=[" in repr(channels)


def test_lsq_plus_offset_gradients():
    quantizer = LSQQuantizer(2, signed=False, offset=True, init=1.0, grad_scale=1.0)
    v = torch.tensor([-3.0, -1.2, 0.4, 5.0], requires_grad=True)
    quantizer(v).sum().backward()
    # d v_hat / d beta = 0 inside the range and 1 outside; here beta = 0, s = 1, codes 0..3
    assert quantizer.offset.grad.item() == pytest.approx(3.0)  # -3, -1.2 and 5 are outside
    minmax = LSQQuantizer(2, signed=False, offset=True, init="minmax")
    out = minmax(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    np.testing.assert_allclose(out.detach().numpy(), [-1.0, 0.0, 1.0, 2.0], atol=1e-6)


@pytest.mark.parametrize("bits", [1, 17, 0, -4])
def test_bits_outside_2_to_16_are_refused(bits):
    with pytest.raises(ValueError, match="bits"):
        LSQQuantizer(bits)
    with pytest.raises(ValueError, match="bits"):
        lsq_quantize(torch.randn(3), 0.1, bits, True)


@pytest.mark.parametrize("bits", [2.5, True, "4"])
def test_non_integer_bits_are_refused(bits):
    with pytest.raises(TypeError, match="bits"):
        LSQQuantizer(bits)


@pytest.mark.parametrize("step", [0.0, -0.1, float("nan"), float("inf")])
def test_non_positive_or_non_finite_step_is_refused(step):
    with pytest.raises(ValueError, match="step_size"):
        lsq_quantize(torch.randn(3), step, 4, True)
    with pytest.raises(ValueError, match="step_size"):
        lsq_quantize(torch.randn(3), torch.tensor([0.1, step, 0.1]), 4, True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_refused(bad):
    v = torch.tensor([0.1, bad, 0.3])
    with pytest.raises(ValueError, match="v must be finite"):
        lsq_quantize(v, 0.1, 4, True)
    with pytest.raises(ValueError, match="LSQQuantizer must be finite"):
        LSQQuantizer(4)(v)


def test_other_bad_arguments():
    with pytest.raises(TypeError, match="v must be a torch.Tensor"):
        lsq_quantize(np.ones(3), 0.1, 4, True)
    with pytest.raises(TypeError, match="floating-point"):
        lsq_quantize(torch.arange(3), 0.1, 4, True)
    with pytest.raises(ValueError, match="does not broadcast"):
        lsq_quantize(torch.randn(3, 4), torch.ones(5), 4, True)
    with pytest.raises(ValueError, match="does not broadcast"):  # more steps than elements
        lsq_quantize(torch.tensor([0.5]), torch.tensor([0.1, 0.2, 0.3]), 4, True)
    with pytest.raises(ValueError, match="grad_scale"):
        lsq_quantize(torch.randn(3), 0.1, 4, True, grad_scale=-1.0)
    with pytest.raises(ValueError, match="init"):
        LSQQuantizer(4, init="kl")
    with pytest.raises(ValueError, match="channels"):
        LSQQuantizer(4, per_channel=True)
    with pytest.raises(ValueError, match="channels"):
        LSQQuantizer(4, per_channel=True, channels=2)(torch.randn(3, 4))
    with pytest.raises(TypeError, match="signed"):
        LSQQuantizer(4, signed="yes")
    with pytest.raises(ValueError, match="ste must be one of 'paper', 'rounded'"):
        LSQQuantizer(4, ste="torch")
    with pytest.raises(ValueError, match="ste"):
        lsq_quantize(torch.randn(3), 0.1, 4, True, ste=None)
    quantizer = LSQQuantizer(4)
    with pytest.raises(ValueError, match="ste must be one of 'paper', 'rounded'; got 'Rounded'"):
        quantizer.ste = "Rounded"  # a reassignment is checked too, not read as the paper's
    assert quantizer.ste == "paper"


def test_import_without_torch_names_the_extra():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError(\"No module named 'torch'\")\n"
        "sys.meta_path.insert(0, Block())\n"
        "import stepsize\n"
        "try:\n"
        "    import stepsize.quantization\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'stepsize[torch]'" in out.stdout


def test_reassigned_bits_take_effect():
    """The cached code range follows ``bits`` (found by review: it kept the first range)."""
    quantizer = LSQQuantizer(2, True, init=0.1)
    v = torch.linspace(-100, 100, 2001)
    assert quantizer(v).max().item() == pytest.approx(0.1)  # Q_P = 1
    quantizer.bits = 8
    assert quantizer.bounds == (128, 127)
    assert quantizer(v).max().item() == pytest.approx(12.7)
