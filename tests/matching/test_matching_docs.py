"""The examples of docs/matching.md (its ```pycon blocks) run and print what they claim."""

import doctest
import re
import warnings
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "matching.md"
BLOCKS = re.findall(r"^```pycon\n(.*?)^```$", DOCS.read_text(encoding="utf-8"),
                    flags=re.DOTALL | re.MULTILINE)


def test_the_docs_have_examples():
    assert len(BLOCKS) >= 2
    assert any("match_subgraph" in block for block in BLOCKS)
    assert any("torch" in block for block in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_docs_example(index):
    block = BLOCKS[index]
    if "import torch" in block:
        pytest.importorskip("torch")
    test = doctest.DocTestParser().get_doctest(block, {}, f"matching.md block {index}",
                                               str(DOCS), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0
