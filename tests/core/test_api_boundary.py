"""API boundary of matching, quantization and unfolding (issue 11): every hostile input either a
clear ValueError/TypeError naming the argument, or normalized so that the answer is right.

The table ``CASES`` lists (call, exception, message pattern); the tests below it check the inputs
that are normalized instead: weights at any scale give the same matching, a 1-D ``y`` runs through
sparse and LinearOperator operators, step-size initialization near the float32 maximum.
"""

import warnings

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import aslinearoperator

from stepsize import ConvergenceWarning
from stepsize.matching import (
    METHODS,
    assignment_objective,
    edge_correctness,
    gradient,
    match_graphs,
    match_lawler,
    matching_accuracy,
    objective,
    score_matching,
    sinkhorn,
)
from stepsize.matching.generators import kb_pair

try:
    import torch
except ImportError:  # the torch extra is optional; its cases are skipped
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs the torch extra")

A3 = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
DENSE = np.random.default_rng(0).normal(size=(5, 3))


def _meta(*shape):
    return torch.zeros(*shape, device="meta")


def _complex_graph():
    graph = nx.Graph()
    graph.add_edge(0, 1, weight=1 + 2j)
    graph.add_edge(1, 2, weight=1.0)
    return graph


def _lsq(**kwargs):
    from stepsize.quantization import LSQQuantizer

    return LSQQuantizer(4, **kwargs)


def _second_forward(batch, first=(3, 4), **kwargs):
    """A quantizer initialized on a good first batch of shape ``first``, then given ``batch``."""
    quantizer = _lsq(**kwargs)
    quantizer(torch.randn(*first))
    return quantizer(batch)


def _lsq_quantize(v=None, step=0.1, **kwargs):
    from stepsize.quantization import lsq_quantize

    v = torch.randn(4, requires_grad=True) if v is None else v
    out = lsq_quantize(v, step, 4, True, **kwargs)
    out.sum().backward()  # a callable grad_scale is read in the forward; the backward uses it
    return out


def _unfolded(operator=DENSE, **kwargs):
    from stepsize.unfolding import UnfoldedGD

    return UnfoldedGD(3, operator, **kwargs)


def _psor(fixed_point):
    from stepsize.unfolding import UnfoldedPSOR

    return UnfoldedPSOR(2, lambda x: 0.5 * x, fixed_point)


def _jacobi():
    from stepsize.unfolding import UnfoldedPSOR

    return UnfoldedPSOR.jacobi(2, np.array([[2.0, 1.0], [1.0, 2.0]]), np.ones(2))


def _callable_operator(eigenvalues):
    from stepsize.unfolding import CallableOperator

    return CallableOperator(lambda x: x, lambda y: y, (3, 3), eigenvalues=eigenvalues)


def _quant_linear(x=None, **kwargs):
    from stepsize.quantization import QuantLinear

    layer = QuantLinear(4, 2, **kwargs)
    return layer if x is None else layer(x)


