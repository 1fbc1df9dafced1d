"""Chebyshev step-size schedules against the schedules users pick (`stepsize bench schedules`).

Full-batch gradient descent, the same start and the same number of steps for every schedule, on:

- (a) least squares with a known Hessian spectrum, steps from the exact ``[lmin, lmax]``:
  ``gaussian``, the Takabe-Wadayama instance (A of shape (m, n) with N(0, 1/n) entries, noiseless,
  a fresh A per seed), and ``digits ridge``, ridge regression of one-hot labels on scikit-learn's
  offline ``load_digits`` (standardized pixels plus a bias, a random training subset per seed,
  Hessian ``Z^T Z / m + mu I``). The paper's ascending (``natural``) order runs beside the
  default fractal order: at large T it is destroyed by round-off;
- (b) multinomial logistic regression on digits with an l2 penalty ``mu``: ``lmin = mu`` (strong
  convexity) and ``lmax = lambda_max(Z^T Z / m) / 2 + mu`` (Bohning's bound on the softmax
  Hessian); no eigenvalue of the actual Hessian is computed;
- (c) a small MLP (64-32-10, tanh, cross-entropy) on digits, trained with ``torch.optim.SGD``
  and the torch schedulers themselves (``ChebyshevLR``, ``CosineAnnealingLR``, pytorch_optimizer's
  ``get_chebyshev_schedule``). The spectrum is unknown: ``lmax`` is 1.1 x a power-iteration
  estimate (Hessian-vector products, at the initial weights, per seed) and ``lmin = lmax / kappa``
  with ``kappa`` chosen on a grid, as the learning rate is for the other schedules.

Peers: the constant step ``2 / (lmin + lmax)`` (the best constant for the interval) and the
constant, cosine annealing (peak lr, decays to 0 over the run) and pytorch_optimizer's fractal
Chebyshev schedule (multipliers for its hard-coded interval [0.05, 1], times a base lr), each
tuned on the same grid of learning rates ``c / lmax``. A tuned setting is the one with the fewest
median steps to the target, then the lowest median final loss, over the same seeds the table
reports (so tuned rows are slightly optimistic). Loss: relative suboptimality
``(f - f*) / (f0 - f*)`` for (a) and (b) (``f*`` from the normal equations or L-BFGS), training
cross-entropy for (c). Medians over seeds; one thread.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from stepsize.benchmarks import Entry, register

QUICK = {
    "seeds": 3, "threads": 1, "lr_grid": [0.5, 1.0, 1.9, 4.0, 8.0, 16.0, 32.0], "target": 1e-6,
    "gaussian": {"n": 300, "m": 600, "steps": 256, "periods": [16, 64, 256]},
    "ridge": {"train": 1000, "mu": 1e-2, "steps": 512, "periods": [64]},
    "logistic": {"train": 1000, "mu": 1e-2, "steps": 256, "periods": [64]},
    "mlp": {"train": 500, "hidden": 32, "steps": 128, "periods": [32], "kappas": [3, 10, 100],
            "lmax_scales": [1, 4, 16], "power_iterations": 20, "target": 0.02},
}
FULL = {
    **QUICK, "seeds": 5, "lr_grid": [0.5, 1.0, 1.5, 1.9, 2.5, 4.0, 8.0, 16.0, 32.0, 64.0,
                                 128.0],
    "gaussian": {**QUICK["gaussian"], "steps": 512, "periods": [16, 64, 256, 512]},
    "ridge": {**QUICK["ridge"], "mu": 1e-3, "steps": 2048, "periods": [64, 256]},
    "logistic": {**QUICK["logistic"], "mu": 1e-3, "steps": 1024, "periods": [64, 256]},
    "mlp": {**QUICK["mlp"], "train": 1000, "steps": 512, "periods": [32, 128],
            "target": 0.005},
}
_BLOW_UP = 1e60  # a run whose loss passes this is diverged (Chebyshev peaks stay far below)


# ---------------------------------------------------------------- problems (a) and (b), numpy


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data, data.target


def _digits_features(train: int, seed: int):
    """A random training subset of digits: standardized non-constant pixels plus a bias column.

    Pixels that are constant on the subset are dropped: they would add Hessian eigenvalues equal
    to the penalty ``mu`` in directions where the error is zero, an ``lmin`` that is exact but
    irrelevant.
    """
    pixels, labels = _digits()
    rows = np.random.default_rng(seed).permutation(len(labels))[:train]
    pixels, labels = pixels[rows], labels[rows]
    scale = pixels.std(axis=0)
    pixels = pixels[:, scale > 0]
    Z = np.hstack([(pixels - pixels.mean(axis=0)) / scale[scale > 0], np.ones((train, 1))])
    return Z, labels


def _quadratic(H: np.ndarray, b: np.ndarray, x0: np.ndarray) -> dict:
    """f(x) - f* = (x - x*)^T H (x - x*) / 2 = (x - x*)^T g / 2 with the gradient g = H x - b."""
    x_star = np.linalg.solve(H, b)
    eigenvalues = np.linalg.eigvalsh(H)

    def value_and_gradient(x):
        gradient = H @ x - b
        return 0.5 * float(np.sum((x - x_star) * gradient)), gradient

    return {"value_and_gradient": value_and_gradient, "x0": x0, "f_star": 0.0,
            "lmin": float(eigenvalues[0]), "lmax": float(eigenvalues[-1])}


def gaussian_least_squares(n: int, m: int, seed: int) -> dict:
    """min ||A x - y||^2 / 2 with A (m, n) ~ N(0, 1/n), y = A x*, x* ~ N(0, I), x0 = 0."""
    rng = np.random.default_rng(seed)
    A = rng.normal(0.0, 1.0 / np.sqrt(n), size=(m, n))
    y = A @ rng.standard_normal(n)
    return _quadratic(A.T @ A, A.T @ y, np.zeros(n))


def digits_ridge(train: int, mu: float, seed: int) -> dict:
    """min ||Z W - Y||^2 / (2 m) + mu ||W||^2 / 2 with one-hot Y (10 outputs), W0 = 0."""
    Z, labels = _digits_features(train, seed)
    H = Z.T @ Z / train + mu * np.eye(Z.shape[1])
    return _quadratic(H, Z.T @ np.eye(10)[labels] / train, np.zeros((Z.shape[1], 10)))


def digits_logistic(train: int, mu: float, seed: int) -> dict:
    """Multinomial logistic regression with an l2 penalty; f* by L-BFGS to gradient norm 1e-12."""
    from scipy.optimize import minimize

    Z, labels = _digits_features(train, seed)
    Y = np.eye(10)[labels]
    shape = (Z.shape[1], 10)

    def value_and_gradient(W):
        logits = Z @ W
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        total = exp.sum(axis=1, keepdims=True)
        value = (np.sum(np.log(total)) - np.sum(Y * logits)) / train + 0.5 * mu * np.sum(W * W)
        return value, Z.T @ (exp / total - Y) / train + mu * W

    def flat(w):
        value, gradient = value_and_gradient(w.reshape(shape))
        return value, gradient.ravel()

    best = minimize(flat, np.zeros(shape).ravel(), jac=True, method="L-BFGS-B",
                    options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 20_000, "maxcor": 30})
    lmax = 0.5 * float(np.linalg.eigvalsh(Z.T @ Z / train)[-1]) + mu
    return {"value_and_gradient": value_and_gradient, "x0": np.zeros(shape),
            "f_star": float(best.fun), "lmin": mu, "lmax": lmax}


def gradient_descent(problem: dict, learning_rates: np.ndarray) -> np.ndarray:
    """Losses f(x_t) - f* for t = 0..len(learning_rates); inf from the step a run blows up."""
    x = problem["x0"].copy()
    losses = np.full(len(learning_rates) + 1, np.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(len(learning_rates) + 1):
            value, gradient = problem["value_and_gradient"](x)
            # f* from L-BFGS may sit a rounding error above the true minimum: floor at 0
            loss = max(value - problem["f_star"], 0.0)
            if not np.isfinite(loss) or (t > 0 and loss > _BLOW_UP * losses[0]):
                break
            losses[t] = loss
            if t < len(learning_rates):
                x -= learning_rates[t] * gradient
    return losses


# ---------------------------------------------------------------- schedules as lr sequences


def _chebyshev_lrs(lmin, lmax, T, order, steps):
    from stepsize.chebyshev.schedules import chebyshev_schedule

    schedule = chebyshev_schedule(lmin, lmax, T, order)
    return np.array([schedule(k) for k in range(steps)])


def _cosine_lrs(peak, steps):
    return peak * 0.5 * (1.0 + np.cos(np.pi * np.arange(steps) / steps))


@functools.lru_cache(maxsize=8)
def _pytorch_optimizer_multipliers(steps: int) -> tuple[float, ...]:
    """The learning rates pytorch_optimizer's ``get_chebyshev_schedule`` sets for base lr 1."""
    import torch
    from pytorch_optimizer import get_chebyshev_schedule

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = get_chebyshev_schedule(optimizer, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return tuple(lrs)


def _pytorch_optimizer_lrs(base_lr, steps):
    return base_lr * np.array(_pytorch_optimizer_multipliers(steps))


def _schedules(lmin, lmax, config, section, *, natural):
    """(method, setting, lr sequence) for every schedule and grid value of a convex problem.

    ``natural``: the interval is exact, so run the paper's order beside the fractal one; else the
    interval is a bound, so also tune the Chebyshev schedule's ``lmax`` (divided by the same
    factors c >= 1 that the other schedules' learning rates are multiplied by).
    """
    steps = config[section]["steps"]
    runs = []
    for T in config[section]["periods"]:
        runs.append((f"chebyshev T={T} fractal", "exact interval" if natural else "bounds",
                     _chebyshev_lrs(lmin, lmax, T, "fractal", steps)))
        if natural:
            runs.append((f"chebyshev T={T} natural", "exact interval",
                         _chebyshev_lrs(lmin, lmax, T, "natural", steps)))
        else:
            runs += [(f"chebyshev T={T} fractal (tuned lmax)", f"lmax=bound/{c}",
                      _chebyshev_lrs(lmin, max(lmax / c, lmin), T, "fractal", steps))
                     for c in config["lr_grid"] if c >= 1]
    runs.append(("constant 2/(lmin+lmax)", "2/(lmin+lmax)", np.full(steps, 2 / (lmin + lmax))))
    for c in config["lr_grid"]:
        lr = c / lmax
        runs.append(("constant (tuned)", f"lr={c}/lmax", np.full(steps, lr)))
        runs.append(("cosine (tuned)", f"peak={c}/lmax", _cosine_lrs(lr, steps)))
        try:
            runs.append(("pytorch_optimizer chebyshev (tuned)", f"base={c}/lmax",
                         _pytorch_optimizer_lrs(lr, steps)))
        except ImportError:
            pass
    return runs


# ---------------------------------------------------------------- (c) MLP in torch


def _mlp_problem(config: dict, seed: int):
    import torch

    Z, labels = _digits_features(config["train"], seed)
    return (torch.tensor(Z[:, :-1], dtype=torch.float32), torch.tensor(labels))


def _mlp(features: int, hidden: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 10))


