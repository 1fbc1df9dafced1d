"""Learned DUGD steps: the authors' training procedure beside ours (`stepsize bench dugd`).

Peers for learned unrolled steps do not run here (deepinv 0.5 needs torchvision, which has no CPU
build matching torch 2.13; the ``deep-unfolding`` package pins numpy < 2), so the baseline is
the authors' own procedure, implemented faithfully: ``DUGD_LMS_example.ipynb`` trains on the dense
operator in float32 with fresh Gaussian minibatches, Adam lr 0.002, init 0.3, 25 generations x 500
steps, batch 10000. On the (n, m) = (300, 600) seed-12 instance with T = 25:

- (a) ``notebook``: that procedure, run with a reduced batch (200, the value the notebook writes
  before overwriting it with 10000) and, in ``--quick``, fewer steps per generation; the cost of
  the real settings (batch 10000) is extrapolated from timed Adam steps at several depths
  (cost per step is linear in the number of layers), row ``notebook_full_extrapolated``;
- (b) ``eigenbasis``: our minibatch trainer on the diagonal operator (same procedure, O(n) layers);
- (c) ``expected_loss``: our exact population-loss trainer (deterministic, float64);
- (d) ``chebyshev``: Chebyshev steps of the exact spectrum, no training (eigendecomposition only);
- (e) ``chebyshev_init``: (c)'s trainer from the Chebyshev steps, all layers jointly.

Each method runs in a fresh forked process (threads pinned) so that its peak resident memory
(``ru_maxrss`` growth during training) is its own. Test MSE at T = 25: fresh x* ~ N(0, I) through
the dense operator in float64. Long runs are timed once (noisy on a shared CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepsize._reference.dugd import (
    NOTEBOOK_STEPS,
    NOTEBOOK_TEST_MSE,
    best_gd_loss,
    deblurring_problem,
    dense_mse,
)
from stepsize._reference.instances import gaussian_operator
from stepsize.benchmarks import Entry, register

QUICK = {
    "deblur_n": 128, "deblur_T": [8, 16], "deblur_noise_std": 0.01, "deblur_lr": 0.02,
    "deblur_steps_per_generation": 250, "deblur_widths": [2.0, 1.0],
    "T": 25, "lr": 0.002, "chebyshev_init_lr": 5e-4, "init": 0.3, "generations": 25,
    "threads": 1, "test_samples": 2000,
    "notebook_batch_size": 200, "notebook_steps_per_generation": 4,
    "notebook_full_batch_size": 10000, "notebook_full_steps_per_generation": 500,
    "timing_layers": [1, 3], "timing_steps": 1,
    "eigenbasis_batch_size": 1000, "eigenbasis_steps_per_generation": 20,
    "steps_per_generation": 500,
}
FULL = {
    **QUICK, "test_samples": 10000, "notebook_steps_per_generation": 500,
    "timing_layers": [1, 5, 25], "timing_steps": 3,
    "eigenbasis_batch_size": 10000, "eigenbasis_steps_per_generation": 500,
}


def _instance() -> np.ndarray:
    return np.ascontiguousarray(gaussian_operator(300, 600, 12))


def _train(name: str, config: dict, seed: int, A) -> dict:
    """One method's training (timed by the caller); returns its steps and diagnostics."""
    import torch

    from stepsize.chebyshev import chebyshev_steps
    from stepsize.unfolding import (
        DiagonalOperator,
        UnfoldedGD,
        train_expected_loss,
        train_incremental,
    )

    T, init = config["T"], config["init"]
    schedule = dict(lr=config["lr"], generations=config["generations"], progress=False)
    if name == "notebook":
        model = UnfoldedGD(T, torch.as_tensor(A, dtype=torch.float32), init=init)
        result = train_incremental(
            model, batch_size=config["notebook_batch_size"], seed=seed,
            steps_per_generation=config["notebook_steps_per_generation"], **schedule,
        )
    elif name == "eigenbasis":
        model = UnfoldedGD(T, DiagonalOperator(np.linalg.eigvalsh(A.T @ A)), init=init)
        result = train_incremental(
            model, batch_size=config["eigenbasis_batch_size"], seed=seed,
            steps_per_generation=config["eigenbasis_steps_per_generation"], **schedule,
        )
    elif name in ("expected_loss", "chebyshev_init"):
        model = UnfoldedGD(T, A, init=init if name == "expected_loss" else "chebyshev")
        if name == "chebyshev_init":  # fine-tuning a good start: lr 0.002 makes Adam oscillate
            schedule = {**schedule, "lr": config["chebyshev_init_lr"]}
        result = train_expected_loss(
            model, steps_per_generation=config["steps_per_generation"],
            incremental=name == "expected_loss", **schedule,
        )
    elif name == "chebyshev":
        spectrum = np.linalg.eigvalsh(A.T @ A)
        return {"steps": chebyshev_steps(spectrum[0], spectrum[-1], T)}
    else:
        raise ValueError(f"unknown method {name!r}")
    return {"steps": result.steps, "generation_loss": result.losses}


