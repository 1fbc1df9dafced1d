"""Constrained maximum likelihood of a Gaussian's mean and covariance (Won's first application).

With natural parameters ``Omega = Sigma^{-1}`` and ``eta = Omega mu``, twice the average negative
log-likelihood of samples ``x_1..x_n`` is, up to a constant,

    F(Omega, eta) = -log det Omega + tr(Omega S) - 2 xbar^T eta + 2 phi(Omega, eta)
                    + (ridge / 2) ||Omega||_F^2,

with ``S = (1/n) sum x_k x_k^T`` (second moment), ``xbar`` the sample mean, ``phi`` the matrix
perspective (``eta^T Omega^{-1} eta = mu^T Omega mu = 2 phi``) and an optional ridge (the
author's demo, for ``n < p``). ``F`` is jointly convex. Caps on the variance of contrasts,
``c_i^T Sigma c_i <= 1``, are the convex constraints ``Omega >= c_i c_i^T`` (a Schur complement).

Neither the caps nor the ridge involve ``eta``, and ``min_eta F = -log det Omega + tr(Omega
Sigma_hat) + ridge term`` with ``Sigma_hat = S - xbar xbar^T``, reached at ``eta = Omega xbar``
exactly. So the mean estimate is ``xbar`` and both methods below work on the centred problem:
this is what makes them indifferent to the data's location (a mean 30 times the spread made the
uncentred iteration need more than 20,000 steps). Two methods:

* ``"dual_newton"`` (the default): without a ridge, the caps' multipliers ``y_i >= 0`` are the only
  unknowns. In whitened coordinates ``u_i = Sigma_hat^{1/2} c_i`` the Lagrangian's minimizer is
  closed form, ``Sigma(y) = Sigma_hat^{1/2} T Sigma_hat^{1/2}``,
  ``T = 2 (I + (I + 4 G)^{1/2})^{-1}``,
  ``G = sum_i y_i u_i u_i^T``, and the dual ``g(y) = F(Omega(y)) + sum_i y_i (u_i^T T u_i - 1)``
  is smooth and concave with gradient ``u_i^T T u_i - 1`` and a Hessian from the Loewner matrix
  of ``t(g) = 2 / (1 + sqrt(1 + 4 g))``. Projected Newton on ``y >= 0``: one ``p x p``
  eigendecomposition per step.
  With a ridge ``rho/2 ||Omega||_F^2`` the Lagrangian of the caps in ``y`` has no closed form,
  but that of their matrix form ``Omega - c_i c_i^T >= 0`` with multipliers ``Z_i >= 0`` has:
  ``Omega(Z) = Q diag(w) Q^T`` for the eigenpairs ``(s, Q)`` of ``A = Sigma_hat - sum_i Z_i``,
  ``w = (sqrt(s^2 + 4 rho) - s) / (2 rho)`` (``S + D - Omega^{-1} + rho Omega = 0`` solved in the
  eigenbasis; ``A`` may be indefinite). The optimal ``Z_i = y_i Sigma c_i c_i^T Sigma`` has rank
  one, so the dual is maximized over factors ``Z_i = v_i v_i^T``: ``g(V) = h(Sigma_hat - V^T V)
  + sum_i (c_i^T v_i)^2`` with ``h(A) = sum_k -log w_k + s_k w_k + rho w_k^2 / 2``, smooth and
  unconstrained, gradient ``-2 Omega v_i + 2 (c_i^T v_i) c_i``, Hessian from the Loewner matrix
  ``L_kl = -w_k w_l / (1 + rho w_k w_l)`` (an ``mp x mp`` system per step). A stationary point
  has ``Omega v_i = (c_i^T v_i) c_i``, i.e. complementarity; ``v_i = 0`` with a violated cap is a
  saddle (curvature ``2 (c_i c_i^T - Omega)``), left along ``Sigma c_i``. So every local maximum
  is the global one (Burer and Monteiro's argument). Newton (shifted where the Hessian is not
  negative definite, Armijo steps): 4 to 8 steps, one ``p x p`` eigendecomposition each.
* ``"pdhg"`` (the paper's method): Chambolle-Pock on ``z = (Omega, eta)``
  with ``f(z) = -log det Omega + tr(Omega S) - 2 xbar^T eta + (ridge/2)||Omega||^2`` (prox: an
  eigendecomposition, ``Omega+ = Q diag((d + sqrt(d^2 + 4 tau'))/2) Q^T``, ``tau' = tau / (1 +
  ridge tau)``), ``g_0 = 2 phi`` with ``K_0 = I`` (dual prox ``v - prox_{2 phi}(v)``, the
  matrix perspective prox) and ``g_i = indicator(Omega >= c_i c_i^T)`` with ``K_i z = Omega``.
  ``||K||^2 = 1 + m``, so ``tau sigma (1 + m) < 1``. On centred data ``eta`` stays 0 and the
  perspective prox reduces to a projection onto the PSD cone.

Both run on standardized data (``Omega_n = D Omega D``, ``D`` the standard deviations, caps
``D c_i``; with a ridge, which is not invariant under ``D``, ``D = s I`` with ``s^2 =
tr(Sigma_hat) / p`` and the ridge becomes ``ridge / s^4``) and return the answer in the user's
units.

Stopping rule (primal-dual): ``"dual_newton"`` without a ridge stops when the cap violations
``max_i (c_i^T Sigma c_i - 1)_+`` and the complementarity ``max_i y_i |c_i^T Sigma c_i - 1|`` are
both at most ``tol`` (its ``Omega`` minimizes the Lagrangian exactly, so these are the whole KKT
residual and the duality gap is at most ``m tol``); with a ridge, when the certified gap ``F(alpha
Omega(V)) - g(V)`` (``alpha`` below makes ``alpha Omega(V)`` feasible) is at most ``tol max(1,
|F|)``; ``"pdhg"`` stops when its relative primal and dual
residuals (Goldstein, Li, Yuan 2015) are at most ``tol``. Both then scale ``Omega`` by ``alpha =
max(1, max_i c_i^T Sigma c_i)`` (``Sigma`` by ``1 / alpha``), which satisfies every cap to rounding
and changes ``F`` by ``O(alpha - 1)``.

References:
    J.-H. Won, "Proximity operator of the matrix perspective function and its applications",
    NeurIPS 2020 (the Gaussian MLE application, ``docs/gaussianmle.jl`` of the author's code).
    A. Chambolle, T. Pock, J. Math. Imaging Vis. 40 (2011). D. P. Bertsekas, "Projected Newton
    methods for optimization problems with simple constraints", SIAM J. Control Optim. 20 (1982).
    S. Burer, R. D. C. Monteiro, Math. Program. 95 (2003) (low-rank factorized SDP multipliers).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from stepsize._progress import progress_bar
from stepsize._results import SolverResult, warn_not_converged
from stepsize._validation import check_array, check_choice, check_int, check_real
from stepsize.prox.perspective import _prox, perspective_value

__all__ = [
    "GaussianMLEResult",
    "constrained_gaussian_mle",
    "gaussian_mle_objective",
    "sample_moments",
]

METHODS = ("dual_newton", "pdhg")


@dataclass
class GaussianMLEResult(SolverResult):
    """Result of :func:`constrained_gaussian_mle` (``x`` is the pair ``(Omega, eta)``).

    Attributes:
        mean: ``mu = Omega^{-1} eta`` (the sample mean).
        covariance: ``Sigma = Omega^{-1}``.
        objective: ``F(Omega, eta)`` at the returned point.
        constraint_violation: ``max_i max(c_i^T Sigma c_i - 1, 0)`` (0 without caps).
        primal_step: the step ``tau`` of ``"pdhg"`` in the scaled units (nan for
            ``"dual_newton"``).
        method: the method used.
    """

    mean: np.ndarray | None = None
    covariance: np.ndarray | None = None
    objective: float = math.nan
    constraint_violation: float = 0.0
    primal_step: float = math.nan
    method: str = ""


def sample_moments(samples) -> tuple[np.ndarray, np.ndarray]:
    """Second moment ``S = X^T X / n`` and mean ``xbar`` of the rows of ``samples`` (n x p)."""
    samples = check_array(samples, "samples", ndim=2)
    if samples.shape[0] < 2:
        raise ValueError(f"samples must have at least 2 rows, got shape {samples.shape}")
    return samples.T @ samples / samples.shape[0], samples.mean(axis=0)


def gaussian_mle_objective(Omega, eta, second_moment, mean, *, ridge: float = 0.0) -> float:
    """``F = -log det Omega + tr(Omega S) - 2 xbar^T eta + 2 phi(Omega, eta) + ridge/2
    ||Omega||_F^2``.

    ``+inf`` unless ``Omega`` is positive definite.

    Example:
        >>> round(gaussian_mle_objective(np.eye(2), np.zeros(2), np.eye(2), np.zeros(2)), 6)
        2.0
    """
    Omega = check_array(Omega, "Omega", ndim=2)
    p = Omega.shape[0]
    eta = check_array(eta, "eta", shape=(p,))
    second_moment = check_array(second_moment, "second_moment", shape=(p, p))
    mean = check_array(mean, "mean", shape=(p,))
    ridge = check_real(ridge, "ridge", low=0)
    return _objective(0.5 * (Omega + Omega.T), eta, second_moment, mean, ridge)


def _objective(Omega, eta, second_moment, mean, ridge=0.0) -> float:
    sign, logdet = np.linalg.slogdet(Omega)
    if sign <= 0:
        return math.inf
    return float(
        -logdet
        + float(np.sum(Omega * second_moment))
        - 2.0 * float(mean @ eta)
        + 2.0 * perspective_value(Omega, eta)
        + 0.5 * ridge * float(np.sum(Omega * Omega))
    )


def _centred_objective(Omega, covariance, ridge) -> float:
    """``min_eta F = -log det Omega + tr(Omega Sigma_hat) + ridge/2 ||Omega||^2``."""
    sign, logdet = np.linalg.slogdet(Omega)
    if sign <= 0:
        return math.inf
    return float(-logdet + np.sum(Omega * covariance) + 0.5 * ridge * np.sum(Omega * Omega))


def _norm(*arrays) -> float:
    return math.sqrt(sum(float(np.sum(a * a)) for a in arrays))


def constrained_gaussian_mle(
    samples,
    caps=None,
    *,
    ridge: float = 0.0,
    method: str | None = None,
    primal_step: float | None = None,
    max_iter: int = 20000,
    tol: float = 1e-8,
    progress: bool | None = None,
) -> GaussianMLEResult:
    """Gaussian MLE of mean and covariance with variance caps ``c_i^T Sigma c_i <= 1``.

    Minimizes ``F(Omega, eta)`` (module docstring) subject to ``Omega >= c_i c_i^T``.

    Args:
        samples: data, n x p (rows are observations); without a ridge the sample covariance
            must be nonsingular (``n > p``).
        caps: contrasts ``c_i`` as the rows of an m x p array, or None for no constraint.
        ridge: ``epsilon >= 0`` of the term ``epsilon/2 ||Omega||_F^2`` (the author uses
            ``10 / n^2``); makes the MLE exist for ``n <= p``.
        method: ``"dual_newton"`` (the default; with a ridge, Newton on the factorized
            dual, ``O((m p)^3)`` per step) or ``"pdhg"`` (Chambolle-Pock with the perspective
            prox, the paper's method).
        primal_step: ``tau`` of ``"pdhg"`` in the standardized units (module docstring); default
            ``6 / sqrt(1 + m)`` (the fastest of 1.5, 3, 6, 12 on diabetes with 4 caps).
        max_iter: iteration cap (Newton steps or PDHG iterations).
        tol: primal-dual tolerance of the stopping rule (module docstring). ``"pdhg"``'s
            residual test is the weaker one: at ``tol = 1e-8`` its objective was 1e-7
            (relative) above Clarabel's on a ridge instance with ``n = 15 < p = 20``; the
            ``"dual_newton"`` tests certify the gap.
        progress: a progress bar; None shows one when stderr is a terminal.

    Returns:
        A :class:`GaussianMLEResult`; ``history`` holds the objective (in the standardized
        units) at the start and after each step (every 10th for ``"pdhg"``), ``info`` the
        wall time (``seconds``), the caps' multipliers ``y`` (``multipliers``), a
        certified ``duality_gap`` (``"dual_newton"``) and the prox time (``prox_seconds``,
        ``"pdhg"``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> data = rng.standard_normal((200, 3)) + 30.0
        >>> result = constrained_gaussian_mle(data, np.array([[2.0, 0.0, 0.0]]))
        >>> bool(result.converged), round(float(result.covariance[0, 0]), 6)
        (True, 0.25)
        >>> few = rng.standard_normal((5, 8))  # n < p: the MLE needs the ridge
        >>> ridged = constrained_gaussian_mle(few, np.eye(8)[:2], ridge=0.1)
        >>> bool(ridged.converged), bool(ridged.info["duality_gap"] <= 1e-8)
        (True, True)

    Reference: Won, NeurIPS 2020, section on the Gaussian MLE.
    """
    problem = _validated_problem(samples, caps, ridge, method, primal_step)
    max_iter = check_int(max_iter, "max_iter", low=1)
    tol = check_real(tol, "tol", low=0, low_inclusive=False)
    start_time = time.perf_counter()
    if problem["method"] == "pdhg":
        solver = _pdhg
    else:
        solver = _ridge_dual_newton if problem["ridge"] > 0 else _dual_newton
    Omega_n, converged, n_iter, history, info = solver(problem, max_iter, tol, progress)
    info["seconds"] = time.perf_counter() - start_time
    if not converged:
        warn_not_converged(f"constrained_gaussian_mle ({problem['method']})", n_iter)
    return _result(problem, Omega_n, converged, n_iter, history, info)


def _validated_problem(samples, caps, ridge, method, primal_step) -> dict:
    """Check the input; return the centred, scaled problem as a dict."""
    second_moment, mean = sample_moments(samples)
    p = mean.size
    covariance = second_moment - np.outer(mean, mean)
    covariance = 0.5 * (covariance + covariance.T)
    ridge = check_real(ridge, "ridge", low=0)
    method = check_choice("dual_newton" if method is None else method, "method", METHODS)
    eigenvalues = np.linalg.eigvalsh(covariance)
    if eigenvalues[-1] <= 0.0:
        raise ValueError("samples must not be constant (the sample covariance is zero)")
    if ridge == 0 and eigenvalues[0] <= 1e-12 * eigenvalues[-1]:
        raise ValueError(
            "samples must have a nonsingular sample covariance without a ridge (the MLE does "
            f"not exist); its smallest eigenvalue is {eigenvalues[0]:.3g}: pass ridge > 0"
        )
    caps = np.zeros((0, p)) if caps is None else caps
    caps = check_array(caps, "caps", ndim=2, allow_empty=True)
    if caps.shape[1] != p:
        raise ValueError(f"caps must have {p} columns like samples, got shape {caps.shape}")
    m = caps.shape[0]
    if primal_step is None:
        primal_step = 6.0 / math.sqrt(1.0 + m)
    tau = check_real(primal_step, "primal_step", low=0, low_inclusive=False)
    # Omega_n = D Omega D with D the standard deviations (exact: caps become D c_i), or with
    # a ridge, which is not invariant under D, the root mean variance s times I (ridge / s^4)
    scale2 = float(np.trace(covariance)) / p
    scales = np.full(p, math.sqrt(scale2)) if ridge > 0 else np.sqrt(np.diag(covariance))
    return {"method": method, "p": p, "m": m, "mean": mean, "second_moment": second_moment,
            "covariance": covariance, "ridge": ridge, "caps": caps, "scales": scales,
            "covariance_n": covariance / np.outer(scales, scales), "caps_n": caps * scales,
            "ridge_n": ridge / (scale2 * scale2), "tau": tau}


def _result(problem, Omega_n, converged, n_iter, history, info) -> GaussianMLEResult:
    """Restore the caps to rounding, go back to the user's units, and fill the result."""
    caps_n = problem["caps_n"]
    covariance_n = np.linalg.inv(Omega_n)
    if problem["m"]:
        alpha = max(1.0, float(np.max(np.einsum("ip,pq,iq->i", caps_n, covariance_n, caps_n))))
        Omega_n, covariance_n = alpha * Omega_n, covariance_n / alpha
        info["cap_rescale"] = alpha
    outer = np.outer(problem["scales"], problem["scales"])
    Omega = Omega_n / outer
    Omega = 0.5 * (Omega + Omega.T)
    covariance = covariance_n * outer
    covariance = 0.5 * (covariance + covariance.T)
    caps, mean = problem["caps"], problem["mean"]
    violation = 0.0
    if problem["m"]:
        violation = max(0.0, float(np.max(np.einsum("ip,pq,iq->i", caps, covariance, caps))) - 1)
    objective = _centred_objective(Omega, problem["covariance"], problem["ridge"])
    if "dual_value" in info:  # the dual bound in the user's units: log det shifts by log det D^2
        info["duality_gap"] = objective - (info.pop("dual_value") +
                                           2.0 * float(np.sum(np.log(problem["scales"]))))
    return GaussianMLEResult(
        x=(Omega, Omega @ mean), n_iter=n_iter, converged=converged, history=history,
        message="converged" if converged else "iteration cap reached", mean=mean.copy(),
        covariance=covariance, objective=objective, constraint_violation=violation,
        primal_step=problem["tau"] if problem["method"] == "pdhg" else math.nan,
        method=problem["method"], info=info)


def _dual_state(y, whitened, log_det_covariance):
    """The Lagrangian minimizer for multipliers ``y``: returns a dict with ``t`` (eigenvalues
    of ``T``), ``Q``, ``rotated = Q^T U``, the cap values ``a_i = u_i^T T u_i`` and ``g(y)``."""
    gram = (whitened * y) @ whitened.T
    gamma, Q = np.linalg.eigh(0.5 * (gram + gram.T))
    root = np.sqrt(1.0 + 4.0 * np.maximum(gamma, 0.0))
    t = 2.0 / (1.0 + root)
    rotated = Q.T @ whitened
    caps_value = t @ (rotated * rotated)
    primal = log_det_covariance + float(np.sum(np.log(t))) + float(np.sum(1.0 / t))
    size = (abs(log_det_covariance) + float(np.sum(np.abs(np.log(t))) + np.sum(1.0 / t))
            + float(y @ np.abs(caps_value - 1.0)))
    return {"t": t, "root": root, "Q": Q, "rotated": rotated, "a": caps_value,
            "primal": primal, "dual": primal + float(y @ (caps_value - 1.0)),
            "rounding": 64.0 * np.finfo(float).eps * size}


def _dual_hessian(state) -> np.ndarray:
    """``d a_i / d y_j = w_ij^T L w_ij`` with ``w_ij = rotated_i * rotated_j`` and ``L`` the
    Loewner matrix of ``t(g)``: ``L_kl = -8 / ((1 + r_k)(1 + r_l)(r_k + r_l))``, ``r = sqrt(1 +
    4 g)`` (the divided differences without cancellation)."""
    root, rotated = state["root"], state["rotated"]
    p, m = rotated.shape
    loewner = -8.0 / (np.outer(1.0 + root, 1.0 + root) * (root[:, None] + root[None, :]))
    products = (rotated[:, :, None] * rotated[:, None, :]).reshape(p, m * m)
    return np.sum(products * (loewner @ products), axis=0).reshape(m, m)


def _newton_direction(y, gradient, hessian):
    """Bertsekas' projected Newton direction for ``max g`` on ``y >= 0``: Newton on the free
    multipliers, a gradient step on those held at 0 by a negative gradient."""
    held = (y <= 1e-12) & (gradient < 0)
    free = ~held
    direction = np.where(held, gradient, 0.0)
    if np.any(free):
        block = -hessian[np.ix_(free, free)]
        block = block + (1e-14 * max(float(np.trace(block)), 1e-300)) * np.eye(int(free.sum()))
        try:
            direction[free] = np.linalg.solve(block, gradient[free])
        except np.linalg.LinAlgError:
            direction[free] = np.linalg.lstsq(block, gradient[free], rcond=None)[0]
    return direction


def _kkt_residual(y, slack) -> float:
    """Cap violation and complementarity: ``max(max_i slack_i^+, max_i y_i |slack_i|)``."""
    return max(float(np.max(slack, initial=0.0)), float(np.max(np.abs(y * slack), initial=0.0)))


def _dual_newton_step(y, state, whitened, log_det):
    """A projected Newton step with backtracking along the projection arc: accepts an Armijo
    ascent or, once the ascent is below the rounding of ``g`` (large multipliers), a halved KKT
    residual; None when neither happens."""
    slack = state["a"] - 1.0
    residual = _kkt_residual(y, slack)
    direction = _newton_direction(y, slack, _dual_hessian(state))
    step = 1.0
    for _ in range(60):
        trial_y = np.maximum(y + step * direction, 0.0)
        trial = _dual_state(trial_y, whitened, log_det)
        if trial["dual"] > state["dual"] + 1e-4 * float(slack @ (trial_y - y)) or (
                trial["dual"] >= state["dual"] - state["rounding"]
                and _kkt_residual(trial_y, trial["a"] - 1.0) <= 0.5 * residual):
            return trial_y, trial
        step *= 0.5
    return None


def _dual_newton(problem, max_iter, tol, progress):
    """Projected Newton on the caps' multipliers (module docstring)."""
    w, V = np.linalg.eigh(problem["covariance_n"])
    whitened = ((V * np.sqrt(w)) @ V.T) @ problem["caps_n"].T  # u_i as columns
    log_det = float(np.sum(np.log(w)))
    y = np.zeros(problem["m"])
    state = _dual_state(y, whitened, log_det)
    history, converged, iteration = [state["primal"]], False, 0
    for iteration in progress_bar(range(1, max_iter + 1), progress=progress, desc="MLE"):
        slack = state["a"] - 1.0
        if _kkt_residual(y, slack) <= tol:
            converged, iteration = True, iteration - 1
            break
        stepped = _dual_newton_step(y, state, whitened, log_det)
        if stepped is None:  # no ascent left at rounding level
            break
        y, state = stepped
        history.append(state["primal"])
    converged = converged or _kkt_residual(y, state["a"] - 1.0) <= tol
    inverse_root = (V / np.sqrt(w)) @ V.T  # Omega = Sigma_hat^{-1/2} T^{-1} Sigma_hat^{-1/2}
    Omega_n = inverse_root @ ((state["Q"] / state["t"]) @ state["Q"].T) @ inverse_root
    info = {"multipliers": y, "dual_value": state["dual"]}
    return 0.5 * (Omega_n + Omega_n.T), converged, iteration, history, info


def _factor_state(V, covariance, caps, ridge):
    """The ridge dual at factors ``V`` (rows ``v_i``, ``Z_i = v_i v_i^T``): the eigenpairs
    ``(s, Q)`` of ``A = Sigma_hat - sum_i v_i v_i^T``, ``Omega``'s eigenvalues ``w``, ``g(V)``,
    its gradient ``-2 Omega v_i + 2 (c_i^T v_i) c_i`` and ``V``, the caps in ``Q``'s basis."""
    A = covariance - V.T @ V
    s, Q = np.linalg.eigh(0.5 * (A + A.T))
    w = _ridge_inverse(s, ridge)
    projections = np.sum(caps * V, axis=1)
    terms = np.concatenate([-np.log(w), s * w, 0.5 * ridge * w * w, projections**2])
    rotated, caps_rotated = V @ Q, caps @ Q
    gradient = -2.0 * (rotated * w) @ Q.T + 2.0 * projections[:, None] * caps
    return {"s": s, "Q": Q, "w": w, "dual": float(np.sum(terms)), "gradient": gradient,
            "rotated": rotated, "caps_rotated": caps_rotated, "a": (caps_rotated**2) @ (1.0 / w),
            "rounding": 64.0 * np.finfo(float).eps * float(np.sum(np.abs(terms)))}


def _factor_hessian(state, ridge) -> np.ndarray:
    """Minus the Hessian of ``g`` in the rotated factors ``Q^T v_i`` (an ``mp x mp`` matrix).

    ``-d^2 g = sum_i dv_i^T (2 Omega - 2 c_i c_i^T) dv_i - 4 <L o B, B>`` with ``B = Q^T sym(sum_j
    dv_j v_j^T) Q`` and ``L_kl = -w_k w_l / (1 + ridge w_k w_l)`` the Loewner matrix of ``s ->
    w(s)`` (from ``s = 1/w - ridge w``, no divided differences)."""
    w, rotated, caps_rotated = state["w"], state["rotated"], state["caps_rotated"]
    m, p = rotated.shape
    loewner = -np.outer(w, w) / (1.0 + ridge * np.outer(w, w))
    blocks = -2.0 * (loewner[None, None] * rotated[None, :, :, None] * rotated[:, None, None, :])
    diagonal = np.arange(p)
    blocks[:, :, diagonal, diagonal] -= 2.0 * ((rotated[:, None, :] * rotated[None, :, :])
                                               @ loewner)
    for i in range(m):
        blocks[i, i] += 2.0 * np.diag(w) - 2.0 * np.outer(caps_rotated[i], caps_rotated[i])
    return blocks.transpose(0, 2, 1, 3).reshape(m * p, m * p)


def _factor_primal(state, covariance, ridge):
    """``F`` at ``alpha Omega(V)``, ``alpha = max(1, max_i a_i)`` (feasible): an upper bound."""
    alpha = max(1.0, float(np.max(state["a"], initial=0.0)))
    w, Q = alpha * state["w"], state["Q"]
    trace = float(np.sum(((Q * w) @ Q.T) * covariance))
    return float(-np.sum(np.log(w)) + trace + 0.5 * ridge * (w @ w))


def _factor_newton_direction(state, ridge):
    """Newton's ascent direction for ``g`` (the Hessian shifted until negative definite; the
    gradient if no shift up to ``1e12`` times its scale works); returns ``(direction,
    slope)``."""
    minus_hessian = _factor_hessian(state, ridge)
    gradient = (state["gradient"] @ state["Q"]).ravel()
    size = minus_hessian.shape[0]
    scale = max(float(np.trace(minus_hessian)) / size, 1e-300)
    step = gradient
    for shift in (0.0, *(scale * 10.0**k for k in range(-12, 13))):
        try:
            factor = np.linalg.cholesky(minus_hessian + shift * np.eye(size))
        except np.linalg.LinAlgError:
            continue
        step = np.linalg.solve(factor.T, np.linalg.solve(factor, gradient))
        break
    return step.reshape(state["rotated"].shape) @ state["Q"].T, float(gradient @ step)


def _factor_step(V, state, problem):
    """One ascent step on ``g``: switch on the factors of violated caps held at 0 (a saddle of
    ``g`` there, with positive curvature along ``Sigma c_i``); where that does not increase
    ``g``, a Newton step. Backtracking accepts an Armijo ascent or, once the ascent is below
    the rounding of ``g`` (large multipliers), a halved duality gap; ``(V, state)`` unchanged
    when neither happens."""
    covariance, caps, ridge = problem["covariance_n"], problem["caps_n"], problem["ridge_n"]
    gap = _factor_primal(state, covariance, ridge) - state["dual"]
    rounding = state["rounding"]  # of g's value: 64 eps times the sum of its terms' sizes
    off = (~np.any(V, axis=1)) & (state["a"] > 1.0)
    candidates = []
    if np.any(off):
        sigma_caps = ((caps[off] @ state["Q"]) / state["w"]) @ state["Q"].T
        escape = np.zeros_like(V)
        escape[off] = (np.sqrt(state["a"][off] - 1.0) / state["a"][off])[:, None] * sigma_caps
        candidates.append((escape, 0.0))
    candidates.append(None)  # Newton, computed only if needed
    for candidate in candidates:
        direction, slope = candidate or _factor_newton_direction(state, ridge)
        length = 1.0
        for _ in range(60):
            trial = _factor_state(V + length * direction, covariance, caps, ridge)
            if trial["dual"] > state["dual"] + 1e-4 * length * slope or (
                    trial["dual"] >= state["dual"] - rounding
                    and _factor_primal(trial, covariance, ridge) - trial["dual"] <= 0.5 * gap):
                return V + length * direction, trial
            length *= 0.5
    return V, state


def _ridge_dual_newton(problem, max_iter, tol, progress):
    """Newton on the factorized dual of the ridge problem (module docstring)."""
    covariance, caps, ridge = problem["covariance_n"], problem["caps_n"], problem["ridge_n"]
    V = np.zeros_like(caps)
    state = _factor_state(V, covariance, caps, ridge)
    primal = _factor_primal(state, covariance, ridge)
    history, converged, iteration = [primal], False, 0
    for iteration in progress_bar(range(1, max_iter + 1), progress=progress, desc="MLE"):
        if primal - state["dual"] <= tol * max(1.0, abs(primal)):
            converged, iteration = True, iteration - 1
            break
        V_next, state_next = _factor_step(V, state, problem)
        if V_next is V:  # no ascent left at rounding level
            break
        V, state = V_next, state_next
        primal = _factor_primal(state, covariance, ridge)
        history.append(primal)
    converged = converged or primal - state["dual"] <= tol * max(1.0, abs(primal))
    Omega_n = (state["Q"] * state["w"]) @ state["Q"].T
    info = {"multipliers": np.sum(caps * V, axis=1) ** 2, "dual_value": state["dual"]}
    return 0.5 * (Omega_n + Omega_n.T), converged, iteration, history, info


def _pdhg(problem, max_iter, tol, progress):
    """Chambolle-Pock on the centred, scaled problem (module docstring)."""
    p, m, tau = problem["p"], problem["m"], problem["tau"]
    covariance, ridge, caps = problem["covariance_n"], problem["ridge_n"], problem["caps_n"]
    dual_step = 0.99 / (tau * (1.0 + m))
    outer = np.einsum("ip,iq->ipq", caps, caps)
    shrink = 1.0 / (1.0 + ridge * tau)
    # start: the unconstrained maximizer (ridge: its closed form in the eigenbasis of Sigma_hat)
    d, Q = np.linalg.eigh(covariance)
    Omega = (Q * _ridge_inverse(d, ridge)) @ Q.T
    eta = np.zeros(p)  # centred data: eta = Omega xbar = 0
    duals = {"matrix": np.zeros((p, p)), "vector": np.zeros(p), "caps": np.zeros((m, p, p))}
    history = [_centred_objective(Omega, covariance, ridge)]
    prox_seconds, converged, iteration = 0.0, False, 0
    for iteration in progress_bar(range(1, max_iter + 1), progress=progress, desc="CP MLE"):
        shifted = (Omega - tau * (duals["matrix"] + duals["caps"].sum(axis=0) + covariance))
        d, Q = np.linalg.eigh(0.5 * (shifted + shifted.T) * shrink)
        Omega_next = (Q * (0.5 * (d + np.sqrt(d * d + 4.0 * tau * shrink)))) @ Q.T
        eta_next = eta - tau * duals["vector"]
        started = time.perf_counter()
        new = _pdhg_duals(duals, 2.0 * Omega_next - Omega, 2.0 * eta_next - eta, outer,
                          dual_step)
        prox_seconds += time.perf_counter() - started
        residual = _pdhg_residual(Omega, eta, Omega_next, eta_next, duals, new, tau, dual_step)
        Omega, eta, duals = Omega_next, eta_next, new
        if iteration % 10 == 0:
            history.append(_centred_objective(Omega, covariance, ridge))
        if residual <= tol:
            converged = True
            break
    return Omega, converged, iteration, history, {"prox_seconds": prox_seconds}


def _ridge_inverse(d, ridge):
    """Eigenvalues of ``argmin -log det Omega + tr(Omega A) + ridge/2 ||Omega||^2`` for ``A``'s
    eigenvalues ``d``: ``1/d``, or with a ridge the positive root of ``ridge w^2 + d w - 1``,
    ``2 / (d + sqrt(d^2 + 4 ridge))`` for ``d >= 0`` and ``(sqrt(d^2 + 4 ridge) - d) / (2
    ridge)`` for ``d < 0`` (both without cancellation; ``A`` may be indefinite)."""
    if ridge == 0:
        return 1.0 / d
    root = np.sqrt(d * d + 4.0 * ridge)
    return np.where(d >= 0, 2.0 / (d + np.abs(root)), (root - np.minimum(d, 0.0)) / (2 * ridge))


def _pdhg_duals(duals, Omega_bar, eta_bar, outer, dual_step):
    """Dual steps: ``v - prox_{2 phi}(v)`` for the perspective, and the projections onto
    ``{Y <= 0}`` shifted by the caps."""
    point_matrix = duals["matrix"] + dual_step * Omega_bar
    point_vector = duals["vector"] + dual_step * eta_bar
    point_matrix = 0.5 * (point_matrix + point_matrix.T)
    if np.any(point_vector):
        prox_matrix, prox_vector, _ = _prox(point_matrix, point_vector, 2.0, "newton", 1e-12, 50)
    else:  # prox_{2 phi}(V, 0) = (Pi_+(V), 0): always the case on centred data
        w, U = np.linalg.eigh(point_matrix)
        prox_matrix, prox_vector = (U * np.maximum(w, 0.0)) @ U.T, point_vector
    caps_next = np.empty_like(duals["caps"])
    for i in range(outer.shape[0]):
        gap = dual_step * outer[i] - (duals["caps"][i] + dual_step * Omega_bar)
        w, U = np.linalg.eigh(0.5 * (gap + gap.T))
        caps_next[i] = -(U * np.maximum(w, 0.0)) @ U.T
    return {"matrix": point_matrix - prox_matrix, "vector": point_vector - prox_vector,
            "caps": caps_next}


def _pdhg_residual(Omega, eta, Omega_next, eta_next, duals, new, tau, dual_step) -> float:
    """The larger relative stationarity residual of the primal and dual steps (Goldstein, Li,
    Yuan 2015)."""
    change = Omega - Omega_next
    change_caps = duals["caps"] - new["caps"]
    change_matrix = duals["matrix"] - new["matrix"]
    change_vector = duals["vector"] - new["vector"]
    primal = _norm(change / tau - change_matrix - change_caps.sum(axis=0),
                   (eta - eta_next) / tau - change_vector)
    primal /= max(1.0, _norm(new["matrix"] + new["caps"].sum(axis=0), new["vector"]))
    dual = _norm(change_matrix / dual_step - change, change_vector / dual_step - (eta - eta_next),
                 change_caps / dual_step - change)
    dual /= max(1.0, math.sqrt(1.0 + new["caps"].shape[0]) * _norm(Omega_next, eta_next))
    return max(primal, dual)
