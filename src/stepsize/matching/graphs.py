"""Graph inputs: adjacency matrices from numpy, scipy.sparse or networkx, and graph files.

Files: edge lists (one edge ``u v [w]`` per line, any node labels, ``#`` comments), ``.npz``
(``scipy.sparse.save_npz`` output, or ``numpy.savez`` with an ``adjacency`` array and optional
``labels``) and GraphML (via networkx). Graphs are undirected: an edge list may give an edge in
either or both directions, with the same weight.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from stepsize._validation import check_array, check_finite, check_square, check_symmetric

__all__ = ["Graph", "as_adjacency", "read_graph", "write_correspondence"]


@dataclass(frozen=True)
class Graph:
    """A graph read from a file.

    Attributes:
        adjacency: symmetric weighted adjacency (``scipy.sparse.csr_array``, float64).
        labels: node labels, ``labels[i]`` names row i of ``adjacency``.
    """

    adjacency: sp.csr_array
    labels: list[str]


def _is_networkx(graph) -> bool:
    return type(graph).__module__.split(".")[0] == "networkx"


def as_adjacency(graph, name: str):
    """Validate a graph and return ``(adjacency, labels)``.

    Args:
        graph: a square symmetric numpy array (or array-like), a scipy sparse matrix, or an
            undirected networkx graph (edge attribute ``weight``, default 1).
        name: argument name for error messages.

    Returns:
        ``(adjacency, labels)``: a float64 ndarray or ``csr_array``, and the node list for a
        networkx graph (None otherwise).

    >>> as_adjacency([[0, 2], [2, 0]], "A")[0].tolist()
    [[0.0, 2.0], [2.0, 0.0]]
    """
    labels = None
    if _is_networkx(graph):
        import networkx as nx

        if graph.is_directed():
            raise ValueError(f"{name} must be an undirected graph, got a directed networkx graph")
        labels = list(graph.nodes)
        if not labels:
            raise ValueError(f"{name} must have at least one node, got an empty graph")
        matrix = nx.to_scipy_sparse_array(graph, nodelist=labels, weight="weight", format="csr")
        graph = sp.csr_array(matrix, dtype=np.float64)
    if sp.issparse(graph):
        matrix = sp.csr_array(graph, dtype=np.float64)
        check_square(matrix, name)
        if matrix.shape[0] == 0:
            raise ValueError(f"{name} must have at least one node, got shape {matrix.shape}")
        check_finite(matrix.data, name)
    else:
        matrix = check_square(check_array(graph, name, ndim=2), name)
    check_symmetric(matrix, name)
    return matrix, labels


def _parse_weight(token: str, lineno: int, path: str) -> float:
    try:
        weight = float(token)
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: weight {token!r} is not a number") from None
    if not math.isfinite(weight):
        raise ValueError(f"{path}, line {lineno}: weight {token!r} is not finite")
    if weight < 0:
        raise ValueError(f"{path}, line {lineno}: negative weight {token} (weights must be >= 0)")
    return weight


def _read_edge_list(path: str) -> Graph:
    index: dict[str, int] = {}
    edges: dict[tuple[int, int], tuple[float, int]] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            tokens = raw.split("#", 1)[0].split()
            if not tokens:
                continue
            if len(tokens) not in (2, 3):
                raise ValueError(
                    f"{path}, line {lineno}: expected 'u v [weight]', got {raw.strip()!r}"
                )
            weight = _parse_weight(tokens[2], lineno, path) if len(tokens) == 3 else 1.0
            u, v = (index.setdefault(t, len(index)) for t in tokens[:2])
            key = (min(u, v), max(u, v))
            if key in edges and edges[key][0] != weight:
                raise ValueError(
                    f"{path}, line {lineno}: edge ({tokens[0]}, {tokens[1]}) repeated with "
                    f"weight {weight:g} (line {edges[key][1]} gave {edges[key][0]:g})"
                )
            edges.setdefault(key, (weight, lineno))
    if not edges:
        raise ValueError(f"{path}: the graph is empty (no edges)")
    pairs = np.array(list(edges), dtype=np.intp)
    weights = np.array([w for w, _ in edges.values()])
    n = len(index)
    upper = sp.coo_array((weights, (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    adjacency = upper + upper.T - sp.diags_array(upper.diagonal())
    return Graph(sp.csr_array(adjacency), list(index))


def _check_file_matrix(matrix, path: str) -> sp.csr_array:
    matrix = sp.csr_array(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{path}: the adjacency must be square, got shape {matrix.shape}")
    if matrix.shape[0] == 0:
        raise ValueError(f"{path}: the graph is empty (no nodes)")
    if not np.all(np.isfinite(matrix.data)):
        raise ValueError(f"{path}: the adjacency has NaN or infinite weights")
    if np.any(matrix.data < 0):
        raise ValueError(f"{path}: the adjacency has negative weights (weights must be >= 0)")
    if matrix.nnz == 0:
        raise ValueError(f"{path}: the graph is empty (no edges)")
    check_symmetric(matrix, f"the adjacency in {path}")
    return matrix


def _read_npz(path: str) -> Graph:
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        if {"format", "shape", "data"} <= keys:
            matrix = sp.load_npz(path)
        elif "adjacency" in keys or len(keys) == 1:
            key = "adjacency" if "adjacency" in keys else next(iter(keys))
            raw = data[key]
            if raw.dtype.kind not in "biuf":
                raise ValueError(f"{path}: the adjacency must be numeric, got dtype {raw.dtype}")
            if raw.ndim != 2:
                raise ValueError(f"{path}: the adjacency must be square, got shape {raw.shape}")
            matrix = raw
        else:
            raise ValueError(
                f"{path}: expected a scipy.sparse.save_npz file or an 'adjacency' array, "
                f"found arrays {sorted(keys)}"
            )
        labels = [str(x) for x in data["labels"]] if "labels" in keys else None
    matrix = _check_file_matrix(matrix, path)
    n = matrix.shape[0]
    if labels is None:
        labels = [str(i) for i in range(n)]
    elif len(labels) != n:
        raise ValueError(f"{path}: {len(labels)} labels for {n} nodes")
    return Graph(matrix, labels)


def _read_graphml(path: str) -> Graph:
    import networkx as nx

    try:
        graph = nx.read_graphml(path)
    except Exception as exc:  # networkx raises XML and key errors of several types
        raise ValueError(f"{path}: not a readable GraphML file ({exc})") from None
    if graph.number_of_nodes() == 0:
        raise ValueError(f"{path}: the graph is empty (no nodes)")
    graph = graph.to_undirected() if graph.is_directed() else graph
    for u, v, weight in graph.edges(data="weight", default=1.0):
        if isinstance(weight, str) or not isinstance(weight, (int, float)):
            raise ValueError(f"{path}: edge ({u}, {v}) has a non-numeric weight {weight!r}")
    labels = [str(x) for x in graph.nodes]
    matrix = nx.to_scipy_sparse_array(graph, nodelist=list(graph.nodes), format="csr")
    return Graph(_check_file_matrix(matrix, path), labels)


def read_graph(path: str | os.PathLike) -> Graph:
    """Read an undirected weighted graph from an edge list, ``.npz`` or GraphML file.

    The format follows the suffix: ``.npz``, ``.graphml`` / ``.xml``, anything else an edge list.
    Weights must be finite and non-negative; empty graphs are refused.

    Args:
        path: the file.

    Returns:
        A :class:`Graph`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: malformed content, with the line number for edge lists.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("a b 2\\nb c\\n")
    >>> read_graph(f.name).labels
    ['a', 'b', 'c']
    """
    path = os.fspath(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"graph file {path!r} does not exist")
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix in (".graphml", ".xml"):
        return _read_graphml(path)
    try:
        return _read_edge_list(path)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text edge list (use .npz or .graphml)") from None


def write_correspondence(
    path: str | os.PathLike, labels1, labels2, col_ind, *, force: bool = False
) -> Path:
    """Write the matching as CSV rows ``node_of_graph1,node_of_graph2`` with a header.

    Nodes of graph 1 left unmatched (``col_ind[i] = -1``) get an empty second field.

    Args:
        path: output file; an existing file is refused unless ``force``.
        labels1, labels2: node labels of the two graphs.
        col_ind: node i of graph 1 matches node ``col_ind[i]`` of graph 2.
        force: overwrite an existing file.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.exists() and not force:
        raise ValueError(f"output file {str(path)!r} exists; pass --force to overwrite it")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["graph1", "graph2"])
        for label, j in zip(labels1, col_ind):
            writer.writerow([label, labels2[j] if j >= 0 else ""])
    return path
