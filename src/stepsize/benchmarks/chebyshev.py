"""Chebyshev solvers side by side with scipy's CG and pyamg's Chebyshev polynomial.

`stepsize bench chebyshev [--quick]`. For each SPD problem (dense Q diag(lambda) Q^T, and a
shifted 2-D grid Laplacian as the sparse case, with kappa = 30, 100, 1000) and each precision:

- ``chebyshev_gd``: Chebyshev GD with the spectrum estimated by Lanczos (its matvecs and time are
  included), fractal order, period chosen from the tolerance; sparse batches are solved in column
  blocks that stay in cache;
- ``chebyshev_gd_mixed``: the same with float32 periods and float64 iterative refinement
  (``mixed_precision=True``; float64 rows only);
- ``semi_iterative``: the three-term Chebyshev recurrence on the same estimate;
- ``gd``: the optimal constant step on the same estimate (k = 1 only);
- ``cg_ours``: this library's column-wise batched CG;
- ``scipy_cg``: ``scipy.sparse.linalg.cg`` run once per right-hand side (what a user would write);
- ``pyamg_chebyshev``: pyamg's monomial Chebyshev polynomial of the same degree T as ours,
  restarted until the tolerance (k = 1 only; built for low-degree smoothing, its monomial form
  loses all accuracy at high degree); ``pyamg_chebyshev_deg8``: the same at degree 8.

Every method runs with one BLAS thread (``threads`` in the config), so that the ratios compare
algorithms rather than thread scaling on a shared 2-core machine. Reported: matvecs (column
applications) and median wall time to a relative residual of 1e-6 and 1e-10 (float64) or 1e-6
(float32), the final relative error, and ratios to scipy's CG. A second
table checks the rate goal (per-step rate of T-periodic Chebyshev steps vs the optimal
(sqrt(kappa)-1)/(sqrt(kappa)+1)) and float32 stability up to T = 256 at kappa = 1000.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepsize.benchmarks import Entry, register

QUICK = {"dense_n": [400], "grids": [40], "kappas": [30, 1000], "rhs": [1, 32],
         "dtypes": ["float64", "float32"], "repeats": 1, "periods": [64, 256], "rate_n": 300,
         "threads": 1}
FULL = {"dense_n": [500, 2000], "grids": [32, 100], "kappas": [30, 100, 1000], "rhs": [1, 256],
        "dtypes": ["float64", "float32"], "repeats": 3, "periods": [64, 128, 256], "rate_n": 1000,
        "threads": 1}
# Runs longer than 2 s are measured once (see median_time); the full run takes about 25 minutes.


def dense_problem(n: int, kappa: float, seed: int) -> np.ndarray:
    """Q diag(lambda) Q^T with eigenvalues log-spaced on [1/kappa, 1]."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    W = (Q * np.geomspace(1.0 / kappa, 1.0, n)) @ Q.T
    return (W + W.T) / 2


def sparse_problem(grid: int, kappa: float):
    """2-D grid Laplacian (5-point) shifted so that its condition number is ``kappa``."""
    import scipy.sparse as sp

    one_d = sp.diags([-np.ones(grid - 1), 2 * np.ones(grid), -np.ones(grid - 1)], [-1, 0, 1])
    laplacian = sp.kronsum(one_d, one_d)
    lmax = 4 * (1 - np.cos(np.pi * grid / (grid + 1))) + 0.0
    lmin = 4 * (1 - np.cos(np.pi / (grid + 1)))
    # eigenvalues of the shifted matrix lie in [lmin + s, lmax + s]; choose s for the target kappa
    shift = max((lmax - kappa * lmin) / (kappa - 1), 0.0)
    return sp.csr_array(laplacian + shift * sp.eye(grid * grid))


