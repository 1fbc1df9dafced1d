"""Reproduction of Shen, Niu, Zhu (adaptive step + dynamical softassign): experiments E1-E5.

E1 adaptive vs fixed step (monotonicity, iterations); E2 alpha* = 1 on fully connected distance
graphs vs controls (on real iterates and on random doubly stochastic directions); E3 softassign
beta sensitivity across sizes and weight scales vs the dynamical softassign; E4 outliers,
density and deformation (FGM protocol); E5 scalability (E4 and E5 include the asm preset).
Every method is scored by :func:`stepsize.matching.score_matching`. The JSON field ``results``
has one row per (experiment, setting, method): mean ``accuracy``, ``objective_ratio``, ``time``
and ``n_iter`` over the seeds.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stepsize._results import ConvergenceWarning
from stepsize.experiments import Entry, register

QUICK = {
    "seeds": 2,
    "e1_sizes": [50, 200],
    "e1_densities": [1.0, 0.1],
    "e1_noises": [0.0, 0.1],
    "dspfp_max_n": 50,
    "e2_sizes": [20, 50, 100],
    "e2_random_draws": 200,
    "e3_sizes": [20, 100],
    "e3_scales": [0.1, 1.0, 10.0],
    "e3_plain_betas": [0.01, 0.1, 1.0, 10.0, 100.0],
    "e3_dynamical_betas": [10.0, 30.0, 100.0, 300.0, 1000.0],
    "e4_outliers": [0, 10, 20],
    "e4_densities": [0.3, 1.0],
    "e4_deformations": [0.0, 0.1, 0.2],
    "e4_seeds": 3,
    "e5_sizes": [50, 100, 200, 400],
    "e5_faq_max_n": 200,
    "peers_max_n": 20,
}

FULL = {
    "seeds": 10,
    "e1_sizes": [50, 200, 1000],
    "e1_densities": [1.0, 0.1],
    "e1_noises": [0.0, 0.05, 0.1],
    "dspfp_max_n": 200,
    "e2_sizes": [10, 20, 50, 100, 200, 500],
    "e2_random_draws": 200,
    "e3_sizes": [10, 20, 50, 100, 200, 500, 1000],
    "e3_scales": [0.1, 1.0, 10.0],
    "e3_plain_betas": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0],
    "e3_dynamical_betas": [3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0],
    "e4_outliers": [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20],
    "e4_densities": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "e4_deformations": [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2],
    "e4_seeds": 30,
    "e5_sizes": [50, 100, 200, 500, 1000, 2000],
    "e5_faq_max_n": 1000,
    "peers_max_n": 40,
}

Solver = Callable[[Any, Any, int], tuple[np.ndarray, int, Any]]


def _ours(**options) -> Solver:
    from stepsize.matching import match_graphs

    def solve(A, B, seed):
        result = match_graphs(A, B, seed=seed, **options)
        return result.col_ind, result.n_iter, result

    return solve


def _faq(A, B, seed):
    from scipy.optimize import quadratic_assignment

    dense = [m.toarray() if hasattr(m, "toarray") else m for m in (A, B)]
    options = {"maximize": True, "rng": np.random.default_rng(seed)}
    result = quadratic_assignment(*dense, options=options)
    return result.col_ind, int(result.nit), None


def _pygm(name: str) -> Solver:
    def solve(A, B, seed):
        import pygmtools as pygm

        pygm.set_backend("numpy")
        dense = [m.toarray() if hasattr(m, "toarray") else m for m in (A, B)]
        n1, n2 = dense[0].shape[0], dense[1].shape[0]
        affinity = np.kron(dense[1], dense[0])  # Lawler form of tr(X^T A X B), column-major vec
        soft = getattr(pygm.classic_solvers, name)(affinity, n1, n2)
        rows, cols = np.nonzero(pygm.hungarian(soft))
        col_ind = np.full(n1, -1)
        col_ind[rows] = cols
        return col_ind, 0, None

    return solve


def _evaluate(solver: Solver, A, B, truth, seed: int) -> dict[str, Any]:
    from stepsize.matching import score_matching

    start = time.perf_counter()
    col_ind, n_iter, result = solver(A, B, seed)
    elapsed = time.perf_counter() - start
    score = score_matching(A, B, col_ind, truth=truth)
    return {
        "accuracy": score.accuracy,
        "objective_ratio": score.objective_ratio,
        "time": elapsed,
        "n_iter": n_iter,
        "result": result,
    }


def _summarize(experiment: str, setting: dict, method: str, runs: list[dict], **extra) -> dict:
    row = {"experiment": experiment, "setting": setting, "method": method}
    for key in ("accuracy", "objective_ratio", "time", "n_iter"):
        row[key] = float(np.mean([r[key] for r in runs]))
    row.update(extra)
    return row


def _monotone_violations(history: list[float]) -> int:
    trace = np.asarray(history)
    return int(np.sum(np.diff(trace) < -1e-9 * max(np.abs(trace).max(), 1.0)))


def _e1(config, seed) -> list[dict]:
    from stepsize.matching.generators import kb_pair

    methods = {
        "apfp (adaptive)": _ours(history=True),
        "dyn. softassign, alpha=1": _ours(step=1.0, history=True),
        "dyn. softassign, alpha=0.5": _ours(step=0.5, history=True),
        "ipfp": _ours(method="ipfp", history=True),
        "dspfp (alpha=0.5)": _ours(method="dspfp", history=True),
        "dspfp, adaptive": _ours(method="dspfp", step="adaptive", history=True),
    }
    rows = []
    for n in config["e1_sizes"]:
        for density in config["e1_densities"]:
            for noise in config["e1_noises"]:
                setting = {"n": n, "density": density, "noise": noise}
                pairs = [
                    kb_pair(n, density=density, noise=noise, seed=seed + s)
                    for s in range(config["seeds"])
                ]
                for name, solver in methods.items():
                    if name.startswith("dspfp") and n > config["dspfp_max_n"]:
                        continue
                    runs = [_evaluate(solver, A, B, t, seed + s) for s, (A, B, t) in
                            enumerate(pairs)]
                    violations = sum(_monotone_violations(r["result"].history) for r in runs)
                    rows.append(_summarize("E1", setting, name, runs,
                                           monotone_violations=violations))
    return rows


def _random_direction_curvature(kind: str, n: int, draws: int, seed: int) -> float:
    """Fraction of ``c2 = <Delta, A Delta B> / 2 >= 0`` over random doubly stochastic directions.

    The research note's section 3.3 sanity check: ``Delta = D - M`` with ``M`` a random doubly
    stochastic matrix (Sinkhorn of a U[0, 1] kernel) and ``D`` another one (even draws) or a
    random permutation (odd draws), on a fresh ``edm_pair(n, kind)`` per draw.
    """
    from stepsize.matching import sinkhorn
    from stepsize.matching.generators import edm_pair

    def random_doubly_stochastic(rng):
        return sinkhorn(np.log(rng.uniform(size=(n, n))), tol=1e-12, max_iter=10_000).P

    nonnegative = 0
    for draw in range(draws):
        rng = np.random.default_rng(seed + draw)
        A, B, _ = edm_pair(n, kind=kind, seed=seed + draw)
        M = random_doubly_stochastic(rng)
        D = random_doubly_stochastic(rng) if draw % 2 == 0 else np.eye(n)[rng.permutation(n)]
        direction = D - M
        nonnegative += float(np.vdot(direction, A @ direction @ B)) >= 0.0
    return nonnegative / draws


def _e2(config, seed) -> tuple[list[dict], dict[str, list[float]]]:
    from stepsize.matching import match_graphs
    from stepsize.matching.generators import edm_pair

    rows, alphas = [], {}
    for kind in ("edm", "gaussian", "knn", "sparse01"):
        random_fraction = _random_direction_curvature(kind, 30, config["e2_random_draws"], seed)
        for n in config["e2_sizes"]:
            runs, steps, curvatures = [], [], []
            for s in range(config["seeds"]):
                A, B, truth = edm_pair(n, kind=kind, seed=seed + s)
                # Exact projections (tight Sinkhorn): the claim alpha* = 1 holds for doubly
                # stochastic M and D, up to the Sinkhorn tolerance. The v1 method alone: no
                # restart with the adaptive softassign (EDM iterates stop soft).
                run = _evaluate(_ours(inner_tol=1e-9, inner_max_iter=20_000,
                                      restart_epsilon=None), A, B, truth, seed + s)
                runs.append(run)
                steps += run["result"].info["alpha"]
                curvatures += run["result"].info["c2"]
            alphas.setdefault(kind, []).extend(steps)
            rows.append(_summarize(
                "E2", {"kind": kind, "n": n}, "apfp", runs,
                fraction_alpha_one=float(np.mean(np.asarray(steps) == 1.0)),
                fraction_c2_nonnegative=float(np.mean(np.asarray(curvatures) >= 0.0)),
                fraction_c2_nonnegative_random=random_fraction,
            ))
    # One more control: on EDMs the closed form must agree with alpha* = 1 at every iterate.
    A, B, _ = edm_pair(30, kind="edm", seed=seed)
    check = match_graphs(A, B, tol=0.0, max_iter=10, inner_tol=1e-9, inner_max_iter=20_000,
                         restart_epsilon=None)
    alphas["edm_check_min_alpha"] = [float(np.min(check.info["alpha"]))]
    return rows, alphas


def _naive_softassign_overflows(X: np.ndarray, beta: float) -> bool:
    """Multiplicative softassign exp(beta X) then Sinkhorn, as textbooks write it: NaN/inf?"""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        P = np.exp(beta * X)
        for _ in range(50):
            P = P / P.sum(axis=1, keepdims=True)
            P = P / P.sum(axis=0, keepdims=True)
    return not bool(np.all(np.isfinite(P)))


def _e3(config, seed) -> tuple[list[dict], dict]:
    from stepsize.matching import dynamical_softassign, softassign, softassign_transition
    from stepsize.matching.generators import kb_pair

    rows = []
    for n in config["e3_sizes"]:
        for scale in config["e3_scales"]:
            pairs = [kb_pair(n, density=1.0, noise=0.05, seed=seed + s)
                     for s in range(config["seeds"])]
            pairs = [(scale * A, scale * B, t) for A, B, t in pairs]
            setting = {"n": n, "weight_scale": scale}
            # The softassign rules alone: no restart with the adaptive softassign.
            for beta in config["e3_plain_betas"]:
                solver = _ours(projection="softassign", beta=beta, restart_epsilon=None)
                runs = [_evaluate(solver, A, B, t, seed) for A, B, t in pairs]
                overflow = sum(
                    _naive_softassign_overflows(np.outer(A.sum(1), B.sum(0)) / n, beta)
                    for A, B, _ in pairs
                )
                rows.append(_summarize("E3", {**setting, "beta": beta}, "softassign", runs,
                                       naive_overflows=overflow))
            for beta in [*config["e3_dynamical_betas"], "auto"]:
                runs = [_evaluate(_ours(beta=beta, restart_epsilon=None), A, B, t, seed)
                        for A, B, t in pairs]
                rows.append(_summarize("E3", {**setting, "beta": beta},
                                       "dynamical softassign", runs))
            runs = [_evaluate(_ours(beta=10.0, scale="max", restart_epsilon=None), A, B, t, seed)
                    for A, B, t in pairs]
            rows.append(_summarize("E3", {**setting, "beta": 10.0},
                                   "dynamical softassign (max-normalized)", runs))
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(50, 50))
    identity_error = float(np.max(np.abs(
        softassign_transition(softassign(X, 5.0, tol=1e-13, max_iter=100_000).P, X, 15.0,
                              tol=1e-13, max_iter=100_000).P
        - softassign(X, 20.0, tol=1e-13, max_iter=100_000).P
    )))
    invariance_error = float(np.max(np.abs(
        dynamical_softassign(X, 30.0, tol=1e-12).P
        - dynamical_softassign(1e6 * X - 3.0, 30.0, tol=1e-12).P
    )))
    return rows, {"hadamard_transition_error": identity_error,
                  "dynamical_invariance_error": invariance_error}


def _e4(config, seed) -> list[dict]:
    from stepsize.matching.generators import outlier_pair

    methods: dict[str, Solver] = {
        "apfp": _ours(),
        "asm": _ours(method="asm"),
        "ipfp": _ours(method="ipfp"),
        "dspfp": _ours(method="dspfp"),
        "ga": _ours(method="ga"),
        "ga (beta0 = n)": None,
        "scipy faq": _faq,
    }
    try:
        import pygmtools  # noqa: F401

        methods.update({f"pygm {m}": _pygm(m) for m in ("rrwm", "ipfp", "sm")})
    except ImportError:
        pass
    sweeps = [("outliers", o, {"outliers": o}) for o in config["e4_outliers"]]
    sweeps += [("density", d, {"density": d}) for d in config["e4_densities"]]
    sweeps += [("deformation", d, {"deformation": d}) for d in config["e4_deformations"]]
    rows = []
    for sweep, value, options in sweeps:
        pairs = [outlier_pair(20, options.get("outliers", 0),
                              density=options.get("density", 1.0),
                              deformation=options.get("deformation", 0.0), seed=seed + s)
                 for s in range(config["e4_seeds"])]
        for name, solver in methods.items():
            if solver is None:
                n = pairs[0][0].shape[0]
                solver = _ours(method="ga", beta=float(n), beta_max=200.0)
            runs = [_evaluate(solver, A, B, t, seed + s) for s, (A, B, t) in enumerate(pairs)]
            rows.append(_summarize("E4", {"sweep": sweep, "value": value}, name, runs))
    return rows


def _e5(config, seed) -> tuple[list[dict], dict]:
    from stepsize.matching.generators import kb_pair, network_pair

    rows = []
    for family, density in (("dense", 1.0), ("sparse", 0.1), ("network", None)):
        for n in config["e5_sizes"]:
            seeds = max(1, config["seeds"] // 2) if n >= 1000 else config["seeds"]
            if family == "network":
                pairs = [network_pair(n, rewire=0.05, seed=seed + s) for s in range(seeds)]
            else:
                pairs = [kb_pair(n, density=density, noise=0.05, sparse=family == "sparse",
                                 seed=seed + s) for s in range(seeds)]
            methods = {"apfp": _ours(), "asm": _ours(method="asm"), "ga": _ours(method="ga")}
            if n <= config["dspfp_max_n"]:
                methods["dspfp"] = _ours(method="dspfp")
            if n <= config["e5_faq_max_n"]:
                methods["scipy faq"] = _faq
            for name, solver in methods.items():
                runs = [_evaluate(solver, A, B, t, seed + s) for s, (A, B, t) in
                        enumerate(pairs)]
                rows.append(_summarize("E5", {"family": family, "n": n}, name, runs))
    slopes = {}
    for family in ("dense", "sparse", "network"):
        points = [(r["setting"]["n"], r["time"]) for r in rows
                  if r["method"] == "apfp" and r["setting"]["family"] == family]
        sizes, times = np.log([p[0] for p in points]), np.log([p[1] for p in points])
        slopes[family] = float(np.polyfit(sizes, times, 1)[0])
    return rows, slopes


def run(config: dict[str, Any], seed: int) -> dict[str, Any]:
    from stepsize.report import table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # pygmtools' IPFP divides 0/0 in its line search on some inputs; its result is scored.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="pygmtools")
        e1 = _e1(config, seed)
        e2, alphas = _e2(config, seed)
        e3, identities = _e3(config, seed)
        e4 = _e4(config, seed)
        e5, slopes = _e5(config, seed)
    results = e1 + e2 + e3 + e4 + e5

    def cells(row, *extra):
        return [row["accuracy"], row["objective_ratio"], row["n_iter"], row["time"],
                *[row[k] for k in extra]]

    tables = [
        table("E1: adaptive vs fixed step (G-KB)",
              ["n", "density", "noise", "method", "accuracy", "Z ratio", "iterations", "time s",
               "monotonicity violations"],
              [[r["setting"]["n"], r["setting"]["density"], r["setting"]["noise"], r["method"],
                *cells(r, "monotone_violations")] for r in e1],
              note="violations: iterations with Z(M_k+1) < Z(M_k), summed over seeds"),
        table("E2: alpha* = 1 on fully connected EDM graphs vs controls (apfp)",
              ["kind", "n", "accuracy", "Z ratio", "iterations", "time s", "frac alpha*=1",
               "frac c2>=0", "frac c2>=0 random"],
              [[r["setting"]["kind"], r["setting"]["n"],
                *cells(r, "fraction_alpha_one", "fraction_c2_nonnegative",
                       "fraction_c2_nonnegative_random")] for r in e2],
              note=("note section 3.3: EDM => c2 >= 0 => alpha* = 1 exactly; 'random': "
                    "Delta = D - M for random doubly stochastic M and D (or a permutation D), "
                    "n = 30, the note's sanity check")),
        table("E3: beta sensitivity, plain softassign (raw scores) vs dynamical softassign",
              ["n", "weight scale", "method", "best beta", "accuracy at best",
               "accuracy at auto", "naive overflows"],
              _e3_summary(e3),
              note=(f"Hadamard transition identity error "
                    f"{identities['hadamard_transition_error']:.2e}; invariance error of the "
                    f"dynamical softassign under X -> 1e6 X - 3: "
                    f"{identities['dynamical_invariance_error']:.2e}")),
        table("E4: outliers, density, deformation (FGM protocol, 20 inliers)",
              ["sweep", "value", "method", "accuracy", "Z ratio", "iterations", "time s"],
              [[r["setting"]["sweep"], r["setting"]["value"], r["method"], *cells(r)]
               for r in e4]),
        table("E5: scalability (noise 0.05)",
              ["family", "n", "method", "accuracy", "Z ratio", "iterations", "time s"],
              [[r["setting"]["family"], r["setting"]["n"], r["method"], *cells(r)] for r in e5],
              note="log-log slope of apfp time vs n: " + ", ".join(
                  f"{k} {v:.2f}" for k, v in slopes.items())),
    ]
    return {
        "results": results,
        "alpha_star": alphas,
        "identities": identities,
        "time_slopes": slopes,
        "tables": tables,
    }


def _e3_summary(rows: list[dict]) -> list[list]:
    out = []
    keys = sorted({(r["setting"]["n"], r["setting"]["weight_scale"]) for r in rows})
    for n, scale in keys:
        for method in ("softassign", "dynamical softassign",
                       "dynamical softassign (max-normalized)"):
            group = [r for r in rows if r["method"] == method and r["setting"]["n"] == n
                     and r["setting"]["weight_scale"] == scale]
            numeric = [r for r in group if r["setting"]["beta"] != "auto"]
            best = max(numeric, key=lambda r: (r["accuracy"], r["objective_ratio"]))
            auto = [r["accuracy"] for r in group if r["setting"]["beta"] == "auto"]
            overflow = sum(r.get("naive_overflows", 0) for r in group)
            out.append([n, scale, method, best["setting"]["beta"], best["accuracy"],
                        auto[0] if auto else None,
                        overflow if method == "softassign" else None])
    return out


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    out_dir = Path(out_dir)
    rows = result["results"]
    paths = []

    fig, axes = new_figure(ncols=3, width=4.5)
    for ax, sweep in zip(axes, ("outliers", "density", "deformation")):
        group = [r for r in rows if r["experiment"] == "E4" and r["setting"]["sweep"] == sweep]
        for method in dict.fromkeys(r["method"] for r in group):
            points = [(r["setting"]["value"], r["accuracy"]) for r in group
                      if r["method"] == method]
            ax.plot(*zip(*points), marker="o", label=method)
        ax.set_xlabel(sweep)
        ax.set_ylabel("accuracy (inliers)")
    axes[0].legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / "matching_accuracy_outliers.png"))

    fig, axes = new_figure(ncols=3, width=4.5)
    for ax, family in zip(axes, ("dense", "sparse", "network")):
        group = [r for r in rows if r["experiment"] == "E5" and r["setting"]["family"] == family]
        for method in dict.fromkeys(r["method"] for r in group):
            points = [(r["setting"]["n"], r["time"]) for r in group if r["method"] == method]
            ax.loglog(*zip(*points), marker="o", label=method)
        ax.set_title(f"{family}: apfp slope {result['time_slopes'][family]:.2f}")
        ax.set_xlabel("n")
        ax.set_ylabel("time (s)")
    axes[0].legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / "matching_time_vs_n.png"))

    fig, axes = new_figure()
    for kind in ("edm", "gaussian", "knn", "sparse01"):
        axes[0].hist(result["alpha_star"][kind], bins=20, range=(0, 1), alpha=0.5, label=kind)
    axes[0].set_xlabel("alpha*")
    axes[0].set_ylabel("iterations")
    axes[0].legend()
    paths.append(save_figure(fig, out_dir / "matching_alpha_histogram.png"))

    fig, axes = new_figure()
    for method in ("softassign", "dynamical softassign"):
        for n in sorted({r["setting"]["n"] for r in rows if r["experiment"] == "E3"}):
            points = [(r["setting"]["beta"], r["accuracy"]) for r in rows
                      if r["experiment"] == "E3" and r["method"] == method
                      and r["setting"]["n"] == n and r["setting"]["weight_scale"] == 1.0
                      and r["setting"]["beta"] != "auto"]
            axes[0].semilogx(*zip(*points), marker="o", label=f"{method}, n={n}")
    axes[0].set_xlabel("beta")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / "matching_beta_sensitivity.png"))
    return paths


register(Entry(
    name="matching",
    description="Shen-Niu-Zhu graph matching: adaptive step, dynamical softassign (E1-E5)",
    quick=QUICK,
    full=FULL,
    run=run,
    plot=plot,
))