MATCHING = [
    ("step above 1", lambda: match_graphs(A3, A3, step=2.0), ValueError,
     r"^step must be <= 1, got 2\.0"),
    ("step 0", lambda: match_graphs(A3, A3, step=0.0), ValueError, r"^step must be > 0"),
    ("step NaN", lambda: match_graphs(A3, A3, step=float("nan")), ValueError,
     r"^step must be finite"),
    ("step unknown name", lambda: match_graphs(A3, A3, step="exact"), ValueError,
     r"^step must be one of 'adaptive'"),
    ("step None", lambda: match_graphs(A3, A3, step=None), TypeError,
     r"^step must be a real number"),
    ("step rule returns 2", lambda: match_graphs(A3, A3, step=lambda c1, c2: 2.0), ValueError,
     r"step \(a callable\) returned alpha = 2\.0"),
    ("step rule returns NaN", lambda: match_graphs(A3, A3, step=lambda c1, c2: float("nan")),
     ValueError, r"step \(a callable\) returned alpha = nan"),
    ("step rule returns text", lambda: match_graphs(A3, A3, step=lambda c1, c2: "x"), TypeError,
     r"step \(a callable\) must return a number"),
    ("complex A", lambda: match_graphs(A3 * 1j, A3), TypeError, r"^A must be real"),
    ("complex sparse B", lambda: match_graphs(A3, sp.csr_array(A3 * (1 + 1j))), TypeError,
     r"^B must be real"),
    ("complex networkx A", lambda: match_graphs(_complex_graph(), A3), TypeError,
     r"^A must have real edge weights"),
    ("complex K", lambda: match_graphs(A3, A3, A3 * 1j), TypeError, r"^K must be real"),
    ("NaN A", lambda: match_graphs(A3 * np.nan, A3), ValueError, r"^A must be finite"),
    # issue 17: restarts, seeds, the QAP direction, the Lawler form
    ("n_init 0", lambda: match_graphs(A3, A3, n_init=0), ValueError,
     r"^n_init must be >= 1, got 0"),
    ("n_init float", lambda: match_graphs(A3, A3, n_init=2.0), TypeError,
     r"^n_init must be an integer"),
    ("seed pair repeated", lambda: match_graphs(A3, A3, seeds=[[0, 1], [2, 1]]), ValueError,
     r"^seeds: node 1 of B is seeded twice"),
    ("seed out of range", lambda: match_graphs(A3, A3, seeds=[[3, 0]]), ValueError,
     r"^seeds: node 3 of A is out of range \[0, 3\)"),
    ("seeds as two index arrays", lambda: match_graphs(A3, A3, seeds=([0, 1, 2], [2, 1, 0])),
     ValueError, r"^seeds must be an \(m, 2\) array of pairs"),
    ("maximize text", lambda: match_graphs(A3, A3, maximize="no"), TypeError,
     r"^maximize must be True or False"),
    ("lawler K of the wrong size", lambda: match_lawler(np.eye(8), 3, 3), ValueError,
     r"^K must have shape \(n1 n2, n1 n2\) = \(9, 9\), got \(8, 8\)"),
]

MATCHING_TORCH = [
    ("meta A", lambda: match_graphs(_meta(3, 3), A3), ValueError,
     r"^A is a tensor on the meta device"),
    ("meta B", lambda: match_graphs(A3, _meta(3, 3)), ValueError,
     r"^B is a tensor on the meta device"),
    ("meta K", lambda: match_graphs(A3, A3, _meta(3, 3)), ValueError,
     r"^K is a tensor on the meta device"),
    ("match_graphs meta init", lambda: match_graphs(A3, A3, init=_meta(3, 3)), ValueError,
     r"^init is a tensor on the meta device"),
    ("complex torch A", lambda: match_graphs(torch.tensor(A3, dtype=torch.complex128), A3),
     TypeError, r"^A must be real"),
    ("meta sinkhorn scores", lambda: sinkhorn(_meta(3, 3)), ValueError,
     r"^S is a tensor on the meta device"),
    ("meta objective A", lambda: objective(_meta(3, 3), A3, np.eye(3)), ValueError,
     r"^A is a tensor on the meta device"),
    ("meta gradient M", lambda: gradient(A3, A3, _meta(3, 3)), ValueError,
     r"^M is a tensor on the meta device"),
    ("meta assignment_objective A", lambda: assignment_objective(_meta(3, 3), A3, [0, 1, 2]),
     ValueError, r"^A is a tensor on the meta device"),
    ("meta score_matching B", lambda: score_matching(A3, _meta(3, 3), [0, 1, 2]), ValueError,
     r"^B is a tensor on the meta device"),
    ("meta edge_correctness A", lambda: edge_correctness(_meta(3, 3), A3, [0, 1, 2]),
     ValueError, r"^A is a tensor on the meta device"),
    ("meta matching_accuracy col_ind", lambda: matching_accuracy(_meta(3), [0, 1, 2]),
     ValueError, r"^col_ind is a tensor on the meta device"),
]

