"""Deep-unfolded gradient descent on the Takabe-Wadayama instance (`stepsize reproduce dugd`).

The (n, m) = (300, 600) seed-12 least-squares problem of ``DUGD_LMS_example.ipynb``, T = 25,
Adam lr 0.002, init 0.3, 25 generations x 500 steps:

1. DUGD trained incrementally on the exact expected loss (deterministic; reproduces the notebook's
   minibatch training, whose effective batch is 10000).
2. The same schedule with stochastic minibatches in the eigenbasis (quick: a short run with a
   smaller batch; full: batch 10000), and in the full config the dense-operator run in float32
   as the notebook does, with the batch size the notebook wrote first (200; 10000 would take
   about a day on a CPU).
3. Controls: GD with the optimal constant step, Chebyshev steps (no training), training from the
   Chebyshev steps, and non-incremental training (the symmetry trap).
4. Test MSE at every t on fresh samples through the dense operator (float64), the sorted learned
   steps against the Chebyshev steps, and the spectral radius of the trained layers per generation.

Reference values: the notebook's printed outputs and the research note's recomputations
(``../shared/research/dugd_chebyshev.md``, sections 2, 3, 8.3, 9 E2/E3).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stepsize._reference.dugd import NOTEBOOK_STEPS, NOTEBOOK_TEST_MSE, dense_mse_curve
from stepsize._reference.instances import gaussian_operator
from stepsize.experiments import Entry, register

# DUGD_LMS_example.ipynb printed outputs and the note's [COMP] values (sections 2.3, 2.4, 3, 9).
NOTEBOOK_LOSS = {1: 0.3335, 2: 0.1428, 3: 0.0665, 4: 0.0327, 5: 1.66e-2, 10: 8.0e-4,
                 15: 5.3e-5, 20: 4.1e-6, 25: 4.4e-7}
ORACLE_LOSS = {1: 0.333, 2: 0.143, 5: 1.6e-2, 10: 7.8e-4, 15: 5.2e-5, 20: 3.9e-6, 25: 3.5e-7}
REFERENCE_MSE = {
    "dugd": (NOTEBOOK_TEST_MSE, "notebook (minibatch-trained, printed)"),
    "gd": (1.04384e-3, "notebook"),
    "chebyshev": (2.45e-8, "note [COMP]"),
    "dugd_from_chebyshev": (8.9e-9, "note [COMP]"),
    "non_incremental": (9.8e-4, "note [COMP]"),
    "dugd_stochastic_eigenbasis": (NOTEBOOK_TEST_MSE, "notebook (same procedure, dense)"),
    "dugd_dense": (NOTEBOOK_TEST_MSE, "notebook (batch 10000)"),
}
REFERENCE_CONTRACTION = {"gd": (0.1974, 0.9372), "dugd": (7.56e-3, 0.822),
                         "chebyshev": (2.223e-4, 0.7143), "notebook_steps": (7.56e-3, 0.822)}
LABELS = {
    "dugd": "DUGD (expected loss, incremental)",
    "gd": "GD, constant 2/(lmin+lmax)",
    "chebyshev": "Chebyshev steps (no training)",
    "dugd_from_chebyshev": "DUGD from Chebyshev init",
    "non_incremental": "non-incremental DUGD (control)",
    "dugd_stochastic_eigenbasis": "DUGD (minibatch, eigenbasis)",
    "dugd_dense": "DUGD (minibatch, dense, float32)",
    "notebook_steps": "notebook's printed steps",
}

QUICK = {
    "n": 300, "m": 600, "instance_seed": 12, "T": 25, "init": 0.3, "lr": 0.002,
    "chebyshev_init_lr": 5e-4,
    "generations": 25, "steps_per_generation": 500, "test_samples": 2000,
    "stochastic_batch_size": 1000, "stochastic_steps_per_generation": 40,
    "dense_batch_size": None, "dense_steps_per_generation": None,
}
FULL = {
    **QUICK, "test_samples": 10000, "stochastic_batch_size": 10000,
    "stochastic_steps_per_generation": 500, "dense_batch_size": 200,
    "dense_steps_per_generation": 500,
}


def _timed(train, model, **kwargs):
    start = time.perf_counter()
    result = train(model, **kwargs)
    return result, time.perf_counter() - start


def _train_all(config: dict, seed: int, A: np.ndarray, eigenvalues: np.ndarray):
    """Every trained method: the training results by name, their wall times, and the dense
    float32 run's summary (None in the quick configuration)."""
    import torch

    from stepsize.unfolding import (
        DiagonalOperator,
        UnfoldedGD,
        train_expected_loss,
        train_incremental,
    )

    T = config["T"]
    schedule = dict(steps_per_generation=config["steps_per_generation"], lr=config["lr"],
                    generations=config["generations"], progress=None)
    runs, times = {}, {}
    runs["dugd"], times["dugd"] = _timed(
        train_expected_loss, UnfoldedGD(T, A, init=config["init"]), **schedule)
    runs["dugd_from_chebyshev"], times["dugd_from_chebyshev"] = _timed(
        train_expected_loss, UnfoldedGD(T, A, init="chebyshev"), incremental=False,
        **{**schedule, "lr": config["chebyshev_init_lr"]},
    )
    runs["non_incremental"], times["non_incremental"] = _timed(
        train_expected_loss, UnfoldedGD(T, A, init=config["init"]), incremental=False,
        **schedule)
    runs["dugd_stochastic_eigenbasis"], times["dugd_stochastic_eigenbasis"] = _timed(
        train_incremental, UnfoldedGD(T, DiagonalOperator(eigenvalues), init=config["init"]),
        batch_size=config["stochastic_batch_size"], seed=seed,
        **{**schedule, "steps_per_generation": config["stochastic_steps_per_generation"]},
    )
    dense = None
    if config.get("dense_batch_size"):
        model = UnfoldedGD(T, torch.as_tensor(A, dtype=torch.float32), init=config["init"])
        runs["dugd_dense"], times["dugd_dense"] = _timed(
            train_incremental, model, batch_size=config["dense_batch_size"], seed=seed,
            **{**schedule, "steps_per_generation": config["dense_steps_per_generation"]},
        )
        dense = {"batch_size": config["dense_batch_size"], "dtype": "float32",
                 "learned_steps": runs["dugd_dense"].steps,
                 "generation_loss": runs["dugd_dense"].losses,
                 "wall_time_s": times["dugd_dense"]}
    return runs, times, dense


