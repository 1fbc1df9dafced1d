"""Graph files and the `stepsize match` command, through stepsize.cli.main."""

import csv

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from stepsize.cli import main
from stepsize.matching import read_graph
from stepsize.matching.generators import kb_pair


def _write_edge_list(path, A, labels):
    rows, cols = np.triu_indices_from(A)
    lines = [
        f"{labels[i]} {labels[j]} {float(A[i, j])!r}" for i, j in zip(rows, cols) if A[i, j] != 0
    ]
    path.write_text("# weighted edge list\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture
def pair(tmp_path):
    A, B, truth = kb_pair(25, density=0.3, noise=0.0, seed=0)
    names_a = [f"a{i}" for i in range(25)]
    names_b = [f"b{i}" for i in range(25)]
    first = _write_edge_list(tmp_path / "g1.txt", A, names_a)
    second = _write_edge_list(tmp_path / "g2.txt", B, names_b)
    return first, second, truth


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_match_edge_lists_writes_labelled_correspondence(pair, tmp_path, capsys):
    first, second, truth = pair
    out = tmp_path / "m.csv"
    assert main(["match", str(first), str(second), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "objective" in printed and "edge correctness 1.0000" in printed
    rows = _read_csv(out)
    assert rows[0] == ["graph1", "graph2"]
    # Node order follows first appearance in each file; map labels back to indices.
    got = {a: b for a, b in rows[1:]}
    assert len(got) == 25
    assert all(got[f"a{i}"] == f"b{truth[i]}" for i in range(25))


def test_refuses_to_overwrite_without_force(pair, tmp_path, capsys):
    first, second, _ = pair
    out = tmp_path / "m.csv"
    out.write_text("keep me")
    assert main(["match", str(first), str(second), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; pass --force" in err and "Traceback" not in err
    assert out.read_text() == "keep me"
    assert main(["match", str(first), str(second), "--out", str(out), "--force"]) == 0
    assert _read_csv(out)[0] == ["graph1", "graph2"]


def test_without_out_prints_csv_to_stdout(pair, capsys):
    first, second, _ = pair
    assert main(["match", str(first), str(second), "--method", "ipfp"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "graph1,graph2" and len(lines) == 26
    assert "method ipfp" in captured.err


def test_npz_and_graphml_inputs(tmp_path, capsys):
    A, B, truth = kb_pair(20, density=0.4, noise=0.0, seed=1)
    sp.save_npz(tmp_path / "g1.npz", sp.csr_matrix(A))
    np.savez(tmp_path / "g2.npz", adjacency=B, labels=np.array([f"n{i}" for i in range(20)]))
    graph = nx.from_numpy_array(B)
    nx.relabel_nodes(graph, {i: f"v{i}" for i in range(20)}, copy=False)
    nx.write_graphml(graph, tmp_path / "g2.graphml")
    assert read_graph(tmp_path / "g2.npz").labels[3] == "n3"
    np.testing.assert_allclose(read_graph(tmp_path / "g2.graphml").adjacency.toarray(), B)
    for target, prefix in (("g2.npz", "n"), ("g2.graphml", "v")):
        out = tmp_path / f"{target}.csv"
        assert main(["match", str(tmp_path / "g1.npz"), str(tmp_path / target),
                     "--out", str(out)]) == 0
        rows = _read_csv(out)[1:]
        assert [b for _, b in rows] == [f"{prefix}{truth[i]}" for i in range(20)]
    capsys.readouterr()


def test_edge_list_reader_details(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("x y\n\n# comment\ny z 2.5  # trailing comment\nz y 2.5\nx x 1\n")
    graph = read_graph(path)
    assert graph.labels == ["x", "y", "z"]
    np.testing.assert_array_equal(
        graph.adjacency.toarray(), [[1, 1, 0], [1, 0, 2.5], [0, 2.5, 0]]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a b 1\nb c 1 7\n", "line 2: expected 'u v [weight]' or 'u'"),
        ("a b 1\nb c x\n", "line 2: weight 'x' is not a number"),
        ("a b 1\nb c nan\n", "line 2: weight 'nan' is not finite"),
        ("a b -2\n", "line 1: negative weight -2"),
        ("a b 1\nb a 2\n", "line 2: edge (b, a) repeated with weight 2 (line 1 gave 1)"),
        ("# only a comment\n\n", "the graph is empty (no nodes)"),
        ("a b 0\nc\n", "the graph has no edges of nonzero weight; there is nothing to match"),
    ],
)
def test_malformed_edge_lists_exit_2_with_one_line(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_text(content)
    good = tmp_path / "good.txt"
    good.write_text("a b\n")
    assert main(["match", str(bad), str(good)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("stepsize: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_bad_npz_and_graphml_and_missing_files(tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("a b\n")
    cases = []
    np.savez(tmp_path / "nan.npz", adjacency=np.array([[0, np.nan], [np.nan, 0]]))
    cases.append(("nan.npz", "entry (0, 1): weight nan is not finite"))
    np.savez(tmp_path / "neg.npz", adjacency=np.array([[0, -1.0], [-1.0, 0]]))
    cases.append(("neg.npz", "entry (0, 1): negative weight -1"))
    np.savez(tmp_path / "empty.npz", adjacency=np.zeros((3, 3)))
    cases.append(("empty.npz", "the graph has no edges of nonzero weight"))
    np.savez(tmp_path / "two.npz", x=np.eye(2), y=np.eye(2))
    cases.append(("two.npz", "expected a scipy.sparse.save_npz file"))
    (tmp_path / "broken.graphml").write_text("<graphml><oops")
    cases.append(("broken.graphml", "not a readable GraphML file"))
    nx.write_graphml(nx.Graph(), tmp_path / "none.graphml")
    cases.append(("none.graphml", "no nodes"))
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81")
    cases.append(("binary.txt", "not a UTF-8 text edge list"))
    cases.append(("missing.txt", "does not exist"))
    for name, message in cases:
        assert main(["match", str(tmp_path / name), str(good)]) == 2, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (name, err)


def test_unknown_method_exit_2(pair, capsys):
    first, second, _ = pair
    assert main(["match", str(first), str(second), "--method", "magic"]) == 2
    err = capsys.readouterr().err
    assert "--method must be one of apfp, asm, ga, ipfp, dspfp; got 'magic'" in err


def test_graph_io_docstring_examples():
    import doctest

    import stepsize.matching._cli
    import stepsize.matching.graphs

    for module in (stepsize.matching.graphs, stepsize.matching._cli):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


def test_directed_files_are_matched_as_directed(tmp_path, capsys):
    # A random weighted digraph and a permuted copy (npz and directed GraphML): read without
    # symmetrizing, matched as directed, the planted permutation comes back exactly.
    rng = np.random.default_rng(3)
    n = 12
    A = (rng.uniform(size=(n, n)) < 0.25).astype(float) * rng.uniform(1, 2, size=(n, n))
    np.fill_diagonal(A, 0.0)
    perm = rng.permutation(n)
    B = A[np.ix_(perm, perm)]  # node perm[j] of A is node j of B
    truth = np.argsort(perm)
    assert not np.allclose(A, A.T)
    np.savez(tmp_path / "a.npz", adjacency=A)
    directed = nx.DiGraph()
    directed.add_nodes_from(f"v{j}" for j in range(n))
    for i, j in zip(*np.nonzero(B)):
        directed.add_edge(f"v{i}", f"v{j}", weight=float(B[i, j]))
    nx.write_graphml(directed, tmp_path / "b.graphml")
    first, second = read_graph(tmp_path / "a.npz"), read_graph(tmp_path / "b.graphml")
    assert first.directed and second.directed
    np.testing.assert_array_equal(first.adjacency.toarray(), A)  # not symmetrized
    assert first.n_edges == np.count_nonzero(A)
    out = tmp_path / "m.csv"
    assert main(["match", str(tmp_path / "a.npz"), str(tmp_path / "b.graphml"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{np.count_nonzero(A)} arcs, directed" in printed
    assert "edge correctness 1.0000" in printed
    rows = _read_csv(out)[1:]
    assert [b for _, b in rows] == [f"v{truth[i]}" for i in range(n)]