QUANTIZATION = [
    ("NaN batch after the first", lambda: _second_forward(torch.full((3, 4), float("nan"))),
     ValueError, r"^input of LSQQuantizer must be finite, but it has 12 NaN"),
    ("inf batch after the first",
     lambda: _second_forward(torch.tensor([[1.0, float("inf"), 0.0, 0.0]] * 3)), ValueError,
     r"^input of LSQQuantizer must be finite, but it has 3 NaN or infinite"),
    ("int first batch", lambda: _lsq()(torch.arange(6)), TypeError,
     r"^input of LSQQuantizer must be a floating-point tensor, got dtype torch\.int64"),
    ("int batch after the first", lambda: _second_forward(torch.ones(3, 4, dtype=torch.int32)),
     TypeError, r"must be a floating-point tensor, got dtype torch\.int32"),
    ("complex batch", lambda: _second_forward(torch.ones(3, 4, dtype=torch.complex64)),
     TypeError, r"must be a floating-point tensor, got dtype torch\.complex64"),
    ("meta first batch", lambda: _lsq()(_meta(3, 4)), ValueError,
     r"^input of LSQQuantizer is a tensor on the meta device"),
    ("meta batch after the first", lambda: _second_forward(_meta(3, 4)), ValueError,
     r"^input of LSQQuantizer is a tensor on the meta device"),
    ("lsq_quantize meta v", lambda: _lsq_quantize(_meta(4)), ValueError,
     r"^v is a tensor on the meta device"),
    ("lsq_quantize meta step_size", lambda: _lsq_quantize(step=_meta(())), ValueError,
     r"^step_size is a tensor on the meta device"),
    ("lsq_quantize NaN grad_scale", lambda: _lsq_quantize(grad_scale=float("nan")), ValueError,
     r"^grad_scale must be finite, got nan"),
    ("lsq_quantize NaN 0-d tensor grad_scale",
     lambda: _lsq_quantize(grad_scale=torch.tensor(float("nan"))), ValueError,
     r"^grad_scale must be finite, got nan"),
    ("lsq_quantize callable NaN grad_scale",
     lambda: _lsq_quantize(grad_scale=lambda n, q_p: float("nan")), ValueError,
     r"^grad_scale\(N, Q_P\) must be finite, got nan \(N=4, Q_P=7\)"),
    ("lsq_quantize callable negative grad_scale",
     lambda: _lsq_quantize(grad_scale=lambda n, q_p: -1.0), ValueError,
     r"^grad_scale\(N, Q_P\) must be > 0, got -1\.0"),
    ("lsq_quantize meta grad_scale", lambda: _lsq_quantize(grad_scale=_meta(())), TypeError,
     r"^grad_scale must be a real number"),
    ("LSQQuantizer NaN grad_scale", lambda: _lsq(grad_scale=float("nan")), ValueError,
     r"^grad_scale must be finite, got nan"),
    ("LSQQuantizer callable NaN grad_scale",
     lambda: _lsq(grad_scale=lambda n, q_p: float("nan"))(torch.randn(8)), ValueError,
     r"^grad_scale\(N, Q_P\) must be finite, got nan \(N=8, Q_P=7\)"),
    ("channel_axis 5", lambda: _lsq(per_channel=True, channels=3, channel_axis=5)(
        torch.randn(3, 4)), ValueError,
     r"^channel_axis=5 is out of range for an input with 2 dimensions \(shape \(3, 4\)\)"),
    ("channel_axis -3", lambda: _lsq(per_channel=True, channels=3, channel_axis=-3)(
        torch.randn(3, 4)), ValueError, r"^channel_axis=-3 is out of range"),
    ("channel_axis past the rank after the first batch",
     lambda: _second_forward(torch.randn(4), per_channel=True, channels=4, channel_axis=1),
     ValueError, r"^channel_axis=1 is out of range for an input with 1 dimensions"),
    ("channel count changes after the first batch",
     lambda: _second_forward(torch.randn(5, 4), per_channel=True, channels=3), ValueError,
     r"^per-channel quantizer has 3 channels, input has 5 along axis 0 \(channel_axis\)"),
    ("QuantLinear unknown keyword", lambda: _quant_linear(bitz=3), TypeError,
     r"^QuantLinear got unexpected keyword arguments \['bitz'\]"),
    ("QuantLinear int input", lambda: _quant_linear(torch.ones(2, 4, dtype=torch.int64)),
     TypeError, r"must be a floating-point tensor, got dtype torch\.int64"),
]

UNFOLDING = [
    ("meta operator", lambda: _unfolded(_meta(5, 3)), ValueError,
     r"^operator is a tensor on the meta device"),
    ("meta y", lambda: _unfolded()(_meta(5)), ValueError, r"^y is a tensor on the meta device"),
    ("meta y in iterates", lambda: _unfolded().iterates(_meta(2, 5)), ValueError,
     r"^y is a tensor on the meta device"),
    ("UnfoldedGD meta init", lambda: _unfolded(init=_meta(3)), ValueError,
     r"^init is a tensor on the meta device"),
    ("complex y", lambda: _unfolded()(torch.ones(5, dtype=torch.complex128)), TypeError,
     r"^y must be real, got complex"),
    ("complex sparse operator", lambda: _unfolded(sp.csr_array(DENSE * 1j)), TypeError,
     r"^operator must be real, got a \w+ of dtype complex128"),
    ("complex LinearOperator", lambda: _unfolded(aslinearoperator(DENSE + 0j)), TypeError,
     r"^operator must be real"),
    ("PSOR meta x0", lambda: _jacobi()(_meta(2)), ValueError,
     r"^x0 is a tensor on the meta device"),
    ("PSOR meta fixed_point", lambda: _psor(_meta(2)), ValueError,
     r"^fixed_point is a tensor on the meta device"),
    ("CallableOperator meta eigenvalues", lambda: _callable_operator(_meta(3)), ValueError,
     r"^eigenvalues is a tensor on the meta device"),
]

