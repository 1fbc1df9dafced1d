"""Issue 17's bad-input list, in one place: asymmetric input with ``maximize=True``, ``K`` of
the wrong size or layout, seeds out of range or repeated, ``n_init < 1``, and for
``match_subgraph`` and torch tensors mismatched batches and wrong dtypes. Each is either
handled exactly (asymmetric input: every preset is directed) or refused with a ValueError /
TypeError whose message starts with the argument's name."""

import numpy as np
import pytest

from stepsize.matching import (
    METHODS,
    FactorizedAffinity,
    as_adjacency,
    assignment_objective,
    match_graphs,
    match_lawler,
    match_subgraph,
)


def _directed(n, seed):
    """A random asymmetric weighted graph A (diagonal included), B = A relabelled: node i of
    A is node ``perm[i]`` of B."""
    rng = np.random.default_rng(seed)
    A = rng.uniform(size=(n, n)) * (rng.uniform(size=(n, n)) < 0.5)
    perm = rng.permutation(n)
    B = np.empty_like(A)
    B[np.ix_(perm, perm)] = A
    return A, B, perm


@pytest.mark.parametrize("method", sorted(METHODS))
def test_asymmetric_input_with_maximize_is_matched_as_directed_by_every_preset(method):
    # No preset is "undirected": asymmetric A, B with maximize=True are matched as given, and
    # the objective is 1/2 sum_ik A[i, k] B[col_ind[i], col_ind[k]] (half scipy's fun), not the
    # objective of the symmetrized graphs.
    A, B, perm = _directed(12, 3)
    result = match_graphs(A, B, method=method, seed=0)
    col = result.col_ind
    assert sorted(col) == list(range(12))
    assert result.objective == pytest.approx(0.5 * np.sum(A * B[np.ix_(col, col)]), rel=1e-12)
    symmetrized = 0.25 * np.sum((A + A.T) * (B + B.T)[np.ix_(col, col)])
    assert abs(result.objective - symmetrized) > 1e-6  # the two objectives differ here
    if method in ("apfp", "asm", "ga"):
        np.testing.assert_array_equal(col, perm)


def test_asymmetric_input_where_symmetry_is_required_is_refused_naming_it():
    A, _, _ = _directed(6, 0)
    with pytest.raises(ValueError, match=r"^A must be symmetric: max \|A - A\^T\|"):
        as_adjacency(A, "A")  # the undirected reading (directed=False)
    assert as_adjacency(A, "A", directed=True)[0].shape == (6, 6)


def test_asymmetric_subgraph_is_found_with_its_directed_objective():
    A_full, B, _ = _directed(14, 5)
    keep = np.random.default_rng(5).choice(14, size=10, replace=False)
    A = B[np.ix_(keep, keep)]
    result = match_subgraph(A, B, seed=0)
    np.testing.assert_array_equal(result.col_ind, keep)
    assert result.objective == pytest.approx(assignment_objective(A, B, result.col_ind),
                                              rel=1e-12)


