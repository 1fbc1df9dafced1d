"""Won's three applications of the matrix perspective side by side with CVXPY (Clarabel, SCS).

`stepsize bench prox_applications [--quick]`:

- constrained Gaussian MLE (``constrained_gaussian_mle``, dual Newton; the paper's PDHG at the
  smallest p) on correlated Gaussian data (``Sigma = 0.3 11^T + 0.7 I``, ``n = 2p``, 5 caps at
  0.8 of the sample variance so that they bind) whose mean is 0, 10 and 30 times the spread,
  and on the raw and standardized diabetes data (scikit-learn, 442 x 10); with the author's
  ridge ``10 / n^2`` at ``n < p`` (the factorized dual Newton; PDHG at the smallest sizes);
- the matrix scaled lasso (``matrix_scaled_lasso``) on sparse multivariate regressions with
  correlated noise and on Linnerud (scikit-learn, 20 x 3 exercises -> 3 physiological
  measurements);
- pseudolikelihood graph selection (``pseudolikelihood_graph``, the reduced L-BFGS-B/Newton
  method; PDHG at the smaller p) on a chain graph and on the diabetes features;
- PyProximal's ``PrimalDual`` and ``LinearizedADMM`` on the constrained MLE at p = 3 with
  ``MatrixPerspective`` as the perspective term (the test's instance), against Clarabel at
  tolerances 1e-12 and the certified dual Newton (``pyproximal_iterations``); and
  ``ProximalGradient`` (backtracking), ``AcceleratedProximalGradient``, ``ADMM`` and
  ``PrimalDual`` on a matrix-perspective-regularized least squares (``pyproximal_ls_iterations``).

Each row: median seconds, ours and the peers timed in alternation (one warm-up of ours, then
``ours_repeats`` rounds of one run of ours and, in the first ``peer_repeats`` rounds, one of
each peer; a first run of ours over 2 s is the only one), the time ratio peer / ours, and the
relative objective gap ``(F_peer - F_ours) / max(1, |F_ours|)`` (positive: the peer stopped
above our objective). A peer that fails is reported as failed, not dropped. The MLE rows of
our default method carry the issue's goal: at least as fast as Clarabel (``met``/``MISSED``).
On the shifted synthetic data Clarabel also solves the centred problem (``S = Sigma_hat``,
``xbar = 0``: ``min_eta F`` is the centred objective, so the optimal value is the same): the
time of a user who centres first. Where Clarabel fails on the data as given, the goal cell
compares with that run (``met (vs centred)``); ``Clarabel failed`` (neither met nor missed)
is left only where both fail. CVXPY formulations below are the references of the tests too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stepsize._reference.cvxpy_prox import (
    cvxpy_gaussian_mle,
    cvxpy_matrix_scaled_lasso,
    cvxpy_pseudolikelihood,
)
from stepsize.benchmarks import Entry, register

QUICK = {"mle_sizes": [10, 20], "mle_shifts": [0.0, 30.0], "mle_caps": 5,
         "ridge_sizes": [(15, 20), (60, 100)], "ridge_peer_max_size": 20,
         "ridge_pdhg_max_size": 20, "lasso_sizes": [(30, 10, 3)], "graph_sizes": [5, 10],
         "scs_max_size": 0, "scs_lasso_max_n": 20, "scs_graph_max_size": 5,
         "ours_repeats": 3, "peer_repeats": 1, "pdhg_max_size": 10, "real_data": True,
         "pyproximal_iterations": [200, 400], "pyproximal_ls_iterations": 150}
FULL = {"mle_sizes": [10, 20, 30, 40, 50], "mle_shifts": [0.0, 10.0, 30.0], "mle_caps": 5,
        "ridge_sizes": [(8, 10), (15, 20), (25, 30), (40, 50), (60, 100)],
        "ridge_peer_max_size": 50, "ridge_pdhg_max_size": 20,
        "lasso_sizes": [(30, 10, 3), (60, 20, 3), (100, 40, 4)],
        "graph_sizes": [5, 10, 20, 30], "scs_max_size": 10, "scs_lasso_max_n": 30,
        "scs_graph_max_size": 10, "ours_repeats": 5, "peer_repeats": 1, "pdhg_max_size": 20,
        "real_data": True, "pyproximal_iterations": [200, 300, 400],
        "pyproximal_ls_iterations": 150}
PEERS = ("CLARABEL", "SCS")
CENTRED = "CLARABEL, centred data"  # the MLE on xbar = 0, S = Sigma_hat: the same optimum value
LONG_RUN = 2.0  # seconds: a first run of ours this long is its only one


def _interleaved(ours, peers, config):
    """Ours and each peer timed in alternation (module docstring); returns ``(seconds, value,
    {solver: (median seconds, value) or an exception})``."""
    import statistics
    import time

    start = time.perf_counter()
    value = ours()
    first = time.perf_counter() - start
    rounds = 1 if first > LONG_RUN else max(config["ours_repeats"], 1)
    ours_times, peer_times = [], {solver: [] for solver in peers}
    peer_out: dict = {}
    for round_index in range(rounds):
        if rounds > 1:
            start = time.perf_counter()
            value = ours()
            ours_times.append(time.perf_counter() - start)
        for solver, solve in peers.items():
            if round_index >= config["peer_repeats"] or isinstance(peer_out.get(solver),
                                                                    Exception):
                continue
            start = time.perf_counter()
            try:
                peer_out[solver] = solve()
            except Exception as error:  # a failed peer is a result, not a crash
                peer_out[solver] = error
                continue
            peer_times[solver].append(time.perf_counter() - start)
    seconds = statistics.median(ours_times) if ours_times else first
    results = {solver: peer_out[solver] if isinstance(peer_out.get(solver), Exception)
               else (statistics.median(peer_times[solver]), peer_out[solver])
               for solver in peers}
    return seconds, value, results


def _compare(name, size, ours, peers, config, rows, records, goal=False):
    """Time ``ours() -> objective`` and each ``peers[solver]() -> objective`` in alternation;
    append rows (with the goal cell where ``goal``)."""
    seconds, value, results = _interleaved(ours, peers, config)
    rows.append([name, size, "stepsize", seconds, 1.0, 0.0, None])
    record = {"seconds": seconds, "objective": value, "peers": {}}
    for solver, outcome in results.items():
        if isinstance(outcome, Exception):
            rows.append([name, size, f"CVXPY + {solver}", None, None,
                         f"failed: {outcome}"[:60], None])
            record["peers"][solver] = {"failed": str(outcome)}
            continue
        peer_seconds, peer_value = outcome
        gap = (peer_value - value) / max(1.0, abs(value))
        rows.append([name, size, f"CVXPY + {solver}", peer_seconds, peer_seconds / seconds,
                     gap, None])
        record["peers"][solver] = {"seconds": peer_seconds, "ratio": peer_seconds / seconds,
                                   "gap": gap}
    if goal:
        record["goal"] = _goal(record["peers"])
        rows[-len(results) - 1][-1] = record["goal"]
    records.append({"problem": name, "size": size, **record})


def _goal(peers) -> str:
    """The goal cell: Clarabel / ours >= 1; where Clarabel fails on the data as given, the
    same cell against Clarabel on the centred data (``CENTRED``), marked as such."""
    clarabel, centred = peers.get("CLARABEL", {}), peers.get(CENTRED, {})
    if "failed" in clarabel and "ratio" in centred:
        return ("met" if centred["ratio"] >= 1.0 else "MISSED") + " (vs centred)"
    if "failed" in clarabel:
        return "Clarabel failed"
    if "ratio" not in clarabel:
        return "no peer run"
    return "met" if clarabel["ratio"] >= 1.0 else "MISSED"


def _peers(config, size, build, scs_key="scs_max_size"):
    solvers = [s for s in PEERS if s != "SCS" or size <= config[scs_key]]
    return {solver: (lambda s=solver: build(s)) for solver in solvers}


def _mle_data(rng, p, shift, caps_count):
    Sigma = 0.3 * np.ones((p, p)) + 0.7 * np.eye(p)
    data = rng.multivariate_normal(np.zeros(p), Sigma, size=2 * p) + shift
    variances = data.var(axis=0)[:caps_count]
    return data, np.eye(p)[:caps_count] / np.sqrt(0.8 * variances)[:, None]


def _mle(config, rng, rows, records):
    from sklearn.datasets import load_diabetes

    from stepsize.prox.gaussian_mle import constrained_gaussian_mle, sample_moments

    cases = []
    for p in config["mle_sizes"]:
        for shift in config["mle_shifts"]:
            data, caps = _mle_data(rng, p, shift, config["mle_caps"])
            cases.append((f"MLE, mean {shift:g}x spread", p, data, caps))
    raw = load_diabetes(scaled=False).data
    real = (("raw", raw), ("standardized", (raw - raw.mean(0)) / raw.std(0)))
    for label, data in real if config["real_data"] else ():
        cases.append((f"MLE, diabetes {label}", 10, data,
                      np.eye(10)[:4] / np.sqrt(0.8 * data.var(axis=0)[:4])[:, None]))
    for name, p, data, caps in cases:
        peers = _peers(config, p, lambda s, d=data, c=caps: cvxpy_gaussian_mle(
            *sample_moments(d), c, solver=s)[2])
        if config.get("centred_peer", True) and "spread" in name and " 0x " not in name:
            # min_eta F is the centred objective, so Clarabel on (Sigma_hat, 0) has the same
            # optimal value; a user who centres first gets this time
            peers[CENTRED] = lambda d=data, c=caps: cvxpy_gaussian_mle(
                np.cov(d.T, bias=True), np.zeros(d.shape[1]), c, solver="CLARABEL")[2]
        _compare(name, p, lambda d=data, c=caps: constrained_gaussian_mle(d, c).objective,
                 peers, config, rows, records, goal=True)
        if p <= config["pdhg_max_size"]:
            _compare(name + " (PDHG)", p, lambda d=data, c=caps: constrained_gaussian_mle(
                d, c, method="pdhg").objective, {}, config, rows, records)
    _ridge(config, rng, rows, records)


def _ridge(config, rng, rows, records):
    """The author's ridge ``10 / n^2`` at ``n < p`` (mean 5x the spread)."""
    from stepsize.prox.gaussian_mle import constrained_gaussian_mle, sample_moments

    for n, p in config["ridge_sizes"]:
        data, caps = _mle_data(rng, p, 5.0, config["mle_caps"])
        data, ridge = data[:n], 10.0 / n**2
        peers = _peers(config, p, lambda s, d=data, c=caps, r=ridge: cvxpy_gaussian_mle(
            *sample_moments(d), c, solver=s, ridge=r)[2])
        if p > config["ridge_peer_max_size"]:
            peers = {}
        name = f"MLE ridge 10/n^2, n = {n}"
        _compare(name, p, lambda d=data, c=caps, r=ridge:
                 constrained_gaussian_mle(d, c, ridge=r).objective, peers, config, rows,
                 records, goal=bool(peers))
        if p <= config["ridge_pdhg_max_size"]:
            _compare(name + " (PDHG)", p, lambda d=data, c=caps, r=ridge:
                     constrained_gaussian_mle(d, c, ridge=r, method="pdhg").objective, {},
                     config, rows, records)


