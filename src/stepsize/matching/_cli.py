"""``stepsize match G1 G2``: match two graph files and write the correspondence."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

from stepsize._results import ConvergenceWarning
from stepsize._validation import check_choice
from stepsize.matching.graphs import read_graph, write_correspondence
from stepsize.matching.objective import edge_correctness
from stepsize.matching.solver import METHODS, match_graphs

__all__ = ["cli_match"]


def _edges(graph) -> int:
    adjacency = graph.adjacency
    return (adjacency.nnz + int(np.count_nonzero(adjacency.diagonal()))) // 2


def cli_match(args) -> int:
    """Run ``stepsize match`` for the parsed ``args`` (graph1, graph2, method, seed, out, force).

    Prints the objective, edge correctness, iterations and time; writes the CSV correspondence
    ``graph1,graph2`` (labels) to ``--out``, or to stdout with the summary on stderr when
    ``--out`` is absent. Bad input raises ``ValueError`` (the CLI exits with status 2).

    Returns:
        0 on success.
    """
    method = check_choice(args.method, "--method", METHODS)
    if args.out is not None and Path(args.out).exists() and not args.force:
        raise ValueError(f"output file {args.out!r} exists; pass --force to overwrite it")
    first, second = read_graph(args.graph1), read_graph(args.graph2)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = match_graphs(first.adjacency, second.adjacency, method=method, seed=args.seed)
    elapsed = time.perf_counter() - start
    matched = int((result.col_ind >= 0).sum())
    correctness = edge_correctness(first.adjacency, second.adjacency, result.col_ind)
    summary = [
        f"graph 1: {args.graph1} ({len(first.labels)} nodes, {_edges(first)} edges)",
        f"graph 2: {args.graph2} ({len(second.labels)} nodes, {_edges(second)} edges)",
        f"method {method}: {matched} nodes matched, objective {result.objective:.6g}, "
        f"edge correctness {correctness:.4f}",
        f"{result.n_iter} iterations ({'converged' if result.converged else 'not converged'}), "
        f"{elapsed:.3f} s",
    ]
    if args.out is None:
        print("\n".join(summary), file=sys.stderr)
        print("graph1,graph2")
        for label, j in zip(first.labels, result.col_ind):
            print(f"{label},{second.labels[j] if j >= 0 else ''}")
    else:
        path = write_correspondence(
            args.out, first.labels, second.labels, result.col_ind, force=args.force
        )
        print("\n".join(summary))
        print(f"wrote {path}")
    return 0