CASES = (
    [pytest.param(call, error, pattern, id=name) for name, call, error, pattern in MATCHING]
    + [
        pytest.param(call, error, pattern, id=name, marks=needs_torch)
        for name, call, error, pattern in MATCHING_TORCH + QUANTIZATION + UNFOLDING
    ]
)


@pytest.mark.parametrize(("call", "error", "pattern"), CASES)
def test_bad_input_is_a_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


# ---------------------------------------------------------------------------------------------
# Matching: the matching does not depend on the units of the weights

SCALES = (1e-200, 1e-3, 1.0, 100.0, 1e200)


@pytest.fixture(scope="module")
def graph_pair():
    """A weighted pair with a known ground truth that every preset solves at scale 1."""
    return kb_pair(12, density=0.3, noise=0.1, seed=2)


@pytest.mark.filterwarnings("ignore::stepsize.ConvergenceWarning")
@pytest.mark.parametrize("method", list(METHODS))
def test_every_preset_gives_the_same_matching_at_every_scale(graph_pair, method):
    A, B, truth = graph_pair
    reference = match_graphs(A, B, method=method)
    assert matching_accuracy(reference.col_ind, truth) == 1.0
    for scale in SCALES:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow or underflow warning either
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = match_graphs(A * scale, B * scale, method=method)
        np.testing.assert_array_equal(result.col_ind, reference.col_ind)
        # The objective is in the user's units, Z(s A, s B) = s^2 Z(A, B), where float64 has it.
        expected = reference.objective * scale * scale  # +inf at 1e200, 0 at 1e-200
        assert result.objective == pytest.approx(expected, rel=1e-12)
        assert result.info["normalized_objective"] == pytest.approx(
            reference.info["normalized_objective"], rel=1e-12)


@pytest.mark.parametrize("method", ["apfp", "ga"])
def test_node_term_scales_with_the_graphs(graph_pair, method):
    # Z(s A, s B, s^2 K) = s^2 Z(A, B, K): the same matching, for every scale.
    A, B, truth = graph_pair
    K = np.random.default_rng(5).uniform(size=A.shape)  # a node affinity that helps a little
    K[np.arange(len(truth)), truth] += 0.5
    reference = match_graphs(A, B, K, lam=0.5, method=method)
    assert matching_accuracy(reference.col_ind, truth) == 1.0
    for scale in (1e-150, 1e-2, 1e2, 1e150):
        result = match_graphs(A * scale, B * scale, K * scale**2, lam=0.5, method=method)
        np.testing.assert_array_equal(result.col_ind, reference.col_ind)


def test_weights_of_1e308_are_matched_without_warnings(graph_pair):
    A, B, truth = graph_pair
    A, B = A / A.max() * 1e308, B / B.max() * 1e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = match_graphs(A, B)
    assert matching_accuracy(result.col_ind, truth) == 1.0
    assert result.objective == np.inf  # about 1e616: beyond float64, reported as +inf
    assert np.isfinite(result.info["normalized_objective"])
    assert result.info["log_scale"] == pytest.approx(2 * np.log(1e308))


@pytest.mark.parametrize("sparse", [False, True])
def test_normalization_leaves_the_inputs_unchanged(graph_pair, sparse):
    A, B, _ = graph_pair
    A, B = 3.0 * A, 7.0 * B
    if sparse:
        A, B = sp.csr_array(A), sp.csr_array(B)
    before = [m.copy() for m in (A, B)]
    match_graphs(A, B, method="ipfp")
    for matrix, copy in zip((A, B), before):
        assert abs(matrix - copy).max() == 0.0


@settings(max_examples=10, deadline=None)
@given(exponent=st.floats(-100.0, 100.0), method=st.sampled_from(["apfp", "ga"]))
def test_matching_is_invariant_to_a_random_positive_scale(graph_pair, exponent, method):
    A, B, truth = graph_pair
    scale = 10.0**exponent
    result = match_graphs(A * scale, B * scale, method=method)
    assert matching_accuracy(result.col_ind, truth) == 1.0