def _lasso_cases(config, rng):
    """The scaled-lasso instances: ``(name, n, X, Y)`` for each of ``config["lasso_sizes"]``
    (3 active rows, noise covariance 0.5 (I + 11^T)), then Linnerud if ``real_data``."""
    from sklearn.datasets import load_linnerud

    cases = []
    for n, d, k in config["lasso_sizes"]:
        X = rng.standard_normal((n, d))
        coef = np.zeros((d, k))
        coef[:3] = rng.standard_normal((3, k))
        noise = np.linalg.cholesky(0.5 * np.ones((k, k)) + 0.5 * np.eye(k))
        cases.append((f"scaled lasso d = {d}, k = {k}", n, X,
                      X @ coef + rng.standard_normal((n, k)) @ noise.T))
    if config["real_data"]:
        X, Y = load_linnerud(return_X_y=True)
        cases.append(("scaled lasso, Linnerud", 20, (X - X.mean(0)) / X.std(0), Y - Y.mean(0)))
    return cases


def _lasso(config, rng, rows, records):

    from stepsize.prox.regression import matrix_scaled_lasso

    for name, n, X, Y in _lasso_cases(config, rng):
        lam = 0.5 * math.sqrt(2 * math.log(X.shape[1] * Y.shape[1]) / n)
        _compare(name, n, lambda X=X, Y=Y, lam=lam: matrix_scaled_lasso(X, Y, lam).objective,
                 _peers(config, n, lambda s, X=X, Y=Y, lam=lam: cvxpy_matrix_scaled_lasso(
                     X, Y, lam, solver=s)[2], "scs_lasso_max_n"), config, rows, records)


