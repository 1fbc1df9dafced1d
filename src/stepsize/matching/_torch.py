"""The projected fixed-point iteration of :mod:`.solver` on torch tensors, one pair or a batch.

Same iteration as the numpy solver (:func:`~stepsize.matching.solver.projected_fixed_point`),
on the tensors' device and dtype: from the barycenter ``M_0 = 11^T / N`` (first gradient the
rank-one ``(A 1)(1^T B) / N``),

    D_k     = S(grad Z(M_k)),        grad Z(M) = A M B   (1/2 (A M B^T + A^T M B) if directed),
    M_{k+1} = M_k + alpha_k (D_k - M_k),   alpha_k = argmax_[0, 1] c1 alpha + c2 alpha^2,

with ``S`` the dynamical softassign ``sinkhorn(beta X / (max X - min X))`` (log-stabilized,
warm-started from the previous column potentials, the same tolerance and cap), ``c1 = <Delta,
grad>``, ``c2 = <Delta, A Delta B> / 2``, and the same stopping rule ``alpha ||Delta|| <= tol
||M_{k+1}||``. The presets of ``METHODS`` apply unchanged, apfp's adaptive-softassign restart
from a soft fixed point, the IPFP sharpening (``polish``), ``n_init`` starts and the stall
restarts included. Linear assignments (the final rounding and the Hungarian projection of the
sharpening) run on the CPU with scipy's ``linear_sum_assignment``; everything else stays on
the tensors' device. A batch ``A (b, n1, n1)``, ``B (b, n2, n2)`` runs the b pairs together
(batched products and Sinkhorn scalings, a pair leaves the batch when it has converged) and
gives the same result per pair as b separate calls.

This module imports torch; :mod:`stepsize.matching` imports it only when a tensor is matched.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from stepsize._results import ConvergenceWarning, warn_not_converged
from stepsize._validation import check_choice, check_int, check_rng, describe
from stepsize.matching.projections import _CHECK_EVERY, _hungarian_columns, _refuse_meta
from stepsize.matching.solver import (
    _SETTLED_MESSAGE,
    _SOFTASSIGNS,
    _STAGNANT_MESSAGE,
    METHODS,
    MatchingOptions,
    MatchingResult,
    _converged_step,
    _every_stalled,
    _exchanged,
    _exchanges,
    _first_only,
    _from_internal,
    _initial_matrix,
    _loose,
    _maximizes,
    _next_inner_tol,
    _polish_settings,
    _rescale,
    _settings_of,
    _settled,
    _settles,
    _sharpens,
    _soft_restart,
    _sparse_pair,
    _stagnant,
    _stall,
    _to_col_ind,
    _to_user_units,
    progress_options,
)

__all__ = ["match_graphs_torch"]

# The log-domain Sinkhorn's absorption and underflow thresholds, as in projections._sinkhorn
# (float32 tensors use that module's float32 kernel values).
_ABSORB_LOW = {torch.float64: 1e-100, torch.float32: 1e-30}
_UNDERFLOW_LOG = {torch.float64: -600.0, torch.float32: -80.0}
_TORCH_PROJECTIONS = ("dynamical_softassign", "softassign", "hungarian")


def match_graphs_torch(A, B, *, method: str = "apfp", maximize: bool = True, n_init: int = 1,
                       seed=None, progress: bool | None = None, **options):
    """Match two graphs given as torch tensors, or a batch of pairs, on their device.

    Maximizes ``Z(M) = 1/2 <A, M B M^T>`` (``maximize=False``: minimizes scipy's QAP objective
    ``f = sum_ik A[i, k] B[col_ind[i], col_ind[k]]``) with the preset ``METHODS[method]``
    overridden by ``options``, exactly as :func:`~stepsize.matching.match_graphs` does with
    numpy arrays (see the module docstring); the products and Sinkhorn scalings run on the
    tensors' device in their dtype (float32 or float64), the linear assignments on the CPU.

    Args:
        A: graph 1, a floating tensor (n1, n1), or a batch (b, n1, n1); directed or not.
        B: graph 2, (n2, n2) or (b, n2, n2), on A's device with A's dtype.
        method: ``"apfp"`` (default), ``"asm"``, ``"ga"`` or ``"ipfp"`` (``"dspfp"``'s
            projection has no torch form).
        maximize: True: graph matching (``objective = Z``); False: the QAP minimization.
        n_init: starts per pair (>= 1): the barycenter (or ``init``), then randomized doubly
            stochastic starts; the best objective is kept.
        seed: None, an int (every pair of a batch draws from its own generator with this
            seed, so pair j equals the single call on ``A[j], B[j]``) or a numpy Generator
            (shared, drawn from pair by pair).
        progress: a bar counting iterations on stderr: None (on a terminal), True or False.
        **options: keywords of :func:`~stepsize.matching.projected_fixed_point` (``max_iter``,
            ``tol``, ``beta``, ``inner_tol``, ``polish``, ``init``, ``history``, ...) except
            ``lam`` (no node affinity K here).

    Returns:
        A :class:`~stepsize.matching.MatchingResult` (``X`` a tensor on the input's device,
        ``col_ind`` a numpy array), or for a batch a list of b of them.

    Raises:
        TypeError, ValueError: naming the argument (not tensors, shapes, devices, dtypes,
            non-finite entries, and the option checks of ``projected_fixed_point``).

    >>> g = torch.Generator().manual_seed(0)
    >>> A = torch.rand(3, 20, 20, generator=g, dtype=torch.float64); A = A + A.mT
    >>> perm = torch.stack([torch.randperm(20, generator=g) for _ in range(3)])
    >>> B = torch.stack([a[p][:, p] for a, p in zip(A, perm)])   # node perm[j] of A is j of B
    >>> results = match_graphs_torch(A, B)
    >>> [bool((p[r.col_ind] == torch.arange(20)).all()) for r, p in zip(results, perm)]
    [True, True, True]

    Reference: Shen, Niu, Zhu, "Dynamical softassign and adaptive parameter tuning for graph
    matching", arXiv:2208.08233 (2022).
    """
    method = check_choice(method, "method", METHODS)
    if "lam" in options:
        raise TypeError("lam: torch tensors are matched without a node affinity K; pass numpy "
                        "arrays to match_graphs for K")
    A, B, batched = _checked_tensors(A, B)
    if not isinstance(maximize, (bool, np.bool_)):
        raise TypeError(f"maximize must be True or False, got {describe(maximize)}")
    n_init = check_int(n_init, "n_init", low=1)
    preset = METHODS[method].replaced(**options)
    with progress_options(preset.as_dict(), progress, f"match_graphs ({method})") as chosen:
        chosen = MatchingOptions(**chosen)
        check_choice(chosen.projection, "projection", _TORCH_PROJECTIONS)
        settings, restart_epsilon = _settings_of(chosen, max(A.shape[-1], B.shape[-1]))
        problem = _problem(A, B, bool(maximize))
        inits = _inits(chosen.init, A.shape[0], A.shape[-1], B.shape[-1])
        rngs = ([check_rng(seed)] * A.shape[0] if isinstance(seed, np.random.Generator)
                else [check_rng(seed) for _ in range(A.shape[0])])
        results = _run_starts(problem, settings, inits, rngs, n_init, restart_epsilon)
    for j, result in enumerate(results):
        _finish(result, problem, j, bool(maximize), bool(chosen.history))
        result.method = method
    return results if batched else results[0]


def _checked_tensors(A, B):
    """``(A, B, batched)`` as 3-D tensors after the boundary checks."""
    for value, name in ((A, "A"), (B, "B")):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {describe(value)}")
        _refuse_meta(value, name)
        if value.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be real and floating (a float32 or float64 tensor), "
                            f"got {describe(value)}")
        if value.ndim not in (2, 3) or value.shape[-1] != value.shape[-2]:
            raise ValueError(f"{name} must be a square matrix (n, n) or a batch (b, n, n), got "
                             f"shape {tuple(value.shape)}")
    if A.ndim != B.ndim or (A.ndim == 3 and A.shape[0] != B.shape[0]):
        raise ValueError(f"A and B must both be matrices or batches of the same length, got "
                         f"shapes {tuple(A.shape)} and {tuple(B.shape)}")
    if A.device != B.device or A.dtype != B.dtype:
        raise ValueError(f"B must be on A's device with A's dtype ({A.device}, {A.dtype}), got "
                         f"{B.device}, {B.dtype}")
    if min(A.shape[-1], B.shape[-1]) == 0 or (A.ndim == 3 and A.shape[0] == 0):
        raise ValueError(f"A and B must be non-empty, got shapes {tuple(A.shape)} and "
                         f"{tuple(B.shape)}")
    for value, name in ((A, "A"), (B, "B")):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite (it has NaN or inf entries)")
    batched = A.ndim == 3
    return (A, B, True) if batched else (A[None], B[None], False)


def _inits(init, b: int, n1: int, n2: int) -> list:
    """Per pair: ``"barycenter"``, ``"randomized"`` or an (n1, n2) numpy array."""
    if isinstance(init, str):
        return [check_choice(init, "init", ("barycenter", "randomized"))] * b
    if not isinstance(init, torch.Tensor) or tuple(init.shape[-2:]) != (n1, n2) or (
            init.ndim == 3 and init.shape[0] != b) or init.ndim not in (2, 3):
        raise ValueError(f"init must be 'barycenter', 'randomized' or a tensor ({n1}, {n2}) "
                         f"(or ({b}, {n1}, {n2})), got {describe(init)}")
    starts = init.detach().to("cpu", torch.float64).numpy()
    return [starts if starts.ndim == 2 else starts[j] for j in range(b)]


@dataclass(frozen=True)
class _Problem:
    """A batch of normalized problems padded to ``N = max(n1, n2)``: the operators ``A``,
    ``B`` of the gradient (``A_T``, ``B_T`` when both graphs are directed, else None), the
    user's tensors, and ``log s`` per pair (``Z`` of the normalized problem is ``Z / s``)."""

    A: torch.Tensor
    B: torch.Tensor
    A_T: torch.Tensor | None
    B_T: torch.Tensor | None
    user: tuple
    log_scale: list
    n1: int
    n2: int
    zero: list

    @property
    def size(self) -> int:
        """``N``, the padded size."""
        return self.A.shape[-1]

    def subset(self, rows: list[int]) -> _Problem:
        """The problems of the pairs ``rows`` (the same object when that is every pair)."""
        if len(rows) == self.A.shape[0]:
            return self
        index = torch.as_tensor(rows, device=self.A.device)

        def pick(t):
            return None if t is None else t.index_select(0, index)

        return replace(self, A=pick(self.A), B=pick(self.B), A_T=pick(self.A_T),
                       B_T=pick(self.B_T), log_scale=[self.log_scale[j] for j in rows],
                       zero=[self.zero[j] for j in rows])


