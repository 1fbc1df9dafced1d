"""Hostile inputs of the `stepsize` command (issue 11): a table of files and arguments built in
tmp_path, each with its exit status and message, and the output where it should succeed; then
property tests of the graph readers and the CSV output.

Every failing case must give exit status 2 (bad input) and exactly one line on stderr, never a
traceback; internal errors give status 1 and a `--traceback` hint.
"""

import csv
import io
import json
import math
import os
import re
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepsize import cli
from stepsize._registry import Entry, Registry
from stepsize.matching import _cli as match_cli
from stepsize.matching import read_graph
from stepsize.report import LOCK_NAME, MANIFEST_NAME, OutputDir, new_figure, save_figure

TRIANGLE = "a b\nb c\nc a\n"
# A path with distinct weights: its only weight-preserving automorphism is the identity, so
# matching it with itself must give the identity.
PATH4 = "a b 1\nb c 2\nc d 3\n"
PATH4_MATRIX = [[0, 1, 0, 0], [1, 0, 2, 0], [0, 2, 0, 3], [0, 0, 3, 0]]
NO_EDGES = "the graph has no edges of nonzero weight; there is nothing to match"


def run(argv, capsys, **seams):
    """``main(argv, **seams)`` -> (status, stdout, stderr), checking the one-line error
    contract; ``seams`` are main's keywords (``experiments=``, ``memory_limit=``, ...)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main([str(a) for a in argv], **seams)
    out, err = capsys.readouterr()
    # A warning would be a second stderr line (RuntimeWarning from overflow, networkx's ...).
    assert not caught, [str(w.message) for w in caught]
    assert "Traceback" not in err
    if code != 0:
        assert err.startswith("stepsize: ") and err.count("\n") == 1, err
    return code, out, err


def rows(text):
    return list(csv.reader(io.StringIO(text)))


def identity_rows(labels):
    return [["graph1", "graph2"]] + [[x, x] for x in labels]


# ---------------------------------------------------------------------------------------------
# Builders of hostile files


def raw_zip(path, name, compressed, crc, size, method=zipfile.ZIP_DEFLATED):
    """A one-member zip written by hand, so that the declared sizes can be anything."""
    name = name.encode()
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc,
                        len(compressed), size, len(name), 0) + name
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc,
                          len(compressed), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                      len(local) + len(compressed), 0)
    Path(path).write_bytes(local + compressed + central + end)
    return path


def zip_bomb(path, n):
    """An honest .npz whose ``adjacency`` is n x n float64 zeros: 8 n^2 bytes from a few MB.

    Deflate blocks ended by a full flush do not refer to earlier data, so one compressed block
    of 16 MiB of zeros can be repeated.
    """
    header = _header_dict((n, n))
    chunk, total = 1 << 24, 8 * n * n + len(header)
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = first.compress(header + bytes(chunk - len(header))) + first.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(total - chunk, chunk)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    data += (block.compress(bytes(chunk)) + block.flush(zlib.Z_FULL_FLUSH)) * count
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    data += tail.compress(bytes(rest)) + tail.flush(zlib.Z_FINISH)
    # The CRC is never reached: the reader stops at the npy header.
    return raw_zip(path, "adjacency.npy", data, 0, total)


def _header_dict(shape, descr="<f8"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def claims_shape(path, shape):
    """A tiny .npz whose array header claims ``shape`` but holds no data."""
    header = _header_dict(shape)
    return raw_zip(path, "adjacency.npy", header, zlib.crc32(header), len(header),
                   method=zipfile.ZIP_STORED)


def write_graphml(path, edges, directed=False, nodes=()):
    graph = nx.DiGraph() if directed else nx.Graph()
    graph.add_nodes_from(nodes)
    for u, v, w in edges:
        graph.add_edge(u, v, weight=float(w))
    nx.write_graphml(graph, path)
    return path


# ---------------------------------------------------------------------------------------------
# The table: graph inputs of `stepsize match`


@dataclass
class Case:
    name: str
    content: object  # str (utf-8 text), bytes, or a callable(path) that writes the file
    suffix: str = ".txt"
    code: int = 2
    message: str = ""
    expected: list | None = None  # CSV rows when matched with itself (code 0)
    extra: tuple = ()


def _npz_dense(matrix, **more):
    return lambda path: np.savez(path, adjacency=np.asarray(matrix, dtype=float), **more)


GRAPH_CASES = [
    # Encoding and labels
    Case("utf8 BOM", b"\xef\xbb\xbf" + PATH4.encode(), code=0,
         expected=identity_rows("abcd")),
    Case("BOM in the middle", "a b 1\n\ufeffc a 2\n", message="U+FEFF; labels must be printable"),
    Case("utf-16 file", PATH4.encode("utf-16"), message="not a UTF-8 text edge list"),
    Case("CRLF line ends", PATH4.replace("\n", "\r\n"), code=0, expected=identity_rows("abcd")),
    Case("label with comma", "x,y b 1\nb c 2\nc d 3\n", code=0,
         expected=identity_rows(["x,y", "b", "c", "d"])),
    Case("label with quotes", 'a"q b 1\nb c 2\nc d 3\n', code=0,
         expected=identity_rows(['a"q', "b", "c", "d"])),
    Case("NUL in a label", "a\x00b c 1\n", message="U+0000; labels must be printable"),
    Case("escape sequence in a label", "a\x1b[31m b 1\n", message="U+001B"),
    Case("bidi override in a label", "a\u202eb c 1\n", message="U+202E"),
    Case("vertical tab in a label", "a\x0bb c 1\n", message="U+000B"),
    Case("line separator in a label", "a\u2028b c 1\n", message="U+2028"),
    # Structure
    Case("three-column header", "source target weight\n" + PATH4, code=0,
         expected=identity_rows("abcd")),
    Case("two-column header", "From To\n" + "a b\nb c\nc d\nd e\ne c\n", code=0,
         expected=None, message="header 'From To' skipped"),
    Case("comments everywhere", "# c\n  # indented\na b 1 # c\n\nb c 2#c\nc d 3\n", code=0,
         expected=identity_rows("abcd")),
    Case("isolated node line", PATH4 + "e\n", code=0, expected=identity_rows("abcde")),
    Case("zero-weight line keeps its nodes", PATH4 + "e f 0\n", code=0,
         expected=identity_rows("abcdef")),
    Case("comma-separated edge list", "a,b,1\nb,c,2\n",
         message=NO_EDGES + " (fields are separated by spaces or tabs, not commas)"),
    Case("four fields", "a b 1 2\n", message="line 1: expected 'u v [weight]' or 'u'"),
    Case("only comments", "# nothing\n", message="the graph is empty (no nodes)"),
    Case("empty file", b"", message="is empty (0 bytes)"),
    # Weights
    Case("all weights zero, edge list", "a b 0\nb c 0\n",
         message=NO_EDGES),
    Case("all weights zero, npz", _npz_dense(np.zeros((3, 3))), suffix=".npz",
         message=NO_EDGES),
    Case("all weights zero, GraphML",
         lambda p: write_graphml(p, [("a", "b", 0), ("b", "c", 0)]), suffix=".graphml",
         message=NO_EDGES),
    Case("weight 1e308", "a b 1e308\nb c 1e308\nc a 1e308\n",
         message="weight 1e+308 is outside [1e-100, 1e+100]"),
    Case("weight 1e-200", "a b 1e-200\nb c 1\n", message="weight 1e-200 is outside"),
    Case("weight 1e308 in npz", _npz_dense([[0, 1e308], [1e308, 0]]), suffix=".npz",
         message="entry (0, 1): weight 1e+308 is outside"),
    Case("weight inf", "a b inf\n", message="weight 'inf' is not finite"),
    Case("weight nan in GraphML", lambda p: write_graphml(p, [("a", "b", math.nan)]),
         suffix=".graphml", message="edge (a, b): weight nan is not finite"),
    Case("negative weight", "a b 1\nb c -1\n", message="line 2: negative weight -1"),
    Case("repeated edge, other weight", "a b 1\nb a 2\n",
         message="line 2: edge (b, a) repeated with weight 2 (line 1 gave 1)"),
    # Directed inputs are matched as directed, in every format (a directed path has only the
    # identity automorphism)
    Case("directed GraphML", lambda p: write_graphml(p, [("a", "b", 1), ("b", "c", 1)],
                                                     directed=True),
         suffix=".graphml", code=0, message="(3 nodes, 2 arcs, directed)",
         expected=identity_rows("abc")),
    Case("directed npz", _npz_dense([[0, 1], [0, 0]]), suffix=".npz", code=0,
         message="(2 nodes, 1 arcs, directed)", expected=identity_rows("01")),
    Case("directed GraphML with every reverse edge",
         lambda p: write_graphml(p, [(u, v, w) for a, b, w in (("a", "b", 1), ("b", "c", 2),
                                                               ("c", "d", 3))
                                     for u, v in ((a, b), (b, a))], directed=True),
         suffix=".graphml", code=0, expected=identity_rows("abcd")),
    Case("GraphML node without edges",
         lambda p: write_graphml(p, [("a", "b", 1), ("b", "c", 2), ("c", "d", 3)],
                                 nodes=["a", "b", "c", "d", "e"]),
         suffix=".graphml", code=0, expected=identity_rows("abcde")),
    Case("GraphML label with a control byte", lambda p: write_graphml(p, [("a\x7f", "b", 1)]),
         suffix=".graphml", message="U+007F"),
    Case("GraphML billion laughs", lambda p: Path(p).write_text(
        '<?xml version="1.0"?><!DOCTYPE g [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'
                  for i in range(8))
        + ']><graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault='
        '"undirected"><node id="&i;"/></graph></graphml>'), suffix=".graphml",
        message="not a readable GraphML file"),
    Case("GraphML external entity", lambda p: Path(p).write_text(
        '<?xml version="1.0"?><!DOCTYPE g [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault='
        '"undirected"><node id="&x;"/></graph></graphml>'), suffix=".graphml",
        message="not a readable GraphML file"),
    Case("GraphML key without a type", lambda p: Path(p).write_text(
        '<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
        '<key id="w" for="edge" attr.name="weight"/><graph edgedefault="undirected">'
        '<node id="a"/><node id="b"/><edge source="a" target="b"><data key="w">1</data></edge>'
        '</graph></graphml>'), suffix=".graphml", message="edge (a, b): weight '1' is not a "
        "number"),
    Case("GraphML parallel edges, other weights", lambda p: Path(p).write_text(
        '<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
        '<key id="w" for="edge" attr.name="weight" attr.type="double"/>'
        '<graph edgedefault="undirected"><node id="a"/><node id="b"/>'
        '<edge source="a" target="b"><data key="w">1</data></edge>'
        '<edge source="a" target="b"><data key="w">2</data></edge></graph></graphml>'),
        suffix=".graphml", message="parallel edges with weights 1 and 2"),
    # .npz
    Case("truncated npz", lambda p: Path(p).write_bytes(_npz_bytes()[:100]), suffix=".npz",
         message="not a .npz file (not a zip archive, or truncated"),
    Case("text file named .npz", "a b\n", suffix=".npz",
         message="not a .npz file (not a zip archive, or truncated"),
    Case("npy file named .npz", lambda p: _save_npy(p, np.eye(2)), suffix=".npz",
         message="not a .npz file"),
    Case("npz header claims 10^6 x 10^6", lambda p: claims_shape(p, (10**6, 10**6)),
         suffix=".npz", message="array 'adjacency' claims shape (1000000, 1000000) but holds "
         "only 128 bytes (truncated or corrupt)"),
    Case("npz header claims more than it holds", lambda p: claims_shape(p, (500, 500)),
         suffix=".npz", message="array 'adjacency' claims shape (500, 500) but holds only"),
    Case("npz zip bomb", lambda p: zip_bomb(p, 20000), suffix=".npz",
         message="has 20000 nodes, more than the default limit of"),
    Case("encrypted npz member", lambda p: _odd_zip(p, method=0, encrypted=True),
         suffix=".npz", message="is encrypted, password required"),
    Case("npz member with an unknown compression", lambda p: _odd_zip(p, method=99),
         suffix=".npz", message="That compression method is not supported"),
    Case("npz member that is not bzip2 data", lambda p: _odd_zip(p, method=12),
         suffix=".npz", message="not a .npz file (not a zip archive, or truncated: Invalid data"),
    Case("npz with pickled objects",
         lambda p: np.savez(p, adjacency=np.array([[0, 1], [1, 0]], dtype=object)),
         suffix=".npz", message="holds Python objects (refused: pickle)"),
    Case("npz labels of the wrong length", _npz_dense(np.ones((2, 2)), labels=np.array(["x"])),
         suffix=".npz", message="labels of shape (1,) for 2 nodes"),
    Case("npz duplicate labels", _npz_dense(np.ones((2, 2)), labels=np.array(["x", "x"])),
         suffix=".npz", message="node label 'x' is used twice"),
    Case("npz label with NUL", _npz_dense(np.ones((2, 2)), labels=np.array(["x", "y\x00z"])),
         suffix=".npz", message="U+0000"),
    Case("npz complex adjacency", lambda p: np.savez(p, adjacency=np.eye(2) * 1j),
         suffix=".npz", message="the adjacency must be real numbers, got dtype complex128"),
    Case("npz integer labels", _npz_dense(PATH4_MATRIX, labels=np.array([7, 8, 9, 10])),
         suffix=".npz", code=0, expected=identity_rows(["7", "8", "9", "10"])),
    Case("npz label array of 10^4-character strings",
         _npz_dense(np.ones((2, 2)), labels=np.array(["x" * 10**4, "y"])), suffix=".npz",
         message="labels must be integers or strings of at most 1024 characters"),
    Case("sparse npz with out-of-range indices", lambda p: _bad_sparse(p), suffix=".npz",
         message="not a readable .npz graph (corrupt"),
    Case("sparse npz, isolated node kept",
         lambda p: sp.save_npz(p, sp.csr_array(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0.]]))),
         suffix=".npz", code=0, expected=None, message="(3 nodes, 1 edges)"),
]


def _odd_zip(path, method, encrypted=False):
    """A .npz whose one member is stored with ``method`` (and the encryption flag)."""
    header = _header_dict((2, 2)) + bytes(32)
    raw_zip(path, "adjacency.npy", header, zlib.crc32(header), len(header), method=method)
    if encrypted:
        data = bytearray(Path(path).read_bytes())
        data[6] = 1  # general purpose flag bit 0, in the local and the central header
        data[data.index(b"PK\x01\x02") + 8] = 1
        Path(path).write_bytes(bytes(data))


def _save_npy(path, array):
    with open(path, "wb") as handle:
        np.save(handle, array)


def _npz_bytes():
    buffer = io.BytesIO()
    np.savez(buffer, adjacency=np.ones((50, 50)))
    return buffer.getvalue()


def _bad_sparse(path):
    matrix = sp.csr_array(np.array([[0, 1.0], [1.0, 0]]))
    np.savez(path, format=np.array("csr"), shape=np.array([2, 2]), data=matrix.data,
             indices=np.array([5, 0], dtype=np.int32), indptr=matrix.indptr)


def _write_case(case: Case, path: Path) -> None:
    if callable(case.content):
        case.content(str(path))
    elif isinstance(case.content, bytes):
        path.write_bytes(case.content)
    else:
        path.write_text(case.content, encoding="utf-8")


@pytest.mark.parametrize("case", GRAPH_CASES, ids=[c.name for c in GRAPH_CASES])
def test_hostile_graph_file(case, tmp_path, capsys):
    path = tmp_path / f"graph{case.suffix}"
    _write_case(case, path)
    code, out, err = run(["match", path, path, "--method", "ipfp", *case.extra], capsys)
    assert code == case.code, err
    if case.code:
        assert case.message in err, err
        return
    if case.message:
        assert case.message in err
    if case.expected is not None:
        assert rows(out) == case.expected
    else:
        table = rows(out)
        assert table[0] == ["graph1", "graph2"]
        assert sorted(r[0] for r in table[1:]) == sorted(r[1] for r in table[1:])


def test_zip_bomb_is_refused_without_allocating(tmp_path, capsys):
    bomb = zip_bomb(tmp_path / "bomb.npz", 20000)
    assert bomb.stat().st_size < 4e6  # 3.2 GB of float64 zeros inside
    tracemalloc.start()
    code, _, err = run(["match", bomb, bomb], capsys)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 2 and "has 20000 nodes" in err
    assert "--max-nodes N" in err and "23.8 GiB for this graph" in err
    assert peak < 20e6


@pytest.mark.parametrize("kind, message", [
    ("directory", "is a directory, not a regular file"),
    ("fifo", "is a FIFO (named pipe), not a regular file"),
    ("devnull", "is a character device, not a regular file"),
    ("broken link", "does not exist (broken symbolic link)"),
    ("missing", "does not exist"),
])
def test_graph_path_that_is_not_a_regular_file(kind, message, tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text(TRIANGLE)
    target = {"directory": tmp_path, "devnull": Path(os.devnull),
              "missing": tmp_path / "nope.txt"}.get(kind, tmp_path / "special")
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "broken link":
        target.symlink_to(tmp_path / "gone")
    code, _, err = run(["match", target, good], capsys)
    assert code == 2 and err == f"stepsize: error: graph file {str(target)!r} {message}\n"


def test_node_limit_stops_reading_early(tmp_path, capsys):
    star = tmp_path / "star.txt"
    # The malformed last line is never reached: reading stops at node 101.
    star.write_text("".join(f"hub n{i}\n" for i in range(300)) + "not an edge list line\n")
    good = tmp_path / "good.txt"
    good.write_text(TRIANGLE)
    code, _, err = run(["match", star, good, "--max-nodes", 100], capsys)
    assert code == 2
    assert err == (f"stepsize: error: graph 1 ({star}) has more than 100 nodes, more than "
                   f"--max-nodes 100: matching N nodes needs about 64 N^2 bytes (0.0 GiB for "
                   f"100, more for this graph); pass --max-nodes N to allow N nodes\n")
    star.write_text("".join(f"hub n{i}\n" for i in range(300)))
    code, out, _ = run(["match", star, good, "--max-nodes", 301, "--method", "ipfp"], capsys)
    assert code == 0 and len(rows(out)) == 302


def test_default_node_limit_follows_the_memory_budget(tmp_path, capsys):
    assert match_cli.matching_memory(11585) <= 8 * 2**30 < match_cli.matching_memory(11586)
    assert match_cli.default_max_nodes(2**30) == math.isqrt(2**30 // 64) == 4096
    assert match_cli.default_max_nodes(64 * 100**2 + 64 * 200) == 100
    budget = match_cli.memory_budget()
    assert match_cli.default_max_nodes() == math.isqrt(budget // 64) <= 11585
    with pytest.raises(ValueError, match="memory_limit must be a positive int"):
        match_cli.default_max_nodes(0.5)
    star = tmp_path / "star.txt"
    star.write_text("".join(f"hub n{i}\n" for i in range(150)))  # 151 nodes
    code, _, err = run(["match", star, star], capsys, memory_limit=match_cli.matching_memory(150))
    assert code == 2
    assert err == (f"stepsize: error: graph 1 ({star}) has more than 150 nodes, more than the "
                   f"default limit of 150 (memory_limit 0.0 GiB): matching N nodes needs about "
                   f"64 N^2 bytes (0.0 GiB for 150, more for this graph); pass --max-nodes N to "
                   f"allow N nodes\n")
    code, out, _ = run(["match", star, star, "--method", "ipfp"], capsys,
                       memory_limit=match_cli.matching_memory(151))
    assert code == 0 and len(rows(out)) == 152


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-5"], "argument --seed: must be an integer >= 0, got '-5'"),
    (["--seed", "1.5"], "argument --seed: must be an integer >= 0, got '1.5'"),
    (["--max-nodes", "0"], "argument --max-nodes: must be an integer >= 1, got '0'"),
    (["--method", "nope"], "--method must be one of apfp, asm, ga, ipfp, dspfp; got 'nope'"),
    (["--out", ""], "--out must be a file name, got ''"),
    (["--out", "", "--force"], "--out must be a file name, got ''"),
    (["--out", "{dir}", "--force"], "is a directory; give a file name for the CSV"),
    (["--out", "/dev/full"], "--out '/dev/full' is not a regular file"),
    (["--out", "{dir}/no/such/m.csv"], "/no/such' does not exist"),
    (["--out", "{file}"], "exists; pass --force to overwrite it"),
])
def test_bad_match_arguments(argv, message, tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text(TRIANGLE)
    argv = [a.format(dir=tmp_path, file=good) for a in argv]
    code, _, err = run(["match", good, good, *argv], capsys)
    assert code == 2 and message in err
    assert good.read_text() == TRIANGLE


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_out_directory(tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text(TRIANGLE)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run(["match", good, good, "--out", locked / "m.csv"], capsys)
    assert code == 2 and "is not writable" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and EFBIG")
def test_full_disk_while_writing_is_one_line(tmp_path):
    """A real failing write: the file-size limit 0 makes the CSV's first write fail (EFBIG;
    Python ignores SIGXFSZ), as a full disk would, after every check has passed."""
    resource = pytest.importorskip("resource")
    good = tmp_path / "good.txt"
    good.write_text(PATH4)
    out = tmp_path / "m.csv"

    def no_file_growth():
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))

    process = subprocess.run([sys.executable, "-m", "stepsize", "match", str(good), str(good),
                              "--out", str(out)], capture_output=True, text=True,
                             preexec_fn=no_file_growth,
                             env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert process.returncode == 2, process.stderr
    assert process.stderr == (f"stepsize: error: cannot write --out {str(out)!r} "
                              f"(File too large)\n")
    assert process.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["good.txt"]


def test_out_file_is_written_atomically_and_quoted(tmp_path, capsys):
    graph = tmp_path / "g.txt"
    graph.write_text('x,y b 1\nb "c 2\n"c d 3\n')
    out = tmp_path / "m.csv"
    assert run(["match", graph, graph, "--out", out], capsys)[0] == 0
    expected = identity_rows(["x,y", "b", '"c', "d"])
    assert rows(out.read_text()) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0o600
    code, stdout, _ = run(["match", graph, graph], capsys)
    assert code == 0 and rows(stdout) == expected


def test_internal_error_is_exit_1_with_traceback_hint(tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text(TRIANGLE)
    calls = []

    def broken(A, B, **kwargs):
        calls.append((A.shape, B.shape, kwargs))
        raise ValueError("an internal check failed")

    code, _, err = run(["match", good, good, "--seed", 7], capsys, matcher=broken)
    assert code == 1
    assert err == ("stepsize: internal error: ValueError: an internal check failed (a bug; "
                   "rerun with --traceback for the full traceback)\n")
    assert calls == [((3, 3), (3, 3), {"method": "apfp", "seed": 7, "progress": None})]
    with pytest.raises(ValueError, match="an internal check failed"):
        cli.main(["match", str(good), str(good), "--traceback"], matcher=broken)


def test_progress_counts_iterations(tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text(PATH4)
    code, plain, err = run(["match", good, good], capsys)
    iterations = int(err.split(" iterations (")[0].rsplit("\n", 1)[-1])
    assert code == 0 and "match_graphs (apfp)" not in err  # no bar off a terminal
    # tqdm reads TQDM_* defaults when it is imported: a fresh process redraws at every update.
    process = subprocess.run([sys.executable, "-m", "stepsize", "match", str(good), str(good),
                              "--progress"], capture_output=True, text=True,
                             env={**os.environ, "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"})
    counts = [int(n) for n in re.findall(r"match_graphs \(apfp\): (\d+) it", process.stderr)]
    assert process.returncode == 0 and process.stdout == plain
    assert counts == list(range(iterations + 1)) and iterations > 0


# ---------------------------------------------------------------------------------------------
# `reproduce` and `bench`: output folder safety, with a fast fake experiment


def _fake_entry(name="fake", fail=None, plot_prefix=""):
    def run_fake(config, seed):
        if fail is not None:
            raise fail
        return {"value": seed + 0.5, "tables": []}

    def plot(result, out_dir):
        fig, axes = new_figure()
        axes[0].plot([0, 1], [0, result["value"]])
        return [save_figure(fig, Path(out_dir) / f"{plot_prefix}{name}_line.png")]

    return Entry(name, "a fake experiment", {}, {}, run_fake, plot)


def _experiments(*entries):
    return Registry(None, "experiment", entries)


@pytest.fixture
def fake():
    """main's keywords for a registry holding only the fast fake experiment."""
    return {"experiments": _experiments(_fake_entry())}


