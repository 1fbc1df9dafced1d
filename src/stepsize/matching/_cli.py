"""``stepsize match G1 G2``: match two graph files and write the correspondence.

The command runs in four steps; only the first two and the last can fail on bad input:

1. arguments: ``--method``, ``--max-nodes``, ``--out`` (a writable place for a new regular file,
   or an existing one with ``--force``);
2. inputs: :func:`~stepsize.matching.read_graph` on both files (the format rules are in
   :mod:`stepsize.matching.graphs`), then the memory estimate of the matcher;
3. the match (:func:`~stepsize.matching.match_graphs`);
4. output: the CSV correspondence to ``--out`` (atomically) or to stdout.

A problem in steps 1, 2 or 4 raises :class:`InputError` (a ``ValueError``): the CLI prints one line
and exits with status 2. Errors of ``read_graph`` are caught around the reading step only, so an
exception raised by the matcher in step 3 is not mistaken for bad input: it is a bug (exit 1).

Memory: the matcher holds at most eight dense ``N x N`` float64 arrays, ``N = max(n1, n2)``, the
count of its own up-front check (``match_graphs``): four work arrays, the iterate kept while the
soft restart or the polish runs, the best start's while a stall restart runs, and the padded
copies of dense graphs (sparse graphs: six), so it needs at most ``64 N^2`` bytes (measured peak
resident on a sparse 10,000-node pair: 4.2 ``N^2`` floats, 34 ``N^2`` bytes, no restart). The
default ``--max-nodes`` is the largest ``N`` whose estimate fits in the smaller of 8 GiB and half
of the machine's RAM (11585 nodes with 8 GiB); a graph file with more nodes is refused before it
is read in full, and before any ``N x N`` array exists. ``--max-nodes`` raises (or lowers) the
limit.

Progress: on a terminal (or with ``--progress``) a bar on stderr counts the iterations, through
the step-rule hook of :func:`~stepsize.matching.match_graphs` (``step`` accepts a callable
``(c1, c2) -> alpha``, called once per iteration); the rule itself is the preset's.
"""

from __future__ import annotations

import math
import os
import stat
import sys
import time
import warnings
from pathlib import Path

from stepsize._results import ConvergenceWarning
from stepsize.matching.graphs import (
    Graph,
    TooManyNodesError,
    read_graph,
    write_correspondence,
    write_correspondence_csv,
)
from stepsize.matching.objective import edge_correctness
from stepsize.matching.solver import METHODS, match_graphs

__all__ = ["InputError", "cli_match", "default_max_nodes", "matching_memory"]

# Bytes per node pair: at most eight dense float64 N x N arrays (see the module docstring).
BYTES_PER_NODE_PAIR = 64
MAX_MEMORY_BUDGET = 8 * 2**30


class InputError(ValueError):
    """A bad argument, input file or output place of ``stepsize match`` (exit status 2)."""


def matching_memory(n: int) -> int:
    """Estimated peak memory in bytes of matching graphs of up to ``n`` nodes: ``64 n^2``.

    >>> matching_memory(1000) / 2**20
    61.03515625
    """
    return BYTES_PER_NODE_PAIR * n * n


