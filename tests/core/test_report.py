"""JSON safety, tables and REPORT.md."""

import doctest
import hashlib
import json
import math
import os
import stat

import numpy as np
import pytest

from stepsize.report import (
    MANIFEST_NAME,
    OutputDir,
    OutputError,
    format_table,
    markdown_table,
    table,
    to_jsonable,
    write_json,
    write_report,
)


def test_to_jsonable_converts_numpy_and_non_finite():
    data = {"a": np.arange(3), "b": np.float32(1.5), "c": [np.nan, np.inf, 2.0], 1: np.bool_(True)}
    out = to_jsonable(data)
    assert out == {"a": [0, 1, 2], "b": 1.5, "c": [None, None, 2.0], "1": True}
    json.dumps(out, allow_nan=False)
    with pytest.raises(TypeError, match="cannot write a object"):
        to_jsonable(object())


def test_write_json_roundtrip(tmp_path):
    path = write_json(tmp_path / "x.json", {"v": np.array([1.0, np.nan])})
    assert json.loads(path.read_text()) == {"v": [1.0, None]}


def test_table_formats():
    tab = table("T", ["method", "value"], [["gd", 1.04384e-3], ["cheb", 2.45e-8], ["x", None]],
                note="ref")
    text = format_table(tab)
    assert "1.044e-03" in text or "0.001044" in text
    assert "2.450e-08" in text and "-" in text and "(ref)" in text
    md = markdown_table(tab)
    assert md.startswith("**T**") and "| cheb | 2.450e-08 |" in md
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        table("bad", ["a", "b"], [[1]])


def test_write_report(tmp_path):
    payload = {"name": "demo", "description": "d", "seed": 0, "quick": True,
               "timings": {"run_s": 1.0}, "tables": [table("T", ["a"], [[1]])],
               "plots": ["demo.png"]}
    text = write_report(tmp_path, [payload], "stepsize reproduce all --quick").read_text()
    assert "## demo" in text and "![demo](demo.png)" in text and "| a |" in text
    assert not math.isnan(len(text))


def _new_file_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_write_json_is_atomic_with_the_usual_permissions(tmp_path):
    path = write_json(tmp_path / "x.json", {"v": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == _new_file_mode()
    with pytest.raises(TypeError, match="cannot write a object"):
        write_json(tmp_path / "x.json", {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}  # a failed write leaves the old file


def test_output_dir_commit_keeps_a_run_that_meets_a_new_user_file(tmp_path):
    with OutputDir(tmp_path) as folder:
        with folder.staging() as stage:
            (stage / "a.json").write_text("1")
            assert [p.name for p in folder.commit(stage)] == ["a.json"]
        assert folder.foreign(["*.json"]) == []
        with folder.staging() as stage:
            (stage / "a.json").write_text("2")
            (stage / "b.png").write_bytes(b"png")
            (tmp_path / "b.png").write_bytes(b"the user's")  # appears during the run
            with pytest.raises(OutputError, match="b.png' exists and was not written by "
                               "stepsize; pass --force") as caught:
                folder.commit(stage)
            assert str(stage) in str(caught.value)
        assert sorted(p.name for p in stage.iterdir()) == [".kept", "a.json", "b.png"]  # kept
        assert (tmp_path / "a.json").read_text() == "1"  # nothing moved
        assert (tmp_path / "b.png").read_bytes() == b"the user's"
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]
    assert manifest == {"a.json": hashlib.sha256(b"1").hexdigest()}
    with OutputDir(tmp_path, force=True) as folder:
        folder.check(["*"])  # force: nothing refused
        assert [p.name for p in folder.foreign(["*.png"])] == ["b.png"]


def test_report_docstring_examples():
    import stepsize.report

    assert doctest.testmod(stepsize.report).failed == 0