def _graph(config, rng, rows, records):
    from sklearn.datasets import load_diabetes

    from stepsize.prox.pseudolikelihood import pseudolikelihood_graph

    cases = []
    for p in config["graph_sizes"]:
        chain = np.eye(p) + 0.4 * (np.eye(p, k=1) + np.eye(p, k=-1))
        data = rng.multivariate_normal(np.zeros(p), np.linalg.inv(chain), size=3 * p)
        cases.append((f"pseudolikelihood, chain, n = {3 * p}", p, data))
    if config["real_data"]:
        diabetes = load_diabetes().data
        cases.append(("pseudolikelihood, diabetes", 10, diabetes / diabetes.std(axis=0)))
    for name, p, data in cases:
        lam = 0.3 * math.sqrt(math.log(p) / data.shape[0])
        _compare(name, p, lambda d=data, lam=lam: pseudolikelihood_graph(d, lam).objective,
                 _peers(config, p, lambda s, d=data, lam=lam: cvxpy_pseudolikelihood(
                     d, lam, solver=s)[1], "scs_graph_max_size"), config, rows, records)
        if p <= config["pdhg_max_size"]:
            _compare(name + " (PDHG)", p, lambda d=data, lam=lam: pseudolikelihood_graph(
                d, lam, method="pdhg").objective, {}, config, rows, records)