@pytest.mark.parametrize(("call", "message"), [
    (lambda A, B: match_graphs(A, A, K=np.ones((6, 5))), r"^K must have shape \(6, 6\)"),
    (lambda A, B: match_graphs(A, A, K=np.ones(36)), r"^K must have shape \(6, 6\)"),
    (lambda A, B: match_graphs(A[:4, :4], A, K=np.ones((6, 4))),
     r"^K must have shape \(4, 6\), got \(6, 4\)"),  # (n2, n1): the transposed layout
    (lambda A, B: match_subgraph(A[:4, :4], A, K=np.ones((6, 4))),
     r"^K must have shape \(4, 6\), got \(6, 4\)"),
    # a node affinity (n1, n2) given to match_lawler, which wants the Lawler (n1 n2)^2 form
    (lambda A, B: match_lawler(np.ones((6, 6)), 6, 6),
     r"^K must have shape \(n1 n2, n1 n2\) = \(36, 36\), got \(6, 6\)"),
    (lambda A, B: match_lawler(np.ones((36, 35)), 6, 6), r"^K must have shape \(n1 n2"),
    (lambda A, B: match_lawler(np.ones((1, 36, 36)), 6, 6), r"^K must have 2 dimensions"),
])
def test_k_of_the_wrong_size_or_layout_is_refused_naming_k(call, message):
    A, B, _ = _directed(6, 1)
    with pytest.raises(ValueError, match=message):
        call(A, B)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"edges1": [[0, -1], [1, 0]]}, ValueError, r"^edges1: node -1 is negative"),
    ({"n1": 2, "edges1": [[0, 2], [2, 0]]}, ValueError,
     r"^edges1: node 2 is out of range \[0, 2\) \(n1\)$"),
    # n2 read from node_affinity's shape: the message says so (it used to blame edges2 alone)
    ({"node_affinity": np.ones((3, 2))}, ValueError,
     r"^edges2: node 2 is out of range \[0, 2\) \(n2 = node_affinity.shape\[1\], "
     r"node_affinity of shape \(3, 2\)\)"),
    ({"edges2": [[0, 1], [1, 2], [2, 0.0]]}, TypeError, r"^edges2 must hold integer"),
])
def test_factorized_affinity_of_the_wrong_layout_is_refused_naming_the_argument(kwargs, error,
                                                                                message):
    arguments = {"edge_affinity": np.ones((2, 3)), "edges1": [[0, 1], [1, 0]],
                 "edges2": [[0, 1], [1, 2], [2, 0]], **kwargs}
    with pytest.raises(error, match=message):
        FactorizedAffinity(**arguments)
    assert FactorizedAffinity(np.ones((2, 3)), [[0, 1], [1, 0]], [[0, 1], [1, 2], [2, 0]],
                              node_affinity=np.ones((2, 3))).shape == (6, 6)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda A, B: match_graphs(A, B, seeds=[[0, 6]]), ValueError,
     r"^seeds: node 6 of B is out of range \[0, 6\)"),
    (lambda A, B: match_graphs(A, B, seeds=[[6, 0]]), ValueError,
     r"^seeds: node 6 of A is out of range \[0, 6\)"),
    (lambda A, B: match_graphs(A, B, seeds=[[0, 1], [0, 2]]), ValueError,
     r"^seeds: node 0 of A is seeded twice"),
    (lambda A, B: match_graphs(A, B, seeds=[[0, 1], [2, 1]]), ValueError,
     r"^seeds: node 1 of B is seeded twice"),
    # different sizes with seeds (padding), and match_subgraph passing them to every run
    (lambda A, B: match_graphs(A[:4, :4], B, seeds=[[4, 0]]), ValueError,
     r"^seeds: node 4 of A is out of range \[0, 4\)"),
    (lambda A, B: match_subgraph(A[:4, :4], B, seeds=[[0, 6]]), ValueError,
     r"^seeds: node 6 of B is out of range \[0, 6\)"),
    (lambda A, B: match_subgraph(A[:4, :4], B, seeds=[[0, 1], [1, 1]]), ValueError,
     r"^seeds: node 1 of B is seeded twice"),
    (lambda A, B: match_subgraph(A[:4, :4], B, seeds=[[0.0, 1.0]]), TypeError,
     r"^seeds must hold integer node indices"),
])
def test_seeds_out_of_range_or_repeated_are_refused_naming_seeds(call, error, message):
    A, B, _ = _directed(6, 2)
    with pytest.raises(error, match=message):
        call(A, B)


@pytest.mark.parametrize("call", [
    lambda A, B: match_graphs(A, B, n_init=0),
    lambda A, B: match_graphs(A, B, n_init=-3),
    lambda A, B: match_subgraph(A[:4, :4], B, n_init=0),
    lambda A, B: match_graphs(A[:4, :4], B, n_init=0),  # routed to match_subgraph
    lambda A, B: match_lawler(np.kron(B, A), 6, 6, n_init=0),
])
def test_n_init_below_one_is_refused_naming_n_init(call):
    A, B, _ = _directed(6, 4)
    with pytest.raises(ValueError, match=r"^n_init must be >= 1, got -?\d"):
        call(A, B)
    with pytest.raises(TypeError, match=r"^n_init must be an integer, got 1.5"):
        match_graphs(A, B, n_init=1.5)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"center": "density"}, ValueError, r"^center must be one of 'auto'"),
    ({"center": float("inf")}, ValueError, r"^center must be finite"),
    ({"center": True}, TypeError, r"^center must be a real number"),
    ({"relaxations": 0}, ValueError, r"^relaxations must be >= 1"),
    ({"relaxations": 5}, ValueError, r"^relaxations must be <= 4"),
    ({"relaxations": 2.0}, TypeError, r"^relaxations must be an integer"),
    ({"maximize": False}, TypeError, r"unexpected option\(s\) maximize"),
])
def test_match_subgraph_options_are_checked(kwargs, error, message):
    A, B, _ = _directed(6, 6)
    with pytest.raises(error, match=message):
        match_subgraph(A[:4, :4], B, **kwargs)