def _problem(A, B, maximize: bool) -> _Problem:
    """Normalize (``A / max|A|``, ``B / max|B|``), pad, choose the gradient's operators.

    As in the numpy solver: the gradient is ``A M B`` when both graphs are symmetric, or when
    one is and the other is replaced by its symmetric part (exact); else both terms.
    """
    n1, n2 = A.shape[-1], B.shape[-1]
    size = max(n1, n2)
    internal = A if maximize else -A
    a, b = A.abs().amax(dim=(1, 2)), B.abs().amax(dim=(1, 2))
    zero = ((a == 0) | (b == 0)).tolist()
    log_scale = [0.0 if z else math.log(x) + math.log(y)
                 for z, x, y in zip(zero, a.tolist(), b.tolist())]
    a, b = torch.where(a > 0, a, 1.0), torch.where(b > 0, b, 1.0)
    A_ops = _padded(internal / a[:, None, None], size)
    B_ops = _padded(B / b[:, None, None], size)
    symmetric_a = bool(torch.equal(A, A.mT))
    symmetric_b = bool(torch.equal(B, B.mT))
    A_T = B_T = None
    if symmetric_a and not symmetric_b:
        B_ops = (B_ops + B_ops.mT) * 0.5
    elif symmetric_b and not symmetric_a:
        A_ops = (A_ops + A_ops.mT) * 0.5
    elif not symmetric_a:
        A_T, B_T = A_ops.mT.contiguous(), B_ops.mT.contiguous()
    return _Problem(A_ops, B_ops, A_T, B_T, (A, B), log_scale, n1, n2, zero)


