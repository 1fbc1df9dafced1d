"""The API contract of docs/architecture.md, checked over every public routine of the five method
subpackages: one name per idea (``max_iter``, ``tol``, ``seed``, ``progress``), the
``SolverResult`` protocol for every iterative routine, one ``TrainingResult`` and one callback
protocol (``callback(TrainingProgress)``) for every trainer, and an options dataclass wherever a
function would take more than ``MAX_OPTIONS`` options.

A new public routine with an iteration cap must be added to ``ITERATIVE`` below (the discovery
test fails otherwise), so that its result is checked too.
"""

import collections.abc
import dataclasses
import importlib
import inspect
import math
import typing

import numpy as np
import pytest

from stepsize._results import SolverResult, TrainingProgress, TrainingResult

PACKAGES = ("chebyshev", "matching", "prox", "unfolding", "quantization")
# names that mean the same idea as a contract name, and so must not appear
SYNONYMS = {
    "maxiter": "max_iter", "n_iter": "max_iter", "num_iter": "max_iter", "iters": "max_iter",
    "n_iterations": "max_iter", "max_matvecs": "max_iter", "tolerance": "tol",
    "rng": "seed", "random_state": "seed", "generator": "seed", "random_seed": "seed",
    "verbose": "progress", "show_progress": "progress", "return_info": "the result object",
}
TRAINERS = ("unfolding.train_expected_loss", "unfolding.train_incremental",
            "quantization.train_model")
# More options than this and a function takes a frozen options dataclass (``options=``). Options
# are the keywords with defaults, less the contract names (max_iter, tol, seed, progress), the
# training plumbing (checkpoint, resume, callback, options) and what is trained on (data).
MAX_OPTIONS = 8
NOT_OPTIONS = {"max_iter", "tol", "seed", "progress", "checkpoint", "resume", "callback",
               "options", "data"}
# functions allowed more options, and why (none at present)
MANY_OPTIONS: dict[str, str] = {}


def _public_callables():
    for package in PACKAGES:
        try:
            module = importlib.import_module(f"stepsize.{package}")
        except ImportError:  # torch missing: the torch subpackages say so clearly elsewhere
            continue
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value):
                yield f"{package}.{name}", value


PUBLIC = dict(_public_callables())


def _spd(n=30, seed=0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return (Q * np.linspace(0.1, 1.0, n)) @ Q.T, rng.standard_normal(n)


def _jacobi_map():
    W, c = _spd()
    D = np.diag(W).copy()
    return lambda x: x + (c - W @ x) / D, np.zeros(len(c))


def _matching_pair(n=12, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.uniform(size=(n, n))
    A = np.triu(A, 1) + np.triu(A, 1).T
    perm = rng.permutation(n)
    return A, A[np.ix_(perm, perm)]


def _positive(n=6, seed=0):
    return np.random.default_rng(seed).uniform(0.1, 1.0, (n, n))


def _prox_call(f, **kw):
    rng = np.random.default_rng(0)
    G = rng.standard_normal((5, 5))
    return f(G + G.T, rng.standard_normal(5), 0.7, **kw)


def _mle_call(f, **kw):
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((200, 4))
    return f(samples, **kw)


def _lasso_call(f, **kw):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5))
    return f(X, X[:, :2] + 0.1 * rng.standard_normal((30, 2)), 0.1, **kw)


def _graph_call(f, **kw):
    return f(np.random.default_rng(0).standard_normal((40, 4)), 0.1, **kw)