def _methods(tol: float, seed: int):
    from stepsize.chebyshev import (
        chebyshev_gd,
        chebyshev_semi_iterative,
        conjugate_gradient,
        estimate_spectrum,
        gradient_descent,
        optimal_constant_step,
    )

    cap = 200_000

    def chebyshev(W, C):
        return chebyshev_gd(W, C, tol=tol, max_iter=cap, seed=seed, warn=False)

    def chebyshev_mixed(W, C):
        return chebyshev_gd(W, C, tol=tol, max_iter=cap, seed=seed, warn=False,
                            mixed_precision=True)

    def semi(W, C):
        return chebyshev_semi_iterative(W, C, tol=tol, max_iter=cap, warn=False)

    def gd(W, C):
        spectrum = estimate_spectrum(W, seed=seed)
        result = gradient_descent(W, C, optimal_constant_step(spectrum.lmin, spectrum.lmax),
                                  tol=tol, max_iter=cap, warn=False)
        result.info["matvecs"] += spectrum.matvecs
        return result

    def cg(W, C):
        return conjugate_gradient(W, C, tol=tol, max_iter=cap, warn=False)

    return {"chebyshev_gd": chebyshev, "chebyshev_gd_mixed": chebyshev_mixed,
            "semi_iterative": semi, "gd": gd, "cg_ours": cg}


def _scipy_cg(W, C, tol):
    from scipy.sparse.linalg import cg

    matvecs = [0]

    def count(_):
        matvecs[0] += 1

    columns = C.reshape(C.shape[0], -1)
    X = np.empty_like(columns)
    for j in range(columns.shape[1]):
        X[:, j], _ = cg(W, columns[:, j], rtol=tol, atol=0.0, maxiter=200_000, callback=count)
    return X.reshape(C.shape), matvecs[0] + columns.shape[1]


def _pyamg_chebyshev(W, c, tol, seed, degree=None):
    from pyamg.relaxation.chebyshev import chebyshev_polynomial_coefficients
    from pyamg.relaxation.relaxation import polynomial

    from stepsize.chebyshev import estimate_spectrum

    spectrum = estimate_spectrum(W, seed=seed)
    T = degree or int(np.clip(np.ceil(np.sqrt(spectrum.kappa) * np.log(2 / tol) / 2), 8, 256))
    residual_polynomial = chebyshev_polynomial_coefficients(spectrum.lmin, spectrum.lmax, T)
    coefficients = -residual_polynomial[:-1]
    x = np.zeros_like(c)
    norm_c = np.linalg.norm(c)
    periods = 0
    with np.errstate(over="ignore", invalid="ignore"):  # the monomial form may diverge
        while periods * (T + 1) < 200_000:
            polynomial(W, x, c, coefficients, iterations=1)
            periods += 1
            residual = np.linalg.norm(c - W @ x) / norm_c
            if not np.isfinite(residual) or residual <= tol:
                break
    return x, periods * (T + 1) + spectrum.matvecs


def _relative_error(x, reference) -> float:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.linalg.norm(x - reference) / np.linalg.norm(reference)
    return float(value) if np.isfinite(value) else float("inf")