def _padded(matrices: torch.Tensor, size: int) -> torch.Tensor:
    n = matrices.shape[-1]
    if n == size:
        return matrices.contiguous()
    return torch.nn.functional.pad(matrices, (0, size - n, 0, size - n))


def _quadratic(problem: _Problem, X: torch.Tensor) -> torch.Tensor:
    """``A X B`` (``1/2 (A X B^T + A^T X B)`` with both graphs directed), batched."""
    if problem.A_T is None:
        return (problem.A @ X) @ problem.B
    return 0.5 * ((problem.A @ X) @ problem.B_T + (problem.A_T @ X) @ problem.B)


def _barycenter_quadratic(problem: _Problem) -> torch.Tensor:
    """``_quadratic`` at ``11^T / N``: rank-one terms, no product."""
    A, B, size = problem.A, problem.B, problem.size
    rows_a, cols_a = A.sum(dim=2), A.sum(dim=1)
    rows_b, cols_b = B.sum(dim=2), B.sum(dim=1)
    if problem.A_T is None:
        return rows_a[:, :, None] * (cols_b / size)[:, None, :]
    return 0.5 * (rows_a[:, :, None] * (rows_b / size)[:, None, :]
                  + cols_a[:, :, None] * (cols_b / size)[:, None, :])


@dataclass
class _Scaling:
    """Batched Sinkhorn output: ``P`` (b, N, N), per pair the scaling rounds, the column
    log potential (warm start of the next projection) and the row-sum error reached."""

    P: torch.Tensor
    n_iter: list
    potential: torch.Tensor
    error: list