# qualified name -> a call with the given keywords on a small problem
ITERATIVE = {
    "chebyshev.chebyshev_gd": lambda f, **kw: f(*_spd(), **kw),
    "chebyshev.chebyshev_semi_iterative": lambda f, **kw: f(*_spd(), **kw),
    "chebyshev.conjugate_gradient": lambda f, **kw: f(*_spd(), **kw),
    "chebyshev.heavy_ball": lambda f, **kw: f(*_spd(), **kw),
    "chebyshev.gradient_descent": lambda f, **kw: f(*_spd(), np.full(4, 1.0), **kw),
    "chebyshev.psor": lambda f, **kw: f(*_jacobi_map(), np.ones(4), **kw),
    "chebyshev.chebyshev_psor": lambda f, **kw: f(*_jacobi_map(), lmin=0.1, lmax=1.0, T=4, **kw),
    "chebyshev.estimate_spectrum": lambda f, **kw: f(_spd()[0], seed=0, **kw),
    "chebyshev.jacobi_spectrum": lambda f, **kw: f(_spd()[0], "lanczos", seed=0, **kw),
    "chebyshev.preconditioned_spectrum": lambda f, **kw: f(_spd()[0], "jacobi", seed=0, **kw),
    "matching.projected_fixed_point": lambda f, **kw: f(*_matching_pair(), seed=0, **kw),
    "matching.match_graphs": lambda f, **kw: f(*_matching_pair(), seed=0, **kw),
    "matching.match_lawler": lambda f, **kw: f(np.kron(*_matching_pair(n=6)), 6, 6, seed=0,
                                               **kw),
    "matching.match_subgraph": lambda f, **kw: f(_matching_pair()[0][:8, :8],
                                                 _matching_pair()[1], seed=0, **kw),
    "matching.sinkhorn": lambda f, **kw: f(_positive(), **kw),
    "matching.softassign": lambda f, **kw: f(_positive(), 5.0, **kw),
    "matching.adaptive_softassign": lambda f, **kw: f(_positive(), 5.0, **kw),
    "matching.dynamical_softassign": lambda f, **kw: f(_positive(), 5.0, **kw),
    "matching.softassign_transition": lambda f, **kw: f(_positive() / 6, _positive(seed=1),
                                                        1.0, **kw),
    "matching.doubly_stochastic_projection": lambda f, **kw: f(_positive(), **kw),
    "prox.prox_matrix_perspective": _prox_call,
    "prox.constrained_gaussian_mle": _mle_call,
    "prox.matrix_scaled_lasso": _lasso_call,
    "prox.pseudolikelihood_graph": _graph_call,
}


def _keywords(function) -> set[str]:
    """The keywords ``function`` accepts: its parameters and, when it takes ``**overrides`` of a
    options dataclass it is annotated with (``projected_fixed_point``'s ``MatchingOptions``), that
    dataclass's fields."""
    parameters = inspect.signature(function).parameters
    names = set(parameters)
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        for hint in typing.get_type_hints(function).values():
            for candidate in (hint, *typing.get_args(hint)):
                if dataclasses.is_dataclass(candidate):
                    names |= {field.name for field in dataclasses.fields(candidate)}
    return names


def _has_cap(function) -> bool:
    return "max_iter" in _keywords(function)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_one_name_per_idea(name):
    parameters = inspect.signature(PUBLIC[name]).parameters
    wrong = {p: SYNONYMS[p] for p in parameters if p in SYNONYMS}
    assert not wrong, f"{name} uses {wrong} (contract name on the right)"
    if "progress" in parameters:  # None: a bar when stderr is a terminal (docs/architecture.md)
        assert parameters["progress"].default is None, f"{name}: progress defaults to None"


def test_every_iterative_routine_is_checked():
    capped = {name for name, function in PUBLIC.items() if _has_cap(function)}
    capped |= {name for name in ("matching.match_graphs", "matching.match_lawler",
                                 "matching.match_subgraph") if name in PUBLIC}
    assert capped == set(ITERATIVE), (
        f"add to ITERATIVE: {sorted(capped - set(ITERATIVE))}; "
        f"no longer capped: {sorted(set(ITERATIVE) - capped)}")


def _check_result(name, result, tested: bool):
    assert isinstance(result, SolverResult), f"{name} returned {type(result).__name__}"
    assert isinstance(result.n_iter, (int, np.integer)) and result.n_iter >= 0, name
    assert result.converged in (True, False) if tested else result.converged in (
        True, False, None), name
    assert isinstance(result.message, str), name
    assert isinstance(result.info, dict), name
    assert result.history is None or len(result.history) >= 1, name


@pytest.mark.filterwarnings("ignore::stepsize.ConvergenceWarning")
@pytest.mark.parametrize("name", sorted(ITERATIVE))
def test_iterative_result_protocol(name):
    if name not in PUBLIC:
        pytest.skip(f"{name} is not public in this install")
    function, call = PUBLIC[name], ITERATIVE[name]
    parameters = _keywords(function)
    assert "max_iter" in parameters or name.startswith("matching.match_"), name
    tested = "tol" in parameters
    kwargs = {"tol": 1e-6} if tested else {}
    result = call(function, max_iter=200, **kwargs)
    _check_result(name, result, tested)
    # a cap of 1 is honoured and, with a tolerance that cannot be met, reported as such
    capped = call(function, max_iter=1, **({"tol": 1e-300} if tested else {}))
    _check_result(name, capped, tested)
    assert capped.n_iter <= max(1, result.n_iter), name
    if tested and capped.converged is False:
        assert capped.message, f"{name}: an unconverged result says why"


