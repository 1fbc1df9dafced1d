"""Matrix perspective prox (Won, NeurIPS 2020): correctness, speed, Gaussian MLE
(`stepsize reproduce prox`).

1. Agreement with CVXPY's SDP (Clarabel) for small p: objective gap, solution distance, KKT.
2. Special cases with closed forms: the author's regression instance, the zero region and its
   boundary, y = 0, p = 1 against the scalar cubic, orthogonal equivariance, homogeneity.
3. Firm nonexpansiveness on random pairs.
4. Newton iterations and time against p (the author's table as reference), log-log slope.
5. The constrained Gaussian MLE (``constrained_gaussian_mle``, its default dual Newton method)
   against CVXPY (synthetic n = 2p, diabetes).

Reference values: research note ``../shared/research/matrix_perspective_prox.md`` (sections 3.1,
4, 7).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from stepsize.experiments import Entry, register

AUTHOR_OMEGA = [[1.066944081426201, 0.2111491993644736, 0.0],
                [0.2111491993644736, 0.6659884405376072, 0.0], [0.0, 0.0, 0.0]]
AUTHOR_ETA = [0.6340926854346827, 0.845886972140417, 0.0]


def _prox_objective(X, y, sigma, Omega, eta):
    from stepsize.prox import matrix_perspective

    return (sigma * matrix_perspective(Omega, eta) + 0.5 * float(np.sum((Omega - X) ** 2))
            + 0.5 * float(np.sum((eta - y) ** 2)))


def _cvxpy_agreement(config, rng):
    from stepsize._reference.cvxpy_prox import cvxpy_prox
    from stepsize._reference.prox_instances import random_prox_instance
    from stepsize.prox import kkt_residuals, prox_matrix_perspective

    rows, gaps, kkts = [], [], []
    for p in config["cvxpy_sizes"]:
        for sigma in config["sigmas"]:
            worst = {"gap": 0.0, "omega": 0.0, "eta": 0.0, "kkt": 0.0, "kkt_cvx": 0.0}
            for _ in range(config["cvxpy_instances"]):
                X, y = random_prox_instance(rng, p, sigma)
                Omega, eta = prox_matrix_perspective(X, y, sigma).x
                # the solver's own optimal value: its Omega may sit just outside phi's domain
                Omega_c, eta_c, theirs = cvxpy_prox(X, y, sigma)
                ours = _prox_objective(X, y, sigma, Omega, eta)
                gap = (ours - theirs) / max(1.0, abs(theirs))
                worst["gap"] = gap if abs(gap) > abs(worst["gap"]) else worst["gap"]
                worst["omega"] = max(worst["omega"], np.linalg.norm(Omega - Omega_c)
                                     / max(1.0, np.linalg.norm(Omega_c)))
                worst["eta"] = max(worst["eta"], np.linalg.norm(eta - eta_c)
                                   / max(1.0, np.linalg.norm(eta_c)))
                worst["kkt"] = max(worst["kkt"], kkt_residuals(X, y, sigma, Omega, eta).max)
                worst["kkt_cvx"] = max(worst["kkt_cvx"],
                                       kkt_residuals(X, y, sigma, Omega_c, eta_c).max)
            gaps.append(worst["gap"])
            kkts.append(worst["kkt"])
            rows.append([p, sigma, config["cvxpy_instances"], worst["gap"], worst["omega"],
                         worst["eta"], worst["kkt"], worst["kkt_cvx"]])
    return rows, max(gaps, key=abs), max(kkts)


def _special_cases(rng):
    from stepsize.prox import matrix_perspective, prox_matrix_perspective

    rows = []
    X, y = np.diag([1.0, 0.0, -1.0]), np.array([1.0, 2.0, 0.0])
    info = prox_matrix_perspective(X, y, 1.0)
    Omega, eta = info.x
    error = max(np.abs(Omega - AUTHOR_OMEGA).max(), np.abs(eta - AUTHOR_ETA).max())
    rows.append(["author instance diag(1,0,-1), (1,2,0)", error, 1e-12])
    rows.append(["certificate sigma - t* vs phi(Omega*, eta*)",
                 abs(info.certificate - matrix_perspective(Omega, eta)), 1e-12])
    Omega, eta = prox_matrix_perspective(-10 * np.eye(3), y, 1.0).x
    rows.append(["zero region X = -10 I", max(np.abs(Omega).max(), np.abs(eta).max()), 0.0])
    v = np.array([1.0, -2.0, 0.5])
    for shift in (-1e-12, 1e-12):
        X_boundary = -np.outer(v, v) / 1.4 + shift * np.eye(3)
        Omega, eta = prox_matrix_perspective(X_boundary, v, 0.7).x
        rows.append([f"boundary X = -y y^T/(2 sigma) {shift:+.0e} I",
                     max(np.abs(Omega).max(), np.abs(eta).max()), 1e-10])
    B = rng.standard_normal((8, 8))
    X = (B + B.T) / 2
    w, V = np.linalg.eigh(X)
    Omega, eta = prox_matrix_perspective(X, np.zeros(8), 2.0).x
    rows.append(["y = 0 gives (PSD part of X, 0)",
                 np.abs(Omega - (V * np.maximum(w, 0)) @ V.T).max() + np.abs(eta).max(), 1e-12])
    worst = 0.0
    for _ in range(20):
        omega, z, sigma = rng.normal(0, 2), rng.normal(0, 2), 10 ** rng.uniform(-2, 2)
        Omega, eta = prox_matrix_perspective([[omega]], [z], sigma).x
        expected = (0.0, 0.0)
        if omega + z * z / (2 * sigma) > 0:
            roots = np.roots([sigma / 2, 0.0, sigma + omega, -abs(z)])
            s = max(r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0)
            expected = (omega + sigma * s * s / 2, z - sigma * s * np.sign(z))
        worst = max(worst, abs(Omega[0, 0] - expected[0]), abs(eta[0] - expected[1]))
    rows.append(["p = 1 against the Combettes-Mueller cubic (20 draws)", worst, 1e-10])
    X, y = (B + B.T) / 2, rng.standard_normal(8)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    Omega, eta = prox_matrix_perspective(X, y, 1.3).x
    Omega_q, eta_q = prox_matrix_perspective(Q @ X @ Q.T, Q @ y, 1.3, symmetrize=True).x
    rows.append(["orthogonal equivariance",
                 max(np.abs(Omega_q - Q @ Omega @ Q.T).max(), np.abs(eta_q - Q @ eta).max()),
                 1e-11])
    Omega_c, eta_c = prox_matrix_perspective(1e3 * X, 1e3 * y, 1.3e3).x
    rows.append(["homogeneity prox(cX, cy; c sigma) = c prox (c = 1e3), relative",
                 max(np.abs(Omega_c - 1e3 * Omega).max(), np.abs(eta_c - 1e3 * eta).max()) / 1e3,
                 1e-10])
    for row in rows:
        row.append(bool(row[1] <= row[2]))
    return rows


def _firm_nonexpansiveness(config, rng):
    from stepsize._reference.prox_instances import random_prox_instance
    from stepsize.prox import prox_matrix_perspective

    rows = []
    for p in config["pair_sizes"]:
        worst, worst_lipschitz = -math.inf, 0.0
        for _ in range(config["pairs"]):
            Xa, ya = random_prox_instance(rng, p)
            Xb, yb = random_prox_instance(rng, p)
            Xb, yb = rng.uniform(0.1, 3) * Xb, rng.uniform(0.1, 3) * yb
            Oa, ea = prox_matrix_perspective(Xa, ya, 1.0).x
            Ob, eb = prox_matrix_perspective(Xb, yb, 1.0).x
            moved = np.sum((Oa - Ob) ** 2) + np.sum((ea - eb) ** 2)
            inner = np.sum((Oa - Ob) * (Xa - Xb)) + (ea - eb) @ (ya - yb)
            distance = np.sum((Xa - Xb) ** 2) + np.sum((ya - yb) ** 2)
            worst = max(worst, (moved - inner) / distance)
            worst_lipschitz = max(worst_lipschitz, math.sqrt(moved / distance))
        rows.append([p, config["pairs"], worst, worst_lipschitz, bool(worst <= 1e-10)])
    return rows


def _speed(config, rng):
    from stepsize._reference.prox_instances import (
        AUTHOR_TIMINGS,
        loglog_slope,
        random_prox_instance,
    )
    from stepsize._reference.timing import median_time, pinned_threads
    from stepsize.prox import kkt_residuals, prox_matrix_perspective

    rows, time_by_p, iterations_by_p, kkt_max = [], {}, {}, 0.0
    with pinned_threads(config["threads"]):
        for p in config["speed_sizes"]:
            seconds, iterations = [], []
            for _ in range(config["speed_instances"]):
                X, y = random_prox_instance(rng, p)
                elapsed, info = median_time(
                    lambda X=X, y=y: prox_matrix_perspective(X, y, 1.0),
                    repeats=config["speed_repeats"])
                Omega, eta = info.x
                seconds.append(elapsed)
                iterations.append(info.n_iter)
            if p <= config["kkt_max_size"]:
                kkt_max = max(kkt_max, kkt_residuals(X, y, 1.0, Omega, eta).max)
            time_by_p[p] = float(np.median(seconds))
            iterations_by_p[p] = float(np.mean(iterations))
            author = AUTHOR_TIMINGS.get(p, (None, None, None, None))
            rows.append([p, iterations_by_p[p], max(iterations), time_by_p[p], author[0],
                         author[1], None if author[1] is None else author[1] / time_by_p[p]])
    large = [p for p in time_by_p if p >= 100]
    slope = loglog_slope(large, [time_by_p[p] for p in large]) if len(large) >= 2 else None
    return rows, time_by_p, iterations_by_p, kkt_max, slope


def _mle(config, rng):
    from stepsize._reference.cvxpy_prox import cvxpy_gaussian_mle
    from stepsize.prox import constrained_gaussian_mle, sample_moments

    cases = []
    for p in config["mle_sizes"]:
        Sigma = 0.3 * np.ones((p, p)) + 0.7 * np.eye(p)
        data = rng.multivariate_normal(np.full(p, 0.5), Sigma, size=2 * p)
        cases.append((f"synthetic p={p}, n={2 * p}, m=5", data, np.eye(p)[: min(5, p)]))
    from sklearn.datasets import load_diabetes

    data = load_diabetes().data
    data = (data - data.mean(axis=0)) / data.std(axis=0)
    cases.append(("diabetes p=10, n=442, caps 0.8 on 4 variances", data,
                  np.eye(10)[:4] / math.sqrt(0.8)))
    rows, gaps, histories = [], [], {}
    for name, data, caps in cases:
        start = time.perf_counter()
        result = constrained_gaussian_mle(data, caps, max_iter=config["mle_maxiter"])
        ours_s = time.perf_counter() - start
        second, mean = sample_moments(data)
        start = time.perf_counter()
        Omega_c, _, value_c = cvxpy_gaussian_mle(second, mean, caps)
        cvxpy_s = time.perf_counter() - start
        gap = (result.objective - value_c) / abs(value_c)
        gaps.append(gap)
        histories[name] = {"objective": result.history, "cvxpy": value_c}
        rows.append([name, result.n_iter, result.converged, result.objective, value_c, gap,
                     float(np.linalg.norm(result.x[0] - Omega_c) / np.linalg.norm(Omega_c)),
                     result.constraint_violation, ours_s, 1e3 * ours_s / max(result.n_iter, 1),
                     # the prox's share of the time ("dual_newton" calls no prox: 0)
                     result.info.get("prox_seconds", 0.0) / result.info["seconds"], cvxpy_s])
    return rows, max(gaps, key=abs), histories


def _rounded(value):
    return None if value is None else round(value, 2)


def run(config: dict, seed: int) -> dict:
    from stepsize.report import table

    rng = np.random.default_rng(seed)
    cvxpy_rows, cvxpy_gap, cvxpy_kkt = _cvxpy_agreement(config, rng)
    special_rows = _special_cases(rng)
    pair_rows = _firm_nonexpansiveness(config, rng)
    speed_rows, time_by_p, iterations_by_p, speed_kkt, slope = _speed(config, rng)
    mle_rows, mle_gap, histories = _mle(config, rng)
    tables = [
        table("Prox vs CVXPY SDP (Clarabel), worst over instances",
              ["p", "sigma", "instances", "largest gap (ours-cvx)/|cvx|", "|Omega-Omega_cvx|",
               "|eta-eta_cvx|", "KKT ours", "KKT cvxpy"], cvxpy_rows,
              note="negative gap: ours lower; research note E1 pass: |gap| <= 1e-7, "
                   "distance <= 1e-5, KKT ours <= 1e-9"),
        table("Special cases (closed forms and oracle values)", ["case", "error", "bound", "pass"],
              special_rows, note="author values: MatrixPerspective.jl test/runtests.jl"),
        table("Firm nonexpansiveness on random pairs (sigma = 1)",
              ["p", "pairs", "max (|Pa-Pb|^2 - <Pa-Pb,a-b>)/|a-b|^2", "max Lipschitz ratio",
               "pass"], pair_rows),
        table("Newton iterations and time vs p (sigma = 1, median)",
              ["p", "mean iterations", "max iterations", "seconds", "author iterations",
               "author seconds (Julia)", "author / ours"], speed_rows,
              note=f"fitted log-log slope (p >= 100): {_rounded(slope)}; author: Julia 1.5.1 on"
                   f" an i5-8279U laptop; ours: {config['threads']} BLAS thread(s) on a shared"
                   " 2-core machine"),
        table("Constrained Gaussian MLE: dual Newton (the default method) vs CVXPY (Clarabel)",
              ["problem", "iterations", "converged", "objective", "CVXPY objective",
               "relative gap", "|Omega - Omega_cvx| rel", "cap violation", "ours s",
               "ms / iteration", "prox share", "CVXPY s"],
              mle_rows),
    ]
    return {
        "time_by_p": time_by_p,
        "newton_iterations_by_p": iterations_by_p,
        "loglog_slope": slope,
        "max_kkt_residual": max(cvxpy_kkt, speed_kkt),
        "cvxpy_objective_gap": cvxpy_gap,
        "mle_objective_gap": mle_gap,
        "mle_histories": histories,
        "tables": tables,
    }


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize._reference.prox_instances import AUTHOR_TIMINGS
    from stepsize.report import new_figure, save_figure

    paths = []
    sizes = sorted(int(p) for p in result["time_by_p"])
    seconds = [result["time_by_p"][p] if p in result["time_by_p"] else result["time_by_p"][str(p)]
               for p in sizes]
    fig, (ax,) = new_figure()
    ax.loglog(sizes, seconds, "o-", label="stepsize prox_matrix_perspective")
    author = sorted(AUTHOR_TIMINGS)
    ax.loglog(author, [AUTHOR_TIMINGS[p][1] for p in author], "s--", label="author, Julia (laptop)")
    slope = result.get("loglog_slope")
    if slope is not None:
        ax.set_title(f"prox time vs p (fitted slope {slope:.2f} for p >= 100)")
    ax.set_xlabel("p")
    ax.set_ylabel("seconds")
    ax.legend()
    paths.append(save_figure(fig, out_dir / "prox_time_vs_p.png"))

    fig, (ax,) = new_figure()
    iterations = result["newton_iterations_by_p"]
    ax.semilogx(sizes, [iterations.get(p, iterations.get(str(p))) for p in sizes], "o-",
                label="stepsize")
    ax.semilogx(author, [AUTHOR_TIMINGS[p][0] for p in author], "s--", label="author")
    ax.axhline(8, color="gray", lw=0.8)
    ax.set_xlabel("p")
    ax.set_ylabel("mean Newton iterations")
    ax.legend()
    paths.append(save_figure(fig, out_dir / "prox_iterations_vs_p.png"))

    fig, (ax,) = new_figure()
    for name, history in result["mle_histories"].items():
        gap = np.abs(np.asarray(history["objective"], float) - history["cvxpy"])
        gap = np.maximum(gap / abs(history["cvxpy"]), 1e-16)
        ax.semilogy(np.arange(gap.size), gap, label=name)
    ax.set_xlabel("dual Newton step (0: the start)")
    ax.set_ylabel("|F - F_cvxpy| / |F_cvxpy|")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / "prox_mle_convergence.png"))
    return paths


register(Entry(
    name="prox",
    description="Won 2020: matrix perspective prox, exactness, speed vs p, Gaussian MLE",
    quick={"cvxpy_sizes": [2, 5, 10, 20], "sigmas": [0.1, 1.0, 10.0], "cvxpy_instances": 2,
           "pair_sizes": [5, 50], "pairs": 20, "speed_sizes": [10, 30, 100, 300, 1000],
           "speed_instances": 2, "speed_repeats": 3, "kkt_max_size": 300, "threads": 1,
           "mle_sizes": [10], "mle_maxiter": 20000},
    full={"cvxpy_sizes": [2, 5, 10, 20, 50], "sigmas": [0.1, 1.0, 10.0], "cvxpy_instances": 10,
          "pair_sizes": [5, 50, 200], "pairs": 200,
          "speed_sizes": [10, 30, 50, 100, 300, 500, 1000, 2000], "speed_instances": 10,
          "speed_repeats": 5, "kkt_max_size": 1000, "threads": 1, "mle_sizes": [10, 20, 50],
          "mle_maxiter": 50000},
    run=run,
    plot=plot,
    requires=("bench",),
))