def _tables(config, instance, dugd, mse_at_T, expected, times, contraction, gaps):
    from stepsize.report import table

    T, lmin, lmax = config["T"], instance["lmin"], instance["lmax"]
    learned_sorted, chebyshev_sorted, rank_gap, notebook_gap = gaps
    radius = dugd.info["spectral_radius"]
    return [
        table(
            "Instance (n, m) = (300, 600), seed 12: spectrum of A^T A",
            ["quantity", "ours", "notebook"],
            [["lmin", lmin, 0.184191], ["lmax", lmax, 5.678371],
             ["kappa", lmax / lmin, 30.8288]],
            note="numpy legacy RNG, H = N(0, 1/n) of shape (n, m), A = H^T",
        ),
        table(
            f"Test MSE at T = {T} ({config['test_samples']} fresh samples, dense A, float64)",
            ["method", "test MSE", "expected MSE", "reference", "source", "train s"],
            [[LABELS[name], mse_at_T[name], expected[name], *REFERENCE_MSE[name],
              times.get(name)] for name in mse_at_T],
            note="expected MSE = (1/n) sum_i prod_t (1 - gamma_t lambda_i)^2; stochastic run: "
                 f"batch {config['stochastic_batch_size']}, "
                 f"{config['stochastic_steps_per_generation']} steps per generation",
        ),
        table(
            "Generation loss (incremental training, loss at the end of generation g)",
            ["g", "ours (expected loss)", "note [COMP]", "notebook (minibatch)"],
            [[g, dugd.losses[g - 1] if g <= len(dugd.losses) else None,
              ORACLE_LOSS.get(g), NOTEBOOK_LOSS.get(g)] for g in sorted(NOTEBOOK_LOSS)],
        ),
        table(
            "Learned steps (layer order, first 12) and sorted against Chebyshev",
            ["t", "ours", "notebook", "sorted ours", "sorted notebook", "sorted Chebyshev"],
            [[t + 1, dugd.steps[t], NOTEBOOK_STEPS[t], learned_sorted[t],
              float(np.sort(NOTEBOOK_STEPS)[::-1][t]), chebyshev_sorted[t]] for t in range(12)],
            note=f"max relative gap on sorted ranks 11-24: ours {rank_gap[10:24].max():.3f}, "
                 f"notebook {notebook_gap[10:24].max():.3f} (note: within 2.5%; issue: 5%)",
        ),
        table(
            f"Contraction: spectral radius of Q_{T} and per-step rate",
            ["method", "rho(Q_T)", "rate", "note rho", "note rate"],
            [[LABELS[name], contraction[name]["spectral_radius"],
              contraction[name]["per_step_rate"],
              *REFERENCE_CONTRACTION.get(name, (None, None))] for name in contraction],
            note="training lowers the spectral radius: rho(Q_g) of the trained layers per "
                 f"generation goes {radius[0]:.3g} -> {radius[-1]:.3g}",
        ),
    ]