def memory_budget() -> int:
    """The smaller of 8 GiB and half of the machine's physical memory, in bytes."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume 16 GiB
        ram = 2 * MAX_MEMORY_BUDGET
    return min(MAX_MEMORY_BUDGET, ram // 2)


def default_max_nodes(memory_limit: int | None = None) -> int:
    """The default ``--max-nodes``: the largest ``n`` with ``matching_memory(n)`` within
    ``memory_limit`` bytes (None: :func:`memory_budget`).

    >>> default_max_nodes() <= 11585
    True
    >>> default_max_nodes(2**30)
    4096
    """
    memory_limit = check_memory_limit(memory_limit)
    if memory_limit is None:
        memory_limit = memory_budget()
    return math.isqrt(memory_limit // BYTES_PER_NODE_PAIR)


def check_memory_limit(memory_limit):
    """``memory_limit``: a positive int (bytes) or None (then the RAM rule applies)."""
    if memory_limit is not None and (isinstance(memory_limit, bool)
                                     or not isinstance(memory_limit, int) or memory_limit < 1):
        raise ValueError(f"memory_limit must be a positive int (bytes) or None, "
                         f"got {memory_limit!r}")
    return memory_limit


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    return method


def _check_out(out: str | None, force: bool) -> Path | None:
    """Refuse an --out that cannot become a regular file, before any work is done."""
    if out is None:
        return None
    if not out:
        raise InputError("--out must be a file name, got ''")
    path = Path(out)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InputError(f"--out {out!r} cannot be used ({exc.strerror})") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"--out {out!r} is a directory; give a file name for the CSV")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"--out {out!r} is not a regular file (a device, pipe or socket)")
        if not force:
            raise InputError(f"output file {out!r} exists; pass --force to overwrite it")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"--out {out!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out!r}: directory {str(parent)!r} is not writable")
    return path


def _memory_message(what: str, nodes: str, max_nodes: int, default: str | None) -> str:
    """``default``: None for a --max-nodes given, else where the default limit comes from."""
    limit = (f"--max-nodes {max_nodes}" if default is None
             else f"the default limit of {max_nodes} ({default})")
    need = f"{_gib(matching_memory(int(nodes)))}" if nodes.isdigit() else "more"
    return (f"{what} has {nodes} nodes, more than {limit}: matching N nodes needs about "
            f"{BYTES_PER_NODE_PAIR} N^2 bytes ({_gib(matching_memory(max_nodes))} for "
            f"{max_nodes}, {need} for this graph); pass --max-nodes N to allow N nodes")


def _read(path: str, name: str, max_nodes: int, default: str | None) -> Graph:
    try:
        return read_graph(path, max_nodes=max_nodes)
    except TooManyNodesError as exc:
        raise InputError(_memory_message(f"{name} ({path})", exc.count, max_nodes,
                                         default)) from None
    except (ValueError, TypeError, OSError) as exc:
        raise InputError(str(exc)) from None


def _match(matcher, first: Graph, second: Graph, method: str, seed: int,
           progress: bool | None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return matcher(first.adjacency, second.adjacency, method=method, seed=seed,
                       progress=progress)


def _max_nodes(args, memory_limit: int | None) -> tuple[int, str | None]:
    """``--max-nodes``, and for the default limit the words naming where it comes from."""
    max_nodes = getattr(args, "max_nodes", None)
    if max_nodes is not None:
        return max_nodes, None
    source = ("the smaller of 8 GiB and half of this machine's RAM" if memory_limit is None
              else f"memory_limit {_gib(memory_limit)}")
    return default_max_nodes(memory_limit), source


def cli_match(args, *, memory_limit: int | None = None, matcher=None) -> int:
    """Run ``stepsize match`` for the parsed ``args``.

    ``args`` has ``graph1``, ``graph2``, ``method``, ``seed``, ``out``, ``force``, and optionally
    ``max_nodes`` (None: :func:`default_max_nodes` of ``memory_limit``) and ``progress`` (None:
    on a terminal). ``matcher`` replaces :func:`~stepsize.matching.match_graphs` (None: that
    one). Prints the objective, edge correctness, iterations and time; writes the CSV
    correspondence ``graph1,graph2`` (labels, quoted by the ``csv`` module) to ``--out``, or to
    stdout with the summary on stderr when ``--out`` is absent.

    Returns:
        0 on success.

    Raises:
        InputError: a bad argument, input file or output place (the CLI exits with status 2).
    """
    if matcher is not None and not callable(matcher):
        raise TypeError(f"matcher must be callable or None, got {type(matcher).__name__}")
    method = _check_method(args.method)
    max_nodes, default = _max_nodes(args, memory_limit)
    out = _check_out(args.out, args.force)
    first = _read(args.graph1, "graph 1", max_nodes, default)
    second = _read(args.graph2, "graph 2", max_nodes, default)

    start = time.perf_counter()
    result = _match(match_graphs if matcher is None else matcher, first, second, method,
                    args.seed, getattr(args, "progress", None))
    elapsed = time.perf_counter() - start
    matched = int((result.col_ind >= 0).sum())
    correctness = edge_correctness(first.adjacency, second.adjacency, result.col_ind)
    summary = []
    for name, path, graph in (("graph 1", args.graph1, first), ("graph 2", args.graph2, second)):
        header = f", header {graph.header!r} skipped" if graph.header else ""
        kind = "arcs, directed" if graph.directed else "edges"
        summary.append(f"{name}: {path} ({len(graph.labels)} nodes, {graph.n_edges} {kind}"
                       f"{header})")
    summary += [
        f"method {method}: {matched} nodes matched, objective {result.objective:.6g}, "
        f"edge correctness {correctness:.4f}",
        f"{result.n_iter} iterations ({'converged' if result.converged else 'not converged'}), "
        f"{elapsed:.3f} s",
    ]
    if out is None:
        print("\n".join(summary), file=sys.stderr)
        write_correspondence_csv(sys.stdout, first.labels, second.labels, result.col_ind)
        return 0
    try:
        path = write_correspondence(out, first.labels, second.labels, result.col_ind,
                                    force=args.force)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"cannot write --out {args.out!r} ({exc.strerror or exc})") from None
    print("\n".join(summary))
    print(f"wrote {path}")
    return 0
