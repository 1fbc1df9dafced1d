"""Chebyshev-PSOR on the Jacobi example of ``Jacobi.ipynb`` (`stepsize reproduce psor`).

Solve P x = 0 with P = I + M^T M (n = 512, M ~ N(0, 0.03^2), torch seed 0) by Jacobi, the best
constant over-relaxation omega = 2 / (lmin + lmax) and Chebyshev-PSOR with T = 8, from
x0 ~ N(0, I), for 24 iterations. Reference: per-step factors 0.9216 (Jacobi), 0.4792 (constant),
0.2783 (Chebyshev-PSOR, the T = 8 bound), and the numpy re-simulation of the research note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepsize._reference.instances import jacobi_instance
from stepsize.experiments import Entry, register

NOTEBOOK = {"lmin": 0.676575, "lmax": 1.921624, "omega_sor": 0.76976,
            "factor": {"jacobi": 0.9216, "constant": 0.4792, "chebyshev": 0.2783},
            "relative_norm_24": {"jacobi": 0.23 / 21.9, "constant": 1.1e-7 / 21.9,
                                 "chebyshev": 4.7e-13 / 21.9}}

QUICK = {"n": 512, "T": 8, "iterations": 24, "samples": 10}
FULL = {**QUICK, "samples": 100}


def run(config: dict, seed: int) -> dict:
    from stepsize.chebyshev import (
        chebyshev_bound,
        chebyshev_psor,
        chebyshev_steps,
        contraction_factor,
        jacobi_map,
        jacobi_spectrum,
        optimal_constant_step,
        psor,
    )
    from stepsize.report import table

    n, T, iterations = config["n"], config["T"], config["iterations"]
    P = jacobi_instance(n, 0)
    spectrum = jacobi_spectrum(P)
    lmin, lmax = spectrum.lmin, spectrum.lmax
    eigenvalues = np.linalg.eigvals(P / np.diag(P)[:, None]).real
    zero = np.zeros((n, config["samples"]))
    fixed_point_map = jacobi_map(P, zero)
    X0 = np.random.default_rng(seed).standard_normal((n, config["samples"]))
    omega = optimal_constant_step(lmin, lmax)
    runs = {
        "jacobi": psor(fixed_point_map, X0, 1.0, max_iter=iterations, x_true=zero, history=True),
        "constant": psor(fixed_point_map, X0, omega, max_iter=iterations, x_true=zero,
                         history=True),
        "chebyshev": chebyshev_psor(fixed_point_map, X0, lmin=lmin, lmax=lmax, T=T,
                                    max_iter=iterations, x_true=zero, history=True),
    }
    curves = {name: list(r.history) for name, r in runs.items()}
    measured = {name: curve[iterations] ** (1 / iterations) for name, curve in curves.items()}
    theory = {
        "jacobi": contraction_factor([1.0], eigenvalues),
        "constant": contraction_factor([omega], eigenvalues),
        "chebyshev": contraction_factor(chebyshev_steps(lmin, lmax, T), eigenvalues) ** (1 / T),
    }
    ref = NOTEBOOK
    tables = [
        table("Spectrum of I - J = D^-1 P", ["quantity", "ours", "notebook"], [
            ["lmin", lmin, ref["lmin"]], ["lmax", lmax, ref["lmax"]],
            ["omega (constant SOR)", omega, ref["omega_sor"]],
            [f"1 / T_{T} per period", chebyshev_bound(lmin, lmax, T), 3.6e-5]]),
        table(f"Per-step contraction over {iterations} iterations",
              ["method", "measured", "theory", "note", f"||x_{iterations}|| / ||x_0||",
               "note (numpy re-simulation)"],
              [[name, measured[name], theory[name], ref["factor"][name],
                curves[name][iterations], ref["relative_norm_24"][name]] for name in runs],
              note="theory: spectral radius per step (Chebyshev: rho(Q_T)^(1/T))"),
    ]
    return {"lmin": lmin, "lmax": lmax, "omega_constant": omega, "per_step_factor": measured,
            "per_step_factor_theory": theory, "curves": curves, "tables": tables}


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    fig, (ax,) = new_figure()
    labels = {"jacobi": "Jacobi", "constant": "constant over-relaxation",
              "chebyshev": "Chebyshev-PSOR (T = 8)"}
    for name, curve in result["curves"].items():
        ax.semilogy(curve, marker="o", markersize=3, label=labels[name])
    ax.set(xlabel="iteration k", ylabel="||x_k|| / ||x_0||", title="Jacobi, n = 512")
    ax.legend(fontsize=8)
    return [save_figure(fig, Path(out_dir) / "psor_jacobi.png")]


register(Entry(
    name="psor",
    description="Chebyshev-PSOR vs Jacobi and constant SOR on the n = 512 Jacobi example",
    quick=QUICK, full=FULL, run=run, plot=plot,
))