def _compare(problem_name, W, kappa, k, dtype, tol, repeats, seed, rows):
    from stepsize.benchmarks._timing import median_time

    rng = np.random.default_rng(seed)
    X_true = rng.standard_normal((W.shape[0], k)) if k > 1 else rng.standard_normal(W.shape[0])
    W_cast = W.astype(dtype)
    C = (W @ X_true).astype(dtype)
    reference = np.asarray(X_true, dtype=np.float64)
    base = {"problem": problem_name, "n": W.shape[0], "kappa": kappa, "k": k, "dtype": dtype,
            "tol": tol}
    measured = {}
    for name, method in _methods(tol, seed).items():
        if name == "gd" and k > 1:  # kappa/2 * ln(1/tol) iterations: minutes on batches
            continue
        if name == "chebyshev_gd_mixed" and dtype != "float64":  # refines float64 solves only
            continue
        seconds, result = median_time(lambda m=method: m(W_cast, C), repeats=repeats)
        measured[name] = (seconds, result.info["matvecs"], _relative_error(result.x, reference),
                          bool(result.converged))
    seconds, (x, matvecs) = median_time(lambda: _scipy_cg(W_cast, C, tol), repeats=repeats)
    measured["scipy_cg"] = (seconds, matvecs, _relative_error(x, reference), True)
    if k == 1:
        for name, degree in (("pyamg_chebyshev", None), ("pyamg_chebyshev_deg8", 8)):
            try:
                seconds, (x, matvecs) = median_time(
                    lambda d=degree: _pyamg_chebyshev(W_cast, C, tol, seed, d), repeats=repeats)
            except ImportError:
                break
            error = _relative_error(x, reference)
            measured[name] = (seconds, matvecs, error, bool(error <= 100 * tol))
    reference_time = measured["scipy_cg"][0]
    for name, (seconds, matvecs, error, converged) in measured.items():
        rows.append({**base, "method": name, "seconds": seconds, "matvecs": int(matvecs),
                     "relative_error": error, "converged": converged,
                     "time_ratio_vs_scipy_cg": seconds / reference_time})


def _rate_and_stability(config, seed):
    """Per-step rate of T-periodic Chebyshev GD vs the optimum, and stability by step order.

    A run is stable when its relative error reaches the Chebyshev bound or the round-off floor
    of the precision, ``10 kappa eps`` (the accuracy to which W x = c is determined at all).
    The paper's natural order is run beside the default fractal order, with the exact spectrum.
    """
    from stepsize.chebyshev import chebyshev_bound, chebyshev_gd, estimate_spectrum, optimal_rate

    rows = []
    for kappa in config["kappas"]:
        W = dense_problem(config["rate_n"], kappa, seed)
        exact = np.linalg.eigvalsh(W)
        estimate = estimate_spectrum(W, seed=seed)
        optimum = optimal_rate(exact[0], exact[-1])
        X = np.random.default_rng(seed).standard_normal((W.shape[0], 8))
        cases = (("exact", "fractal", exact[0], exact[-1]),
                 ("lanczos", "fractal", estimate.lmin, estimate.lmax),
                 ("exact", "natural", exact[0], exact[-1]))
        for T in config["periods"]:
            for dtype in config["dtypes"]:
                floor = 10 * kappa * float(np.finfo(dtype).eps)
                for source, order, lmin, lmax in cases:
                    with np.errstate(over="ignore", invalid="ignore"):  # natural overflows
                        result = chebyshev_gd(W.astype(dtype), (W @ X).astype(dtype), lmin=lmin,
                                              lmax=lmax, T=T, max_iter=T, order=order)
                    error = _relative_error(result.x, X)
                    bound = chebyshev_bound(lmin, lmax, T)
                    rows.append({
                        "kappa": kappa, "T": T, "dtype": dtype, "spectrum": source,
                        "order": order, "relative_error": error, "bound": bound,
                        "rate_bound": bound ** (1 / T), "rate_optimal": optimum,
                        "rate_gap": bound ** (1 / T) / optimum - 1,
                        "stable": bool(error <= max(2 * bound, floor)),
                    })
    return rows