def test_reproduce_refuses_to_overwrite_a_users_files(fake, tmp_path, capsys):
    for name in ("fake.json", "fake_line.png"):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_text("the user's file")
        code, _, err = run(["reproduce", "fake", "--out", folder], capsys, **fake)
        assert code == 2
        assert err == (f"stepsize: error: {str(folder / name)!r} exists and was not written by "
                       f"stepsize; pass --force to overwrite it, or choose another --out\n")
        assert (folder / name).read_text() == "the user's file"
        assert sorted(p.name for p in folder.iterdir()) == [name]
        assert run(["reproduce", "fake", "--out", folder, "--force"], capsys, **fake)[0] == 0
        assert json.loads((folder / "fake.json").read_text())["value"] == 0.5


def test_reproduce_overwrites_its_own_files_only(fake, tmp_path, capsys):
    assert run(["reproduce", "fake", "--out", tmp_path, "--seed", 1], capsys, **fake)[0] == 0
    assert run(["reproduce", "fake", "--out", tmp_path, "--seed", 2], capsys, **fake)[0] == 0
    assert json.loads((tmp_path / "fake.json").read_text())["value"] == 2.5
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]
    assert sorted(manifest) == ["fake.json", "fake_line.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        MANIFEST_NAME, "fake.json", "fake_line.png"]  # no lock, no staging left
    (tmp_path / "fake_line.png").write_bytes(b"edited by the user")
    code, _, err = run(["reproduce", "fake", "--out", tmp_path], capsys, **fake)
    assert code == 2 and "fake_line.png' exists and was not written by stepsize" in err
    assert (tmp_path / "fake_line.png").read_bytes() == b"edited by the user"


def test_results_from_before_the_record_are_recognized(fake, tmp_path, capsys):
    assert run(["reproduce", "fake", "--out", tmp_path], capsys, **fake)[0] == 0
    (tmp_path / MANIFEST_NAME).unlink()
    assert run(["reproduce", "fake", "--out", tmp_path], capsys, **fake)[0] == 0


@pytest.mark.parametrize("out, message", [
    ("", "--out must be a directory name, got ''; use --out . for the current directory"),
    ("{file}", "is a regular file, not a directory"),
    ("/dev/full", "--out '/dev/full' is a device, not a directory"),
    ("{file}/sub", "is not a writable directory: '{file}' is a file"),
])
def test_reproduce_bad_out(fake, out, message, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["reproduce", "fake", "--out", out.format(file=blocker)], capsys, **fake)
    assert code == 2 and message.format(file=blocker) in err
    assert blocker.read_text() == "x"


def test_concurrent_run_is_refused_and_stale_lock_taken_over(fake, tmp_path, capsys):
    fcntl = pytest.importorskip("fcntl")
    lock = tmp_path / LOCK_NAME
    lock.write_text("999999999\n")  # left by a killed run: nobody holds it
    assert run(["reproduce", "fake", "--out", tmp_path], capsys, **fake)[0] == 0
    assert not lock.exists()
    with open(lock, "w") as holder:
        holder.write("4242\n")
        holder.flush()
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = run(["reproduce", "fake", "--out", tmp_path], capsys, **fake)
    assert code == 2
    assert err == (f"stepsize: error: another stepsize run (pid 4242) is writing into --out "
                   f"{str(tmp_path)!r}; wait for it to finish or choose another --out\n")


def test_output_dir_lock_is_exclusive(tmp_path):
    with OutputDir(tmp_path), pytest.raises(ValueError, match="another stepsize run"):
        with OutputDir(tmp_path):
            pass
    with OutputDir(tmp_path):  # released
        pass


def test_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".stepsize.lock").symlink_to(victim)
    with pytest.raises(ValueError, match="lock file"):
        with OutputDir(out):
            pass
    assert victim.read_text() == "precious data"


