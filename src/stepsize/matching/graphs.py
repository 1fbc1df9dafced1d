"""Graph inputs: adjacency matrices from numpy, scipy.sparse or networkx, and graph files.

:func:`read_graph` reads three file formats, chosen by the suffix: ``.npz``, ``.graphml`` or
``.xml`` (GraphML), anything else an edge list. The same rules hold in every format:

- **Directed or undirected.** An edge-list line is an undirected edge (either direction, or both
  with the same weight). A ``.npz`` adjacency is read as it is: symmetric, an undirected graph;
  asymmetric, a directed one (row i, column j: the arc i -> j). A directed GraphML graph is
  directed (its arcs as given), an undirected one undirected. :attr:`Graph.directed` says which
  (a directed file whose every arc has its reverse with the same weight is the same undirected
  graph, and reads as one). Nothing is symmetrized: directed graphs are matched as directed.
- **Weights.** Finite and non-negative; a nonzero weight must lie in ``[1e-100, 1e100]`` (the
  matcher multiplies weights of both graphs over ``n^2`` pairs; outside this range the products
  overflow or underflow float64). A weight of 0 means "no edge": its nodes are kept. A repeated
  edge must repeat its weight. A graph without an edge of nonzero weight is refused (there is
  nothing to match).
- **Nodes.** Isolated nodes are kept: a one-label line of an edge list, a GraphML node without
  edges, a zero row of a ``.npz`` adjacency. Labels are non-empty, unique strings without control
  or invisible format characters (Unicode categories Cc, Cf, Zl, Zp: NUL, escape, BOM, bidi
  overrides, ...).
- **Size.** With ``max_nodes``, a file with more nodes is refused as soon as that is known, before
  any array of that size is allocated (edge lists while reading, ``.npz`` from the array headers).

Edge lists are UTF-8 text (a leading byte-order mark is ignored); fields are separated by spaces
or tabs::

    # a comment: '#' starts a comment anywhere on a line
    source target weight    <- a header: only as the first data line, see below
    a b                     <- edge {a, b} of weight 1
    b c 2.5                 <- edge {b, c} of weight 2.5
    d                       <- node d, isolated unless another line gives it an edge
    c c 1                   <- a self-loop (the diagonal)

The first data line is a header, skipped and reported in :attr:`Graph.header`, when it has three
fields and the third is not a number (``source target weight``), or when its two first fields
are ``source target``, ``from to``, ``src dst`` or ``node1 node2`` (any case). Any other first
line is data: write other headers as a ``#`` comment. Labels cannot contain spaces, tabs or
``#``; use GraphML or ``.npz`` for such labels.

``.npz`` files are ``scipy.sparse.save_npz`` output, or ``numpy.savez`` with an ``adjacency``
array (or a single array) and optional ``labels`` (default ``"0"`` ... ``"n-1"``). They are read
without pickle, and every array header is checked before any array is decompressed.

The correspondence is written by :func:`write_correspondence` as CSV (the ``csv`` module's
quoting: a label with a comma, quote or line break is quoted).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import stat
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from stepsize._validation import check_array, check_finite, check_square, check_symmetric

__all__ = [
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "Graph",
    "TooManyNodesError",
    "as_adjacency",
    "read_graph",
    "write_correspondence",
    "write_correspondence_csv",
]

# Nonzero weights outside this range make the n^2 weight products of the objective overflow
# or underflow float64 for graphs of up to 1e5 nodes.
MIN_WEIGHT = 1e-100
MAX_WEIGHT = 1e100

# The two first fields of a two-column header (compared in lower case).
_HEADER_PAIRS = {("source", "target"), ("from", "to"), ("src", "dst"), ("node1", "node2")}
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
_BAD_LABEL_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}
_NO_EDGES = "the graph has no edges of nonzero weight; there is nothing to match"
# Longest label read from a .npz file, in characters (bounds the labels array before loading).
_MAX_LABEL_CHARS = 1024


@dataclass(frozen=True)
class Graph:
    """A graph read from a file.

    Attributes:
        adjacency: weighted adjacency (``scipy.sparse.csr_array``, float64, no stored zeros);
            symmetric for an undirected graph, ``adjacency[i, j]`` the arc i -> j otherwise.
        labels: node labels, ``labels[i]`` names row i of ``adjacency``.
        header: the header line skipped at the top of an edge list, or None.
        directed: whether ``adjacency`` is asymmetric (a directed graph).
    """

    adjacency: sp.csr_array
    labels: list[str]
    header: str | None = None
    directed: bool = False

    @property
    def n_edges(self) -> int:
        """Number of edges (arcs for a directed graph), self-loops included."""
        if self.directed:
            return int(self.adjacency.nnz)
        return (self.adjacency.nnz + int(np.count_nonzero(self.adjacency.diagonal()))) // 2


def _is_networkx(graph) -> bool:
    return type(graph).__module__.split(".")[0] == "networkx"


def as_adjacency(graph, name: str, *, directed: bool = False):
    """Validate a graph and return ``(adjacency, labels)``.

    Args:
        graph: a square numpy array (or array-like), a scipy sparse matrix, or a networkx graph
            (edge attribute ``weight``, default 1).
        name: argument name for error messages.
        directed: accept directed graphs (asymmetric matrices, directed networkx graphs); when
            False (default) the matrix must be symmetric and the networkx graph undirected.

    Returns:
        ``(adjacency, labels)``: a float64 ndarray or ``csr_array``, and the node list for a
        networkx graph (None otherwise).

    >>> as_adjacency([[0, 2], [2, 0]], "A")[0].tolist()
    [[0.0, 2.0], [2.0, 0.0]]
    """
    labels = None
    if _is_networkx(graph):
        import networkx as nx

        if graph.is_directed() and not directed:
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
    if not directed:
        check_symmetric(matrix, name)
    return matrix, labels


# ---------------------------------------------------------------------------------------------
# Checks shared by the three formats


def _check_label(label: str, where: str) -> str:
    if not label:
        raise ValueError(f"{where}: empty node label")
    for char in label:
        if unicodedata.category(char) in _BAD_LABEL_CATEGORIES:
            raise ValueError(
                f"{where}: node label {label!r} contains the control or invisible character "
                f"U+{ord(char):04X}; labels must be printable"
            )
    return label


def _check_weight(weight: float, where: str) -> float:
    if not math.isfinite(weight):
        raise ValueError(f"{where}: weight {weight!r} is not finite")
    if weight < 0:
        raise ValueError(f"{where}: negative weight {weight:g} (weights must be >= 0)")
    if weight != 0 and not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise ValueError(
            f"{where}: weight {weight:g} is outside [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}], where the "
            f"matching objective would overflow or underflow; rescale the weights"
        )
    return weight


class TooManyNodesError(ValueError):
    """A graph file with more nodes than ``max_nodes`` (raised before reading it all)."""

    def __init__(self, path: str, count: str, max_nodes: int):
        super().__init__(
            f"{path} has {count} nodes; the limit is {max_nodes} (max_nodes; --max-nodes on "
            f"the command line)"
        )
        self.path, self.count, self.max_nodes = path, count, max_nodes


def _finish(path: str, matrix, labels: list[str], header: str | None = None) -> Graph:
    """Check a square adjacency read from ``path`` and return it as a Graph."""
    matrix = sp.csr_array(matrix, dtype=np.float64)
    matrix.sum_duplicates()
    n = matrix.shape[0]
    if n == 0:
        raise ValueError(f"{path}: the graph is empty (no nodes)")
    if len(labels) != n:
        raise ValueError(f"{path}: {len(labels)} labels for {n} nodes")
    if len(set(labels)) != n:
        seen: set[str] = set()
        duplicate = next(label for label in labels if label in seen or seen.add(label))
        raise ValueError(f"{path}: node label {duplicate!r} is used twice")
    if matrix.nnz:
        bad = ~np.isfinite(matrix.data) | (matrix.data < 0)
        bad |= (matrix.data != 0) & ((matrix.data < MIN_WEIGHT) | (matrix.data > MAX_WEIGHT))
        if bad.any():
            row = int(np.searchsorted(matrix.indptr, np.argmax(bad), side="right")) - 1
            column = int(matrix.indices[np.argmax(bad)])
            _check_weight(float(matrix.data[np.argmax(bad)]),
                          f"{path}, entry ({labels[row]}, {labels[column]})")
    matrix.eliminate_zeros()
    if matrix.nnz == 0:
        raise ValueError(f"{path}: {_NO_EDGES}")
    if _is_symmetric(matrix):
        return Graph(sp.csr_array((matrix + matrix.T) * 0.5), labels, header)
    return Graph(matrix, labels, header, directed=True)


def _is_symmetric(matrix: sp.csr_array) -> bool:
    """Whether every arc has its reverse with the same weight (to 1e-10 of the largest)."""
    difference = abs(matrix - matrix.T)
    return difference.nnz == 0 or float(difference.max()) <= 1e-10 * float(abs(matrix).max())


def _from_edges(path, labels, edges, header=None) -> Graph:
    """An adjacency from ``{(i, j): weight}`` (one direction per key) and the node labels."""
    n = len(labels)
    pairs = np.array(list(edges), dtype=np.intp).reshape(-1, 2)
    weights = np.array(list(edges.values()), dtype=np.float64)
    matrix = sp.coo_array((weights, (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return _finish(path, matrix, labels, header)


# ---------------------------------------------------------------------------------------------
# Edge lists


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_header(fields: list[str]) -> bool:
    if len(fields) == 3 and not _is_number(fields[2]):
        return True
    return len(fields) >= 2 and (fields[0].lower(), fields[1].lower()) in _HEADER_PAIRS


def _read_edge_list(path: str, max_nodes: int | None) -> Graph:
    index: dict[str, int] = {}
    edges: dict[tuple[int, int], float] = {}
    first_line: dict[tuple[int, int], int] = {}
    header = None
    seen_data = False
    with open(path, encoding="utf-8-sig") as handle:
        for lineno, raw in enumerate(handle, start=1):
            text = raw.rstrip("\n").split("#", 1)[0].strip(" \t")
            if not text:
                continue
            fields = _FIELD_SEPARATOR.split(text)
            where = f"{path}, line {lineno}"
            if not seen_data:
                seen_data = True
                if _is_header(fields):
                    header = raw.strip()
                    continue
            if len(fields) > 3:
                raise ValueError(f"{where}: expected 'u v [weight]' or 'u', got {raw.strip()!r}")
            nodes = []
            for label in fields[:2]:
                node = index.get(label)
                if node is None:
                    node = index[_check_label(label, where)] = len(index)
                    if max_nodes is not None and len(index) > max_nodes:
                        raise TooManyNodesError(path, f"more than {max_nodes}", max_nodes)
                nodes.append(node)
            if len(fields) == 1:
                continue
            weight = _parse_weight(fields[2], where) if len(fields) == 3 else 1.0
            key = (min(nodes), max(nodes))
            if key in edges and edges[key] != weight:
                raise ValueError(
                    f"{where}: edge ({fields[0]}, {fields[1]}) repeated with weight {weight:g} "
                    f"(line {first_line[key]} gave {edges[key]:g})"
                )
            edges[key] = weight
            first_line.setdefault(key, lineno)
    if not index:
        raise ValueError(f"{path}: the graph is empty (no nodes)")
    if not edges and any("," in label for label in index):
        raise ValueError(f"{path}: {_NO_EDGES} (fields are separated by spaces or tabs, not "
                         f"commas)")
    return _from_edges(path, list(index), _symmetric_edges(edges), header)


def _symmetric_edges(upper: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    both = dict(upper)
    both.update({(j, i): w for (i, j), w in upper.items()})
    return both


def _parse_weight(token: str, where: str) -> float:
    try:
        weight = float(token)
    except ValueError:
        raise ValueError(f"{where}: weight {token!r} is not a number") from None
    if not math.isfinite(weight):
        raise ValueError(f"{where}: weight {token!r} is not finite")
    return _check_weight(weight, where)


# ---------------------------------------------------------------------------------------------
# .npz


def _npz_headers(path: str, archive: zipfile.ZipFile) -> dict[str, tuple[tuple, np.dtype]]:
    """Shape and dtype of every array of the archive, read from the npy headers only."""
    members = archive.infolist()
    if len(members) > 16:
        raise ValueError(f"{path}: {len(members)} arrays; a graph file holds at most 16")
    headers = {}
    for member in members:
        name = member.filename.removesuffix(".npy")
        with archive.open(member) as stream:
            try:
                version = np.lib.format.read_magic(stream)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(stream)
            except ValueError as exc:
                raise ValueError(f"{path}: array {name!r} is not a numpy array ({exc})") from None
        if dtype.hasobject:
            raise ValueError(f"{path}: array {name!r} holds Python objects (refused: pickle)")
        if member.file_size < math.prod(shape) * dtype.itemsize:
            raise ValueError(
                f"{path}: array {name!r} claims shape {tuple(shape)} but holds only "
                f"{member.file_size} bytes (truncated or corrupt)"
            )
        headers[name] = (tuple(shape), dtype)
    return headers


def _npz_node_count(path: str, archive: zipfile.ZipFile, headers) -> tuple[int, bool]:
    """The number of nodes, from the dense header or the tiny sparse ``shape`` array."""
    if {"format", "shape", "data"} <= set(headers):
        shape, dtype = headers["shape"]
        if shape != (2,) or dtype.kind not in "iu":
            raise ValueError(f"{path}: the sparse 'shape' array is not two integers")
        with archive.open("shape.npy") as stream:
            rows, cols = (int(x) for x in np.lib.format.read_array(stream, allow_pickle=False))
        sparse = True
    else:
        if "adjacency" in headers:
            key = "adjacency"
        elif len(headers) == 1:
            key = next(iter(headers))
        else:
            raise ValueError(
                f"{path}: expected a scipy.sparse.save_npz file or an 'adjacency' array, "
                f"found arrays {sorted(headers)}"
            )
        shape, dtype = headers[key]
        if dtype.kind not in "biuf":
            raise ValueError(f"{path}: the adjacency must be real numbers, got dtype {dtype}")
        if len(shape) != 2:
            raise ValueError(f"{path}: the adjacency must be square, got shape {shape}")
        rows, cols = shape
        sparse = False
    if rows != cols or rows < 0:
        raise ValueError(f"{path}: the adjacency must be square, got shape {(rows, cols)}")
    return rows, sparse


def _check_npz_sizes(path: str, headers, n: int) -> None:
    """Refuse arrays larger than an n-node graph needs (zip bombs) before decompressing."""
    for name, (shape, dtype) in headers.items():
        count = math.prod(shape)
        if name == "labels":
            if shape != (n,):
                raise ValueError(f"{path}: labels of shape {shape} for {n} nodes")
            if dtype.kind not in "iuUS" or dtype.itemsize > 4 * _MAX_LABEL_CHARS:
                raise ValueError(
                    f"{path}: labels must be integers or strings of at most {_MAX_LABEL_CHARS} "
                    f"characters, got dtype {dtype}"
                )
        elif name in ("data", "adjacency") and dtype.kind not in "biuf":
            raise ValueError(f"{path}: the adjacency must be real, got dtype {dtype}")
        elif count > n * n + n + 16 or dtype.itemsize > 16:
            raise ValueError(
                f"{path}: array {name!r} of shape {shape} and dtype {dtype} is larger than a "
                f"{n}-node graph needs"
            )


def _read_npz(path: str, max_nodes: int | None) -> Graph:
    try:
        with zipfile.ZipFile(path) as archive:
            headers = _npz_headers(path, archive)
            n, sparse = _npz_node_count(path, archive, headers)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ValueError(
            f"{path}: not a .npz file (not a zip archive, or truncated: {exc})"
        ) from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, unknown compression
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    if max_nodes is not None and n > max_nodes:
        raise TooManyNodesError(path, str(n), max_nodes)
    _check_npz_sizes(path, headers, n)
    key = "adjacency" if "adjacency" in headers else next(iter(headers))
    try:
        with np.load(path, allow_pickle=False) as data:
            matrix = sp.load_npz(path) if sparse else data[key]
            raw_labels = data["labels"] if "labels" in headers else None
        if sparse:
            matrix = sp.csr_array(matrix)
            matrix.check_format(full_check=True)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, KeyError,
            ValueError) as exc:  # NotImplementedError is a RuntimeError
        raise ValueError(f"{path}: not a readable .npz graph (corrupt: {exc})") from None
    if raw_labels is None:
        labels = [str(i) for i in range(n)]
    else:
        try:
            labels = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in raw_labels]
        except UnicodeDecodeError:
            raise ValueError(f"{path}: labels are not UTF-8 text") from None
        for label in labels:
            _check_label(label, path)
    return _finish(path, matrix, labels)


# ---------------------------------------------------------------------------------------------
# GraphML


def _read_graphml(path: str, max_nodes: int | None) -> Graph:
    import networkx as nx

    try:
        with warnings.catch_warnings():
            # e.g. "No key type for id d0. Using string": a string weight is refused below.
            warnings.simplefilter("ignore")
            graph = nx.read_graphml(path)
    except Exception as exc:  # noqa: BLE001 - networkx raises XML and key errors of many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a readable GraphML file ({reason})") from None
    if max_nodes is not None and graph.number_of_nodes() > max_nodes:
        raise TooManyNodesError(path, str(graph.number_of_nodes()), max_nodes)
    labels = [_check_label(str(node), path) for node in graph.nodes]
    index = {node: i for i, node in enumerate(graph.nodes)}
    edges: dict[tuple[int, int], float] = {}
    for u, v, weight in graph.edges(data="weight", default=1.0):
        where = f"{path}, edge ({u}, {v})"
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"{where}: weight {weight!r} is not a number")
        weight = _check_weight(float(weight), where)
        key = (index[u], index[v])
        if not graph.is_directed():
            key = (min(key), max(key))
        if key in edges and edges[key] != weight:
            raise ValueError(
                f"{where}: parallel edges with weights {edges[key]:g} and {weight:g}"
            )
        edges[key] = weight
    if not graph.is_directed():
        edges = _symmetric_edges(edges)
    return _from_edges(path, labels, edges)


# ---------------------------------------------------------------------------------------------
# The front door


def _describe_file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_input_file(path: str) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise FileNotFoundError(
            f"graph file {path!r} does not exist" + (" (broken symbolic link)" if broken else "")
        ) from None
    except OSError as exc:
        raise ValueError(f"graph file {path!r} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(
            f"graph file {path!r} is {_describe_file_type(info.st_mode)}, not a regular file"
        )
    if not os.access(path, os.R_OK):
        raise ValueError(f"graph file {path!r} cannot be read (permission denied)")
    if info.st_size == 0:
        raise ValueError(f"graph file {path!r} is empty (0 bytes)")


def read_graph(path: str | os.PathLike, *, max_nodes: int | None = None) -> Graph:
    """Read a weighted graph, directed or not, from an edge list, ``.npz`` or GraphML file.

    The format follows the suffix: ``.npz``, ``.graphml`` / ``.xml``, anything else an edge list.
    The rules shared by the formats (directed or undirected, weights, isolated nodes, labels,
    header lines and comments) are in the module docstring.

    Args:
        path: a regular file.
        max_nodes: refuse a graph with more nodes, before any array of that size is allocated
            (None: no limit).

    Returns:
        A :class:`Graph`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a regular readable file, malformed content (with the line number for
            edge lists), or more than ``max_nodes`` nodes.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("source target weight\\na b 2\\nb c\\nd\\n")
    >>> graph = read_graph(f.name)
    >>> graph.labels, graph.n_edges, graph.header
    (['a', 'b', 'c', 'd'], 2, 'source target weight')
    """
    path = os.fspath(path)
    if max_nodes is not None and (isinstance(max_nodes, bool) or not isinstance(max_nodes, int)
                                  or max_nodes < 1):
        raise ValueError(f"max_nodes must be a positive int or None, got {max_nodes!r}")
    _check_input_file(path)
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npz":
            return _read_npz(path, max_nodes)
        if suffix in (".graphml", ".xml"):
            return _read_graphml(path, max_nodes)
        return _read_edge_list(path, max_nodes)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text edge list (use .npz or .graphml)") from None
    except MemoryError:
        raise ValueError(f"{path}: the graph does not fit in memory") from None


# ---------------------------------------------------------------------------------------------
# Output


def write_correspondence_csv(handle, labels1, labels2, col_ind: Iterable[int]) -> None:
    """Write the matching to an open text ``handle`` as CSV: a header, then one row per node.

    Rows are ``node_of_graph1,node_of_graph2``; a node of graph 1 left unmatched
    (``col_ind[i] = -1``) gets an empty second field. Labels are quoted by the ``csv`` module
    when they hold a comma, a quote or a line break, so every label reads back unchanged.

    >>> import io
    >>> buffer = io.StringIO()
    >>> write_correspondence_csv(buffer, ["x,y", "b"], ["p", 'q"r'], [1, 0])
    >>> buffer.getvalue().splitlines()
    ['graph1,graph2', '"x,y","q""r"', 'b,p']
    """
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["graph1", "graph2"])
    for label, j in zip(labels1, col_ind):
        writer.writerow([label, labels2[j] if j >= 0 else ""])


def _link_new(source: str, path: Path) -> None:
    """Give ``source`` the name ``path`` unless ``path`` exists (atomic where links work)."""
    try:
        os.link(source, path)
    except OSError as exc:
        if not isinstance(exc, FileExistsError) and not path.exists():
            os.replace(source, path)  # a file system without hard links
            return
        raise ValueError(
            f"output file {str(path)!r} exists; pass --force to overwrite it"
        ) from None


def write_correspondence(
    path: str | os.PathLike, labels1, labels2, col_ind, *, force: bool = False
) -> Path:
    """Write the matching as a CSV file (see :func:`write_correspondence_csv`), atomically.

    The CSV goes to a temporary file next to ``path`` that then takes its name, so a reader
    never sees a partial file and an existing file is either untouched or replaced whole.

    Args:
        path: output file; an existing file is refused unless ``force``.
        labels1, labels2: node labels of the two graphs.
        col_ind: node i of graph 1 matches node ``col_ind[i]`` of graph 2.
        force: overwrite an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: ``path`` exists (without ``force``), or is a directory or not a regular
            file.
        OSError: the file cannot be written (the temporary file is removed).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output file {str(path)!r} is a directory")
    if path.exists() and not force:
        raise ValueError(f"output file {str(path)!r} exists; pass --force to overwrite it")
    if path.exists() and not path.is_file():
        raise ValueError(f"output file {str(path)!r} is not a regular file")
    handle = tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
        newline="", encoding="utf-8",
    )
    try:
        with handle:
            write_correspondence_csv(handle, labels1, labels2, col_ind)
        # The temporary file is private; give the result the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        if force:
            os.replace(handle.name, path)
        else:
            _link_new(handle.name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
    return path