def run(config: dict, seed: int) -> dict:
    from stepsize.benchmarks._timing import pinned_threads
    from stepsize.report import table

    rows = []
    with pinned_threads(config["threads"]):
        for kappa in config["kappas"]:
            problems = [("dense", dense_problem(n, kappa, seed)) for n in config["dense_n"]]
            problems += [("sparse grid", sparse_problem(g, kappa)) for g in config["grids"]]
            for problem_name, W in problems:
                for dtype in config["dtypes"]:
                    tolerances = [1e-6] if dtype == "float32" else [1e-6, 1e-10]
                    for tol in tolerances:
                        for k in config["rhs"]:
                            _compare(problem_name, W, kappa, k, dtype, tol, config["repeats"],
                                     seed, rows)
        rate_rows = _rate_and_stability(config, seed)

    columns = ["problem", "n", "kappa", "k", "dtype", "tol", "method", "matvecs", "seconds",
               "rel. error", "x scipy cg time"]
    tables = [table(
        "Time and matvecs to tolerance (relative residual), median of repeats",
        columns,
        [[r["problem"], r["n"], r["kappa"], r["k"], r["dtype"], r["tol"], r["method"],
          r["matvecs"], r["seconds"], r["relative_error"], r["time_ratio_vs_scipy_cg"]]
         for r in rows],
        note="matvecs count column applications and include Lanczos estimation for ours; "
             "x scipy cg time < 1 means faster than scipy's CG per right-hand side")]
    at_max_k = [r for r in rows if r["k"] == max(config["rhs"])]
    best = {}  # fastest Chebyshev GD variant per case: mixed precision where the dtype allows
    for r in at_max_k:
        if r["method"] in ("chebyshev_gd", "chebyshev_gd_mixed"):
            case = (r["problem"], r["n"], r["kappa"], r["dtype"], r["tol"])
            best[case] = max(best.get(case, 0.0), 1 / r["time_ratio_vs_scipy_cg"])
    speedups = [1 / r["time_ratio_vs_scipy_cg"] for r in at_max_k
                if r["method"] == "chebyshev_gd"]
    tables.append(table(
        "Rate and stability of T-periodic Chebyshev steps (dense, one period; stable = error at "
        "the bound or at the round-off floor 10 kappa eps)",
        ["kappa", "T", "dtype", "spectrum", "order", "rel. error", "bound", "rate (bound)",
         "optimal rate", "gap", "stable"],
        [[r["kappa"], r["T"], r["dtype"], r["spectrum"], r["order"], r["relative_error"],
          r["bound"],
          r["rate_bound"], r["rate_optimal"], f"{100 * r['rate_gap']:.2f}%", r["stable"]]
         for r in rate_rows]))
    return {"rows": rows, "rate_rows": rate_rows,
            "chebyshev_speedup_vs_scipy_cg_at_max_k": {"min": min(speedups),
                                                       "median": float(np.median(speedups))},
            "best_chebyshev_speedup_vs_scipy_cg_at_max_k": {
                "min": min(best.values()), "median": float(np.median(list(best.values()))),
                "cases_at_least_5x": sum(v >= 5 for v in best.values()), "cases": len(best)},
            "tables": tables}


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    k = max(r["k"] for r in result["rows"])
    rows = [r for r in result["rows"]
            if r["dtype"] == "float64" and r["tol"] == 1e-10 and r["k"] == k]
    if not rows:
        return []
    cases = sorted({(r["problem"], r["n"], r["kappa"]) for r in rows})
    methods = sorted({r["method"] for r in rows})
    seconds = {(r["problem"], r["n"], r["kappa"], r["method"]): r["seconds"] for r in rows}
    fig, (ax,) = new_figure(width=max(6.0, 1.2 * len(cases)))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [seconds.get((*case, method), np.nan) for case in cases]
        ax.bar(np.arange(len(cases)) + i * width, values, width, label=method)
    ax.set_xticks(np.arange(len(cases)) + 0.4 - width / 2,
                  [f"{p}\nn={n}\nkappa={kappa}" for p, n, kappa in cases], fontsize=7)
    ax.set(yscale="log", ylabel="seconds to relative residual 1e-10",
           title=f"float64, k = {k} right-hand sides")
    ax.legend(fontsize=7)
    return [save_figure(fig, Path(out_dir) / "bench_chebyshev_time.png")]


register(Entry(
    name="chebyshev",
    description="Chebyshev GD / semi-iteration vs scipy cg and pyamg, dense and sparse, k RHS",
    quick=QUICK, full=FULL, run=run, plot=plot, requires=("bench",),
))
