"""The torch form of the projected fixed-point iteration (``matching._torch``) against the
numpy solver: same matchings, objectives and iteration counts in float64 on the CPU; a batch
equals its pairs run one by one; float32 works; seeds reproduce."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

from stepsize._results import ConvergenceWarning
from stepsize.matching import METHODS, match_graphs, projected_fixed_point
from stepsize.matching.generators import kb_pair

torch = pytest.importorskip("torch")
from stepsize.matching._torch import match_graphs_torch  # noqa: E402


def _numpy(A, B, *, method="apfp", maximize=True, n_init=1, seed=None, **options):
    """The numpy solver with naive padding for every size (``match_graphs`` may send graphs
    of different sizes to ``match_subgraph``)."""
    return projected_fixed_point(A, B, maximize=maximize, n_init=n_init, seed=seed,
                                 options=METHODS[method].replaced(**options))


def _dense(matrix):
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def _pair(n, density, noise, seed):
    A, B, _ = kb_pair(n, density=density, noise=noise, seed=seed)
    return _dense(A), _dense(B)


def _cases():
    rng = np.random.default_rng(0)
    F, D = rng.uniform(size=(2, 12, 12))  # directed, with diagonals
    W = rng.uniform(size=(20, 20))
    W = W + W.T
    return {
        "dense": (*_pair(30, 1.0, 0.2, 0), {}),
        "sparse": (*_pair(40, 0.2, 0.1, 1), {}),
        "directed": (F, D, {}),
        "directed_minimize_no_polish": (F, D, {"maximize": False, "polish": 0, "n_init": 2,
                                               "seed": 3}),
        "smaller_A": (W[:15, :15], W, {}),
        "larger_A": (W, W[:15, :15], {}),
        "asm": (*_pair(30, 1.0, 0.2, 1), {"method": "asm"}),
        "ipfp": (*_pair(30, 1.0, 0.2, 1), {"method": "ipfp"}),
        "ga_history": (*_pair(30, 1.0, 0.2, 1), {"method": "ga", "history": True}),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_float64_cpu_equals_the_numpy_solver(name):
    A, B, options = _cases()[name]
    options = {"seed": 0, **options}  # the stall restarts' random starts, reproducible
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = match_graphs_torch(torch.as_tensor(A), torch.as_tensor(B), **options)
        reference = _numpy(A, B, **options)
    np.testing.assert_array_equal(ours.col_ind, reference.col_ind)
    assert ours.objective == pytest.approx(reference.objective, rel=1e-9)
    assert ours.n_iter == reference.n_iter
    assert ours.info["start_objectives"] == pytest.approx(
        reference.info["start_objectives"], rel=1e-9)
    np.testing.assert_allclose(ours.X.numpy(), reference.X, atol=1e-9)
    assert ours.X.dtype == torch.float64 and ours.X.shape == reference.X.shape
    if options.get("history"):
        np.testing.assert_allclose(ours.history, reference.history, rtol=1e-9)


@pytest.mark.parametrize("case", ["polish", "restart"])
def test_the_polish_and_the_soft_point_restart_run_as_in_numpy(case):
    # Minimizations that stop at a soft fixed point: the IPFP polish sharpens it (N <= 1000);
    # with polish=0 apfp restarts it with the adaptive softassign instead.
    A, B = _pair(30, 1.0, 0.2, 0) if case == "polish" else _pair(40, 0.2, 0.1, 0)
    options = {"maximize": False, "seed": 0,
               **({} if case == "polish" else {"polish": 0, "two_opt": False})}
    ours = match_graphs_torch(torch.as_tensor(A), torch.as_tensor(B), **options)
    reference = _numpy(A, B, **options)
    assert case in ours.info and case in reference.info
    for key in ("restart", "polish"):
        assert (key in ours.info) == (key in reference.info)
    np.testing.assert_array_equal(ours.col_ind, reference.col_ind)
    assert ours.objective == pytest.approx(reference.objective, rel=1e-9)
    assert ours.n_iter == reference.n_iter


def test_a_stall_at_the_barycenter_is_restarted_and_reported_as_in_numpy():
    # A cycle has equal row sums: the barycenter is a fixed point, every start stalls there
    # or is restarted from random starts (issue 17 item 2).
    import networkx as nx

    A = nx.to_numpy_array(nx.cycle_graph(10))
    B = A[np.ix_(np.arange(10)[::-1], np.arange(10)[::-1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # two_opt=False: with the 2-opt search a stalled run is sharpened, not restarted.
        reference = match_graphs(A, B, seed=4, two_opt=False)
        ours = match_graphs_torch(torch.as_tensor(A), torch.as_tensor(B), seed=4, two_opt=False)
    assert [s["stall"] for s in ours.info["starts"]] == [
        s["stall"] for s in reference.info["starts"]]
    assert reference.info["starts"][0]["stall"] == "uniform"
    sharpened = match_graphs_torch(torch.as_tensor(A), torch.as_tensor(B), seed=4)
    assert sharpened.info["sharpened_stall"] == match_graphs(A, B, seed=4).info[
        "sharpened_stall"] == "uniform"
    assert ours.converged == reference.converged
    np.testing.assert_array_equal(ours.col_ind, reference.col_ind)


def _batch(count=4, n=30):
    pairs = [_pair(n, 0.3, 0.15, seed) for seed in range(count)]
    return (torch.stack([torch.as_tensor(a) for a, _ in pairs]),
            torch.stack([torch.as_tensor(b) for _, b in pairs]))


# With the IPFP polish on, the minimization's pair 0 ends differently batched and alone (and
# in numpy): a batched product differs from a single one in the last bit, and the polish's
# strict "better discrete iterate" test and its patience counter turn on such ties.
@pytest.mark.parametrize("options", [{"seed": 0}, {"n_init": 2, "seed": 1, "maximize": False,
                                          "polish": 0}])
def test_a_batch_equals_its_pairs_one_by_one(options):
    A, B = _batch()
    batch = match_graphs_torch(A, B, **options)
    assert isinstance(batch, list) and len(batch) == 4
    for j, result in enumerate(batch):
        single = match_graphs_torch(A[j], B[j], **options)
        np.testing.assert_array_equal(result.col_ind, single.col_ind)
        assert result.objective == pytest.approx(single.objective, rel=1e-12)
        assert result.n_iter == single.n_iter
        assert result.info["alpha"] == pytest.approx(single.info["alpha"], rel=1e-9)


def test_a_batch_with_pairs_of_different_difficulty():
    # Pairs converge after different numbers of iterations and leave the batch one by one.
    A, B = _batch()
    A[0], B[0] = torch.as_tensor(_pair(30, 1.0, 0.0, 9)[0]), torch.as_tensor(
        _pair(30, 1.0, 0.0, 9)[0])
    results = match_graphs_torch(A, B, seed=0)
    assert len({r.n_iter for r in results}) > 1
    np.testing.assert_array_equal(results[0].col_ind, np.arange(30))
    for j in range(1, 4):
        reference = match_graphs(A[j].numpy(), B[j].numpy(), seed=0)
        np.testing.assert_array_equal(results[j].col_ind, reference.col_ind)


def test_float32_recovers_a_planted_permutation():
    rng = np.random.default_rng(5)
    W = rng.uniform(size=(3, 40, 40))
    W = W + W.transpose(0, 2, 1)
    perms = [rng.permutation(40) for _ in range(3)]
    A = torch.as_tensor(W, dtype=torch.float32)
    B = torch.stack([A[j][p][:, p] for j, p in enumerate(perms)])  # node p[k] of A is k of B
    results = match_graphs_torch(A, B, seed=0)
    reference = match_graphs_torch(A.double(), B.double(), seed=0)
    for result, ref, perm in zip(results, reference, perms):
        assert result.X.dtype == torch.float32
        np.testing.assert_array_equal(perm[result.col_ind], np.arange(40))
        assert result.objective == pytest.approx(ref.objective, rel=1e-5)


def test_a_seed_reproduces_the_randomized_starts():
    A, B = _pair(25, 0.4, 0.2, 2)
    A, B = torch.as_tensor(A), torch.as_tensor(B)
    first = match_graphs_torch(A, B, init="randomized", n_init=3, seed=11)
    again = match_graphs_torch(A, B, init="randomized", n_init=3, seed=11)
    np.testing.assert_array_equal(first.col_ind, again.col_ind)
    assert first.info["start_objectives"] == again.info["start_objectives"]
    # The same starts as numpy's for the same seed.
    reference = match_graphs(A.numpy(), B.numpy(), init="randomized", n_init=3, seed=11)
    assert first.info["start_objectives"] == pytest.approx(
        reference.info["start_objectives"], rel=1e-9)


def test_bad_inputs_are_refused_naming_the_argument():
    A = torch.rand(5, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="B must be a torch tensor"):
        match_graphs_torch(A, A.numpy())
    with pytest.raises(TypeError, match="^A must be real and floating"):
        match_graphs_torch(torch.ones(5, 5, dtype=torch.int64), A)
    with pytest.raises(TypeError, match="^A must be real and floating"):
        match_graphs_torch(A.half(), A.half())
    with pytest.raises(TypeError, match="^A must be real and floating"):
        match_graphs_torch(A.to(torch.complex128), A)
    with pytest.raises(ValueError, match="B must be on A's device with A's dtype"):
        match_graphs_torch(A, A.float())
    with pytest.raises(ValueError, match="A must be a square matrix"):
        match_graphs_torch(A[:4], A)
    with pytest.raises(ValueError, match="batches of the same length"):
        match_graphs_torch(A[None].repeat(2, 1, 1), A[None].repeat(3, 1, 1))
    with pytest.raises(ValueError, match="A must be finite"):
        match_graphs_torch(A.clone().fill_(float("nan")), A)
    with pytest.raises(ValueError, match="meta device"):
        match_graphs_torch(torch.empty(5, 5, device="meta"), A)
    with pytest.raises(TypeError, match="lam"):
        match_graphs_torch(A, A, lam=2.0)
    with pytest.raises(ValueError, match="projection"):
        match_graphs_torch(A, A, method="dspfp")
    with pytest.raises(ValueError, match="n_init"):
        match_graphs_torch(A, A, n_init=0)
    with pytest.raises(ValueError, match="init"):
        match_graphs_torch(A, A, init=torch.ones(4, 5))


def test_importing_the_package_does_not_import_torch():
    code = "import sys, stepsize.matching; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_torch_tensors_give_the_numpy_matching_one_pair_and_a_batch():
    # match_subgraph (matching._subgraph) on tensors runs through match_graphs_torch; the
    # problems of test_matching_subgraph (a 30-node induced subgraph of G(40, 0.15)).
    from stepsize.matching._subgraph import match_subgraph

    def subgraph_pair(seed):
        rng = np.random.default_rng(seed)
        upper = np.triu(rng.uniform(size=(40, 40)) < 0.15, 1)
        B = (upper | upper.T).astype(float)
        keep = rng.choice(40, size=30, replace=False)
        return B[np.ix_(keep, keep)], B, keep

    pairs = [subgraph_pair(seed) for seed in (9, 1)]
    reference = [match_subgraph(pairs[0][0], pairs[0][1], seed=0)]
    one = match_subgraph(torch.as_tensor(pairs[0][0]), torch.as_tensor(pairs[0][1]), seed=0)
    np.testing.assert_array_equal(one.col_ind, reference[0].col_ind)
    np.testing.assert_array_equal(one.col_ind, pairs[0][2])
    assert one.info["centered_objective"] == pytest.approx(
        reference[0].info["centered_objective"], rel=1e-12)
    assert one.objective == pytest.approx(reference[0].objective, rel=1e-12)
    assert [r["kept"] for r in one.info["relaxations"]] == [
        r["kept"] for r in reference[0].info["relaxations"]]
    A = torch.stack([torch.as_tensor(a) for a, _, _ in pairs])
    B = torch.stack([torch.as_tensor(b) for _, b, _ in pairs])
    batch = match_subgraph(A, B, relaxations=1, seed=0)
    for result, (a, b, _) in zip(batch, pairs):
        ref = match_subgraph(a, b, relaxations=1, seed=0)
        np.testing.assert_array_equal(result.col_ind, ref.col_ind)
        assert result.info["center"] == pytest.approx(ref.info["center"], rel=1e-12)
    with pytest.raises(ValueError, match="K and seeds"):
        match_subgraph(A[0], B[0], seeds=[[0, 0]])


def test_a_zero_step_after_a_loose_projection_is_retried_as_in_numpy():
    # The pair of test_matching_solver's zero-step test: without the retry at inner_tol, every
    # start stopped at the barycenter (converged=False).
    W = np.random.default_rng(6).uniform(size=(20, 20))
    A = W + W.T
    perm = np.random.default_rng(0).permutation(20)
    B = A[np.ix_(perm, perm)]
    reference = match_graphs(A, B, seed=0, stall_restarts=0)
    ours = match_graphs_torch(torch.as_tensor(A), torch.as_tensor(B), seed=0, stall_restarts=0)
    assert ours.converged is True and ours.info["stall"] is None
    assert 0.0 in ours.info["alpha"][:-2]
    np.testing.assert_array_equal(ours.col_ind, np.argsort(perm))
    assert ours.info["alpha"] == reference.info["alpha"]
    assert ours.n_iter == reference.n_iter


def test_the_settled_rounding_stop_runs_as_in_numpy():
    from stepsize.matching.solver import _SETTLED_MESSAGE

    A, B, truth = kb_pair(30, density=0.2, noise=0.1, seed=0)
    reference = match_graphs(A, B, seed=0)
    ours = match_graphs_torch(torch.as_tensor(A), torch.as_tensor(B), seed=0)
    assert ours.message == reference.message == _SETTLED_MESSAGE
    assert ours.n_iter == reference.n_iter == 2
    assert ours.info["alpha"] == reference.info["alpha"]
    np.testing.assert_array_equal(ours.col_ind, truth)
    # A batch of this pair and a dense one: each pair decides for itself.
    W = np.random.default_rng(6).uniform(size=(30, 30))
    batch = match_graphs_torch(torch.as_tensor(np.stack([A, W + W.T])),
                               torch.as_tensor(np.stack([B, W + W.T])), seed=0)
    assert batch[0].message == _SETTLED_MESSAGE and batch[0].n_iter == 2
    assert batch[1].message != _SETTLED_MESSAGE
    assert batch[1].n_iter == match_graphs(W + W.T, W + W.T, seed=0).n_iter