def test_failing_experiment_is_an_internal_error_and_writes_nothing(tmp_path, capsys):
    entry = _fake_entry(fail=ValueError("config key 'n' must be positive"))
    code, _, err = run(["reproduce", "fake", "--out", tmp_path], capsys,
                       experiments=_experiments(entry))
    assert code == 1 and "internal error: ValueError: config key 'n' must be positive" in err
    assert "rerun with --traceback" in err
    assert list(tmp_path.iterdir()) == []


def test_bench_and_report_files_are_guarded_too(tmp_path, capsys):
    seams = {"experiments": _experiments(_fake_entry()),
             "benchmarks": Registry(None, "benchmark", [_fake_entry(plot_prefix="bench_")])}
    (tmp_path / "bench_fake_line.png").write_bytes(b"mine")
    code, _, err = run(["bench", "fake", "--out", tmp_path], capsys, **seams)
    assert code == 2 and err.endswith("bench_fake_line.png' exists and was not written by "
                                      "stepsize; pass --force to overwrite it, or choose "
                                      "another --out\n")  # refused up front: nothing kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench_fake_line.png"]
    (tmp_path / "REPORT.md").write_text("# my notes\n")
    code, _, err = run(["reproduce", "all", "--out", tmp_path], capsys, **seams)
    assert code == 2 and "REPORT.md' exists and was not written by stepsize" in err
    assert not (tmp_path / "fake.json").exists()  # refused before running anything
    assert run(["reproduce", "all", "--out", tmp_path, "--force"], capsys, **seams)[0] == 0
    assert (tmp_path / "REPORT.md").read_text().startswith("# stepsize: reproduction report")
    assert run(["reproduce", "all", "--out", tmp_path], capsys, **seams)[0] == 0  # now stepsize's