def solver_steps(config: dict, seed: int = 0) -> list[dict]:
    """Our solvers alone on the benchmark's instances (the same draws as ``run(config,
    seed)``): per instance the default method's iterations, certificate (the MLE's certified
    ``duality_gap`` relative to ``|F|``, the lasso's ``duality_gap``, the pseudolikelihood's
    KKT residual), cap violation and objective. No peer is run."""
    import math as _math

    from sklearn.datasets import load_diabetes

    from stepsize._validation import check_int
    from stepsize.prox import constrained_gaussian_mle, matrix_scaled_lasso, pseudolikelihood_graph

    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict like FULL or QUICK, got {type(config).__name__}")
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    rng.standard_normal((10, 2))  # run()'s CVXPY warm-up draw
    out = []

    def mle(name, size, data, caps, ridge=0.0):
        result = constrained_gaussian_mle(data, caps, ridge=ridge)
        out.append({"problem": name, "size": size, "iterations": result.n_iter,
                    "certificate": result.info["duality_gap"] / abs(result.objective),
                    "violation": result.constraint_violation, "objective": result.objective})

    for p in config["mle_sizes"]:
        for shift in config["mle_shifts"]:
            mle(f"MLE, mean {shift:g}x spread", p, *_mle_data(rng, p, shift, config["mle_caps"]))
    raw = load_diabetes(scaled=False).data
    for label, data in ((("raw", raw), ("standardized", (raw - raw.mean(0)) / raw.std(0)))
                        if config["real_data"] else ()):
        mle(f"MLE, diabetes {label}", 10, data,
            np.eye(10)[:4] / np.sqrt(0.8 * data.var(axis=0)[:4])[:, None])
    for n, p in config["ridge_sizes"]:
        data, caps = _mle_data(rng, p, 5.0, config["mle_caps"])
        mle(f"MLE ridge 10/n^2, n = {n}", p, data[:n], caps, 10.0 / n**2)
    for name, n, X, Y in _lasso_cases(config, rng):
        result = matrix_scaled_lasso(X, Y, 0.5 * _math.sqrt(2 * _math.log(X.shape[1] * Y.shape[1])
                                                            / n))
        out.append({"problem": name, "size": n, "iterations": result.n_iter,
                    "certificate": result.duality_gap, "violation": None,
                    "objective": result.objective})
    graph_cases = []
    for p in config["graph_sizes"]:
        chain = np.eye(p) + 0.4 * (np.eye(p, k=1) + np.eye(p, k=-1))
        graph_cases.append((f"pseudolikelihood, chain, n = {3 * p}", p, rng.multivariate_normal(
            np.zeros(p), np.linalg.inv(chain), size=3 * p)))
    if config["real_data"]:
        diabetes = load_diabetes().data
        graph_cases.append(("pseudolikelihood, diabetes", 10, diabetes / diabetes.std(axis=0)))
    for name, p, data in graph_cases:
        result = pseudolikelihood_graph(data, 0.3 * _math.sqrt(_math.log(p) / data.shape[0]))
        out.append({"problem": name, "size": p, "iterations": result.n_iter,
                    "certificate": result.info["kkt_residual"], "violation": None,
                    "objective": result.objective})
    return out