def run(config: dict, seed: int) -> dict:
    import torch

    from stepsize.chebyshev import (
        chebyshev_steps,
        contraction_factor,
        expected_squared_error,
        optimal_constant_step,
        per_step_rate,
    )

    T = config["T"]
    A = np.ascontiguousarray(gaussian_operator(config["n"], config["m"], config["instance_seed"]))
    eigenvalues = np.linalg.eigvalsh(A.T @ A)
    lmin, lmax = float(eigenvalues[0]), float(eigenvalues[-1])
    instance = {"lmin": lmin, "lmax": lmax, "kappa": lmax / lmin}
    runs, times, dense = _train_all(config, seed, A, eigenvalues)
    dugd = runs["dugd"]
    steps = {"dugd": dugd.steps, "gd": np.full(T, optimal_constant_step(lmin, lmax)),
             "chebyshev": chebyshev_steps(lmin, lmax, T)}
    steps.update({name: result.steps for name, result in runs.items() if name != "dugd"})
    generator = torch.Generator().manual_seed(seed)
    x_test = torch.randn(config["test_samples"], config["n"], generator=generator,
                         dtype=torch.float64)
    curves = {name: dense_mse_curve(A, value, x_test) for name, value in steps.items()}
    curves["notebook_steps"] = dense_mse_curve(A, NOTEBOOK_STEPS, x_test)
    steps["notebook_steps"] = np.asarray(NOTEBOOK_STEPS)
    expected = {name: expected_squared_error(value, eigenvalues) for name, value in steps.items()}
    contraction = {
        name: {"spectral_radius": contraction_factor(value, eigenvalues),
               "per_step_rate": per_step_rate(value, eigenvalues)}
        for name, value in steps.items()
    }
    chebyshev_sorted = np.sort(steps["chebyshev"])[::-1]
    learned_sorted = np.sort(dugd.steps)[::-1]
    rank_gap = np.abs(learned_sorted - chebyshev_sorted) / chebyshev_sorted
    notebook_gap = np.abs(np.sort(NOTEBOOK_STEPS)[::-1] - chebyshev_sorted) / chebyshev_sorted
    mse_at_T = {name: curve[-1] for name, curve in curves.items() if name != "notebook_steps"}
    gaps = (learned_sorted, chebyshev_sorted, rank_gap, notebook_gap)
    stochastic = runs["dugd_stochastic_eigenbasis"]
    return {
        "instance": instance,
        "learned_steps": dugd.steps,
        "generation_loss": dugd.losses,
        "spectral_radius": dugd.info["spectral_radius"],
        "mse_at_T": mse_at_T,
        "expected_mse_at_T": expected,
        "mse_curves": curves,
        "sorted_rank_match": float(rank_gap[10:24].max()),
        "sorted_rank_match_notebook": float(notebook_gap[10:24].max()),
        "steps": steps,
        "contraction": contraction,
        "non_incremental_spread": float(np.ptp(runs["non_incremental"].steps)),
        "stochastic": {"batch_size": config["stochastic_batch_size"],
                       "steps_per_generation": config["stochastic_steps_per_generation"],
                       "generation_loss": stochastic.losses,
                       "spectral_radius": stochastic.info["spectral_radius"]},
        "dense": dense,
        "training_time_s": times,
        "tables": _tables(config, instance, dugd, mse_at_T, expected, times, contraction, gaps),
    }


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.chebyshev import chebyshev_bound
    from stepsize.report import new_figure, save_figure

    out_dir = Path(out_dir)
    paths = []
    fig, (ax,) = new_figure()
    for name, curve in result["mse_curves"].items():
        style = {"notebook_steps": "--", "non_incremental": ":"}.get(name, "-")
        ax.semilogy(range(len(curve)), curve, style, marker=".", label=LABELS[name])
    ax.set_xlabel("iteration t")
    ax.set_ylabel("test MSE")
    ax.set_title("DUGD vs GD vs Chebyshev steps, (300, 600) seed 12")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / "dugd_mse_vs_t.png"))

    fig, (layer_ax, sorted_ax) = new_figure(ncols=2)
    learned = np.asarray(result["learned_steps"])
    chebyshev = np.asarray(result["steps"]["chebyshev"])
    notebook = np.asarray(NOTEBOOK_STEPS)
    t = np.arange(1, learned.size + 1)
    layer_ax.plot(t, learned, "o-", label="learned (ours)")
    layer_ax.plot(t, notebook, "x--", label="learned (notebook)")
    layer_ax.plot(t, chebyshev, "s:", label="Chebyshev (fractal order)")
    layer_ax.set_xlabel("layer t")
    layer_ax.set_ylabel("step size")
    layer_ax.set_title("layer order")
    layer_ax.legend(fontsize=8)
    for values, style, label in [(learned, "o-", "learned (ours)"),
                                 (notebook, "x--", "learned (notebook)"),
                                 (chebyshev, "s:", "Chebyshev")]:
        sorted_ax.semilogy(t, np.sort(values)[::-1], style, label=label)
    sorted_ax.axvspan(11, 24, alpha=0.1, color="gray")
    sorted_ax.set_xlabel("rank (descending)")
    sorted_ax.set_title(f"sorted (ranks 11-24 max gap {result['sorted_rank_match']:.3f})")
    sorted_ax.legend(fontsize=8)
    paths.append(save_figure(fig, out_dir / "dugd_steps.png"))

    fig, (ax,) = new_figure()
    radius = np.asarray(result["spectral_radius"], dtype=float)
    g = np.arange(1, radius.size + 1)
    lmin, lmax = result["instance"]["lmin"], result["instance"]["lmax"]
    ax.semilogy(g, radius, "o-", label="DUGD: rho(Q_g) after generation g")
    ax.semilogy(g, [chebyshev_bound(lmin, lmax, k) for k in g], "s:", label="Chebyshev bound")
    kappa = lmax / lmin
    ax.semilogy(g, ((kappa - 1) / (kappa + 1)) ** g, "--", label="GD, optimal constant step")
    ax.set_xlabel("generation g (layers trained)")
    ax.set_ylabel("spectral radius")
    ax.set_title("training lowers the spectral radius")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out_dir / "dugd_spectral_radius.png"))
    return paths


register(Entry(
    name="dugd",
    description="Deep-unfolded GD (Takabe & Wadayama): learned steps vs Chebyshev steps",
    quick=QUICK,
    full=FULL,
    run=run,
    plot=plot,
    requires=("torch",),
))