@pytest.mark.parametrize(("a", "b", "message"), [
    (np.ones((5, 5), complex), np.ones((6, 6)), r"^A must be real"),
    (np.full((5, 5), "x"), np.ones((6, 6)), r"^A must be numeric"),
    (np.ones((5, 5)), np.ones((6, 6), dtype=object), r"^B must be numeric"),
    (np.ones((2, 5, 5)), np.ones((2, 6, 6)), r"^A must have 2 dimensions"),  # numpy: no batches
    (np.ones((5, 4)), np.ones((6, 6)), r"^A must be a square matrix, got shape \(5, 4\)"),
])
def test_numpy_subgraph_inputs_of_the_wrong_dtype_or_shape(a, b, message):
    with pytest.raises((TypeError, ValueError), match=message):
        match_subgraph(a, b)


# --- torch tensors and batches ------------------------------------------------------------


def _tensors():
    torch = pytest.importorskip("torch")
    A, B, _ = _directed(6, 7)
    return torch, torch.as_tensor(A[:4, :4]), torch.as_tensor(B)


@pytest.mark.parametrize("matcher", [match_subgraph, match_graphs])
def test_mismatched_batches_are_refused(matcher):
    torch, A, B = _tensors()
    with pytest.raises(ValueError, match=r"^A and B must both be matrices or batches of the "
                                         r"same length, got shapes \(2, 4, 4\) and \(3, 6, 6\)"):
        matcher(A.expand(2, 4, 4), B.expand(3, 6, 6))
    with pytest.raises(ValueError, match=r"^A and B must both be matrices or batches"):
        matcher(A.expand(2, 4, 4), B)  # a batch against a single graph
    with pytest.raises(ValueError, match=r"^A must be a square matrix \(n, n\) or a batch"):
        matcher(A[None, None], B[None, None])
    with pytest.raises(ValueError, match=r"^A and B must be non-empty"):
        matcher(A[None][:0], B[None][:0])


@pytest.mark.parametrize("matcher", [match_subgraph, match_graphs])
def test_tensors_of_the_wrong_dtype_are_refused(matcher):
    torch, A, B = _tensors()
    for dtype in (torch.int64, torch.float16, torch.complex128, torch.bool):
        with pytest.raises(TypeError, match=r"^A must be real and floating \(a float32 or "
                                            r"float64 tensor\)"):
            matcher(A.to(dtype), B.to(dtype))
    with pytest.raises(ValueError, match=r"^B must be on A's device with A's dtype \(cpu, "
                                         r"torch.float32\), got cpu, torch.float64"):
        matcher(A.float(), B)
    with pytest.raises(ValueError, match=r"^A must be finite"):
        matcher(torch.full_like(A, float("nan")), B)


def test_subgraph_tensors_refuse_k_seeds_and_lam_naming_them():
    torch, A, B = _tensors()
    with pytest.raises(ValueError, match=r"^K: K and seeds are not supported with torch"):
        match_subgraph(A, B, K=np.ones((4, 6)))
    with pytest.raises(ValueError, match=r"^seeds: K and seeds are not supported with torch"):
        match_subgraph(A, B, seeds=[[0, 0]])
    # lam weighs K: without K on tensors it was silently dropped; now refused, as by
    # match_graphs_torch, also when match_graphs routes different sizes here
    for matcher in (match_subgraph, match_graphs):
        with pytest.raises(TypeError, match=r"^lam: torch tensors are matched without"):
            matcher(A, B, lam=1.0)
    with pytest.raises(ValueError, match=r"^n_init must be >= 1, got 0"):
        match_subgraph(A, B, n_init=0)
    with pytest.raises(ValueError, match=r"^center must be finite"):
        match_subgraph(A, B, center=float("nan"))
    # the tensor path gives the numpy path's matching (same pair, one relaxation)
    ours = match_subgraph(A, B, relaxations=1, seed=0)
    reference = match_subgraph(A.numpy(), B.numpy(), relaxations=1, seed=0)
    np.testing.assert_array_equal(ours.col_ind, reference.col_ind)