def _mle_operators(p):
    """PyProximal has no log-det or PSD-cone operator: ``f(x) = -log det Omega + <z, x>``
    (prox: an eigendecomposition) and the cap indicator ``Omega >= c c^T`` (prox: ``c c^T +
    Pi_+(sym(Omega) - c c^T)``) on the flat layout ``x = [vec(Omega), eta]``, as
    ``pyproximal.ProxOperator`` subclasses (the same as in the tests)."""
    import pyproximal

    def symmetric(x):
        Omega = x[: p * p].reshape(p, p)
        return 0.5 * (Omega + Omega.T)

    class LogDetLinear(pyproximal.ProxOperator):
        def __init__(self, z):
            super().__init__(None, False)
            self.z = z

        def __call__(self, x):
            sign, logdet = np.linalg.slogdet(symmetric(x))
            return -logdet + float(self.z @ x) if sign > 0 else np.inf

        def prox(self, x, tau):
            shifted = x - tau * self.z
            d, Q = np.linalg.eigh(symmetric(shifted))
            out = shifted.copy()
            out[: p * p] = ((Q * (0.5 * (d + np.sqrt(d * d + 4 * tau)))) @ Q.T).ravel()
            return out

    class Cap(pyproximal.ProxOperator):
        def __init__(self, c):
            super().__init__(None, False)
            self.outer = np.outer(c, c)

        def __call__(self, x):
            return 0.0 if np.linalg.eigvalsh(symmetric(x) - self.outer)[0] >= -1e-10 else np.inf

        def prox(self, x, tau):
            d, Q = np.linalg.eigh(symmetric(x) - self.outer)
            return (self.outer + (Q * np.maximum(d, 0.0)) @ Q.T).ravel()

    return LogDetLinear, Cap


def _pyproximal_mle(config, rng, rows):
    """PyProximal's PrimalDual and LinearizedADMM on the constrained MLE (the perspective
    formulation ``f(x) + g(A x)``, ``g = VStack([2 phi, caps])``, ``A = [I; R; ...; R]``,
    ``||A||^2 = 1 + m``) with ``MatrixPerspective``, against Clarabel at tolerances 1e-12
    and our certified dual Newton; the instance of ``tests/prox/test_prox_applications_
    pyproximal.py``."""
    import time

    import pylops
    import pyproximal
    from pyproximal.optimization.primal import LinearizedADMM
    from pyproximal.optimization.primaldual import PrimalDual

    from stepsize.prox import MatrixPerspective, constrained_gaussian_mle, sample_moments
    from stepsize.prox.gaussian_mle import gaussian_mle_objective

    del rng  # the test's instance (seed 0), not the benchmark's stream
    data_rng = np.random.default_rng(0)
    p, n = 3, 40
    data = data_rng.standard_normal((n, p)) @ (0.3 * data_rng.standard_normal((p, p))
                                               + np.eye(p)) + 1.0
    caps = np.eye(p)[:2] / np.sqrt(0.8 * data.var(axis=0)[:2])[:, None]
    second, mean = sample_moments(data)
    reference = _clarabel_tight_mle(second, mean, caps)
    exact = constrained_gaussian_mle(data, caps, tol=1e-13).objective
    size, m = p * p + p, caps.shape[0]
    LogDetLinear, Cap = _mle_operators(p)
    A = pylops.VStack([pylops.Identity(size)]
                      + [pylops.Restriction(size, np.arange(p * p)) for _ in caps])
    g = pyproximal.VStack([MatrixPerspective(p, 2.0)] + [Cap(c) for c in caps],
                          nn=[size] + [p * p] * m)
    f = LogDetLinear(np.concatenate([second.ravel(), -2 * mean]))
    start = np.linalg.inv(second - np.outer(mean, mean))
    x0 = np.concatenate([start.ravel(), start @ mean])
    solvers = {
        "PrimalDual (tau = 1)": lambda k: PrimalDual(f, g, A, x0, tau=1.0,
                                                     mu=0.99 / (1 + m), niter=k),
        "LinearizedADMM (tau = 3)": lambda k: LinearizedADMM(
            f, g, A, x0, tau=3.0, mu=0.99 * 3.0 / (1 + m), niter=k)[0]}
    for name, solve in solvers.items():
        for iterations in config["pyproximal_iterations"]:
            begin = time.perf_counter()
            x = solve(iterations)
            seconds = time.perf_counter() - begin
            Omega = x[: p * p].reshape(p, p)
            value = gaussian_mle_objective(0.5 * (Omega + Omega.T), x[p * p:], second, mean)
            violation = float(np.max(np.einsum("ip,pq,iq->i", caps, np.linalg.inv(Omega),
                                               caps))) - 1.0
            rows.append([f"MLE p = {p}, n = {n}, 2 caps", name, iterations, seconds,
                         (value - reference) / abs(reference), (value - exact) / abs(exact),
                         max(violation, 0.0)])
    return {"clarabel_objective": reference, "dual_newton_objective": exact}


