"""No function in src/stepsize is longer than 80 lines, docstring included (issue 15's goal:
long functions are where the seams of the code go wrong)."""

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "stepsize"
LIMIT = 80


def test_no_function_over_80_lines():
    long = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LIMIT:
                    long.append(f"{path.relative_to(SOURCE)}:{node.lineno} {node.name} ({length})")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)
    assert len(list(SOURCE.rglob("*.py"))) > 50  # the walk saw the package