def test_interrupted_run_leaves_no_lock_and_no_partial_files(tmp_path, capsys):
    code, _, err = run(["reproduce", "fake", "--out", tmp_path], capsys,
                       experiments=_experiments(_fake_entry(fail=KeyboardInterrupt())))
    assert code == 130 and err == "stepsize: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_reproduce_psor_quick_refuses_a_users_json(tmp_path, capsys):
    (tmp_path / "psor.json").write_text('{"mine": true}')
    code, _, err = run(["reproduce", "psor", "--quick", "--out", tmp_path], capsys)
    assert code == 2 and "psor.json' exists and was not written by stepsize" in err
    assert json.loads((tmp_path / "psor.json").read_text()) == {"mine": True}


# ---------------------------------------------------------------------------------------------
# Properties

PRINTABLE = st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
EDGE_LIST_LABEL = st.text(PRINTABLE.filter(lambda c: c not in " \t#"), min_size=1, max_size=6)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(EDGE_LIST_LABEL, min_size=2, max_size=6, unique=True))
def test_any_label_set_round_trips_through_the_csv(labels, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("labels")
    graph = folder / "g.txt"
    # A path in label order; the first line is data, so a header-like pair is commented first.
    lines = ["# labels"] + [f"{u} {v} {i + 1}" for i, (u, v) in
                            enumerate(zip(labels, labels[1:]))]
    graph.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if read_graph(graph).header is not None:
        return  # the first pair spells a documented header (source target, ...)
    code, out, _ = run(["match", graph, graph, "--method", "ipfp"], capsys)
    assert code == 0
    table = rows(out)
    assert table[0] == ["graph1", "graph2"]
    assert [r[0] for r in table[1:]] == labels
    assert sorted(r[1] for r in table[1:]) == sorted(labels)


GRAPHML_LABEL = st.text(PRINTABLE, min_size=1, max_size=6)


@settings(max_examples=25, deadline=None)
@given(labels=st.lists(GRAPHML_LABEL, min_size=2, max_size=5, unique=True),
       weights=st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.5, 1e-3]), min_size=15, max_size=15),
       data=st.data())