def _pyproximal_least_squares(config, rows) -> float:
    """PyProximal's ProximalGradient (``tau=None``: backtracking), AcceleratedProximalGradient,
    ADMM and PrimalDual on ``1/2 ||A x - b||^2 + 0.5 phi(x)``, p = 3, A 30 x 12 (the instance
    of ``tests/prox/test_prox_pyproximal.py``), against Clarabel at tolerances 1e-10."""
    import time
    import warnings

    import cvxpy as cp
    import pylops
    import pyproximal
    from pyproximal.optimization.primal import ADMM, AcceleratedProximalGradient, ProximalGradient
    from pyproximal.optimization.primaldual import PrimalDual

    from stepsize.prox import MatrixPerspective

    rng = np.random.default_rng(0)
    p, m, lam = 3, 30, 0.5
    f = MatrixPerspective(p, lam)
    G = rng.standard_normal((p, p))
    A = rng.standard_normal((m, f.size)) / math.sqrt(m)
    b = A @ f.pack(G @ G.T + 0.5 * np.eye(p), rng.standard_normal(p))
    b += 0.1 * rng.standard_normal(m)
    Omega, eta = cp.Variable((p, p), symmetric=True), cp.Variable(p)
    x = cp.hstack([cp.vec(Omega, order="C"), eta])
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(A @ x - b)
                                     + lam * 0.5 * cp.matrix_frac(eta, Omega)))
    # at 1e-12 Clarabel reports "inaccurate" here; 1e-10 it reaches
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    reference = float(problem.value)
    l2, x0 = pyproximal.L2(Op=pylops.MatrixMult(A), b=b), np.zeros(f.size)
    solvers = {
        "ProximalGradient (tau=None)": lambda k: ProximalGradient(l2, f, x0, tau=None, niter=k),
        "AcceleratedProximalGradient (tau=None)": lambda k: AcceleratedProximalGradient(
            l2, f, x0, tau=None, niter=k),
        "ADMM (tau = 1)": lambda k: ADMM(l2, f, x0, tau=1.0, niter=k)[1],
        "PrimalDual (tau = mu = 0.9)": lambda k: PrimalDual(
            l2, f, pylops.Identity(f.size), x0, tau=0.9, mu=0.9, niter=k)}
    for name, solve in solvers.items():
        begin = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # AcceleratedProximalGradient
            out = solve(config["pyproximal_ls_iterations"])
        seconds = time.perf_counter() - begin
        value = 0.5 * float(np.sum((A @ out - b) ** 2)) + f(out)
        rows.append([f"least squares + 0.5 phi, p = {p}, A {m} x {f.size}", name,
                     config["pyproximal_ls_iterations"], seconds,
                     (value - reference) / abs(reference), None, None])
    return reference