@pytest.mark.parametrize("name", TRAINERS)
def test_trainer_signature(name):
    if name not in PUBLIC:
        pytest.skip(f"{name} needs torch")
    parameters = inspect.signature(PUBLIC[name]).parameters
    for option in ("checkpoint", "resume", "progress"):
        assert option in parameters, f"{name} lacks {option}"
    assert parameters["resume"].default is True, name
    assert inspect.signature(PUBLIC[name]).return_annotation in (
        "TrainingResult", TrainingResult), name


def _option_count(function) -> int:
    parameters = inspect.signature(function).parameters.values()
    return sum(1 for p in parameters if p.default is not inspect.Parameter.empty
               and p.kind is not p.VAR_KEYWORD and p.name not in NOT_OPTIONS)


def test_every_seed_defaults_to_none():
    """DESIGN.md's convention for randomness: ``seed`` (int or Generator) defaulting to None, a
    fresh draw (as numpy's ``default_rng(None)``), in numpy and torch code alike."""
    seeded = {name: inspect.signature(function).parameters["seed"].default
              for name, function in PUBLIC.items()
              if "seed" in inspect.signature(function).parameters}
    assert {"matching.match_graphs", "chebyshev.chebyshev_gd"} <= set(seeded)
    if "unfolding.train_incremental" in PUBLIC:  # torch installed
        assert {"unfolding.train_incremental", "quantization.train_model"} <= set(seeded)
    assert {name: default for name, default in seeded.items() if default is not None} == {}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_many_options_come_in_an_options_dataclass(name):
    function = PUBLIC[name]
    parameters = inspect.signature(function).parameters
    given = parameters.get("options")
    if given is not None and given.kind is not given.VAR_KEYWORD:  # not match_graphs' **options
        options = typing.get_type_hints(function)["options"]
        options = typing.get_args(options)[0] if typing.get_args(options) else options
        assert dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen, name
    if name not in MANY_OPTIONS:
        assert _option_count(function) <= MAX_OPTIONS, (
            f"{name} takes {_option_count(function)} options: group them in a frozen options "
            f"dataclass passed as options=, or list it in MANY_OPTIONS with the reason")


def test_only_trainers_take_a_callback_and_all_take_the_same_one():
    with_callback = {name for name, function in PUBLIC.items()
                     if "callback" in inspect.signature(function).parameters}
    assert with_callback == {name for name in TRAINERS if name in PUBLIC}
    for name in with_callback:
        annotation = typing.get_type_hints(PUBLIC[name])["callback"]
        assert annotation == collections.abc.Callable[[TrainingProgress], None] | None, name
        assert inspect.signature(PUBLIC[name]).parameters["callback"].default is None, name


def test_training_result_and_callback_are_one_shape():
    """All three trainers return one TrainingResult and call callback(TrainingProgress) once per
    round, with the round's loss, the steps so far and the model."""
    torch = pytest.importorskip("torch")
    from stepsize.quantization import TrainingOptions, quantize_model, train_model
    from stepsize.unfolding import UnfoldedGD, train_expected_loss, train_incremental

    rng = np.random.default_rng(0)
    A = rng.normal(0, 1 / math.sqrt(20), (40, 20))
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    quantize_model(model, bits=4)
    unfolded, stochastic = (UnfoldedGD(T=3, operator=A, init=0.3) for _ in range(2))
    runs = {
        "expected": (unfolded, lambda cb: train_expected_loss(
            unfolded, steps_per_generation=50, progress=False, callback=cb), 3),
        "incremental": (stochastic, lambda cb: train_incremental(
            stochastic, batch_size=16, steps_per_generation=5, seed=0, progress=False,
            callback=cb), 3),
        "lsq": (model, lambda cb: train_model(
            model, (x, y), options=TrainingOptions(epochs=2, lr=0.01, batch_size=32),
            progress=False, callback=cb), 2),
    }
    for label, (trained, run, rounds) in runs.items():
        seen = []
        result = run(seen.append)
        assert type(result) is TrainingResult, label
        assert result.rounds == rounds and len(result.losses) == rounds, label
        assert all(math.isfinite(value) for value in result.losses), label
        assert result.optimizer_steps >= rounds and result.resumed_from == 0, label
        assert all(type(progress) is TrainingProgress and progress.model is trained
                   for progress in seen), label
        assert [progress.round for progress in seen] == list(range(1, rounds + 1)), label
        assert [progress.loss for progress in seen] == result.losses, label
        assert seen[-1].optimizer_steps == result.optimizer_steps, label
    assert result.steps is None and train_expected_loss(
        UnfoldedGD(T=3, operator=A), steps_per_generation=1, progress=False).steps.shape == (3,)