def _deblurring(config: dict, width: float) -> dict:
    """Learned steps on a noisy deblurring problem against the best any T-step GD can do, the
    best constant step (grid of 100) and the Chebyshev steps of [lambda_min, lambda_max]."""
    import time

    from stepsize.chebyshev import chebyshev_steps
    from stepsize.unfolding import UnfoldedGD, expected_loss, train_expected_loss

    A, covariance = deblurring_problem(config["deblur_n"], width)
    settings = dict(signal_covariance=covariance, noise_std=config["deblur_noise_std"])
    spectrum = np.linalg.eigvalsh(A.T @ A)
    lmin, lmax = max(float(spectrum[0]), 1e-300), float(spectrum[-1])
    rows = {}
    for T in config["deblur_T"]:
        model = UnfoldedGD(T, A, init=1.0)
        began = time.perf_counter()
        train_expected_loss(model, lr=config["deblur_lr"], generations=2 * T, progress=False,
                            steps_per_generation=config["deblur_steps_per_generation"],
                            **settings)
        seconds = time.perf_counter() - began
        constant = min(expected_loss(UnfoldedGD(T, A, init=gamma), **settings)
                       for gamma in np.linspace(0.02, 1.99 / lmax, 100))
        chebyshev = UnfoldedGD(T, A, init=chebyshev_steps(lmin, lmax, T))
        rows[T] = {"limit": best_gd_loss(A, covariance, settings["noise_std"], T),
                   "learned": expected_loss(model, **settings), "constant": constant,
                   "chebyshev": expected_loss(chebyshev, **settings), "train_s": seconds}
    return {"width": width, "kappa": lmax / lmin, "rows": rows}


def _step_cost(config: dict, seed: int, A) -> dict:
    """Seconds per Adam step of the notebook procedure at batch 10000, per number of layers."""
    import torch

    from stepsize._reference.timing import median_time
    from stepsize.unfolding import UnfoldedGD, train_incremental

    costs = {}
    for layers in config["timing_layers"]:
        def steps(layers=layers):
            model = UnfoldedGD(layers, torch.as_tensor(A, dtype=torch.float32), init=0.3)
            return train_incremental(
                model, batch_size=config["notebook_full_batch_size"], seed=seed,
                steps_per_generation=config["timing_steps"], generations=1, incremental=False,
                lr=config["lr"], progress=False,
            )

        seconds, _ = median_time(steps, repeats=1, warmup=1)
        costs[layers] = seconds / config["timing_steps"]
    return {"seconds_per_step": costs}


