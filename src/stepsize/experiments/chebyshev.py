"""Chebyshev steps on the Takabe-Wadayama instances (`stepsize reproduce chebyshev`).

1. The (n, m) = (300, 600) seed-12 instance: spectrum, the T = 25 steps, contraction factors and
   MSE at T = 25 for GD (optimal constant step), heavy ball, Chebyshev GD (exact spectrum,
   Lanczos estimate, Marchenko-Pastur edges), the semi-iterative method and CG.
2. Float32 MSE by step order on the dense operator (the ordering pitfall).
3. The (300, 450) seed-32 eigenbasis experiment of ``CHGD_MSE.ipynb``: T = 16 repeated 4 times.
4. The eigenvalue-misestimate sweep.
Reference values are the notebooks' printed outputs and the research note's recomputations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepsize._reference.instances import gaussian_gram
from stepsize.experiments import Entry, register

NOTEBOOK = {
    "lmin": 0.184191, "lmax": 5.678371,
    "mse_at_T": {"gd": 1.04384e-3, "chebyshev": 2.45e-8, "chebyshev_marchenko_pastur": 5.88e-8,
                 "conjugate_gradient": 9.0e-9},
    "contraction": {"gd": 0.1974, "chebyshev": 2.223e-4},
    "float32": {"natural": 1.4e3, "descending": 1.0e2, "zigzag": 2.54e-8, "fractal": 2.44e-8},
    "eigenbasis": {16: (1.279, 16.24), 32: (4.07e-3, 4.30), 48: (1.44e-5, 1.49),
                   63: (3.94e-8, 0.608)},
    "misestimate": {("lmax", 0.9): 1.2e3, ("lmax", 0.95): 9.2, ("lmax", 1.1): 3.4e-4,
                    ("lmin", 0.5): 3.3e-3, ("lmin", 1.2): 2.8e-3, ("lmin", 2.0): 2.3e-2},
}

QUICK = {"n": 300, "m": 600, "seed_instance": 12, "T": 25, "samples": 1000, "samples_float32": 1000,
         "eigenbasis_samples": 1000}
FULL = {**QUICK, "samples": 10000, "samples_float32": 2000, "eigenbasis_samples": 10000}


def _mse_curves(W, X, lmin, lmax, T, spectrum_estimate, mp_edges):
    from stepsize.chebyshev import (
        ChebyshevOptions,
        chebyshev_gd,
        chebyshev_semi_iterative,
        conjugate_gradient,
        gradient_descent,
        heavy_ball,
        optimal_constant_step,
    )

    C = W @ X
    scale = float(np.mean(X**2))  # history is relative to ||X*|| because x0 = 0
    period = ChebyshevOptions(T=T)
    runs = {
        "gd": gradient_descent(W, C, optimal_constant_step(lmin, lmax), max_iter=T, x_true=X,
                               history=True),
        "heavy_ball": heavy_ball(W, C, lmin=lmin, lmax=lmax, max_iter=T, x_true=X, history=True),
        "chebyshev": chebyshev_gd(W, C, lmin=lmin, lmax=lmax, x_true=X, history=True,
                                  options=period),
        "chebyshev_lanczos": chebyshev_gd(W, C, spectrum=spectrum_estimate, x_true=X,
                                          history=True, options=period),
        "chebyshev_marchenko_pastur": chebyshev_gd(W, C, lmin=mp_edges[0], lmax=mp_edges[1],
                                                   x_true=X, history=True, options=period),
        "semi_iterative": chebyshev_semi_iterative(W, C, lmin=lmin, lmax=lmax, max_iter=T, x_true=X,
                                                   history=True),
        "conjugate_gradient": conjugate_gradient(W, C, max_iter=T, x_true=X, history=True),
    }
    return {name: (np.asarray(r.history) ** 2 * scale).tolist() for name, r in runs.items()}


def _float32_by_order(W, X, lmin, lmax, T):
    from stepsize.chebyshev import ORDERS, ChebyshevOptions, chebyshev_gd

    W32, X32 = W.astype(np.float32), X.astype(np.float32)
    C32 = W32 @ X32
    result = {}
    for order in ORDERS:
        # the paper's natural order is expected to blow up in float32: measured, not warned
        x = chebyshev_gd(W32, C32, lmin=lmin, lmax=lmax, warn=False,
                         options=ChebyshevOptions(T=T, order=order)).x
        with np.errstate(over="ignore", invalid="ignore"):
            result[order] = float(np.mean((x.astype(np.float64) - X) ** 2))
    return result


def _eigenbasis(samples: int, seed: int):
    """CHGD_MSE.ipynb: W = diag(eig), x* = 0, x0 ~ N(1, 1), metric sum ||x_t||^2 / samples."""
    from stepsize.chebyshev import (
        ChebyshevOptions,
        chebyshev_gd,
        chebyshev_semi_iterative,
        gradient_descent,
        optimal_constant_step,
    )

    eigenvalues = np.linalg.eigvalsh(gaussian_gram(300, 450, 32))
    lmin, lmax = eigenvalues[0], eigenvalues[-1]
    W = np.diag(eigenvalues)
    X0 = np.random.default_rng(seed).normal(1.0, 1.0, (300, samples))
    zero = np.zeros_like(X0)
    start = float(np.sum(X0**2)) / samples

    def curve(result):
        return (np.asarray(result.history) ** 2 * start).tolist()

    chgd = chebyshev_gd(W, zero, lmin=lmin, lmax=lmax, x0=X0, max_iter=64, x_true=zero,
                        history=True, options=ChebyshevOptions(T=16, order="natural"))
    gd = gradient_descent(W, zero, optimal_constant_step(lmin, lmax), x0=X0, max_iter=64,
                          x_true=zero, history=True)
    semi = chebyshev_semi_iterative(W, zero, lmin=lmin, lmax=lmax, x0=X0, max_iter=16, x_true=zero,
                                    history=True)
    return {"lmin": float(lmin), "lmax": float(lmax), "chebyshev": curve(chgd), "gd": curve(gd),
            "semi_iterative_16": curve(semi)[16]}


def _misestimate(eigenvalues, T):
    from stepsize.chebyshev import chebyshev_steps, contraction_factor, expected_squared_error

    lmin, lmax = eigenvalues[0], eigenvalues[-1]
    rows = []
    for end, factor in [("lmax", 0.9), ("lmax", 0.95), ("lmax", 1.05), ("lmax", 1.1),
                        ("lmin", 0.5), ("lmin", 1.2), ("lmin", 2.0)]:
        low, high = (lmin, lmax * factor) if end == "lmax" else (lmin * factor, lmax)
        steps = chebyshev_steps(low, high, T)
        rows.append({"end": end, "factor": factor,
                     "contraction": contraction_factor(steps, eigenvalues),
                     "expected_mse": expected_squared_error(steps, eigenvalues)})
    return rows


def run(config: dict, seed: int) -> dict:
    from stepsize.chebyshev import (
        chebyshev_bound,
        chebyshev_steps,
        contraction_factor,
        estimate_spectrum,
        expected_squared_error,
        marchenko_pastur_edges,
        optimal_constant_step,
    )

    n, m, T = config["n"], config["m"], config["T"]
    W = gaussian_gram(n, m, config["seed_instance"])
    eigenvalues = np.linalg.eigvalsh(W)
    lmin, lmax = float(eigenvalues[0]), float(eigenvalues[-1])
    steps = chebyshev_steps(lmin, lmax, T, order="natural")
    estimate = estimate_spectrum(W, seed=seed)
    mp_edges = marchenko_pastur_edges(n, m, 1.0 / n)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, config["samples"]))
    curves = _mse_curves(W, X, lmin, lmax, T, estimate, mp_edges)
    mse_at_T = {name: curve[T] for name, curve in curves.items()}
    gd_steps = np.full(T, optimal_constant_step(lmin, lmax))
    contraction = {"gd": contraction_factor(gd_steps, eigenvalues),
                   "chebyshev": contraction_factor(steps, eigenvalues),
                   "bound": chebyshev_bound(lmin, lmax, T)}
    expected = {"gd": expected_squared_error(gd_steps, eigenvalues),
                "chebyshev": expected_squared_error(steps, eigenvalues)}
    float32 = _float32_by_order(W, rng.standard_normal((n, config["samples_float32"])), lmin,
                                lmax, T)
    eigenbasis = _eigenbasis(config["eigenbasis_samples"], seed)
    misestimate = _misestimate(eigenvalues, T)
    rates = {t: chebyshev_bound(lmin, lmax, t) ** (1 / t) for t in (5, 10, 25, 50, 100, 400)}

    result = {
        "lmin": lmin, "lmax": lmax, "steps": steps, "mse_at_T": mse_at_T,
        "expected_mse_at_T": expected, "contraction": contraction,
        "float32_mse_by_order": float32, "mse_curves": curves,
        "spectrum_estimate": {"lmin": estimate.lmin, "lmax": estimate.lmax,
                              "matvecs": estimate.matvecs},
        "eigenbasis": eigenbasis, "misestimate": misestimate,
        "rate_by_T": {str(t): r for t, r in rates.items()},
        "eigenvalues": eigenvalues,
    }
    result["tables"] = _tables(result, config, mp_edges, rates)
    return result


def _tables(result: dict, config: dict, mp_edges, rates: dict) -> list[dict]:
    """The report's tables: ours beside the notebooks' and the research note's values."""
    from stepsize.chebyshev import optimal_rate
    from stepsize.report import table

    T, lmin, lmax = config["T"], result["lmin"], result["lmax"]
    estimate, mse_at_T, expected = (result["spectrum_estimate"], result["mse_at_T"],
                                    result["expected_mse_at_T"])
    curves, contraction, eigenbasis = (result["mse_curves"], result["contraction"],
                                       result["eigenbasis"])
    float32, misestimate = result["float32_mse_by_order"], result["misestimate"]
    ref = NOTEBOOK
    return [
        table("Spectrum of A^T A, (n, m) = (300, 600), seed 12", ["quantity", "ours", "notebook"], [
            ["lmin (exact)", lmin, ref["lmin"]], ["lmax (exact)", lmax, ref["lmax"]],
            ["kappa", lmax / lmin, 30.8288],
            ["lmin, Lanczos + safety", estimate["lmin"], None],
            ["lmax, Lanczos + safety", estimate["lmax"], None],
            ["Lanczos matvecs", estimate["matvecs"], None],
            ["Marchenko-Pastur edges", f"[{mp_edges[0]:.4f}, {mp_edges[1]:.4f}]",
             "[0.1716, 5.8284]"]],
            note="notebook: DUGD_LMS_example.ipynb printed values"),
        table(f"MSE at T = {T} (x0 = 0, x* ~ N(0, I), {config['samples']} samples)",
              ["method", "MSE (simulated)", "MSE (expected)", "paper / note"], [
                  ["GD, optimal constant step", mse_at_T["gd"], expected["gd"],
                   ref["mse_at_T"]["gd"]],
                  ["heavy ball (optimal)", mse_at_T["heavy_ball"], None, None],
                  ["Chebyshev GD, exact spectrum", mse_at_T["chebyshev"], expected["chebyshev"],
                   ref["mse_at_T"]["chebyshev"]],
                  ["Chebyshev GD, Lanczos estimate", mse_at_T["chebyshev_lanczos"], None, None],
                  ["Chebyshev GD, Marchenko-Pastur", mse_at_T["chebyshev_marchenko_pastur"], None,
                   ref["mse_at_T"]["chebyshev_marchenko_pastur"]],
                  ["Chebyshev semi-iterative", mse_at_T["semi_iterative"], None, None],
                  ["conjugate gradient", mse_at_T["conjugate_gradient"], None,
                   ref["mse_at_T"]["conjugate_gradient"]]],
              note="reference: notebook (GD) and the research note's recomputations"),
        table("MSE vs iteration t (intermediate Chebyshev GD iterates are not meaningful)",
              ["t", *curves],
              [[t, *(curve[t] for curve in curves.values())]
               for t in sorted({0, 1, 5, 10, 15, 20, T - 1, T})]),
        table(f"Contraction factor rho(Q_{T})", ["steps", "ours", "note"], [
            ["optimal constant", contraction["gd"], ref["contraction"]["gd"]],
            ["Chebyshev", contraction["chebyshev"], ref["contraction"]["chebyshev"]],
            ["bound 1/T_T((k+1)/(k-1))", contraction["bound"], 2.2233e-4]]),
        table(f"Float32 MSE at T = {T} by step order (dense operator)",
              ["order", "ours", "note"],
              [[order, value, ref["float32"][order]] for order, value in float32.items()],
              note="natural is the paper's code order; fractal is this library's default"),
        table("Eigenbasis instance (300, 450), seed 32, T = 16 periodic: sum ||x_t||^2",
              ["t", "Chebyshev GD", "note", "GD", "note"],
              [[t, eigenbasis["chebyshev"][t], cheb, eigenbasis["gd"][t], gd]
               for t, (cheb, gd) in ref["eigenbasis"].items()],
              note=f"semi-iterative at t = 16: {eigenbasis['semi_iterative_16']:.4g} "
                   "(equals Chebyshev GD at t = T)"),
        table("Eigenvalue misestimate, T = 25", ["interval", "rho(Q_T)", "expected MSE", "note"],
              [[f"{row['end']} x {row['factor']}", row["contraction"], row["expected_mse"],
                ref["misestimate"].get((row["end"], row["factor"]))] for row in misestimate]),
        table("Per-step rate of Chebyshev steps vs T", ["T", "rate", "limit r"],
              [[t, rate, optimal_rate(lmin, lmax)] for t, rate in rates.items()]),
    ]


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    fig, (ax,) = new_figure()
    for name, curve in result["mse_curves"].items():
        ax.semilogy(curve, label=name.replace("_", " "))
    ax.set(xlabel="iteration t", ylabel="MSE", title="(300, 600) instance, x0 = 0")
    ax.legend(fontsize=8)
    paths = [save_figure(fig, Path(out_dir) / "chebyshev_mse.png")]

    fig, (ax,) = new_figure(height=3.0)
    ax.hist(result["eigenvalues"], bins=60, color="0.8", label="eigenvalues of A^T A")
    roots = 1.0 / np.asarray(result["steps"])
    ax.vlines(roots, 0, ax.get_ylim()[1] * 0.6, color="C3", label="1 / Chebyshev step")
    ax.set(xlabel="lambda", title="Chebyshev roots against the spectrum (T = 25)")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, Path(out_dir) / "chebyshev_steps.png"))
    return paths


register(Entry(
    name="chebyshev",
    description="Chebyshev steps on the (300, 600) DUGD instance: MSE, orders, spectra, bounds",
    quick=QUICK, full=FULL, run=run, plot=plot,
))