def _sinkhorn(log_kernel: torch.Tensor, tol: torch.Tensor, max_iter: int,
              warm: torch.Tensor | None) -> _Scaling:
    """Log-stabilized Sinkhorn scaling of ``exp(log_kernel)`` per pair (overwrites it).

    ``projections._sinkhorn`` batched: the kernel ``exp(S - rowmax - colmax)`` lies in
    ``(0, 1]``, scalings are folded into the potentials before they leave ``[1e-100, 1e100]``
    (float32: 1e-30), and a pair stops when its row-sum error is below its ``tol`` (b,)
    (columns are exact), tested at the same iterations as there (float64: the first three,
    then every ``_CHECK_EVERY``-th). ``warm``: column potentials (b, N) to start from, NaN rows
    for a cold start.
    """
    dtype = log_kernel.dtype
    if warm is not None:
        cold = torch.isnan(warm[:, :1])
        log_kernel += torch.where(cold, 0.0, warm)[:, None, :]
    log_kernel -= log_kernel.amax(dim=2, keepdim=True)
    column_max = log_kernel.amax(dim=1)
    if warm is None:
        g = -column_max
    else:
        g = torch.where(cold | (column_max < _UNDERFLOW_LOG[dtype]), -column_max, 0.0)
    log_kernel += g[:, None, :]
    potential = g if warm is None else torch.where(cold, 0.0, warm) + g
    kernel = log_kernel.exp_()
    u, v, potential, rounds, errors = _scalings(kernel, tol, max_iter, potential)
    kernel *= u[:, :, None]
    kernel *= v[:, None, :]
    return _Scaling(kernel, rounds, potential + torch.log(v), errors)


def _scalings(kernel: torch.Tensor, tol: torch.Tensor, max_iter: int, potential):
    """The scaling loop of :func:`_sinkhorn`: ``(u, v, potential, rounds, errors)`` per pair.

    A pair that has converged leaves the batch (its kernel, scalings and potential are stored
    back), so the remaining pairs' products are the only ones computed; a fold rescales the
    kernel in place.
    """
    batch, n, dtype = kernel.shape[0], kernel.shape[-1], kernel.dtype
    low, every = _ABSORB_LOW[dtype], (_CHECK_EVERY if dtype == torch.float64 else 1)
    u_all = torch.ones(batch, n, dtype=dtype, device=kernel.device)
    v_all, potential = torch.ones_like(u_all), potential.clone()
    rounds, active, errors = [max_iter] * batch, list(range(batch)), [math.inf] * batch
    K, u, v, pot, tol_a = kernel, u_all, v_all, potential, tol
    kernel_v = (K @ v[:, :, None])[:, :, 0]
    for iteration in range(1, max_iter + 1):
        test = iteration <= 3 or iteration % every == 1 or every == 1
        if iteration > 1 and test:
            error = (u * kernel_v - 1.0).abs().amax(dim=1)
            done = (error < tol_a).tolist()
            if any(done):
                finished = [k for k, flag in enumerate(done) if flag]
                error = error.tolist()
                for k in finished:
                    rounds[active[k]], errors[active[k]] = iteration - 1, error[k]
                _store(kernel, u_all, v_all, potential, (K, u, v, pot), active, finished)
                keep = [k for k, flag in enumerate(done) if not flag]
                active = [active[k] for k in keep]
                if not active:
                    return u_all, v_all, potential, rounds, errors
                index = torch.as_tensor(keep, device=K.device)
                K, u, v, pot, tol_a, kernel_v = (t.index_select(0, index)
                                                 for t in (K, u, v, pot, tol_a, kernel_v))
        u = 1.0 / kernel_v
        row = (u[:, None, :] @ K)[:, 0, :]
        v = 1.0 / row
        kernel_v = (K @ v[:, :, None])[:, :, 0]
        if not test:
            continue
        fold = ((row.amin(dim=1) < low) | (kernel_v.amin(dim=1) < low))[:, None]
        if bool(fold.any()):
            # Fold the scalings into the kernel before u = 1 / (K v) or v overflows.
            K *= torch.where(fold, u, 1.0)[:, :, None] * torch.where(fold, v, 1.0)[:, None, :]
            pot = pot + torch.where(fold, torch.log(v), 0.0)
            u, v = torch.where(fold, 1.0, u), torch.where(fold, 1.0, v)
            kernel_v = torch.where(fold, K.sum(dim=2), kernel_v)
    for k, error in enumerate((u * kernel_v - 1.0).abs().amax(dim=1).tolist()):
        errors[active[k]] = error
    _store(kernel, u_all, v_all, potential, (K, u, v, pot), active, range(len(active)))
    return u_all, v_all, potential, rounds, errors


def _store(kernel, u_all, v_all, potential, current, active: list, local) -> None:
    """Write the active pairs ``local`` (indices into ``active``) back into the full arrays."""
    K, u, v, pot = current
    local = list(local)
    if not local:
        return
    rows = torch.as_tensor([active[k] for k in local], device=kernel.device)
    index = torch.as_tensor(local, device=kernel.device)
    if K is not kernel:
        kernel.index_copy_(0, rows, K.index_select(0, index))
    for target, part in ((u_all, u), (v_all, v), (potential, pot)):
        target.index_copy_(0, rows, part.index_select(0, index))