def _test_mse(A, steps, samples: int, seed: int) -> float:
    import torch

    x_true = torch.randn(samples, A.shape[1], generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    return dense_mse(A, steps, x_true)


def _measure(task: str, config: dict, seed: int) -> dict:
    """Run one task in this (fresh) process: wall time, ru_maxrss growth, test MSE."""
    import resource
    import time

    from stepsize._reference.timing import pinned_threads
    from stepsize.unfolding import UnfoldedGD, train_expected_loss, train_incremental

    A = _instance()
    with pinned_threads(config["threads"]):
        # load torch's and numpy's kernels first, so that RSS growth is the method's own data
        np.linalg.eigvalsh(A.T @ A)
        tiny = dict(steps_per_generation=1, progress=False)
        train_expected_loss(UnfoldedGD(2, np.eye(2)), **tiny)
        train_incremental(UnfoldedGD(2, np.eye(2, dtype=np.float32)), batch_size=2, seed=0, **tiny)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        if task == "notebook_step_cost":
            output = _step_cost(config, seed, A)
        else:
            output = _train(task, config, seed, A)
        output["wall_s"] = time.perf_counter() - start
        output["peak_rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        if "steps" in output:
            output["test_mse"] = _test_mse(A, output["steps"], config["test_samples"], seed + 1)
    return output


def _in_fresh_process(task: str, config: dict, seed: int) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: the child starts with the parent's imports, but its ru_maxrss growth is its own
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(_measure, task, config, seed).result()


def _extrapolate(cost: dict, config: dict) -> tuple[float, np.ndarray, np.ndarray]:
    """The notebook procedure's full training time from the per-step cost at a few depths
    (linear in the number of layers): seconds, and the depths and seconds it was fitted to."""
    layers = np.array(sorted(cost["seconds_per_step"]), dtype=float)
    seconds = np.array([cost["seconds_per_step"][int(k)] for k in layers])
    slope, intercept = np.polyfit(layers, seconds, 1)
    depths = np.minimum(np.arange(1, config["generations"] + 1), config["T"])
    total = config["notebook_full_steps_per_generation"] * np.sum(intercept + slope * depths)
    return float(total), layers, seconds


def _goals(measured: dict, extrapolated: float, notebook_steps_mse: float) -> dict:
    """The goals of issue 4. The speed-up counts only if (c) reached the loss it is timed to:
    the test MSE of the notebook's learned steps on the same test samples."""
    reached = bool(measured["expected_loss"]["test_mse"] <= notebook_steps_mse)
    speedup = extrapolated / measured["expected_loss"]["wall_s"]
    return {
        "goal_speedup": speedup,
        "goal_loss_reached": reached,
        "goal_speedup_met": bool(reached and speedup >= 100),
        "goal_mse_ratio": notebook_steps_mse / measured["chebyshev_init"]["test_mse"],
        "goal_mse_ratio_reduced": (measured["notebook"]["test_mse"]
                                   / measured["chebyshev_init"]["test_mse"]),
    }


def _training_tables(config, measured, cost, fit, notebook_steps_mse, goals) -> list:
    from stepsize.report import table

    extrapolated, layers, seconds = fit
    labels = {
        "notebook": (f"(a) notebook procedure, dense float32, batch {config['notebook_batch_size']}"
                     f", {config['notebook_steps_per_generation']} steps/gen (reduced)"),
        "eigenbasis": (f"(b) ours, minibatch in the eigenbasis, batch "
                       f"{config['eigenbasis_batch_size']}, "
                       f"{config['eigenbasis_steps_per_generation']} steps/gen"),
        "expected_loss": f"(c) ours, expected loss, {config['steps_per_generation']} steps/gen",
        "chebyshev": "(d) Chebyshev steps, no training (eigvalsh of A^T A)",
        "chebyshev_init": "(e) ours, expected loss from Chebyshev steps, all layers",
    }
    rows = [[labels[name], measured[name]["test_mse"], measured[name]["wall_s"],
             measured[name]["peak_rss_mb"]] for name in labels]
    rows.insert(1, [
        f"(a) notebook procedure at its settings (batch {config['notebook_full_batch_size']}, "
        f"{config['notebook_full_steps_per_generation']} steps/gen): extrapolated",
        notebook_steps_mse, extrapolated, cost["peak_rss_mb"],
    ])
    reached = "reached" if goals["goal_loss_reached"] else "NOT reached"
    return [
        table(
            f"DUGD training on the (300, 600) seed-12 instance, T = {config['T']}, "
            f"{config['threads']} thread(s)",
            ["method", "test MSE @ T", "train wall s", "peak RSS MB"],
            rows,
            note="(a) extrapolated: time from Adam steps timed at "
                 f"{[int(k) for k in layers]} layers ({', '.join(f'{s:.3g}' for s in seconds)} "
                 "s/step), linear in depth; its test MSE is that of the notebook's printed steps "
                 f"on our test set (the notebook printed {NOTEBOOK_TEST_MSE:.4g}); timings once, "
                 "on a CPU shared with other jobs",
        ),
        table(
            "Goals of issue 4",
            ["goal", "ratio", "target", "met"],
            [
                ["(c) reaches the notebook's final loss faster than (a), full settings",
                 goals["goal_speedup"], 100, goals["goal_speedup_met"]],
                ["(e) test MSE below the notebook's learned steps", goals["goal_mse_ratio"], 10,
                 goals["goal_mse_ratio"] >= 10],
                ["same, against our reduced-budget run of (a)", goals["goal_mse_ratio_reduced"],
                 10, goals["goal_mse_ratio_reduced"] >= 10],
            ],
            note=f"(c) ends at test MSE {measured['expected_loss']['test_mse']:.3g}, the "
                 f"notebook's learned steps at {notebook_steps_mse:.3g} on the same samples; the "
                 f"speed-up is 'met' only if (c) reaches that loss: {reached}; our reduced run "
                 f"of (a) ends at {measured['notebook']['test_mse']:.3g} after "
                 f"{measured['notebook']['wall_s']:.3g} s",
        ),
    ]


def _deblurring_table(config: dict, deblurring: list):
    """The deblurring rows and whether the goal (within 2% of the bound, under 60 s) holds for
    every width and T."""
    from stepsize.report import table

    rows, met = [], []
    for instance in deblurring:
        for T, row in instance["rows"].items():
            gap = row["learned"] / row["limit"] - 1
            rows.append([instance["width"], instance["kappa"], T, row["limit"], row["learned"],
                         gap, row["constant"] / row["limit"] - 1,
                         row["chebyshev"] / row["limit"] - 1, row["train_s"]])
            met.append(gap <= 0.02 and row["train_s"] < 60)
    return table(
        f"Noisy 1-D deblurring (n = {config['deblur_n']}, Gaussian blur, noise "
        f"{config['deblur_noise_std']}, signal covariance exp(-|i-j|/10)): expected MSE",
        ["blur width", "kappa(A^T A)", "T", "best any T-step GD (bound)",
         "learned (train_expected_loss)", "learned above bound", "best constant step above",
         "Chebyshev steps above", "train wall s"],
        rows,
        note="bound: least squares over all degree-T error polynomials with p(0) = 1 in the "
             "eigenbasis, independent of training; learned: init 1.0, Adam lr "
             f"{config['deblur_lr']}, 2T generations x {config['deblur_steps_per_generation']} "
             f"steps; goal of issue 14 (within 2%, under 60 s) "
             f"{'met' if all(met) else 'NOT met'} on every row",
    ), all(met)


def run(config: dict, seed: int) -> dict:
    # Imported before forking so that every child starts with them: torch.optim loads
    # torch._dynamo on first use, which alone takes seconds.
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401

    A = _instance()
    methods = ["notebook", "eigenbasis", "expected_loss", "chebyshev", "chebyshev_init"]
    measured = {name: _in_fresh_process(name, config, seed) for name in methods}
    cost = _in_fresh_process("notebook_step_cost", config, seed)
    fit = _extrapolate(cost, config)
    notebook_steps_mse = _test_mse(A, NOTEBOOK_STEPS, config["test_samples"], seed + 1)
    goals = _goals(measured, fit[0], notebook_steps_mse)
    tables = _training_tables(config, measured, cost, fit, notebook_steps_mse, goals)
    deblurring = [_deblurring(config, width) for width in config["deblur_widths"]]
    deblur_table, deblur_met = _deblurring_table(config, deblurring)
    return {
        "deblurring": deblurring,
        "goal_deblurring_met": deblur_met,
        "methods": measured,
        "notebook_step_cost": cost,
        "notebook_full_extrapolated_s": fit[0],
        "notebook_steps_test_mse": notebook_steps_mse,
        **goals,
        "tables": [*tables, deblur_table],
    }


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    names = list(result["methods"])
    fig, (time_ax, mse_ax) = new_figure(ncols=2)
    seconds = [result["methods"][n]["wall_s"] for n in names]
    mse = [result["methods"][n]["test_mse"] for n in names]
    names_full = ["(a) notebook, full (extrapolated)", "(a) notebook, reduced budget",
                  *(f"({letter}) {name}" for letter, name in zip("bcde", names[1:]))]
    time_ax.barh(names_full, [result["notebook_full_extrapolated_s"], *seconds])
    time_ax.set_xscale("log")
    time_ax.set_xlabel("training wall time (s)")
    mse_ax.barh(names_full, [result["notebook_steps_test_mse"], *mse])
    mse_ax.set_xscale("log")
    mse_ax.set_xlabel("test MSE at T = 25")
    return [save_figure(fig, Path(out_dir) / "bench_dugd.png")]


register(Entry(
    name="dugd",
    description="DUGD training: the notebook's procedure vs eigenbasis, expected-loss, Chebyshev",
    quick=QUICK,
    full=FULL,
    run=run,
    plot=plot,
    requires=("torch",),
))
