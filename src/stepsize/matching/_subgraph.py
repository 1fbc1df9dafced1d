"""Matching graphs of different sizes: the smaller graph found inside the larger one.

With ``n1 < n2`` a matching sends every node of A to a distinct node of B. Padding A with
isolated dummy nodes ("naive" padding) maximizes the matched weight ``Z(P) = 1/2 <A, P B
P^T>``, which does not see the edges of B that the image of A has and A lacks: any dense region
of B scores as well as the planted copy. Centering the smaller graph by the larger graph's
mean off-diagonal weight ``c`` (0/1 graphs: its edge density),

    A_c = A - c (11^T - I),
    Z_c(P) = 1/2 <A_c, P B P^T> = Z(P) - c/2 sum_{i != k} B[col_ind[i], col_ind[k]],

charges every unit of B's weight induced on the image of A. For 0/1 graphs and ``0 < c < 1``
the planted copy of an induced subgraph maximizes ``Z_c``: with ``m`` the edges of A matched
onto edges of B and ``e >= m`` the edges B induces on the image, ``Z_c = m - c e <= (1 - c) m
<= (1 - c) |E_A|``, reached by the planted copy alone (up to automorphisms). graspologic's
"adopted" padding is the same construction with ``c = 1/2`` on both graphs (``2A - 1``,
``2B - 1``); on sparse graphs ``c = 1/2`` charges induced edges far more than matched edges
pay, and it measured worse than naive padding (docs/matching.md). When A is the larger graph
(``n1 > n2``) B is centered by A's mean weight instead, and the nodes of A left without a
partner get ``col_ind = -1``.

A rectangular Sinkhorn with row sums 1 and column sums at most 1 (a slack row holding the
``n2 - n1`` missing mass) is the same projection as padding: the dummy rows of the padded score
matrix are constant (A's padding has no edges), and Sinkhorn is invariant to constant rows, so
the padded softassign restricted to the real rows is the slack-row softassign. What changes the
answer is the objective, hence the centering here; the iteration is :mod:`.solver`'s.

Restarts. On these problems a run either finds the planted copy or ends far from it, and
randomized starts rarely help (FAQ's randomized start took the 30-in-40 accuracy from 0.60 to
0.28); what helps is to vary the relaxation: ``SUBGRAPH_RELAXATIONS`` lists the centerings
(multiples of ``c``) and inverse temperatures (multiples of ``sqrt(N)``, for the dynamical
softassign's ``beta="auto"``) tried, and the matching with the highest ``Z_c`` at the base
``c`` is kept. Measured on 20 held-out seeds (docs/matching.md, *Subgraphs*;
examples/subgraph_and_batch.py): 30 in 40, 1 relaxation 0.63, 4 relaxations 0.86 (naive
padding 0.45); 50 in 100, 0.15 and 0.32 (0.03); 80 in 100, 1.0 and 1.0 (0.76).
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import scipy.sparse as sp

from stepsize._validation import check_choice, check_int, check_real
from stepsize.matching.graphs import as_adjacency
from stepsize.matching.objective import assignment_objective
from stepsize.matching.solver import (
    METHODS,
    MatchingOptions,
    MatchingResult,
    progress_options,
    projected_fixed_point,
)

__all__ = ["SUBGRAPH_RELAXATIONS", "different_sizes", "match_subgraph", "mean_weight"]

# (center factor, beta factor or None): the relaxations tried, in order; the center is the
# factor times ``c``; the beta factor replaces the dynamical softassign's AUTO_BETA (10) in
# ``beta = factor sqrt(N)`` when the preset uses ``beta="auto"`` (None: the preset's beta).
# Chosen on seeds 0-9 of the 30-in-40, 50-in-100 and 80-in-100 G(n, 0.15) problems, measured on
# seeds 10-29.
SUBGRAPH_RELAXATIONS = ((1.0, None), (1.5, None), (1.0, 5.0), (1.5, 5.0))


def mean_weight(graph) -> float:
    """The mean off-diagonal weight ``sum_{i != k} G[i, k] / (n (n - 1))`` (0 when n = 1).

    >>> mean_weight(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    0.6666666666666666
    """
    n = graph.shape[0]
    if n < 2:
        return 0.0
    total = float(graph.sum()) - float(graph.diagonal().sum())
    return total / (n * (n - 1))


def _centered(graph, c: float) -> np.ndarray:
    """``G - c (11^T - I)`` as a dense array (the diagonal unchanged)."""
    dense = graph.toarray() if sp.issparse(graph) else np.array(graph, dtype=np.float64)
    diagonal = dense.diagonal().copy()
    dense -= c
    np.fill_diagonal(dense, diagonal)
    return dense


def match_subgraph(A, B, K=None, *, method: str = "apfp", center="auto", relaxations: int = 4,
                   n_init: int = 1, seeds=None, seed=None, progress: bool | None = None,
                   **options) -> MatchingResult:
    """Find the smaller of two graphs inside the larger one (n1 != n2), by centered padding.

    Maximizes ``Z_c(P) = 1/2 <A_c, P B P^T> + lam <K, P>`` over matchings of the smaller graph
    into the larger, where the smaller graph is centered by ``c``: ``A_c = A - c (11^T - I)``
    when ``n1 < n2`` (``B_c`` likewise when ``n1 > n2``), so that ``Z_c = Z - c/2 (weight of
    the larger graph induced on the matched nodes)``: matched weight is rewarded and weight
    the smaller graph does not have is charged (module docstring). Each of the first
    ``relaxations`` entries of ``SUBGRAPH_RELAXATIONS`` runs :func:`~stepsize.matching.
    match_graphs`'s iteration on a centered pair; the matching with the highest ``Z_c`` (at
    the base ``c``) is kept.

    Args:
        A, B: the graphs (ndarray, scipy.sparse or networkx, directed or not; or torch
            tensors, one pair or a batch, run by ``_torch.match_graphs_torch``).
        K: optional node affinity (n1 x n2), weighted by ``lam`` (not with tensors).
        method: a preset of ``METHODS`` (default ``"apfp"``).
        center: ``"auto"`` (the larger graph's mean off-diagonal weight, its edge density for
            0/1 graphs) or a number ``c`` (0: naive padding; 0.5 on 0/1 graphs:
            graspologic's adopted padding, up to a factor 2).
        relaxations: how many entries of ``SUBGRAPH_RELAXATIONS`` to run (1 to 4; default 4,
            about 4x the time of one run).
        n_init, seeds, seed, progress, **options: as in ``match_graphs``, for every run.

    Returns:
        A :class:`~stepsize.matching.MatchingResult`: ``col_ind`` (-1 for nodes of the larger
        A left unmatched), ``objective`` = ``Z`` of ``col_ind`` on the given graphs (as
        ``match_graphs`` reports it), ``n_iter`` summed over the runs,
        ``info["centered_objective"]`` = ``Z_c``, ``info["center"]`` = ``c`` and
        ``info["relaxations"]`` (per run: center, beta, ``Z_c``, n_iter, kept); the history
        and per-iteration values are the kept run's, on its own centered pair. A batch of
        tensors gives a list.

    Raises:
        ValueError, TypeError: naming the argument (``center``, ``relaxations``, and the
            checks of ``match_graphs``; with tensors ``K``, ``seeds`` and ``lam`` are refused,
            and batches of different lengths, dtypes or devices, as in
            ``_torch.match_graphs_torch``).

    >>> rng = np.random.default_rng(1)
    >>> upper = np.triu(rng.uniform(size=(40, 40)) < 0.3, 1)
    >>> B = (upper | upper.T).astype(float)
    >>> keep = rng.choice(40, size=30, replace=False)
    >>> A = B[np.ix_(keep, keep)]                # node i of A is node keep[i] of B
    >>> result = match_subgraph(A, B, seed=0)
    >>> float(np.mean(result.col_ind == keep)), round(result.info["center"], 4)
    (1.0, 0.3)

    Reference: Shen, Niu, Zhu, arXiv:2208.08233 (2022) for the iteration; Fishkind et al.,
    "Seeded graph matching", Pattern Recognition 87 (2019), for naive and adopted padding.
    """
    method = check_choice(method, "method", METHODS)
    relaxations = check_int(relaxations, "relaxations", low=1, high=len(SUBGRAPH_RELAXATIONS))
    if _is_tensor(A) and _is_tensor(B):
        _refuse_with_tensors(K, seeds, options)
        return _match_subgraph_torch(A, B, method, center, relaxations,
                                     dict(n_init=n_init, seed=seed, progress=progress),
                                     options)
    A, _ = as_adjacency(A, "A", directed=True)
    B, _ = as_adjacency(B, "B", directed=True)
    larger = B if A.shape[0] < B.shape[0] else A
    if isinstance(center, str):
        check_choice(center, "center", ("auto",))
        center = mean_weight(larger)
    center = check_real(center, "center")
    preset = METHODS[method].replaced(**options)
    with progress_options(preset.as_dict(), progress,
                          f"match_subgraph ({method})") as chosen:
        runs = _run_relaxations(A, B, K, MatchingOptions(**chosen),
                                _plans(preset, center, relaxations, larger.shape[0]),
                                _centered_pair(A, B, center), n_init, seeds, seed)
    result = _kept_run(runs, center)
    result.objective = assignment_objective(A, B, result.col_ind, K, preset.lam)
    result.method = method
    return result


def _refuse_with_tensors(K, seeds, options: dict) -> None:
    """Tensors are matched without ``K`` (hence ``lam``) or ``seeds``: refuse them by name."""
    for name, value in (("K", K), ("seeds", seeds)):
        if value is not None:
            raise ValueError(f"{name}: K and seeds are not supported with torch tensors; pass "
                             f"numpy arrays")
    if "lam" in options:
        raise TypeError("lam: torch tensors are matched without a node affinity K; pass numpy "
                        "arrays for K and lam")


def _kept_run(runs: list, center: float) -> MatchingResult:
    """The run with the highest ``Z_c`` and the record of every run; its warnings only are
    re-emitted."""
    kept = max(range(len(runs)), key=lambda k: runs[k][0])
    score, _, _, result, caught = runs[kept]
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    result.info["relaxations"] = [
        {"center": c, "beta": beta, "centered_objective": value, "n_iter": run.n_iter,
         "kept": k == kept} for k, (value, c, beta, run, _) in enumerate(runs)]
    result.info["centered_objective"], result.info["center"] = score, center
    result.n_iter = sum(run.n_iter for _, _, _, run, _ in runs)
    return result


def _run_relaxations(A, B, K, options: MatchingOptions, plans: list, reference, n_init,
                     seeds, seed) -> list:
    """Run every ``(c, beta)`` plan; per run ``(Z_c at the base c, c, beta, result, its
    warnings)``."""
    runs = []
    for c, beta in plans:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = projected_fixed_point(*_centered_pair(A, B, c), K, n_init=n_init,
                                           seeds=seeds, seed=seed,
                                           options=options.replaced(beta=beta))
        score = assignment_objective(*reference, result.col_ind, K, options.lam)
        runs.append((score, c, beta, result, caught))
    return runs


def _plans(preset: MatchingOptions, center: float, relaxations: int, size: int) -> list:
    """The distinct ``(c, beta)`` of the first ``relaxations`` entries of the table."""
    vary_beta = preset.projection == "dynamical_softassign" and preset.beta == "auto"
    plans = []
    for factor, beta_factor in SUBGRAPH_RELAXATIONS[:relaxations]:
        beta = (beta_factor * math.sqrt(size) if vary_beta and beta_factor is not None
                else preset.beta)
        if (factor * center, beta) not in plans:
            plans.append((factor * center, beta))
    return plans


def _centered_pair(A, B, c: float):
    """``(A_c, B)`` when A is the smaller graph, else ``(A, B_c)`` (unchanged for c = 0)."""
    if c == 0.0:
        return A, B
    return (_centered(A, c), B) if A.shape[0] < B.shape[0] else (A, _centered(B, c))


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    return torch is not None and isinstance(value, torch.Tensor)


def _node_count(graph) -> int | None:
    if hasattr(graph, "number_of_nodes"):  # networkx
        return graph.number_of_nodes()
    shape = getattr(graph, "shape", None)
    if shape is None:
        shape = np.shape(graph)
    return int(shape[-1]) if len(shape) else None


def different_sizes(A, B) -> bool:
    """Whether two graphs (arrays, sparse matrices, networkx graphs, tensors or batches of
    tensors) have different node counts; False when a count cannot be read (the matcher's
    own checks then report the input).

    >>> different_sizes(np.zeros((3, 3)), np.zeros((4, 4))), different_sizes([[0]], [[1]])
    (True, False)
    """
    n1, n2 = _node_count(A), _node_count(B)
    return n1 is not None and n2 is not None and n1 != n2


def _match_subgraph_torch(A, B, method: str, center, relaxations: int, run: dict,
                          options: dict):
    """:func:`match_subgraph` on torch tensors (one pair or a batch), through
    ``_torch.match_graphs_torch``: per pair its own ``c``, the kept relaxation per pair."""
    from stepsize.matching._torch import _checked_tensors, _matched_value, match_graphs_torch

    A3, B3, batched = _checked_tensors(A, B)
    smaller_is_a = A3.shape[-1] < B3.shape[-1]
    larger = B3 if smaller_is_a else A3
    n = larger.shape[-1]
    if isinstance(center, str):
        check_choice(center, "center", ("auto",))
        totals = larger.sum(dim=(1, 2)) - larger.diagonal(dim1=1, dim2=2).sum(dim=1)
        c = totals / (n * (n - 1)) if n > 1 else totals * 0.0
    else:
        c = larger.new_full((larger.shape[0],), check_real(center, "center"))
    small = A3 if smaller_is_a else B3
    off_diagonal = 1.0 - small.new_ones(small.shape[-1]).diag()

    def pair(factor: float):
        centered = small - factor * c[:, None, None] * off_diagonal
        return (centered, B3) if smaller_is_a else (A3, centered)

    preset = METHODS[method].replaced(**options)
    unit = 0.0 if not isinstance(center, str) and float(center) == 0.0 else 1.0
    reference, runs = pair(1.0), []
    # One progress bar for every relaxation, as in the numpy path.
    with progress_options(preset.as_dict(), run.pop("progress"),
                          f"match_subgraph ({method})") as chosen:
        chosen = {name: value for name, value in chosen.items() if name != "lam"}
        for factor, beta in _plans(preset, unit, relaxations, n):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results = match_graphs_torch(*pair(factor), method=method, progress=False,
                                             **run, **{**chosen, "beta": beta})
            scores = [_matched_value(reference[0][j], reference[1][j], r.col_ind)
                      for j, r in enumerate(results)]
            runs.append((factor, beta, results, scores, caught))
    kept = _kept_per_pair(runs, A3, B3, c.tolist(), _matched_value)
    return kept if batched else kept[0]


def _kept_per_pair(runs: list, A3, B3, centers: list, matched_value) -> list:
    """Per pair the run with the highest reference ``Z_c``, with the record of every run;
    the warnings of the runs kept for some pair are re-emitted."""
    kept_runs, out = set(), []
    for j, c in enumerate(centers):
        best = max(range(len(runs)), key=lambda k: runs[k][3][j])
        kept_runs.add(best)
        result = runs[best][2][j]
        result.info["relaxations"] = [
            {"center": factor * c, "beta": beta, "centered_objective": scores[j],
             "n_iter": results[j].n_iter, "kept": k == best}
            for k, (factor, beta, results, scores, _) in enumerate(runs)]
        result.info["centered_objective"], result.info["center"] = runs[best][3][j], c
        result.n_iter = sum(results[j].n_iter for _, _, results, _, _ in runs)
        result.objective = matched_value(A3[j], B3[j], result.col_ind)
        out.append(result)
    for k in sorted(kept_runs):
        for warning in runs[k][4]:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    return out