def _softassign(grad: torch.Tensor, beta: torch.Tensor, settings, n1: int, n2: int,
                warm: torch.Tensor | None, tol: torch.Tensor) -> tuple[_Scaling, torch.Tensor]:
    """Dynamical (scaled by the real block's range or max) or plain softassign per pair,
    adaptive (beta doubled by the Hadamard power until the error bound holds) when
    ``settings.epsilon`` is set; ``(scaling, beta reached)``. A pair whose scores are constant
    gets the uniform matrix and a cold start next time (NaN potential)."""
    if settings.projection == "dynamical_softassign":
        block = grad[:, :n1, :n2]
        high, low = block.amax(dim=(1, 2)), block.amin(dim=(1, 2))
        width = high - low if settings.scale == "range" else torch.maximum(high, -low)
    else:
        width = torch.ones_like(beta)
    flat = width == 0
    width = torch.where(flat, 1.0, width)
    out = _sinkhorn(grad * (beta / width)[:, None, None], tol, settings.inner_max_iter, warm)
    if settings.epsilon is not None:
        out, beta = _doubling(grad, width, beta, settings, out, flat, tol)
    if bool(flat.any()):
        size = grad.shape[-1]
        out.P = torch.where(flat[:, None, None], 1.0 / size, out.P)
        out.potential = torch.where(flat[:, None], math.nan, out.potential)
        out.n_iter = [0 if f else k for f, k in zip(flat.tolist(), out.n_iter)]
        out.error = [0.0 if f else e for f, e in zip(flat.tolist(), out.error)]
    return out, beta


def _doubling(X, width, beta, settings, out: _Scaling, flat: torch.Tensor, tol: torch.Tensor):
    """The adaptive softassign's loop (``projections._adaptive_softassign``) per pair: double
    beta while ``H(P) / beta > epsilon (<X, P> - <X, U>) / width`` and ``2 beta <= beta_max``."""
    uniform_value = X.sum(dim=(1, 2)) / X.shape[-1] / width
    while True:
        bound = torch.special.entr(out.P).sum(dim=(1, 2)) / beta
        gain = (X * out.P).sum(dim=(1, 2)) / width - uniform_value
        more = ((2.0 * beta <= settings.beta_max) & (bound != 0) & ~flat
                & ~(bound <= settings.epsilon * gain))
        rows = torch.nonzero(more).flatten()
        if rows.numel() == 0:
            return out, beta
        beta = torch.where(more, 2.0 * beta, beta)
        again = _sinkhorn(X[rows] * (beta[rows] / width[rows])[:, None, None], tol[rows],
                          settings.inner_max_iter, 2.0 * out.potential[rows])
        out.P = out.P.index_copy(0, rows, again.P)
        out.potential = out.potential.index_copy(0, rows, again.potential)
        for j, k, error in zip(rows.tolist(), again.n_iter, again.error):
            out.n_iter[j] += k
            out.error[j] = error


def _assignments(scores: torch.Tensor) -> list[np.ndarray]:
    """Per pair the columns of the permutation maximizing ``<scores, P>``: the row-wise argmax
    when it is a permutation (then optimal; found on the device), else scipy's LAP on the CPU
    (``projections._hungarian_columns``)."""
    argmax = scores.argmax(dim=2).cpu().numpy()
    columns = []
    for j, best in enumerate(argmax):
        if np.unique(best).size == best.size:
            columns.append(best.astype(np.intp))
        else:
            columns.append(_hungarian_columns(scores[j].detach().to("cpu", torch.float64)
                                              .numpy()))
    return columns


