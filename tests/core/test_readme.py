"""Every Python block of the README's tour runs as written (each on its own, in a scratch folder,
since some write checkpoints)."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_tour_has_a_block_per_subpackage():
    for package in ("chebyshev", "matching", "prox", "unfolding", "quantization"):
        assert any(f"stepsize.{package}" in block for block in BLOCKS), package


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    block = BLOCKS[index]
    if "torch" in block:
        pytest.importorskip("torch")
    for peer in ("pyamg", "sklearn"):
        if f"import {peer}" in block or f"from {peer}" in block:
            pytest.importorskip(peer)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"README.md block {index}", "exec"), {"__name__": "readme"})


TOUR = re.search(r"## Tour\n+```bash\n(.*?)```", README.read_text(), re.S).group(1)
COMMANDS = [line.split("#")[0].strip() for line in TOUR.splitlines()
            if line.startswith("stepsize ") and " all " not in line]


def test_the_tour_commands_are_found():
    assert [command.split()[1] for command in COMMANDS] == ["list", "reproduce", "bench", "match"]


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_tour_command_runs(command, tmp_path):
    """Each shell command of the tour, as written, in a folder holding a copy of examples/
    (``reproduce all`` is ``make demo``, run outside the suite)."""
    shutil.copytree(README.parent / "examples", tmp_path / "examples")
    executable = Path(sys.executable).parent / "stepsize"
    done = subprocess.run([str(executable), *shlex.split(command)[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    if command.startswith("stepsize match"):
        pairs = (tmp_path / "matching.csv").read_text().splitlines()[1:]
        same = sum(left == right for left, right in (pair.split(",") for pair in pairs))
        assert len(pairs) == 77 and same >= 55, (len(pairs), same)  # 62 when written
    if command.startswith(("stepsize reproduce", "stepsize bench")):
        name = shlex.split(command)[2]
        prefix = "bench_" if command.startswith("stepsize bench") else ""
        payload = json.loads((tmp_path / "results" / f"{prefix}{name}.json").read_text())
        assert (payload["name"], payload["quick"]) == (name, True)
        if name == "chebyshev":  # the (300, 600) instance's spectrum and the paper's MSE
            assert payload["lmin"] == pytest.approx(0.184191, abs=1e-6)
            assert payload["mse_at_T"]["chebyshev"] == pytest.approx(2.45e-8, rel=0.05)
        if name == "prox":  # the README's robustness row: no crash, NaN or unconverged prox
            rows = payload["robustness"].values()
            assert sum(row["instances"] for row in rows) > 1000
            assert sum(row["crashes"] + row["nan"] + row["not_converged"] for row in rows) == 0
