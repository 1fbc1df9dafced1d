"""Unfolded ISTA against ISTA and FISTA on Bernoulli-Gaussian sparse recovery (`stepsize bench
ista`).

The setting of the learned-ISTA literature (LISTA-CPSS, ALISTA, TISTA): n = 500 unknowns,
m = 250 measurements, A with i.i.d. N(0, 1/m) entries and unit-norm columns, x* Bernoulli(0.1)
times N(0, 1), y = A x* + noise at 40 dB SNR (noise variance p n / m * 10^(-4), the expected
signal power per measurement over 10^4). Metric: NMSE = sum ||x_hat - x*||^2 / sum ||x*||^2 on
fresh test samples, in dB.

Methods, every one in float64 on the same test set:

- ISTA and FISTA (Beck-Teboulle) with step 1/L, L = lambda_max(A^T A), at T and at 100
  iterations; each gets its own best lambda from a grid on a validation set (a tuned peer, not
  the plainest call);
- the lasso solution itself (scikit-learn's coordinate-descent ``Lasso``, to tolerance 1e-10,
  at FISTA-100's lambda): what ISTA and FISTA converge to;
- ``UnfoldedISTA`` with T layers: learned steps (TISTA-like), learned steps plus thresholds, and
  the same with LISTA-CPSS's support selection (its weight matrix stays A^T, only the 2T
  scalars are learned), initialized at ISTA (1/L, lambda of the tuned ISTA-T), trained
  incrementally with Adam on a fixed training set (float32 for speed, evaluated in float64);
- the LISTA family as baselines, on the same training set, schedule, batch and number of Adam
  steps: LISTA-CPSS (Chen et al. 2018; the coupled form of Gregor & LeCun's LISTA with an
  untied learned weight W_t (m x n) per layer, initialized at ISTA's A / L, plus learned
  thresholds and support selection; Adam lr ``lista_lr`` = 5e-4 on the weights, the paper's
  initial value, no decay) and ALISTA (Liu et al. 2019: the analytic weight of
  :func:`alista_weight`, learned per-layer steps and thresholds, support selection).

The goal of issue 14: T = 16 learned layers at least match FISTA's NMSE after 100 iterations, on
3 seeds (the full configuration; ``--quick`` runs one seed; both train the same budget).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stepsize._reference.ista import bernoulli_gaussian_problem, ista, nmse_db
from stepsize.benchmarks import Entry, register

QUICK = {
    "n": 500, "m": 250, "sparsity": 0.1, "snr_db": 40.0, "T": 16, "long_iterations": 100,
    "train_samples": 4000, "validation_samples": 500, "test_samples": 1000,
    "lambda_grid": [0.005, 0.01, 0.02, 0.04, 0.08, 0.16],
    "batch_size": 128, "steps_per_generation": 40, "final_steps": 400, "lr": 0.01,
    "seeds": [0], "threads": 1, "lasso_samples": 50, "support_selection": [0.012, 0.13],
    "variants": ["steps", "thresholds", "support"],
    "lista_variants": ["lista_cpss", "alista"], "lista_lr": 5e-4,
}
FULL = {**QUICK, "test_samples": 2000, "seeds": [0, 1, 2], "lasso_samples": 200}


def _best_lambda(A, validation, grid, iterations, accelerated):
    x, y = validation
    scores = [nmse_db(ista(A, y, lam, iterations, accelerated=accelerated), x) for lam in grid]
    best = int(np.argmin(scores))
    return float(grid[best]), scores


VARIANTS = {  # name: (row label, learn_thresholds, support selection)
    "steps": ("learned steps", False, False),
    "thresholds": ("learned steps and thresholds", True, False),
    "support": ("learned steps and thresholds, support selection", True, True),
}


def _train_unfolded(A, train, lam, config, variant: str, seed: int):
    import torch

    from stepsize.unfolding import UnfoldedISTA, train_incremental

    _, learn_thresholds, selection = VARIANTS[variant]
    structure = dict(learn_thresholds=learn_thresholds,
                     support_selection=tuple(config["support_selection"]) if selection else None)
    operator = torch.as_tensor(A, dtype=torch.float32)
    model = UnfoldedISTA(config["T"], operator, lam, **structure)
    data = (torch.as_tensor(train[0], dtype=torch.float32),
            torch.as_tensor(train[1], dtype=torch.float32))
    settings = dict(data=data, batch_size=config["batch_size"], lr=config["lr"], seed=seed,
                    progress=False)
    began = time.perf_counter()
    incremental = train_incremental(model, steps_per_generation=config["steps_per_generation"],
                                    **settings)
    final = train_incremental(model, steps_per_generation=config["final_steps"], generations=1,
                              incremental=False, **settings)
    seconds = time.perf_counter() - began
    evaluation = UnfoldedISTA(config["T"], A, lam, init=final.steps.astype(np.float64),
                              **structure)
    if learn_thresholds:
        with torch.no_grad():
            thresholds = torch.as_tensor(final.info["thresholds"], dtype=torch.float64)
            evaluation.thresholds.copy_(thresholds)
    return evaluation, seconds, incremental.losses + final.losses


def alista_weight(A: np.ndarray) -> np.ndarray:
    """ALISTA's analytic weight: W minimizing ||W^T A||_F subject to diag(W^T A) = 1, column
    by column w_i = (A A^T)^{-1} a_i / (a_i^T (A A^T)^{-1} a_i) (Liu et al. 2019, with the
    Frobenius relaxation of the mutual coherence; needs A A^T invertible, m <= n).

    >>> A = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    >>> np.round(np.diag(alista_weight(A).T @ A), 12).tolist()
    [1.0, 1.0, 1.0]
    """
    solved = np.linalg.solve(A @ A.T, A)
    return solved / np.einsum("ij,ij->j", A, solved)


def _lista_model(A, lam: float, config: dict, variant: str):
    """LISTA-CP with support selection, x_{t+1} = eta_{theta_t}(x_t + W_t^T (y - A x_t)) with
    the top entries kept unshrunk: ``"lista_cpss"`` learns an untied (m, n) W_t per layer
    (initialized at A / L, i.e. ISTA) and the thresholds; ``"alista"`` fixes W_t = gamma_t W
    with ALISTA's analytic W and learns gamma_t and theta_t (initialized at 1 / ||W^T A||_2 and
    gamma_t lam)."""
    import torch

    class LISTA(torch.nn.Module):
        def __init__(self):
            super().__init__()
            T, n = config["T"], A.shape[1]
            self.register_buffer("A", torch.as_tensor(A, dtype=torch.float32))
            self.keep = [int(round(min(config["support_selection"][0] * (t + 1),
                                       config["support_selection"][1]) * n)) for t in range(T)]
            if variant == "lista_cpss":
                L = float(np.linalg.eigvalsh(A.T @ A)[-1])
                self.weights = torch.nn.Parameter(self.A.repeat(T, 1, 1) / L)
                self.gammas = None
                init = np.full(T, 1.0 / L)
            else:
                W = alista_weight(A)
                self.register_buffer("weights", torch.as_tensor(W, dtype=torch.float32))
                init = np.full(T, 1.0 / np.linalg.norm(W.T @ A, 2))
                self.gammas = torch.nn.Parameter(torch.as_tensor(init, dtype=torch.float32))
            self.thresholds = torch.nn.Parameter(torch.as_tensor(init * lam, dtype=torch.float32))

        def forward(self, y, n_layers):
            x = y.new_zeros(y.shape[0], self.A.shape[1])
            for t in range(n_layers):
                weight = (self.weights[t] if self.gammas is None
                          else self.gammas[t].abs() * self.weights)
                v = x + (y - x @ self.A.T) @ weight
                x = torch.sign(v) * torch.relu(v.abs() - self.thresholds[t].abs())
                if self.keep[t]:
                    magnitude = v.detach().abs()
                    cutoff = torch.topk(magnitude, self.keep[t], dim=1).values[:, -1:]
                    x = torch.where(magnitude >= cutoff, v, x)
            return x

    return LISTA()


def _train_lista(A, train, lam, config, variant: str, seed: int):
    """The same data, schedule and number of Adam steps as ``_train_unfolded`` (T generations
    on the first g layers, then ``final_steps`` on all); the weight matrices take Adam's
    ``lista_lr``, the scalars ``lr``."""
    import torch

    model = _lista_model(A, lam, config, variant)
    scalars = [p for p in (model.gammas, model.thresholds) if p is not None]
    groups = [{"params": scalars, "lr": config["lr"]}]
    if variant == "lista_cpss":
        groups.append({"params": [model.weights], "lr": config["lista_lr"]})
    optimizer = torch.optim.Adam(groups)
    x, y = (torch.as_tensor(v, dtype=torch.float32) for v in train)
    generator = torch.Generator().manual_seed(seed)
    T = config["T"]
    schedule = [(g + 1, config["steps_per_generation"]) for g in range(T)]
    began = time.perf_counter()
    for layers, steps in [*schedule, (T, config["final_steps"])]:
        for _ in range(steps):
            index = torch.randperm(x.shape[0], generator=generator)[: config["batch_size"]]
            loss = (model(y[index], layers) - x[index]).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model, time.perf_counter() - began, float(loss.detach())


LISTA_VARIANTS = {
    "lista_cpss": "LISTA-CPSS (untied W_t per layer, thresholds, support selection)",
    "alista": "ALISTA (analytic W, learned steps and thresholds, support selection)",
}


def _lasso(A, Y, lam: float) -> np.ndarray:
    from sklearn.linear_model import Lasso

    # sklearn minimizes 1/(2m) ||y - A x||^2 + alpha ||x||_1: alpha = lam / m
    solver = Lasso(alpha=lam / A.shape[0], fit_intercept=False, tol=1e-10, max_iter=100000)
    return np.stack([solver.fit(A, y).coef_.copy() for y in Y])


def _one_seed(config: dict, seed: int) -> dict:
    import torch

    A, draw, noise_std = bernoulli_gaussian_problem(
        config["n"], config["m"], config["sparsity"], config["snr_db"], seed)
    train = draw(config["train_samples"])
    validation = draw(config["validation_samples"])
    x_test, y_test = draw(config["test_samples"])
    T, long = config["T"], config["long_iterations"]
    grid = config["lambda_grid"]
    rows, lambdas = {}, {}
    for name, iterations, accelerated in [
        (f"ISTA, {T} iterations", T, False), (f"FISTA, {T} iterations", T, True),
        (f"ISTA, {long} iterations", long, False), (f"FISTA, {long} iterations", long, True),
    ]:
        lam, _ = _best_lambda(A, validation, grid, iterations, accelerated)
        began = time.perf_counter()
        estimate = ista(A, y_test, lam, iterations, accelerated=accelerated)
        rows[name] = {"nmse_db": nmse_db(estimate, x_test), "lambda": lam, "layers": iterations,
                      "seconds": time.perf_counter() - began}
        lambdas[name] = lam
    fista_lambda = lambdas[f"FISTA, {long} iterations"]
    count = config["lasso_samples"]
    lasso = _lasso(A, y_test[:count], fista_lambda)
    rows["lasso solution (sklearn, tol 1e-10)"] = {
        "nmse_db": nmse_db(lasso, x_test[:count]), "lambda": fista_lambda, "layers": None,
        "seconds": None, "note": f"first {count} test samples",
    }
    ista_lambda = lambdas[f"ISTA, {T} iterations"]
    for variant in config["variants"]:
        model, seconds, losses = _train_unfolded(A, train, ista_lambda, config, variant, seed)
        with torch.no_grad():
            estimate = model(torch.as_tensor(y_test)).numpy()
        rows[f"UnfoldedISTA, {T} layers, {VARIANTS[variant][0]}"] = {
            "nmse_db": nmse_db(estimate, x_test), "lambda": ista_lambda, "layers": T,
            "train_s": seconds, "final_train_loss": losses[-1],
            "steps": model.step_sizes.tolist(), "thresholds": model.threshold_values.tolist(),
        }
    for variant in config["lista_variants"]:
        model, seconds, loss = _train_lista(A, train, ista_lambda, config, variant, seed)
        with torch.no_grad():
            estimate = model.double()(torch.as_tensor(y_test), T).numpy()  # float64, as above
        rows[f"{LISTA_VARIANTS[variant]}, {T} layers"] = {
            "nmse_db": nmse_db(estimate, x_test), "lambda": ista_lambda, "layers": T,
            "train_s": seconds, "final_train_loss": loss,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    return {"noise_std": noise_std, "methods": rows}


def goal_margins(per_seed: dict, reference: str):
    """The goal of issue 14, judged per learned ``UnfoldedISTA`` row on every seed: margins
    (reference NMSE minus the row's, dB; >= 0 means at least as good) per row, and the row
    whose worst margin is largest. Returns ``(row, its margins, met, margins by row)``.

    >>> per_seed = {"0": {"methods": {"FISTA": {"nmse_db": -32.0},
    ...     "UnfoldedISTA a": {"nmse_db": -31.0}, "UnfoldedISTA b": {"nmse_db": -33.5}}}}
    >>> goal_margins(per_seed, "FISTA")[:3]
    ('UnfoldedISTA b', [1.5], True)
    """
    seeds = list(per_seed)
    rows = [name for name in per_seed[seeds[0]]["methods"] if name.startswith("UnfoldedISTA")]
    by_row = {name: [per_seed[s]["methods"][reference]["nmse_db"]
                     - per_seed[s]["methods"][name]["nmse_db"] for s in seeds] for name in rows}
    best = max(rows, key=lambda name: min(by_row[name]))
    return best, by_row[best], all(margin >= 0 for margin in by_row[best]), by_row


def run(config: dict, seed: int) -> dict:
    from stepsize._reference.timing import pinned_threads
    from stepsize.report import table

    with pinned_threads(config["threads"]):
        seeds = [seed + s for s in config["seeds"]]
        per_seed = {str(s): _one_seed(config, s) for s in seeds}
    names = list(next(iter(per_seed.values()))["methods"])
    T, long = config["T"], config["long_iterations"]
    rows = []
    for name in names:
        values = [per_seed[str(s)]["methods"][name]["nmse_db"] for s in seeds]
        first = per_seed[str(seeds[0])]["methods"][name]
        rows.append([name, first["layers"] if first["layers"] is not None else "-",
                     ", ".join(f"{v:.2f}" for v in values), first["lambda"],
                     first.get("train_s", "-")])
    learned, margins, met, margins_by_row = goal_margins(per_seed, f"FISTA, {long} iterations")
    tables = [
        table(
            f"Sparse recovery, n = {config['n']}, m = {config['m']}, Bernoulli-Gaussian "
            f"p = {config['sparsity']}, SNR {config['snr_db']:g} dB; seeds {seeds}",
            ["method", "layers", "test NMSE dB (per seed)", "lambda (first seed)",
             "train s (first seed)"],
            rows,
            note="lambda: each ISTA/FISTA row's best on a validation set from "
                 f"{config['lambda_grid']}; UnfoldedISTA starts at ISTA-{T}'s; training: "
                 f"{config['train_samples']} samples, batch {config['batch_size']}, "
                 f"{T} generations x {config['steps_per_generation']} Adam steps (lr "
                 f"{config['lr']}) then {config['final_steps']} steps on all layers, float32; "
                 f"LISTA rows: the same data and schedule, weight matrices at lr "
                 f"{config['lista_lr']}; all evaluated in float64",
        ),
        table(
            "Goal of issue 14",
            ["goal", "margin dB per seed (FISTA-100 minus learned)", "met"],
            [[f"{learned}: NMSE <= FISTA after {long} iterations, every seed",
              ", ".join(f"{m:.2f}" for m in margins), met]],
            note="met only when the learned layers' test NMSE is at or below FISTA's on every "
                 "seed",
        ),
    ]
    return {"per_seed": per_seed, "margins_db": margins, "margins_db_by_method": margins_by_row,
            "goal_met": met, "tables": tables}


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    fig, (ax,) = new_figure(width=8.0, height=6.0)
    for seed, measured in result["per_seed"].items():
        names = list(measured["methods"])
        ax.barh([f"{name} (seed {seed})" for name in names],
                [measured["methods"][name]["nmse_db"] for name in names])
    ax.set_xlabel("test NMSE (dB)")
    return [save_figure(fig, Path(out_dir) / "bench_ista.png")]


register(Entry(
    name="ista",
    description="Unfolded ISTA (learned steps/thresholds) vs ISTA, FISTA and the lasso solution",
    quick=QUICK,
    full=FULL,
    run=run,
    plot=plot,
    requires=("torch",),
))