def _permutations(columns: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    """The 0/1 matrices of ``columns``, shaped and placed like ``like`` (b, N, N)."""
    P = torch.zeros_like(like)
    index = torch.as_tensor(np.stack(columns), device=like.device)
    return P.scatter_(2, index[:, :, None], 1.0)


def _project(grad, beta, settings, problem: _Problem, potential, tol):
    """``(D, inner rounds, potential, beta, columns or None, row-sum errors)`` for the live
    pairs (the Hungarian projection's error is 0)."""
    if settings.projection in _SOFTASSIGNS:
        out, beta = _softassign(grad, beta, settings, problem.n1, problem.n2, potential, tol)
        return out.P, out.n_iter, out.potential, beta, None, out.error
    columns = _assignments(grad)
    ones = [1] * grad.shape[0]
    return _permutations(columns, grad), ones, potential, beta, columns, [0.0] * len(ones)


def _iterate(problem: _Problem, settings, M: torch.Tensor, barycenter: bool) -> list:
    """The projected fixed-point loop for every pair from ``M`` (updated in place), then the
    rounding; one :class:`MatchingResult` per pair (``solver._iterate`` batched). A pair
    leaves the batch when it stops."""
    batch, size = M.shape[0], problem.size
    quadratic = _barycenter_quadratic(problem) if barycenter else _quadratic(problem, M)
    values = (0.5 * (M * quadratic).sum(dim=(1, 2))).tolist()
    state = [{"trace": {"alpha": [], "c1": [], "c2": [], "beta": [], "inner_iterations": []},
              "objectives": [value], "best": (-math.inf, None), "best_iteration": 0,
              "roundings": {"last": [], "not_fixed": None},
              "n_iter": settings.max_iter,
              "converged": False, "message": f"reached max_iter = {settings.max_iter}"}
             for value in values]
    potential = torch.full((batch, size), math.nan, dtype=M.dtype, device=M.device)
    beta = torch.full((batch,), settings.beta, dtype=M.dtype, device=M.device)
    # The Sinkhorn tolerance follows each pair's last relative change, inner_tol_max down to
    # inner_tol.
    inner_tol = [max(settings.inner_tol, settings.inner_tol_max)] * batch
    live, sub, index = list(range(batch)), problem, None
    settle = _sparse_pairs(problem) if _settles(settings, barycenter) else [False] * batch
    for iteration in range(1, settings.max_iter + 1):
        if not live:
            break
        if len(live) != sub.A.shape[0]:  # pairs left: the operators of the others, once
            sub, index = problem.subset(live), torch.as_tensor(live, device=M.device)
        full = len(live) == batch
        M_l, quad_l, pot_l, beta_l = (t if full else t.index_select(0, index)
                                      for t in (M, quadratic, potential, beta))
        if iteration > 1:
            beta_l = torch.clamp(beta_l * settings.beta_growth, max=settings.beta_max)
        tol_l = torch.as_tensor([inner_tol[j] for j in live], dtype=M.dtype, device=M.device)
        direction, inner, pot_l, beta_l, columns, errors = _project(quad_l, beta_l, settings,
                                                                    sub, pot_l, tol_l)
        direction -= M_l
        curvature = _quadratic(sub, direction)
        stats = torch.stack([(direction * quad_l).sum(dim=(1, 2)),
                             0.5 * (direction * curvature).sum(dim=(1, 2)),
                             torch.linalg.vector_norm(direction, dim=(1, 2))]).T.tolist()
        betas = beta_l.tolist()
        alphas = [_step(state[j], values[j], iteration, settings, row, betas[k], inner[k],
                        None if columns is None else columns[k])
                  for k, (j, row) in enumerate(zip(live, stats))]
        step = torch.as_tensor([0.0 if a is None else a for a in alphas], dtype=M.dtype,
                               device=M.device)[:, None, None]
        M_l += step * direction
        quad_l += step * curvature
        norms = torch.linalg.vector_norm(M_l, dim=(1, 2)).tolist()
        if not full:
            for target, part in ((M, M_l), (quadratic, quad_l), (potential, pot_l),
                                 (beta, beta_l)):
                target.index_copy_(0, index, part)
        else:
            potential, beta = pot_l, beta_l
        # The Hungarian rounding of each pair's new iterate (solver._settled), when used.
        # Not the first iterate's (solver._iterate).
        rounded = (_assignments(M_l) if iteration > 1 and any(settle[j] for j in live)
                   else [None] * len(live))
        rounded = [r if settle[j] else None for r, j in zip(rounded, live)]
        live = [j for k, j in enumerate(live)
                if not _stopped(state[j], values, inner_tol, j, iteration, settings, alphas[k],
                                stats[k], norms[k], errors[k], rounded[k], sub, k)]
    return _rounded(problem, M, values, state)


def _step(state: dict, value: float, iteration: int, settings, stats, beta, inner,
          columns) -> float | None:
    """The step of one pair from ``(c1, c2)``; records the trace and the best discrete
    iterate (Hungarian projection: ``Z(D) = Z(M) + c1 + c2``). None: no better discrete
    iterate in ``settings.patience`` iterations (the pair stops)."""
    c1, c2, _ = stats
    if columns is not None and value + c1 + c2 > state["best"][0]:
        state["best"], state["best_iteration"] = (value + c1 + c2, columns), iteration
    elif settings.patience and iteration - state["best_iteration"] >= settings.patience:
        return None
    alpha = float(settings.rule(c1, c2))
    for key, item in zip(state["trace"], (alpha, c1, c2, float(beta), inner)):
        state["trace"][key].append(item)
    return alpha


def _stopped(state: dict, values: list, inner_tol: list, j: int, iteration: int, settings,
             alpha: float | None, stats, norm: float, error: float, rounded, sub, k) -> bool:
    """Update pair ``j``'s objective and Sinkhorn tolerance after its step; whether it stops
    (as ``solver._iterate``, with its ``_converged_step`` and ``_next_inner_tol``)."""
    c1, c2, direction_norm = stats
    if alpha is None:
        state["objectives"].append(values[j])
        state.update(n_iter=iteration, converged=True,
                     message=f"no better discrete iterate in {settings.patience}")
        return True
    if alpha == 0.0:
        state["objectives"].append(values[j])
        if _loose(inner_tol[j], error, settings):  # project again at inner_tol
            inner_tol[j] = settings.inner_tol
            return False
        state.update(n_iter=iteration, converged=True,
                     message="the step size is 0: no ascent along the projection")
        return True
    values[j] += alpha * c1 + alpha * alpha * c2
    state["objectives"].append(values[j])
    change = alpha * direction_norm / norm
    if _converged_step(change, inner_tol[j], error, settings):
        state.update(n_iter=iteration, converged=True,
                     message=f"relative change below tol = {settings.tol:g}")
        return True
    settled = rounded is not None and _settled(state["roundings"], rounded, settings,
                                               functools.partial(_discrete_fixed, sub, k))
    if settled or _stagnant(state["objectives"], settings):
        state.update(n_iter=iteration, converged=True,
                     message=_SETTLED_MESSAGE if settled else _STAGNANT_MESSAGE)
        return True
    inner_tol[j] = _next_inner_tol(change, settings)
    return False


def _sparse_pairs(problem: _Problem) -> list[bool]:
    """``solver._sparse_pair`` of each pair of the batch (the padding adds no nonzero)."""
    return [_sparse_pair(int(a), int(b), problem.n1, problem.n2) for a, b in zip(
        torch.count_nonzero(problem.A, dim=(1, 2)).tolist(),
        torch.count_nonzero(problem.B, dim=(1, 2)).tolist())]


def _discrete_fixed(problem: _Problem, k: int, columns: np.ndarray) -> bool:
    """``solver._discrete_fixed`` for pair ``k``: the gradient at the permutation, in float64
    on the CPU."""
    A, B, A_T, B_T = (None if t is None else t[k].to("cpu", torch.float64).numpy()
                      for t in (problem.A, problem.B, problem.A_T, problem.B_T))
    G = A @ B[columns] if A_T is None else 0.5 * (A @ B_T[columns] + A_T @ B[columns])
    return _maximizes(G, columns)


def _rounded(problem: _Problem, M: torch.Tensor, values: list, state: list) -> list:
    """Round each pair's last iterate (Hungarian; or its best discrete iterate if it scores
    more), as ``solver._rounded``."""
    n1, n2 = problem.n1, problem.n2
    row_max = M[:, :n1].amax(dim=2).mean(dim=1).tolist()
    results = []
    for j, columns in enumerate(_assignments(M)):
        candidates = [_to_col_ind(columns, n1, n2)]
        if state[j]["best"][1] is not None:
            candidates.append(_to_col_ind(state[j]["best"][1], n1, n2))
        scores = [_normalized_score(problem, j, c) for c in candidates]
        pick = int(np.argmax(scores))
        results.append(MatchingResult(
            x=M[j, :n1, :n2], n_iter=state[j]["n_iter"], converged=state[j]["converged"],
            history=state[j]["objectives"], message=state[j]["message"],
            info={**state[j]["trace"], "relaxed_objective": values[j],
                  "rounding": ("hungarian", "best_discrete_iterate")[pick], "sparse": False,
                  "mean_row_max": row_max[j], "_padded": M[j]},
            col_ind=candidates[pick], objective=scores[pick]))
    return results


def _matched_value(A: torch.Tensor, B: torch.Tensor, col_ind: np.ndarray) -> float:
    """``1/2 sum_ik A[i, k] B[col_ind[i], col_ind[k]]`` over the matched nodes (col_ind >= 0)."""
    rows = np.flatnonzero(col_ind >= 0)
    r = torch.as_tensor(rows, device=A.device)
    c = torch.as_tensor(col_ind[rows], device=A.device)
    return 0.5 * float((A[r][:, r] * B[c][:, c]).sum())


def _normalized_score(problem: _Problem, j: int, col_ind: np.ndarray) -> float:
    return _matched_value(problem.A[j], problem.B[j], col_ind)


def _run_start(problem: _Problem, rows: list[int], settings, starts, restart_epsilon) -> list:
    """One start for the pairs ``rows`` (``starts`` None: the barycenter, else a list of
    padded numpy matrices), apfp's restart of the soft fixed points, and the IPFP sharpening;
    one result per pair (``solver._run_start`` batched)."""
    sub = problem.subset(rows)
    like = sub.A

    def first_iterate(which):
        if starts is None:
            return torch.full((len(which), sub.size, sub.size), 1.0 / sub.size,
                              dtype=like.dtype, device=like.device)
        return torch.as_tensor(np.stack([starts[k] for k in which]), dtype=like.dtype,
                               device=like.device)

    results = _iterate(sub, settings, first_iterate(range(len(rows))), starts is None)
    soft = [k for k, r in enumerate(results)
            if _soft_restart(r, settings, restart_epsilon, sub.size, starts is None)]
    if soft:
        again = _iterate(sub.subset(soft), replace(settings, epsilon=restart_epsilon),
                         first_iterate(soft), starts is None)
        for k, second in zip(soft, again):
            first = results[k]
            kept = second if second.objective > first.objective else first
            kept.info["restart"] = {"kept": "restart" if kept is second else "first",
                                    "first_objective": first.objective,
                                    "first_n_iter": first.n_iter}
            kept.n_iter = first.n_iter + second.n_iter
            results[k] = kept
    sharpen = [k for k, r in enumerate(results) if _sharpens(r, settings, sub.size)]
    if sharpen:
        polish = _polish_settings(settings, _exchanges(settings, sub.size, True))
        sharp = _iterate(sub.subset(sharpen), polish,
                         torch.stack([results[k].info["_padded"] for k in sharpen]), False)
        for k, polished in zip(sharpen, sharp):
            result = results[k]
            result.info["polish"] = {"n_iter": polished.n_iter,
                                     "objective": polished.objective,
                                     "kept": polished.objective > result.objective}
            if polished.objective > result.objective:
                result.col_ind, result.objective = polished.col_ind, polished.objective
    for k, result in enumerate(results):
        result.info.pop("_padded")
        if _exchanges(settings, sub.size, True):  # the 2-opt search, on the CPU
            _exchanged(result, *(t[k].to(torch.float64).cpu().numpy() for t in (sub.A, sub.B)),
                       None, sub.n1, sub.n2)
    return results


def _run_starts(problem: _Problem, settings, inits: list, rngs: list, n_init: int,
                restart_epsilon) -> list:
    """Every start of every pair, batched start by start, then the stall restarts of the pairs
    whose best run stalled; the best run per pair (``solver._run_starts`` batched)."""
    batch, size, (n1, n2) = problem.A.shape[0], problem.size, (problem.n1, problem.n2)

    def starts_for(rows, first):
        kinds = [inits[j] if first else "randomized" for j in rows]
        if all(isinstance(kind, str) and kind == "barycenter" for kind in kinds):
            return None
        if any(isinstance(kind, str) and kind == "barycenter" for kind in kinds):
            raise ValueError("init: a batch must use one kind of start")
        return [_initial_matrix(kind, n1, n2, size, rngs[j]) for j, kind in zip(rows, kinds)]

    every = list(range(batch))
    runs = [[] for _ in every]
    for k in range(n_init):
        for j, result in zip(every, _run_start(problem, every, settings,
                                               starts_for(every, k == 0),
                                               _first_only(restart_epsilon, k == 0))):
            runs[j].append(result)
    stalls = [[None if problem.zero[j] else _stall(r, size, settings.projection)
               for r in runs[j]] for j in every]
    best = [max(range(n_init), key=lambda k, j=j: runs[j][k].objective) for j in every]
    for _ in range(settings.stall_restarts):
        pending = [j for j in every if _every_stalled(stalls[j])]
        if not pending:
            break
        for j, result in zip(pending, _run_start(problem, pending, settings,
                                                 starts_for(pending, False), None)):
            runs[j].append(result)
            stalls[j].append(_stall(result, size, settings.projection))
            if result.objective > runs[j][best[j]].objective or (
                    stalls[j][-1] is None and result.objective >= runs[j][best[j]].objective):
                best[j] = len(runs[j]) - 1
    return [_kept(runs[j], stalls[j], best[j], settings) for j in every]


def _kept(runs: list, stalls: list, best: int, settings) -> MatchingResult:
    """The best run of one pair with its per-start record; a stall is ``converged=False`` and
    a :class:`ConvergenceWarning` (``solver._run_starts``'s report)."""
    result = runs[best]
    result.info["starts"] = [
        {"init": "first" if k == 0 else "randomized", "n_iter": r.n_iter,
         "converged": r.converged, "stall": stall, "col_ind": r.col_ind}
        for k, (r, stall) in enumerate(zip(runs, stalls))]
    result.info["best_start"], result.info["stall"] = best, stalls[best]
    result.n_iter = sum(r.n_iter for r in runs)
    what = f"match_graphs_torch ({settings.projection})"
    if _every_stalled(stalls):
        place = ("the barycenter 11^T/N" if stalls[best] == "uniform" else
                 f"a soft fixed point (mean row maximum {result.info['mean_row_max']:.3g})")
        result.converged = False
        result.message = (f"stalled at {place}, as every one of {len(runs)} start(s) did, "
                          f"and the best matching found is returned")
        warnings.warn(f"{what} {result.message}", ConvergenceWarning, stacklevel=4)
    elif not result.converged and settings.max_iter > 0:
        warn_not_converged(what, result.n_iter, stacklevel=4)
    return result


def _finish(result: MatchingResult, problem: _Problem, j: int, maximize: bool,
            history: bool) -> None:
    """Values in the user's units and convention (``solver._full_result`` without seeds):
    ``objective`` of ``col_ind`` on the user's tensors (``Z``, or scipy's ``fun``)."""
    log_scale = problem.log_scale[j]
    _to_user_units(result, log_scale)
    A, B = problem.user[0][j], problem.user[1][j]

    def user_value(col_ind):
        value = _matched_value(A, B, col_ind)
        return value if maximize else 2.0 * value

    for start in result.info["starts"]:
        start["objective"] = user_value(start.pop("col_ind"))
    result.info["start_objectives"] = [start["objective"] for start in result.info["starts"]]
    result.objective = user_value(result.col_ind)
    result.history = ([_from_internal(_rescale(value, log_scale), maximize)
                       for value in result.history] if history else None)
    result.info["maximize"] = maximize