def test_every_format_reads_the_same_graph(labels, weights, data, tmp_path_factory):
    """Edge list, dense and sparse .npz, and undirected and (symmetric) directed GraphML give
    the same labels and adjacency, or the same refusal."""
    n = len(labels)
    upper = np.zeros((n, n))
    upper[np.triu_indices(n)] = weights[: n * (n + 1) // 2]
    matrix = upper + np.triu(upper, 1).T
    folder = tmp_path_factory.mktemp("formats")
    files = []
    edge_labels = all(" " not in x and "#" not in x for x in labels) and not any(
        (x.lower(), y.lower()) in {("source", "target"), ("from", "to"), ("src", "dst"),
                                   ("node1", "node2")} for x in labels for y in labels)
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    if edge_labels:
        text = ["# u v w"] + [f"{labels[i]} {labels[j]} {float(matrix[i, j])!r}" for i, j in pairs
                              if matrix[i, j] or data.draw(st.booleans())]
        text += list(labels)  # every node declared: the isolated ones too
        files.append(folder / "g.txt")
        files[-1].write_text("\n".join(text) + "\n", encoding="utf-8")
    np.savez(folder / "dense.npz", adjacency=matrix, labels=np.array(labels))
    sp.save_npz(folder / "sparse.npz", sp.csr_array(matrix))
    files += [folder / "dense.npz", folder / "sparse.npz"]
    for directed in (False, True):
        graph = (nx.DiGraph if directed else nx.Graph)()
        graph.add_nodes_from(labels)
        for i, j in pairs:
            if matrix[i, j] or data.draw(st.booleans()):
                graph.add_edge(labels[i], labels[j], weight=matrix[i, j])
                if directed:
                    graph.add_edge(labels[j], labels[i], weight=matrix[i, j])
        files.append(folder / f"g{int(directed)}.graphml")
        nx.write_graphml(graph, files[-1])
    outcomes = []
    for path in files:
        try:
            graph = read_graph(path)
        except ValueError as exc:
            outcomes.append(str(exc).split(": ", 1)[1])
            continue
        names = labels if path.name != "sparse.npz" else [str(i) for i in range(n)]
        order = [graph.labels.index(x) for x in names]
        assert sorted(graph.labels) == sorted(names)
        outcomes.append(graph.adjacency.toarray()[np.ix_(order, order)].tolist())
    assert all(o == outcomes[0] for o in outcomes), outcomes
    if np.any(matrix):
        assert outcomes[0] == matrix.tolist()
    else:
        assert outcomes[0] == NO_EDGES


@settings(max_examples=30, deadline=None)
@given(text=st.text(st.sampled_from("ab \t#\n01.x"), max_size=40))
def test_edge_list_reader_never_raises_anything_but_value_error(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "g.txt"
    path.write_text(text, encoding="utf-8")
    try:
        graph = read_graph(path)
    except ValueError:
        return
    assert graph.adjacency.nnz > 0 and len(graph.labels) == graph.adjacency.shape[0]
    bom = path.with_name("bom.txt")
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    again = read_graph(bom)
    assert again.labels == graph.labels
    assert (again.adjacency != graph.adjacency).nnz == 0


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    abandoned = tmp_path / ".stepsize-staging-abc123"
    abandoned.mkdir()
    (abandoned / "psor.json").write_text("{}")
    kept = tmp_path / ".stepsize-staging-kept01"
    kept.mkdir()
    (kept / ".kept").touch()
    with OutputDir(tmp_path):
        pass
    assert not abandoned.exists() and kept.exists()