def _clarabel_tight_mle(second, mean, caps) -> float:
    import cvxpy as cp

    p = mean.size
    Omega, eta = cp.Variable((p, p), symmetric=True), cp.Variable(p)
    objective = (-cp.log_det(Omega) + cp.trace(Omega @ second) - 2 * mean @ eta
                 + cp.matrix_frac(eta, Omega))
    problem = cp.Problem(cp.Minimize(objective), [Omega >> np.outer(c, c) for c in caps])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return float(problem.value)


def run(config: dict, seed: int) -> dict:
    from stepsize._reference.timing import pinned_threads
    from stepsize.report import table

    rng = np.random.default_rng(seed)
    rows: list[list] = []
    records: list[dict] = []
    with pinned_threads(1):
        cvxpy_pseudolikelihood(rng.standard_normal((10, 2)), 0.1)  # warm CVXPY up
        _mle(config, rng, rows, records)
        _lasso(config, rng, rows, records)
        _graph(config, rng, rows, records)
        pyproximal_rows: list[list] = []
        pyproximal_mle = (_pyproximal_mle(config, rng, pyproximal_rows)
                          if config.get("pyproximal_iterations") else {})
        if config.get("pyproximal_ls_iterations"):
            pyproximal_mle["least_squares_clarabel_objective"] = _pyproximal_least_squares(
                config, pyproximal_rows)
    goals = [record["goal"] for record in records if "goal" in record]
    summary = {"rows": len(goals), "met": sum(g.startswith("met") for g in goals),
               "missed": sum(g.startswith("MISSED") for g in goals),
               "met_vs_centred": goals.count("met (vs centred)"),
               "clarabel_failed": goals.count("Clarabel failed")}
    columns = ["problem", "size (p; n for the lasso)", "solver", "median seconds",
               "time / ours", "objective gap (peer - ours) / max(1, |ours|)", "goal"]
    note = ("goal (issue 13): the MLE at least as fast as Clarabel at every p from 10 to 50, "
            "including means 10x and 30x the spread (met: Clarabel / ours >= 1; where "
            "Clarabel fails on the data as given, '(vs centred)' compares with Clarabel on "
            "the centred data, the same optimal value; 'Clarabel failed' is neither met nor "
            "missed); 1 BLAS thread; ours and CVXPY timed in alternation; CVXPY times "
            "include canonicalization")
    title = (f"Won's applications vs CVXPY (MLE goal met in {summary['met']} of "
             f"{summary['rows']} rows ({summary['met_vs_centred']} of them against Clarabel "
             f"on centred data), missed in {summary['missed']}, Clarabel failed in "
             f"{summary['clarabel_failed']})")
    tables = [table(title, columns, rows, note=note)]
    if pyproximal_rows:
        tables.append(table(
            "PyProximal's solvers with MatrixPerspective (constrained MLE, least squares)",
            ["problem", "solver", "iterations", "seconds", "(F - F_Clarabel) / |F_Clarabel|",
             "(F - F_dual_newton) / |F|", "cap violation"], pyproximal_rows,
            note="goal (issue 13): within 1e-8 of CVXPY's objective; Clarabel at tolerances "
                 "1e-12 (MLE) and 1e-10 (least squares, where 1e-12 ends 'inaccurate'); dual "
                 "Newton at tol 1e-13 (certified gap); PyProximal 0.13"))
    return {"records": records, "goal_met": summary, "pyproximal": {
        **pyproximal_mle, "rows": pyproximal_rows}, "tables": tables}


def plot(result: dict, out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    fig, (ax,) = new_figure()
    for solver, marker in zip(PEERS, "os"):
        points = [(r["size"], r["peers"][solver]["ratio"]) for r in result["records"]
                  if r["problem"].startswith("MLE") and "ratio" in r["peers"].get(solver, {})]
        if points:
            ax.semilogy(*zip(*points), marker, label=f"CVXPY + {solver} / ours")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("p")
    ax.set_ylabel("time ratio (peer / stepsize)")
    ax.set_title("constrained Gaussian MLE: CVXPY time over ours")
    ax.legend(fontsize=8)
    return [save_figure(fig, out_dir / "bench_prox_applications_mle.png")]


register(Entry(
    name="prox_applications",
    description="Won 2020 applications (Gaussian MLE, matrix scaled lasso, pseudolikelihood "
                "graphs) vs CVXPY (Clarabel, SCS)",
    quick=QUICK, full=FULL, run=run, plot=plot, requires=("bench",),
))
