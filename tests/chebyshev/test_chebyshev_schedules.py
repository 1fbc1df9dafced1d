"""chebyshev_schedule, the ChebyshevLR torch scheduler, and a tiny run of `bench schedules`."""

import io
import subprocess
import sys

import numpy as np
import pytest

from stepsize.chebyshev.schedules import chebyshev_schedule
from stepsize.chebyshev.steps import ORDERS, chebyshev_bound, chebyshev_steps

# ---------------------------------------------------------------- chebyshev_schedule


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("T", [1, 7, 16])
def test_schedule_equals_chebyshev_steps_and_cycles(order, T):
    steps = chebyshev_steps(0.3, 12.0, T, order)
    schedule = chebyshev_schedule(0.3, 12.0, T, order)
    values = [schedule(k) for k in range(3 * T + 2)]
    assert values == [float(steps[k % T]) for k in range(3 * T + 2)]  # bit for bit
    assert all(type(v) is float for v in values)


def test_default_order_is_fractal():
    assert chebyshev_schedule(1.0, 50.0, 8)(1) == chebyshev_steps(1.0, 50.0, 8, "fractal")[1]


def test_one_period_without_cycle_then_refuses():
    schedule = chebyshev_schedule(1.0, 10.0, 5, cycle=False)
    assert [schedule(k) for k in range(5)] == chebyshev_steps(1.0, 10.0, 5).tolist()
    with pytest.raises(ValueError, match=r"step_index must be < T = 5 when cycle=False, got 5"):
        schedule(5)


def test_schedule_accepts_numpy_integers():
    schedule = chebyshev_schedule(1.0, 10.0, 4)
    assert schedule(np.int64(6)) == schedule(np.array(6)) == schedule(2)


@pytest.mark.parametrize("args, kwargs, error, message", [
    ((0.0, 1.0, 4), {}, ValueError, r"lmin must be > 0, got 0\.0"),
    ((2.0, 1.0, 4), {}, ValueError, r"lmin=2\.0 > lmax=1\.0"),
    ((1.0, float("inf"), 4), {}, ValueError, r"lmax must be finite"),
    ((1.0, 2.0, 0), {}, ValueError, r"T must be >= 1, got 0"),
    ((1.0, 2.0, 2.5), {}, TypeError, r"T must be an integer, got 2\.5"),
    ((1.0, 2.0, 4, "random"), {}, ValueError, r"order must be one of .*got 'random'"),
    ((1.0, 2.0, 4), {"cycle": "yes"}, TypeError, r"cycle must be True or False, got 'yes'"),
])
def test_bad_arguments_are_refused_when_built(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        chebyshev_schedule(*args, **kwargs)


@pytest.mark.parametrize("index, error, message", [
    (-1, ValueError, r"step_index must be >= 0, got -1"),
    (1.5, TypeError, r"step_index must be an integer, got 1\.5"),
    (True, TypeError, r"step_index must be an integer, got True"),
])
def test_bad_step_index_is_refused(index, error, message):
    with pytest.raises(error, match=message):
        chebyshev_schedule(1.0, 2.0, 4)(index)


def test_schedule_module_does_not_import_torch():
    code = ("import sys, stepsize.chebyshev.schedules; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------- ChebyshevLR

torch = pytest.importorskip("torch")
from stepsize.chebyshev._torch_schedules import ChebyshevLR  # noqa: E402


def _lrs_seen_by_optimizer(optimizer, scheduler, n):
    seen = []
    for _ in range(n):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_chebyshev_lr_sets_every_group_to_the_schedule():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 7.0}])
    scheduler = ChebyshevLR(optimizer, 0.5, 20.0, 6, "zigzag")
    schedule = chebyshev_schedule(0.5, 20.0, 6, "zigzag")
    seen = _lrs_seen_by_optimizer(optimizer, scheduler, 15)
    assert seen == [[schedule(k)] * 2 for k in range(15)]  # absolute: base lrs are replaced
    assert scheduler.get_last_lr() == [schedule(15)] * 2


def test_chebyshev_lr_without_cycle_stops_after_one_period():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = ChebyshevLR(optimizer, 1.0, 4.0, 3, cycle=False)
    _lrs_seen_by_optimizer(optimizer, scheduler, 2)
    optimizer.step()
    with pytest.raises(ValueError, match="step_index must be < T = 3"):
        scheduler.step()


def test_chebyshev_lr_validates_its_arguments():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="lmin must be > 0"):
        ChebyshevLR(optimizer, -1.0, 4.0, 3)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        ChebyshevLR("sgd", 1.0, 4.0, 3)


def _quadratic_training(steps, scheduler_state=None, optimizer_state=None, weights=None):
    """SGD with momentum on a fixed quadratic; returns (model, optimizer, scheduler, lrs)."""
    generator = torch.Generator().manual_seed(0)
    W = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    W = W @ W.T + torch.eye(5, dtype=torch.float64)
    x = torch.nn.Parameter(torch.ones(5, dtype=torch.float64) if weights is None else weights)
    optimizer = torch.optim.SGD([x], lr=0.01, momentum=0.5)
    # built with other settings on resume: the loaded state must win
    scheduler = (ChebyshevLR(optimizer, 0.2, 30.0, 8) if scheduler_state is None
                 else ChebyshevLR(optimizer, 1.0, 2.0, 3, "natural"))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        (0.5 * x @ W @ x - x.sum()).backward()
        optimizer.step()
        scheduler.step()
    return x, optimizer, scheduler, lrs