# ---------------------------------------------------------------------------------------------
# Quantization: inputs near the float32 maximum, grad_scale as a 0-d tensor


@needs_torch
def test_step_size_initialization_near_the_float32_maximum():
    from stepsize.quantization import LSQQuantizer, initial_step_size

    v = torch.tensor([3e38, -1e38, 2e38, 0.5])
    # 2 mean|v| / sqrt(Q_P) in float64 (1.5e38 * 2 / sqrt(7)), which float32 represents
    expected = 2 * np.abs(v.double().numpy()).mean() / np.sqrt(7)
    assert float(initial_step_size(v, 4, True)) == pytest.approx(expected, rel=1e-6)
    assert float(initial_step_size(v, 4, True, "minmax")) == pytest.approx(3e38 / 7, rel=1e-6)
    # 2 mean|v| / sqrt(1) = 3e38 * 2 / 2 ... exceeds float32 for 2-bit signed: capped there
    big = torch.full((4,), 3e38)
    assert float(initial_step_size(big, 2, True)) == float(torch.finfo(torch.float32).max)
    out = LSQQuantizer(4)(v)
    step = float(expected)
    codes = np.clip(np.round(v.double().numpy() / step), -8, 7)
    np.testing.assert_allclose(out.detach().double().numpy(), codes * step, rtol=1e-6)


@needs_torch
def test_zero_dim_tensor_grad_scale_equals_the_number():
    from stepsize.quantization import lsq_quantize

    grads = []
    for grad_scale in (0.25, torch.tensor(0.25)):
        step = torch.tensor(0.1, requires_grad=True)
        v = torch.linspace(-1, 1, 9)
        lsq_quantize(v, step, 3, True, grad_scale=grad_scale).sum().backward()
        grads.append(float(step.grad))
    assert grads[0] == grads[1] != 0.0


@needs_torch
def test_quantize_model_exclude_takes_one_name():
    from torch import nn

    from stepsize.quantization import quantize_model

    model = nn.Sequential()
    for name in ("fc1", "fc2", "fc3"):
        model.add_module(name, nn.Linear(2, 2))
    quantize_model(model, exclude="fc1")  # one name, not the letters f, c, 1
    assert [type(layer).__name__ for layer in model] == ["Linear", "QuantLinear", "QuantLinear"]


# ---------------------------------------------------------------------------------------------
# Unfolding: a documented 1-D y through every operator kind


@needs_torch
@pytest.mark.parametrize("kind", ["sparse", "linear_operator"])
def test_unfolded_gd_takes_a_1d_y_with_sparse_and_linear_operators(kind):
    from stepsize.unfolding import UnfoldedGD

    operator = sp.csr_array(DENSE) if kind == "sparse" else aslinearoperator(DENSE)
    y = DENSE @ np.array([1.0, -2.0, 0.5])
    dense = UnfoldedGD(4, DENSE, init=0.05)
    other = UnfoldedGD(4, operator, init=0.05)
    expected = dense(y)
    got = other(y)
    assert got.shape == (3,)
    np.testing.assert_allclose(got.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(got.detach().numpy(), other(y[None])[0].detach().numpy(),
                               rtol=1e-12)
    last = list(other.iterates(y))[-1]
    np.testing.assert_allclose(last.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
    # the step gradients agree too (the adjoint of the LinearOperator path)
    expected.square().sum().backward()
    got.square().sum().backward()
    np.testing.assert_allclose(other.steps.grad.numpy(), dense.steps.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("option, message", [
    ({"callback": 5}, "callback must be None or a callable"),
    ({"progress": "yes"}, "progress must be True"),
])
def test_trainers_check_callback_and_progress_before_any_step(option, message):
    """Found by review: a bad callback failed after the first step, with the model changed."""
    torch = pytest.importorskip("torch")
    from stepsize.quantization import TrainingOptions, quantize_model, train_model
    from stepsize.unfolding import UnfoldedGD, train_expected_loss

    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    quantize_model(model, bits=4)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=message):
        train_model(model, (x, torch.zeros(8, dtype=torch.long)),
                    options=TrainingOptions(epochs=1, lr=0.1), **option)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    unfolded = UnfoldedGD(T=2, operator=np.eye(3), init=0.3)
    with pytest.raises(TypeError, match=message):
        train_expected_loss(unfolded, **option)
