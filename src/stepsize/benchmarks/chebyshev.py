"""Chebyshev solvers on real SPD matrices, side by side with what a user would run instead.

`stepsize bench chebyshev [--quick]`. Problems nobody here wrote: every SPD matrix that pyamg
ships (``pyamg.gallery.load_example``; a matrix counts when it is real, symmetric, with a
positive diagonal and a positive smallest eigenvalue), pyamg's gallery Poisson 2-D and 3-D,
linear elasticity (2-D, Q1 elements) and an anisotropic diffusion (rotated, epsilon = 0.001),
plus one dense SPD matrix with a log-spaced spectrum. One right-hand side per problem, shared by
every peer, relative residual tolerance 1e-8 (as ``rtol`` in ``scipy.sparse.linalg.cg``):

- scipy ``cg`` with no preconditioner, Jacobi (``diags(1 / diag(A))``) and pyamg smoothed
  aggregation AMG (``smoothed_aggregation_solver(A).aspreconditioner()``), each the PCG reference
  of its row group;
- ``chebyshev_gd`` with ``M=None``, ``"jacobi"`` and the same AMG solver (the interval of M A is
  estimated from its first 15 CG steps, whose matvecs and time are included);
- a direct solve: ``splu`` (sparse; factor and solve timed apart) or ``cho_factor``/``cho_solve``
  (dense);
- PETSc ``KSPCHEBYSHEV`` (eigenvalues estimated by 15 CG steps, interval ``[theta_min,
  1.1 theta_max]``, the same rule as ours) and ``KSPCG``, with ``PCNONE`` and ``PCJACOBI``, when
  petsc4py is importable: in this interpreter, or in a system Python (Debian's
  ``python3-petsc4py``) run as a subprocess. Otherwise the rows say it was skipped.

Every solve runs with one BLAS thread; times are medians (:func:`_timed`). A ``goal`` column
holds the issue's target for preconditioned Chebyshev: matvecs at most 1.5x and time at most 2x
those of PCG with the same M. Further tables: batched solves (k right-hand sides, no
preconditioner and Jacobi: ours, our batched CG, the factorization reused for all columns), the
safety of ``estimate_spectrum`` (its interval against ``eigvalsh``/``eigsh``; pyamg's singular
``unit_square`` and a log-spaced diagonal included), the V-cycle convergence factor and time per
cycle of our Chebyshev smoother (``attach_smoothers``) against pyamg's at degree 3 (left out,
with the reason in ``smoother_note``, when ``stepsize.chebyshev.smoothers`` is missing), and the
rate and stability of T-periodic Chebyshev steps (the paper's rate goal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stepsize.benchmarks import Entry, register

QUICK = {"examples": ["airfoil", "knot", "unit_cube"], "poisson_2d": 48, "poisson_3d": 12,
         "elasticity": 16, "anisotropic": 40, "dense_n": 300, "dense_kappa": 1e3,
         "diagonal_n": 2000, "rhs": 8, "batched": None, "tol": 1e-8, "repeats": 1,
         "fill_s": 0.2, "petsc": True, "smoother_grid": 64, "smoother_cycles": 8,
         "kappas": [30, 1000], "periods": [64, 256], "rate_n": 300,
         "dtypes": ["float64", "float32"], "threads": 1}
FULL = {"examples": None, "poisson_2d": 200, "poisson_3d": 30, "elasticity": 60,
        "anisotropic": 150, "dense_n": 2000, "dense_kappa": 1e3, "diagonal_n": 2000, "rhs": 32,
        "batched": None,
        "tol": 1e-8, "repeats": 3, "fill_s": 0.2, "petsc": True, "smoother_grid": 300,
        "smoother_cycles": 10,
        "kappas": [30, 100, 1000], "periods": [64, 128, 256], "rate_n": 1000,
        "dtypes": ["float64", "float32"], "threads": 1}
# examples=None: every SPD matrix pyamg ships; batched=None: every problem, else name prefixes.
# PETSc's estimate uses 15 CG steps, as ours does.
PETSC_ESTIMATE_STEPS = 15
PRECONDITIONERS = ("none", "jacobi", "amg")
# The goal for preconditioned Chebyshev: converged, with matvecs and time at most these
# multiples of PCG's with the same M.
MATVEC_GOAL = 1.5
TIME_GOAL = 2.0


# ---------------------------------------------------------------------------------------------
# Problems


def dense_problem(n: int, kappa: float, seed: int) -> np.ndarray:
    """Q diag(lambda) Q^T with eigenvalues log-spaced on [1/kappa, 1] (Q Haar-random by ``seed``).

    >>> values = np.linalg.eigvalsh(dense_problem(50, 100.0, seed=0))
    >>> round(float(values[0]), 10), round(float(values[-1]), 10)
    (0.01, 1.0)
    """
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    W = (Q * np.geomspace(1.0 / kappa, 1.0, n)) @ Q.T
    return (W + W.T) / 2


def _pyamg_examples() -> list[str]:
    """Names of the matrices shipped in ``pyamg/gallery/example_data``."""
    import pyamg.gallery

    folder = Path(pyamg.gallery.__file__).parent / "example_data"
    return sorted(path.stem for path in folder.glob("*.mat"))


def spd_check(A) -> str | None:
    """None when the sparse ``A`` is SPD (checked: real, symmetric, positive diagonal, and
    ``eigvalsh`` smallest eigenvalue above 1e-12 of the largest), else the reason it is not.

    >>> import scipy.sparse as sp
    >>> spd_check(sp.csr_array(np.diag([2.0, 1.0]))) is None
    True
    >>> spd_check(sp.csr_array(np.array([[1.0, 1.0], [1.0, 1.0]])))
    'singular (lmin / lmax = 0.0e+00)'
    """
    if np.iscomplexobj(A.data):
        return "complex"
    asymmetry = abs(A - A.T).max() if A.nnz else 0.0
    if asymmetry > 1e-10 * abs(A).max():
        return f"not symmetric (max |A - A^T| = {asymmetry:.2g})"
    if not np.all(A.diagonal() > 0):
        return "diagonal not positive"
    if A.shape[0] <= 3000:
        values = np.linalg.eigvalsh(A.toarray())
        if values[0] <= 1e-12 * values[-1]:
            return f"singular (lmin / lmax = {values[0] / values[-1]:.1e})"
    return None


def _problems(config: dict, seed: int) -> tuple[list[tuple[str, object]], list[str]]:
    """The benchmark matrices ``[(name, A)]`` and the pyamg examples left out, with why."""
    import scipy.sparse as sp
    from pyamg.gallery import (
        diffusion_stencil_2d,
        linear_elasticity,
        load_example,
        poisson,
        stencil_grid,
    )

    names = config["examples"] if config["examples"] is not None else _pyamg_examples()
    chosen, skipped = [], []
    for name in names:
        A = sp.csr_array(load_example(name)["A"])
        reason = spd_check(A)
        if reason is None:
            chosen.append((name, A))
        else:
            skipped.append(f"{name} ({reason})")
    g2, g3, ge, ga = (config[k] for k in ("poisson_2d", "poisson_3d", "elasticity",
                                          "anisotropic"))
    stencil = diffusion_stencil_2d(epsilon=0.001, theta=np.pi / 6, type="FD")
    chosen += [
        (f"poisson 2-D {g2}^2", sp.csr_array(poisson((g2, g2)))),
        (f"poisson 3-D {g3}^3", sp.csr_array(poisson((g3, g3, g3)))),
        (f"elasticity 2-D {ge}^2", sp.csr_array(linear_elasticity((ge, ge))[0])),
        (f"anisotropic {ga}^2", sp.csr_array(stencil_grid(stencil, (ga, ga)))),
        (f"dense kappa={config['dense_kappa']:g}",
         dense_problem(config["dense_n"], config["dense_kappa"], seed)),
    ]
    return chosen, skipped


# ---------------------------------------------------------------------------------------------
# Peers, one right-hand side


def _relative_residual(A, x, b) -> float:
    r = b - A @ x
    norms = np.linalg.norm(r.reshape(r.shape[0], -1), axis=0) / np.linalg.norm(
        b.reshape(b.shape[0], -1), axis=0)
    value = float(np.max(norms))
    return value if np.isfinite(value) else float("inf")


def _timed(funcs: dict, config: dict) -> dict:
    """``{name: (median seconds, output)}`` for the callables ``funcs``, measured alternately.

    One warm-up run each, then ``config["repeats"]`` rounds (or, when the slowest takes under
    20 ms, enough rounds to fill about ``config["fill_s"]`` seconds, at most 25: the noise of a
    shared machine is of that order) that run every callable once, in turn, so that a change
    of load hits the compared methods alike. When a warm-up takes over 2 s the warm-ups are the
    only measurement (as in :func:`stepsize._reference.timing.median_time`).
    """
    outputs, times = {}, {}
    for name, func in funcs.items():
        start = time.perf_counter()
        outputs[name] = func()
        times[name] = [time.perf_counter() - start]
    slowest = max(t[0] for t in times.values())
    if slowest > 2.0:
        return {name: (times[name][0], outputs[name]) for name in funcs}
    rounds = config["repeats"]
    if slowest < 0.02:
        rounds = max(rounds, min(25, int(config["fill_s"] / max(slowest, 1e-6))))
    times = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            start = time.perf_counter()
            outputs[name] = func()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(times[name])), outputs[name]) for name in funcs}


def _scipy_preconditioner(A, name, amg):
    import scipy.sparse as sp

    if name == "none":
        return None
    if name == "jacobi":
        return sp.diags_array(1 / A.diagonal())
    return amg.aspreconditioner()


def _our_preconditioner(name, amg):
    return {"none": None, "jacobi": "jacobi", "amg": amg}[name]


def _scipy_cg(A, b, M, tol):
    from scipy.sparse.linalg import cg

    count = [0]

    def callback(_):
        count[0] += 1

    x, status = cg(A, b, rtol=tol, atol=0.0, maxiter=100_000, M=M, callback=callback)
    return x, count[0] + 1, status == 0


def _direct(A):
    """(factor seconds, solve function) of splu for sparse A, cho_factor for dense A."""
    import scipy.linalg as sla
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    start = time.perf_counter()
    if sp.issparse(A):
        factor = splu(sp.csc_matrix(A))
        solve = factor.solve
        name = "splu"
    else:
        factor = sla.cho_factor(A)
        name = "cho_factor/cho_solve"

        def solve(b):
            return sla.cho_solve(factor, b)

    return time.perf_counter() - start, solve, name


def _solve_rows(name, A, amg, amg_setup, direct, b, config, seed, petsc):
    """One row per (preconditioner, solver) for problem ``name``: ours, scipy cg, PETSc."""
    from stepsize.chebyshev import chebyshev_gd

    tol = config["tol"]
    base = {"problem": name, "n": A.shape[0]}
    rows = []
    for precond in PRECONDITIONERS:
        if precond == "amg" and amg is None:
            continue
        setup = amg_setup if precond == "amg" else 0.0
        M = _scipy_preconditioner(A, precond, amg)
        ours = _our_preconditioner(precond, amg)
        measured = _timed({
            "scipy": lambda M=M: _scipy_cg(A, b, M, tol),
            "ours": lambda ours=ours: chebyshev_gd(A, b, M=ours, tol=tol, warn=False, seed=seed),
        }, config)
        seconds, (x, matvecs, converged) = measured["scipy"]
        reference = {"matvecs": matvecs, "seconds": seconds}
        rows.append({**base, "M": precond, "solver": "scipy cg", "matvecs": matvecs,
                     "setup_s": setup, "seconds": seconds, "converged": converged,
                     "residual": _relative_residual(A, x, b), "reference": reference})
        seconds, result = measured["ours"]
        rows.append({**base, "M": precond, "solver": "chebyshev_gd (ours)",
                     "matvecs": int(result.info["matvecs"]), "setup_s": setup,
                     "seconds": seconds, "converged": bool(result.converged),
                     "residual": _relative_residual(A, result.x, b), "reference": reference,
                     "ours": True})
        if precond != "amg":
            rows.append({**base, "M": precond, **_exact_interval_row(A, b, precond, tol),
                         "setup_s": 0.0, "reference": reference})
        for row in petsc.get(precond, []):
            rows.append({**base, "M": precond, **row, "setup_s": 0.0, "reference": reference})
    factor_s, solve, direct_name = direct
    seconds, x = _timed({"direct": lambda: solve(b)}, config)["direct"]
    rows.append({**base, "M": "-", "solver": direct_name, "matvecs": None, "setup_s": factor_s,
                 "seconds": seconds, "converged": True, "residual": _relative_residual(A, x, b),
                 "reference": None})
    if "reason" in petsc:
        rows.append({**base, "M": "-", "solver": "PETSc chebyshev", "matvecs": None,
                     "setup_s": None, "seconds": None, "converged": None, "residual": None,
                     "reference": None, "skipped": petsc["reason"]})
    return with_ratios(rows)


def with_ratios(rows: list[dict]) -> list[dict]:
    """Add ``matvec_ratio`` and ``time_ratio`` against each row's ``reference`` (the PCG row of
    its group; removed) and, to our rows, ``goal``: converged, matvecs <= ``MATVEC_GOAL`` x and
    time <= ``TIME_GOAL`` x the reference's.

    >>> reference = {"matvecs": 20, "seconds": 1.0}
    >>> rows = with_ratios([
    ...     {"matvecs": 30, "seconds": 2.0, "converged": True, "ours": True,
    ...      "reference": reference},
    ...     {"matvecs": 31, "seconds": 1.0, "converged": True, "ours": True,
    ...      "reference": reference},
    ...     {"matvecs": None, "seconds": 0.5, "converged": True, "reference": None}])
    >>> [(r["matvec_ratio"], r["time_ratio"], r.get("goal")) for r in rows]
    [(1.5, 2.0, True), (1.55, 1.0, False), (None, None, None)]
    """
    for row in rows:
        ref = row.pop("reference")
        ok = ref is not None and row["matvecs"] is not None and row["seconds"] is not None
        row["matvec_ratio"] = row["matvecs"] / ref["matvecs"] if ok else None
        row["time_ratio"] = row["seconds"] / ref["seconds"] if ok else None
        if row.get("ours"):
            row["goal"] = bool(row["converged"] and row["matvec_ratio"] <= MATVEC_GOAL
                               and row["time_ratio"] <= TIME_GOAL)
    return rows


def _exact_interval_row(A, b, precond, tol) -> dict:
    """Chebyshev GD on the exact interval of M A: the floor of any interval-based Chebyshev
    method, with no estimation cost (one solve, not timed against the peers)."""
    import time

    import scipy.sparse as sp

    from stepsize.chebyshev import chebyshev_gd

    scaled = A
    if precond == "jacobi":
        d = sp.diags(1 / np.sqrt(A.diagonal())) if sp.issparse(A) else np.diag(
            1 / np.sqrt(np.diag(A)))
        scaled = d @ A @ d
    lmin, lmax, _ = true_extremes(scaled)
    start = time.perf_counter()
    result = chebyshev_gd(A, b, M=_our_preconditioner(precond, None), lmin=lmin, lmax=lmax,
                          tol=tol, warn=False)
    return {"solver": "chebyshev_gd, exact interval", "matvecs": int(result.info["matvecs"]),
            "seconds": time.perf_counter() - start, "converged": bool(result.converged),
            "residual": _relative_residual(A, result.x, b)}


# ---------------------------------------------------------------------------------------------
# PETSc, in this interpreter or in a system Python that has petsc4py

_PETSC_SCRIPT = r'''
import json, os, sys, time
import numpy as np
import petsc4py
petsc4py.init([])
from petsc4py import PETSc

data = np.load(sys.argv[1])
setting = json.loads(sys.argv[2])
n = int(data["n"])
A = PETSc.Mat().createAIJ(size=(n, n), csr=(data["indptr"].astype(PETSc.IntType),
                                            data["indices"].astype(PETSc.IntType), data["data"]))
A.assemble()
b, x, y = A.createVecLeft(), A.createVecRight(), A.createVecLeft()
b.setArray(data["b"])
options = PETSc.Options("bench_")
options["ksp_chebyshev_esteig"] = "1,0,0,1.1"
options["ksp_chebyshev_esteig_steps"] = setting["steps"]
# PETSc 3.18 crashes when a KSP that diverged to NaN is destroyed: keep every KSP alive, print
# one line per configuration as it completes, and leave with os._exit.
alive = []


def solve(ksp_type, pc):
    x.set(0.0)
    ksp = PETSc.KSP().create()
    alive.append(ksp)
    ksp.setOperators(A)
    ksp.setType(ksp_type)
    ksp.getPC().setType(pc)
    ksp.setTolerances(rtol=setting["tol"], atol=0.0, max_it=setting["max_it"])
    ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
    ksp.setOptionsPrefix("bench_")
    ksp.setFromOptions()
    start = time.perf_counter()
    ksp.solve(b, x)
    return time.perf_counter() - start, ksp.getIterationNumber(), int(ksp.getConvergedReason())


for ksp_type in ("chebyshev", "cg"):
    for pc in ("none", "jacobi"):
        first, iterations, reason = solve(ksp_type, pc)
        times = [first]
        if first < 2.0:
            repeats = setting["repeats"] if first > 0.02 else max(setting["repeats"], min(
                25, int(0.2 / max(first, 1e-6))))
            times = [solve(ksp_type, pc)[0] for _ in range(repeats)]
        A.mult(x, y)
        with np.errstate(all="ignore"):
            residual = float(np.linalg.norm(data["b"] - y.getArray()) / np.linalg.norm(data["b"]))
        print(json.dumps({"ksp": ksp_type, "pc": pc, "iterations": iterations, "reason": reason,
                          "seconds": float(np.median(times)),
                          "residual": residual if np.isfinite(residual) else None}), flush=True)
os._exit(0)
'''


def _petsc_python() -> tuple[list[str], dict] | str:
    """The command and environment of a Python that imports petsc4py, or why there is none.

    This interpreter first; then the system ``python3`` with ``PETSC_DIR`` pointing at a Debian
    ``/usr/lib/petscdir/*/*-real`` installation (Debian's ``/usr/lib/petsc`` link comes with the
    ``petsc-dev`` package only).
    """
    try:
        import petsc4py  # noqa: F401

        return [sys.executable], dict(os.environ)
    except ImportError:
        pass
    candidates = [None] + sorted(str(p) for p in Path("/usr/lib/petscdir").glob("*/*-real"))
    for python in ("/usr/bin/python3",):
        if not Path(python).exists():
            continue
        for petsc_dir in candidates:
            env = dict(os.environ, OMP_NUM_THREADS="1")
            if petsc_dir is not None:
                env["PETSC_DIR"] = petsc_dir
            try:
                found = subprocess.run([python, "-c", "import petsc4py"], env=env,
                                       capture_output=True, timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                found = False
            if found:
                return [python], env
    return "petsc4py not importable (apt-get install python3-petsc4py)"


_PETSC_DIVERGED = {-3: "iteration cap", -4: "diverged", -9: "NaN or Inf"}


def _petsc_version(command) -> str:
    python, env = command
    try:
        done = subprocess.run([*python, "-c", "import petsc4py; print(petsc4py.__version__)"],
                              env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "(version unknown)"
    return done.stdout.strip() or "(version unknown)"


def _petsc_rows(command, A, b, config, cg_matvecs) -> dict:
    """PETSc rows by preconditioner name, or ``{"reason": ...}`` when the run failed."""
    import scipy.sparse as sp

    if not sp.issparse(A):
        return {}  # PETSc runs on the sparse problems (the note says so)
    python, env = command
    A = sp.csr_array(A)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "system.npz"
        np.savez(path, n=A.shape[0], indptr=A.indptr, indices=A.indices, data=A.data, b=b)
        script = Path(folder) / "petsc_bench.py"
        script.write_text(_PETSC_SCRIPT)
        # cap: 20x the matvecs scipy's unpreconditioned CG needed, so a stalled run stays short
        setting = {"tol": config["tol"], "repeats": config["repeats"],
                   "steps": PETSC_ESTIMATE_STEPS, "max_it": int(max(20 * cg_matvecs, 1000))}
        try:
            done = subprocess.run([*python, str(script), str(path), json.dumps(setting)],
                                  env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"reason": f"PETSc run failed ({type(exc).__name__})"}
    measured = []
    for line in done.stdout.splitlines():
        try:
            measured.append(json.loads(line))
        except ValueError:
            continue
    if not measured:
        return {"reason": f"PETSc run failed (exit code {done.returncode}, no output)"}
    rows = {}
    for m in measured:
        estimate = PETSC_ESTIMATE_STEPS if m["ksp"] == "chebyshev" else 0
        rows.setdefault(m["pc"], []).append({
            "solver": f"PETSc {m['ksp']}", "matvecs": m["iterations"] + 1 + estimate,
            "seconds": m["seconds"], "converged": m["reason"] > 0, "residual": m["residual"],
            "status": "yes" if m["reason"] > 0 else (
                f"no ({_PETSC_DIVERGED.get(m['reason'], 'reason ' + str(m['reason']))})"),
            "petsc_reason": m["reason"]})
    return rows


# ---------------------------------------------------------------------------------------------
# Batched right-hand sides


def _batched_rows(name, A, direct, B, config, seed):
    """Ours batched vs our batched CG vs the direct factorization reused, k right-hand sides.

    Preconditioners: none and Jacobi. AMG is left out: pyamg's preconditioner applies its
    V-cycle one column at a time, so a batch gains nothing from it (measured on bar: ours
    batched with AMG 8.5x slower than our batched CG with the same AMG).
    """
    from stepsize.chebyshev import chebyshev_gd, conjugate_gradient

    tol, k = config["tol"], B.shape[1]
    base = {"problem": name, "n": A.shape[0], "k": k}
    rows = []
    for precond in ("none", "jacobi"):
        M = _our_preconditioner(precond, None)
        setup = 0.0
        measured = _timed({
            "conjugate_gradient (ours)": lambda M=M: conjugate_gradient(A, B, M=M, tol=tol,
                                                                        warn=False),
            "chebyshev_gd (ours)": lambda M=M: chebyshev_gd(A, B, M=M, tol=tol, warn=False,
                                                            seed=seed),
        }, config)
        for solver, (seconds, result) in measured.items():
            rows.append({**base, "M": precond, "solver": solver,
                         "matvecs_per_rhs": result.info["matvecs"] / k, "setup_s": setup,
                         "seconds": seconds, "converged": bool(result.converged),
                         "residual": _relative_residual(A, result.x, B),
                         "time_ratio_vs_cg": seconds / measured["conjugate_gradient (ours)"][0]})
    factor_s, solve, direct_name = direct
    seconds, X = _timed({"direct": lambda: solve(B)}, config)["direct"]
    rows.append({**base, "M": "-", "solver": f"{direct_name} (factor reused)",
                 "matvecs_per_rhs": None, "setup_s": factor_s, "seconds": seconds,
                 "converged": True, "residual": _relative_residual(A, X, B),
                 "time_ratio_vs_cg": None})
    direct_total = factor_s + seconds
    for row in rows:
        row["time_ratio_vs_direct"] = (row["setup_s"] + row["seconds"]) / direct_total
    return rows


# ---------------------------------------------------------------------------------------------
# Safety of estimate_spectrum


def true_extremes(A, solve=None) -> tuple[float, float, str]:
    """Smallest and largest eigenvalues: ``eigvalsh`` up to n = 3000, else ``eigsh`` (largest
    algebraic, and shift-invert at 0 for the smallest, through ``solve`` (b -> A^{-1} b) when
    given, else a fresh ``splu``), and which method gave them.

    >>> true_extremes(np.diag([3.0, 1.0, 2.0]))
    (1.0, 3.0, 'eigvalsh')
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator, eigsh

    if A.shape[0] <= 3000:
        dense = A.toarray() if sp.issparse(A) else A
        values = np.linalg.eigvalsh(dense)
        return float(values[0]), float(values[-1]), "eigvalsh"
    largest = eigsh(A, k=1, which="LA", return_eigenvectors=False, tol=1e-10)[0]
    inverse = None if solve is None else LinearOperator(A.shape, matvec=solve, dtype=A.dtype)
    smallest = eigsh(sp.csc_matrix(A), k=1, sigma=0, which="LM", return_eigenvectors=False,
                     tol=1e-10, OPinv=inverse)[0]
    return float(smallest), float(largest), "eigsh"


def _safety_row(name, A, seed, solve=None):
    from stepsize.chebyshev import estimate_spectrum

    lmin, lmax, how = true_extremes(A, solve)
    row = {"problem": name, "n": A.shape[0], "true_lmin": lmin, "true_lmax": lmax,
           "truth": how}
    start = time.perf_counter()
    try:
        spectrum = estimate_spectrum(A, seed=seed)
    except ValueError as exc:
        row.update(seconds=time.perf_counter() - start, est_lmin=None, est_lmax=None,
                   methods="-", matvecs=None, contains="refused", message=str(exc)[:200])
        return row
    except Exception as exc:  # noqa: BLE001 (a crash is a result here: recorded, not raised)
        row.update(seconds=time.perf_counter() - start, est_lmin=None, est_lmax=None,
                   methods="-", matvecs=None, contains=f"error: {type(exc).__name__}",
                   message=str(exc)[:200])
        return row
    # 1e-9 relative slack: the reference eigenvalues carry rounding of about n eps lmax
    contains = (spectrum.lmin <= lmin + 1e-9 * abs(lmax)
                and spectrum.lmax >= lmax * (1 - 1e-9))
    row.update(seconds=time.perf_counter() - start, est_lmin=spectrum.lmin,
               est_lmax=spectrum.lmax, matvecs=spectrum.matvecs,
               methods=f"{getattr(spectrum, 'lmin_method', '') or spectrum.method}/"
                       f"{getattr(spectrum, 'lmax_method', '') or spectrum.method}",
               contains="yes" if contains else "NO")
    return row


# ---------------------------------------------------------------------------------------------
# AMG smoothing: our Chebyshev smoother vs pyamg's, degree 3


def _smoother_rows(config, seed) -> list[dict] | str:
    """V-cycle convergence factor and time per cycle, or why the table is left out."""
    try:
        from stepsize.chebyshev.smoothers import attach_smoothers
    except ImportError:
        return "stepsize.chebyshev.smoothers.attach_smoothers not available"
    import scipy.sparse as sp
    from pyamg import smoothed_aggregation_solver
    from pyamg.gallery import linear_elasticity, poisson

    grid, cycles = config["smoother_grid"], config["smoother_cycles"]
    cases = [(f"poisson 2-D {grid}^2", sp.csr_array(poisson((grid, grid)))),
             (f"elasticity 2-D {grid // 3}^2",
              sp.csr_array(linear_elasticity((grid // 3, grid // 3))[0]))]
    rows = []
    degree = 3
    for name, A in cases:
        rng = np.random.default_rng(seed)
        b = np.zeros(A.shape[0])
        x0 = rng.standard_normal(A.shape[0])
        smoother = ("chebyshev", {"degree": degree})
        variants = {"pyamg chebyshev": smoothed_aggregation_solver(
            A, presmoother=smoother, postsmoother=smoother)}
        ours = smoothed_aggregation_solver(A, presmoother=smoother, postsmoother=smoother)
        try:
            attach_smoothers(ours, degree=degree)
        except (TypeError, ValueError) as exc:
            return f"attach_smoothers failed: {type(exc).__name__}: {exc}"
        variants["chebyshev_smoother (ours)"] = ours
        factors = {}
        for label, ml in variants.items():
            residuals = []
            ml.solve(b, x0=x0.copy(), tol=1e-300, maxiter=cycles, residuals=residuals)
            factors[label] = (residuals[-1] / residuals[0]) ** (1 / (len(residuals) - 1))
        # the two hierarchies alternate, so that load on the machine hits both alike
        times = {label: [] for label in variants}
        for _ in range(max(config["repeats"], 5)):
            for label, ml in variants.items():
                start = time.perf_counter()
                ml.solve(b, x0=x0.copy(), tol=1e-300, maxiter=cycles)
                times[label].append((time.perf_counter() - start) / cycles)
        measured = {}
        for label in variants:
            seconds = float(np.median(times[label]))
            measured[label] = (factors[label], seconds)
            rows.append({"problem": name, "n": A.shape[0], "degree": degree, "smoother": label,
                         "factor": float(factors[label]), "seconds_per_cycle": seconds})
        ref_factor, ref_seconds = measured["pyamg chebyshev"]
        for row in rows[-2:]:
            row["time_ratio"] = row["seconds_per_cycle"] / ref_seconds
            row["goal"] = (bool(row["factor"] <= ref_factor * (1 + 1e-3)
                                and row["time_ratio"] <= 1.2)
                           if row["smoother"] != "pyamg chebyshev" else None)
    return rows


# ---------------------------------------------------------------------------------------------
# The paper's rate goal (kept from the first benchmark)


def _relative_error(x, reference) -> float:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.linalg.norm(x - reference) / np.linalg.norm(reference)
    return float(value) if np.isfinite(value) else float("inf")


def _rate_and_stability(config, seed):
    """Per-step rate of T-periodic Chebyshev GD vs the optimum, and stability by step order.

    A run is stable when its relative error reaches the Chebyshev bound or the round-off floor
    of the precision, ``10 kappa eps`` (the accuracy to which W x = c is determined at all).
    The paper's natural order is run beside the default fractal order, with the exact spectrum.
    """
    from stepsize.chebyshev import (
        ChebyshevOptions,
        chebyshev_bound,
        chebyshev_gd,
        estimate_spectrum,
        optimal_rate,
    )

    rows = []
    for kappa in config["kappas"]:
        W = dense_problem(config["rate_n"], kappa, seed)
        exact = np.linalg.eigvalsh(W)
        estimate = estimate_spectrum(W, seed=seed)
        optimum = optimal_rate(exact[0], exact[-1])
        X = np.random.default_rng(seed).standard_normal((W.shape[0], 8))
        cases = (("exact", "fractal", exact[0], exact[-1]),
                 ("estimate", "fractal", estimate.lmin, estimate.lmax),
                 ("exact", "natural", exact[0], exact[-1]))
        for T in config["periods"]:
            for dtype in config["dtypes"]:
                floor = 10 * kappa * float(np.finfo(dtype).eps)
                for source, order, lmin, lmax in cases:
                    with np.errstate(over="ignore", invalid="ignore"):  # natural overflows
                        result = chebyshev_gd(W.astype(dtype), (W @ X).astype(dtype), lmin=lmin,
                                              lmax=lmax, max_iter=T,
                                              options=ChebyshevOptions(T=T, order=order))
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


# ---------------------------------------------------------------------------------------------
# Run, tables, plot


def run(config: dict, seed: int) -> dict:
    import scipy.sparse as sp
    from pyamg import smoothed_aggregation_solver

    from stepsize._reference.timing import pinned_threads

    petsc_command = _petsc_python() if config["petsc"] else "off in this configuration"
    rows, batched, safety, petsc_failures = [], [], [], []
    with pinned_threads(config["threads"]):
        chosen, skipped = _problems(config, seed)
        for index, (name, A) in enumerate(chosen):
            rng = np.random.default_rng([seed, index])
            b = rng.standard_normal(A.shape[0])
            B = rng.standard_normal((A.shape[0], config["rhs"]))
            amg, amg_setup = None, 0.0
            if sp.issparse(A):
                start = time.perf_counter()
                amg = smoothed_aggregation_solver(A)
                amg_setup = time.perf_counter() - start
            if isinstance(petsc_command, str):
                petsc = {"reason": petsc_command} if sp.issparse(A) else {}
            else:
                _, cg_matvecs, _ = _scipy_cg(A, b, None, config["tol"])
                petsc = _petsc_rows(petsc_command, A, b, config, cg_matvecs)
            if "reason" in petsc:
                petsc_failures.append(f"{name}: {petsc['reason']}")
            direct = _direct(A)
            rows += _solve_rows(name, A, amg, amg_setup, direct, b, config, seed, petsc)
            if config["batched"] is None or name.startswith(tuple(config["batched"])):
                batched += _batched_rows(name, A, direct, B, config, seed)
            safety.append(_safety_row(name, A, seed, direct[1]))
        diagonal = sp.diags_array(np.logspace(-6, 0, config["diagonal_n"])).tocsr()
        safety.append(_safety_row(f"diags(logspace(-6, 0, {config['diagonal_n']}))", diagonal,
                                  seed))
        if config["examples"] is None:
            from pyamg.gallery import load_example

            for entry in skipped:
                name = entry.split(" ")[0]
                A = sp.csr_array(load_example(name)["A"])
                if "singular" in entry:
                    safety.append(_safety_row(f"{name} (singular)", A, seed))
        smoothers = _smoother_rows(config, seed)
        rate_rows = _rate_and_stability(config, seed)
    return _assemble(rows, batched, safety, smoothers, rate_rows, skipped, petsc_command,
                     petsc_failures, config)


def _assemble(rows, batched, safety, smoothers, rate_rows, skipped, petsc_command,
              petsc_failures, config):
    ours = [r for r in rows if r.get("ours")]
    met = sum(r["goal"] for r in ours)
    petsc_note = _petsc_note(petsc_command, petsc_failures)
    tables = [_single_rhs_table(rows, len(ours), met, petsc_note, skipped, config),
              _batched_table(batched, config), _safety_table(safety)]
    if isinstance(smoothers, str):
        smoother_note = smoothers
    else:
        smoother_note = None
        tables.append(_smoother_table(smoothers))
    tables.append(_rate_table(rate_rows))
    time_ratios = [r["time_ratio"] for r in ours]
    return {"rows": rows, "batched_rows": batched, "safety_rows": safety,
            "smoother_rows": None if isinstance(smoothers, str) else smoothers,
            "smoother_note": smoother_note, "rate_rows": rate_rows, "skipped_examples": skipped,
            "petsc": petsc_note,
            "goal_met": {"rows": len(ours), "met": int(met)},
            "time_ratio_vs_pcg": {"min": min(time_ratios), "median": float(np.median(
                time_ratios)), "max": max(time_ratios)},
            "tables": tables}


def _goal_cell(goal) -> str:
    return "-" if goal is None else ("met" if goal else "MISSED")


def _petsc_note(petsc_command, petsc_failures) -> str:
    if isinstance(petsc_command, str):
        return f"PETSc skipped: {petsc_command}"
    note = (f"PETSc {_petsc_version(petsc_command)} ran in "
            f"{' '.join(petsc_command[0])} on the sparse problems, KSPCHEBYSHEV with "
            f"-ksp_chebyshev_esteig 1,0,0,1.1 and {PETSC_ESTIMATE_STEPS} estimation "
            f"steps, unpreconditioned residual norm")
    if petsc_failures:
        note += "; failed: " + "; ".join(petsc_failures)
    return note


def _single_rhs_table(rows, n_ours, met, petsc_note, skipped, config):
    from stepsize.report import table

    return table(
        f"Real SPD matrices, one right-hand side, relative residual {config['tol']:g}: "
        f"chebyshev_gd vs PCG with the same M (goal met in {met} of {n_ours} rows)",
        ["problem", "n", "M", "solver", "matvecs", "setup s", "solve s", "conv", "rel. res",
         "x PCG matvecs", "x PCG time", "goal"],
        [[r["problem"], r["n"], r["M"], r["solver"], r["matvecs"], r["setup_s"], r["seconds"],
          "skipped" if "skipped" in r else r.get("status", r["converged"]), r["residual"],
          r["matvec_ratio"], r["time_ratio"], _goal_cell(r.get("goal"))] for r in rows],
        note="PCG = scipy cg with the same M (none; Jacobi; one pyamg smoothed-aggregation "
             "V-cycle). matvecs per right-hand side include ours' 15 CG estimation steps and "
             "PETSc chebyshev's 15 estimation steps; CG's = iterations + 1. setup = AMG "
             "hierarchy (shared by all AMG rows) or the factorization. solve s = median wall "
             "time with one thread (scipy cg and ours timed in alternation). goal = ours' "
             f"matvecs <= {MATVEC_GOAL:g}x and time <= {TIME_GOAL:g}x PCG's. 'exact interval' "
             "= chebyshev_gd given "
             "the exact extreme eigenvalues of M A (eigvalsh/eigsh): the matvecs that any "
             "Chebyshev polynomial on the spectrum's interval needs, estimation excluded. "
             f"{petsc_note}. pyamg examples left out: {', '.join(skipped) or 'none'}.")


def _batched_table(batched, config):
    from stepsize.report import table

    return table(
        f"Batched solves, k = {config['rhs']} right-hand sides: ours vs our batched CG vs the "
        "factorization reused (no preconditioner and Jacobi)",
        ["problem", "n", "M", "solver", "matvecs/rhs", "setup s", "solve s", "conv",
         "max rel. res", "x CG time", "x direct (setup+solve)"],
        [[r["problem"], r["n"], r["M"], r["solver"], r["matvecs_per_rhs"], r["setup_s"],
          r["seconds"], r["converged"], r["residual"], r["time_ratio_vs_cg"],
          r["time_ratio_vs_direct"]] for r in batched],
        note="x CG time: solve time over our batched conjugate_gradient with the same M; "
             "x direct: solve time over (factor + solve) of splu or cho_factor, the "
             "factorization reused for all k columns; above 1 means the factorization wins. "
             "matvecs/rhs: column products per right-hand side, ours' estimation included. "
             "AMG is left out (pyamg's preconditioner applies its V-cycle one column at a "
             "time)" + ("" if config["batched"] is None else
                        "; problems: " + ", ".join(config["batched"])) + ".")


def _safety_table(safety):
    from stepsize.report import table

    return table(
        "estimate_spectrum safety: the returned interval vs the true extreme eigenvalues",
        ["problem", "n", "true lmin", "true lmax", "truth", "est. lmin", "est. lmax",
         "ends (lmin/lmax)", "matvecs", "seconds", "contains"],
        [[r["problem"], r["n"], r["true_lmin"], r["true_lmax"], r["truth"], r["est_lmin"],
          r["est_lmax"], r["methods"], r["matvecs"], r["seconds"], r["contains"]]
         for r in safety],
        note="estimate_spectrum(A, seed) with its defaults; contains = est. lmin <= lmin and "
             "est. lmax >= lmax (relative slack 1e-9); refused = a ValueError (message in the "
             "JSON).")


def _smoother_table(smoothers):
    from stepsize.report import table

    return table(
        "AMG smoothing (smoothed aggregation V-cycle, pre and post smoother of degree 3): "
        "our Chebyshev smoother vs pyamg's",
        ["problem", "n", "degree", "smoother", "factor per cycle", "s per cycle",
         "x pyamg time", "goal"],
        [[r["problem"], r["n"], r["degree"], r["smoother"], r["factor"],
          r["seconds_per_cycle"], r["time_ratio"], _goal_cell(r["goal"])] for r in smoothers],
        note="factor = (||r_N|| / ||r_0||)^(1/N) over N cycles on A x = 0 from a random x; "
             "goal = factor <= pyamg's (0.1% slack) and time per cycle <= 1.2x pyamg's; s per "
             "cycle = median of at least 5 alternating runs of N cycles, divided by N.")


def _rate_table(rate_rows):
    from stepsize.report import table

    return table(
        "Rate and stability of T-periodic Chebyshev steps (dense, one period; stable = error at "
        "the bound or at the round-off floor 10 kappa eps)",
        ["kappa", "T", "dtype", "spectrum", "order", "rel. error", "bound", "rate (bound)",
         "optimal rate", "gap", "stable"],
        [[r["kappa"], r["T"], r["dtype"], r["spectrum"], r["order"], r["relative_error"],
          r["bound"], r["rate_bound"], r["rate_optimal"], f"{100 * r['rate_gap']:.2f}%",
          r["stable"]] for r in rate_rows])


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    ours = [r for r in result["rows"] if r.get("ours")]
    if not ours:
        return []
    problems_seen = list(dict.fromkeys(r["problem"] for r in ours))
    fig, axes = new_figure(ncols=2, width=max(6.0, 0.6 * len(problems_seen)))
    width = 0.8 / len(PRECONDITIONERS)
    for ax, key, limit, label in ((axes[0], "matvec_ratio", MATVEC_GOAL, "matvecs"),
                                  (axes[1], "time_ratio", TIME_GOAL, "time")):
        for i, precond in enumerate(PRECONDITIONERS):
            values = {r["problem"]: r[key] for r in ours if r["M"] == precond}
            ax.bar(np.arange(len(problems_seen)) + i * width,
                   [values.get(p, np.nan) for p in problems_seen], width, label=f"M={precond}")
        ax.axhline(limit, color="k", linestyle="--", linewidth=1, label=f"goal {limit}x")
        ax.set_xticks(np.arange(len(problems_seen)) + 0.4 - width / 2, problems_seen,
                      rotation=60, ha="right", fontsize=7)
        ax.set(yscale="log", ylabel=f"chebyshev_gd {label} / PCG {label}",
               title=f"{label} to relative residual 1e-8, same M")
        ax.legend(fontsize=7)
    return [save_figure(fig, Path(out_dir) / "bench_chebyshev_ratios.png")]


register(Entry(
    name="chebyshev",
    description="Chebyshev GD (preconditioned) vs scipy/pyamg PCG, splu/cholesky, PETSc, on "
                "real SPD matrices; estimate safety; rate goal",
    quick=QUICK, full=FULL, run=run, plot=plot, requires=("bench",),
))
