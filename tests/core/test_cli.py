"""The `stepsize` command: success paths, the JSON contract and error paths (exit 2, one line)."""

import json
import math
import subprocess
import sys

import pytest

from stepsize import cli
from stepsize._registry import BENCHMARKS, EXPERIMENTS, Entry, Registry


def _finite_numbers(value):
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_numbers(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "chebyshev" in out and "psor" in out


def test_reproduce_writes_json_contract_and_plots(tmp_path, capsys):
    assert cli.main(["reproduce", "psor", "--quick", "--out", str(tmp_path), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "Per-step contraction" in out
    payload = json.loads((tmp_path / "psor.json").read_text())
    for key in ("name", "config", "seed", "version", "timings", "plots", "tables"):
        assert key in payload
    assert payload["seed"] == 3 and payload["quick"] is True
    assert payload["timings"]["run_s"] > 0
    assert _finite_numbers(payload)
    for plot in payload["plots"]:
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chebyshev_json_contract(tmp_path):
    assert cli.main(["reproduce", "chebyshev", "--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "chebyshev.json").read_text())
    assert payload["lmin"] == pytest.approx(0.184191, abs=1e-6)
    assert payload["lmax"] == pytest.approx(5.678371, abs=1e-6)
    assert len(payload["steps"]) == 25
    assert payload["mse_at_T"]["chebyshev"] == pytest.approx(2.45e-8, rel=0.1)
    assert payload["mse_at_T"]["gd"] == pytest.approx(1.05e-3, rel=0.05)
    assert payload["float32_mse_by_order"]["fractal"] < 5e-8
    assert payload["float32_mse_by_order"]["natural"] > 1.0
    assert _finite_numbers(payload)


def test_reproduce_all_writes_report(tmp_path, capsys):
    only_psor = Registry(None, "experiment", [EXPERIMENTS.get("psor")])
    assert cli.main(["reproduce", "all", "--quick", "--out", str(tmp_path)],
                    experiments=only_psor) == 0
    assert [p.name for p in tmp_path.glob("*.json") if not p.name.startswith(".")] == [
        "psor.json"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "## psor" in report and "psor_jacobi.png" in report


def _entry(name, description):
    return Entry(name, description, {}, {}, lambda config, seed: {}, lambda result, out: [])


def test_list_shows_the_registries_it_is_given(capsys):
    experiments = Registry(None, "experiment", [_entry("beta", "second"), _entry("alpha", "first")])
    assert cli.main(["list"], experiments=experiments,
                    benchmarks=Registry(None, "benchmark")) == 0
    assert capsys.readouterr().out == ("experiments (stepsize reproduce NAME):\n"
                                       f"  {'alpha':<14} first\n  {'beta':<14} second\n"
                                       "benchmarks (stepsize bench NAME):\n")
    assert cli.main(["bench", "psor"], benchmarks=Registry(None, "benchmark")) == 2
    assert capsys.readouterr().err == "stepsize: error: unknown benchmark 'psor'; known: none\n"


def test_fixed_registry_discovers_nothing_and_refuses_duplicates():
    first = _entry("x", "one")
    registry = Registry(None, "experiment", [first, first])  # the same entry twice is fine
    assert registry.names() == ["x"] and registry.get("x") is first
    with pytest.raises(ValueError, match="experiment 'x' is registered twice"):
        registry.register(_entry("x", "another"))
    with pytest.raises(TypeError, match="entry must be an Entry, got dict"):
        Registry(None, "experiment", [{"name": "x"}])
    with pytest.raises(ValueError, match="kind must be a non-empty str"):
        Registry(None, "")
    assert "psor" in EXPERIMENTS.names() and "psor" not in registry.names()
    assert "chebyshev" in BENCHMARKS.names()


@pytest.mark.parametrize("keyword, value, error", [
    ("experiments", {"psor": None}, "experiments must be a Registry, got dict"),
    ("benchmarks", None, "benchmarks must be a Registry, got NoneType"),
    ("memory_limit", 0, "memory_limit must be a positive int"),
    ("memory_limit", True, "memory_limit must be a positive int"),
    ("matcher", "apfp", "matcher must be callable or None, got str"),
])
def test_main_checks_its_seams(keyword, value, error):
    with pytest.raises((TypeError, ValueError), match=error):
        cli.main(["list"], **{keyword: value})


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "nope"], "unknown experiment 'nope'"),
    (["bench", "nope", "--quick"], "unknown benchmark 'nope'"),
    (["reproduce", "psor", "--seed", "x"], "argument --seed: must be an integer >= 0, got 'x'"),
    (["reproduce", "psor", "--seed", "-5"], "argument --seed: must be an integer >= 0, got '-5'"),
    (["frobnicate"], "invalid choice"),
    ([], "the following arguments are required"),
])
def test_usage_errors_exit_2_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["reproduce", "psor", "--quick", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err == (f"stepsize: error: --out {str(blocker / 'sub')!r} is not a writable "
                   f"directory: {str(blocker)!r} is a file\n")


def test_module_entry_point_and_no_traceback(tmp_path):
    process = subprocess.run([sys.executable, "-m", "stepsize", "reproduce", "missing"],
                             capture_output=True, text=True)
    assert process.returncode == 2
    assert process.stderr.strip() == (
        "stepsize: error: unknown experiment 'missing'; known: "
        + ", ".join(EXPERIMENTS.names()))


def test_import_is_light():
    code = "import sys; import stepsize; print('torch' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    torch_loaded, scipy_loaded = out.split()
    assert torch_loaded == "False" and scipy_loaded == "False"  # what makes it light; no timing


@pytest.mark.parametrize("argv", [["--help"], ["reproduce", "--help"], ["bench", "--help"],
                                  ["match", "--help"], ["list", "--help"]])
def test_help_is_plain_text(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: stepsize")
    for markup in ("``", ":class:", ":func:", ":math:"):
        assert markup not in text, (argv, markup)