def test_state_dict_round_trip_resumes_exactly():
    x_straight, _, _, lrs_straight = _quadratic_training(25)
    x, optimizer, scheduler, lrs_first = _quadratic_training(11)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "x": x.detach().clone()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain values only, no pickled function
    assert saved["scheduler"]["last_epoch"] == 11 and saved["scheduler"]["T"] == 8
    x_resumed, _, scheduler, lrs_second = _quadratic_training(
        14, saved["scheduler"], saved["optimizer"], saved["x"])
    assert lrs_first + lrs_second == lrs_straight
    assert torch.equal(x_resumed.detach(), x_straight.detach())
    assert (scheduler.lmin, scheduler.lmax, scheduler.T, scheduler.order) == (0.2, 30.0, 8,
                                                                              "fractal")


def test_load_state_dict_refuses_another_schedulers_state():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    other = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    scheduler = ChebyshevLR(optimizer, 1.0, 4.0, 3)
    with pytest.raises(KeyError, match="not a ChebyshevLR state"):
        scheduler.load_state_dict(other.state_dict())


@pytest.mark.parametrize("order", ["fractal", "zigzag"])
def test_sgd_with_chebyshev_lr_meets_the_chebyshev_bound_after_one_period(order):
    # f(x) = x^T W x / 2 - c^T x with spectrum exactly [lmin, lmax]; the Chebyshev residual
    # polynomial reaches its maximum modulus 1/T_T((k+1)/(k-1)) at the interval's ends, so an
    # initial error along the lmin eigenvector contracts by exactly chebyshev_bound.
    lmin, lmax, T = 0.1, 10.0, 16
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    eigenvalues = np.concatenate([[lmin, lmax], rng.uniform(lmin, lmax, 38)])
    W = torch.tensor((Q * eigenvalues) @ Q.T)
    x_star = torch.tensor(rng.standard_normal(40))
    c = W @ x_star
    bound = chebyshev_bound(lmin, lmax, T)
    for start, expected in ((x_star + torch.tensor(Q[:, 0]), bound), (x_star + 1.0, None)):
        x = torch.nn.Parameter(start.clone())
        optimizer = torch.optim.SGD([x], lr=123.0)
        scheduler = ChebyshevLR(optimizer, lmin, lmax, T, order)
        for _ in range(T):
            optimizer.zero_grad()
            (0.5 * x @ W @ x - c @ x).backward()
            optimizer.step()
            scheduler.step()
        ratio = float(torch.linalg.norm(x.detach() - x_star) / torch.linalg.norm(start - x_star))
        if expected is not None:
            assert ratio == pytest.approx(expected, rel=1e-6)
        else:
            assert ratio <= bound * (1 + 1e-9)


# ---------------------------------------------------------------- the benchmark, tiny


def test_tiny_schedules_benchmark_runs_and_chebyshev_meets_its_bound(tmp_path):
    pytest.importorskip("sklearn")
    from stepsize.benchmarks.schedules import plot, run

    config = {
        "seeds": 2, "threads": 1, "lr_grid": [1.0, 1.9], "target": 1e-6,
        "gaussian": {"n": 30, "m": 60, "steps": 32, "periods": [8, 32]},
        "ridge": {"train": 200, "mu": 1e-2, "steps": 32, "periods": [16]},
        "logistic": {"train": 200, "mu": 1e-2, "steps": 16, "periods": [8]},
        "mlp": {"train": 100, "hidden": 8, "steps": 6, "periods": [3], "kappas": [10],
                "lmax_scales": [1], "power_iterations": 5, "target": 0.5},
    }
    result = run(config, seed=0)
    assert [t["title"].split(":")[0] for t in result["tables"]] == [
        "Full-batch GD", "Intervals used by the Chebyshev schedules (median over seeds)"]
    problems = {r["problem"] for r in result["rows"]}
    assert problems == {"gaussian least squares", "digits ridge", "digits logistic", "digits MLP"}
    methods = {(r["problem"], r["method"]) for r in result["rows"]}
    for problem in problems:
        assert {(problem, "constant (tuned)"), (problem, "cosine (tuned)")} <= methods
    # least squares with the exact interval: relative suboptimality <= bound^2 per period
    for problem, T in (("gaussian least squares", 8), ("gaussian least squares", 32),
                       ("digits ridge", 16)):
        row = next(r for r in result["rows"]
                   if r["problem"] == problem and r["method"] == f"chebyshev T={T} fractal")
        periods = (len(row["curve"]) - 1) // T
        worst = max(chebyshev_bound(s["lmin"], s["lmax"], T) ** (2 * periods)
                    for s in result["spectra"] if s["problem"] == problem)
        assert row["final_median"] <= worst * (1 + 1e-6) + 1e-28, (problem, T)
        if worst < 1e-6:
            assert row["reached"] == 2
    paths = plot(result, tmp_path)
    assert [p.name for p in paths] == ["bench_schedules_curves.png"] and paths[0].stat().st_size


def test_chebyshev_lr_is_exported_lazily():
    pytest.importorskip("torch")
    import stepsize.chebyshev as chebyshev
    from stepsize.chebyshev._torch_schedules import ChebyshevLR

    assert chebyshev.ChebyshevLR is ChebyshevLR
    with pytest.raises(AttributeError, match="no attribute 'ChebyshevLr'"):
        chebyshev.ChebyshevLr  # noqa: B018
