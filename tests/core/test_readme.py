"""Every Python block of the README's tour runs as written (each on its own, in a scratch folder,
since some write checkpoints)."""

import re
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
