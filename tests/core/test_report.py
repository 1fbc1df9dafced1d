"""JSON safety, tables and REPORT.md."""

import json
import math

import numpy as np
import pytest

from stepsize.report import (
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