def _power_iteration_lmax(model, inputs, labels, iterations: int, seed: int) -> float:
    """Largest Hessian eigenvalue (in magnitude) of the training loss, by Hessian-vector
    products."""
    import torch

    params = [p for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(inputs), labels)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=generator) for p in params]
    estimate = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((u * u).sum() for u in v))
        v = [u / norm for u in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        estimate = float(sum((a * b).sum() for a, b in zip(hv, v)))
        v = [h.detach() for h in hv]
    return abs(estimate)


def _train_mlp(config, seed, make_scheduler, lr):
    import torch

    inputs, labels = _mlp_problem(config, seed)
    model = _mlp(inputs.shape[1], config["hidden"], seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = make_scheduler(optimizer)
    losses = np.full(config["steps"] + 1, np.inf)
    for t in range(config["steps"] + 1):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        value = loss.detach().item()
        if not np.isfinite(value) or value > _BLOW_UP:
            break
        losses[t] = value
        if t == config["steps"]:
            break
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return losses


def _mlp_runs(config: dict, seeds: list[int]):
    """{(method, setting): [losses per seed]} for the MLP, and the lmax estimates per seed."""
    import torch

    from stepsize.chebyshev import ChebyshevLR

    section = config["mlp"]
    steps = section["steps"]
    lmax = {}
    for seed in seeds:
        inputs, labels = _mlp_problem(section, seed)
        model = _mlp(inputs.shape[1], section["hidden"], seed)
        lmax[seed] = 1.1 * _power_iteration_lmax(model, inputs, labels,
                                                 section["power_iterations"], seed)
    runs = {}

    def add(method, setting, factory):
        runs[(method, setting)] = [factory(seed) for seed in seeds]

    for T in section["periods"]:
        for kappa in section["kappas"]:
            for scale in section["lmax_scales"]:
                add(f"chebyshev T={T} fractal", f"kappa={kappa}, lmax/{scale}",
                    lambda s, T=T, k=kappa, c=scale: _train_mlp(
                        section, s, lambda o: ChebyshevLR(o, lmax[s] / (c * k), lmax[s] / c, T),
                        1.0))
    for c in config["lr_grid"]:
        add("constant (tuned)", f"lr={c}/lmax",
            lambda s, c=c: _train_mlp(section, s, lambda o: None, c / lmax[s]))
        add("cosine (tuned)", f"peak={c}/lmax", lambda s, c=c: _train_mlp(
            section, s, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, steps),
            c / lmax[s]))
        try:
            from pytorch_optimizer import get_chebyshev_schedule
        except ImportError:
            continue
        add("pytorch_optimizer chebyshev (tuned)", f"base={c}/lmax", lambda s, c=c: _train_mlp(
            section, s, lambda o: get_chebyshev_schedule(o, steps), c / lmax[s]))
    return runs, lmax


# ---------------------------------------------------------------- summary


def _steps_to(losses: np.ndarray, target: float) -> float:
    reached = np.flatnonzero(losses <= target)
    return float(reached[0]) if reached.size else np.inf


def _summarize(problem, runs, target, relative):
    """One row per (method, setting): medians over seeds; keep the best setting per method."""
    candidates = {}
    for (method, setting), per_seed in runs.items():
        curves = np.array([c / c[0] if relative else c for c in per_seed])
        steps = np.array([_steps_to(c, target) for c in curves])
        final = curves[:, -1]
        row = {"problem": problem, "method": method, "setting": setting,
               "final_median": float(np.median(final)),
               "steps_to_target_median": float(np.median(steps)),
               "reached": int(np.sum(np.isfinite(steps))), "seeds": len(per_seed),
               "curve": np.median(curves, axis=0)}
        key = (row["steps_to_target_median"], row["final_median"])
        if method not in candidates or key < candidates[method][0]:
            candidates[method] = (key, row)
    return [row for _, row in candidates.values()]


def run(config: dict, seed: int) -> dict:
    from stepsize._reference.timing import pinned_threads
    from stepsize.report import table

    seeds = [seed + i for i in range(config["seeds"])]
    rows, spectra = [], []
    with pinned_threads(config["threads"]):
        makers = (
            ("gaussian least squares", "gaussian", True, lambda s: gaussian_least_squares(
                config["gaussian"]["n"], config["gaussian"]["m"], s)),
            ("digits ridge", "ridge", True,
             lambda s: digits_ridge(config["ridge"]["train"], config["ridge"]["mu"], s)),
            ("digits logistic", "logistic", False,
             lambda s: digits_logistic(config["logistic"]["train"], config["logistic"]["mu"], s)),
        )
        for problem_name, section, natural, make in makers:
            runs = {}
            for s in seeds:
                problem = make(s)
                spectra.append({"problem": problem_name, "seed": s, "lmin": problem["lmin"],
                                "lmax": problem["lmax"]})
                # each seed gets steps from its own interval; the setting label stays shared
                for method, setting, lrs in _schedules(problem["lmin"], problem["lmax"], config,
                                                       section, natural=natural):
                    runs.setdefault((method, setting), []).append(gradient_descent(problem, lrs))
            rows += _summarize(problem_name, runs, config["target"], relative=True)
        mlp_runs, mlp_lmax = _mlp_runs(config, seeds)
        spectra += [{"problem": "digits MLP", "seed": s, "lmin": None, "lmax": v}
                    for s, v in mlp_lmax.items()]
        rows += _summarize("digits MLP", mlp_runs, config["mlp"]["target"], relative=False)

    def steps_cell(row):
        return row["steps_to_target_median"] if np.isfinite(row["steps_to_target_median"]) \
            else None

    tables = [table(
        f"Full-batch GD: median over {len(seeds)} seeds of the final loss and of the steps to "
        f"reach the target (relative suboptimality {config['target']:g} for least squares and "
        f"logistic, training cross-entropy {config['mlp']['target']:g} for the MLP)",
        ["problem", "schedule", "setting", "steps", "final loss", "steps to target", "reached"],
        [[r["problem"], r["method"], r["setting"], len(r["curve"]) - 1,
          r["final_median"] if np.isfinite(r["final_median"]) else "diverged",
          steps_cell(r), f"{r['reached']}/{r['seeds']}"] for r in rows],
        note="tuned = best of the lr grid c/lmax, c in "
             f"{config['lr_grid']} (Chebyshev on logistic: lmax divided by c >= 1); MLP "
             "Chebyshev: lmax = 1.1 x power iteration divided by a scale, lmin = lmax / kappa, "
             "both on a grid; a dash: the median seed never reached the target; final loss 0: "
             "below the round-off of f*")]
    by_problem = {}
    for s in spectra:
        by_problem.setdefault(s["problem"], []).append(s)
    tables.append(table(
        "Intervals used by the Chebyshev schedules (median over seeds)",
        ["problem", "lmin", "lmax", "source"],
        [[name, None if items[0]["lmin"] is None else
          float(np.median([i["lmin"] for i in items])),
          float(np.median([i["lmax"] for i in items])), source]
         for (name, items), source in zip(by_problem.items(), (
             "exact eigenvalues", "exact eigenvalues", "lmin = mu, lmax = Bohning bound",
             "lmax = 1.1 x power iteration (HVP); lmin = lmax / kappa"))]))
    return {"rows": rows, "spectra": spectra, "tables": tables}


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    problems = list(dict.fromkeys(r["problem"] for r in result["rows"]))
    fig, axes = new_figure(ncols=2, nrows=(len(problems) + 1) // 2, width=6.0, height=4.0)
    for ax, problem in zip(axes, problems):
        for row in (r for r in result["rows"] if r["problem"] == problem):
            curve = np.array([np.inf if v is None else v for v in row["curve"]], dtype=float)
            style = ":" if "natural" in row["method"] else "-"
            ax.plot(np.arange(curve.size), curve, style, lw=1.2,
                    label=f"{row['method']} ({row['setting']})")
        relative = problem != "digits MLP"
        ax.set(yscale="log", xlabel="gradient steps", title=problem,
               ylabel="(f - f*) / (f0 - f*)" if relative else "training cross-entropy")
        if relative:
            ax.set_ylim(1e-16, 1e4)
        ax.legend(fontsize=6)
    return [save_figure(fig, Path(out_dir) / "bench_schedules_curves.png")]


register(Entry(
    name="schedules",
    description="Chebyshev lr schedules vs constant, cosine, pytorch_optimizer: LS, logistic, MLP",
    quick=QUICK, full=FULL, run=run, plot=plot, requires=("bench", "torch"),
))
