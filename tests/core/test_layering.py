"""The layering of DESIGN.md, checked on the source: experiments and benchmarks never import each
other, and the method subpackages import neither them nor the shared ``_reference`` helpers."""

import ast
from pathlib import Path

import stepsize

METHODS = ("chebyshev", "matching", "prox", "quantization", "unfolding")
ABOVE_METHODS = ("stepsize._reference", "stepsize.experiments", "stepsize.benchmarks",
                 "stepsize.cli")
FORBIDDEN = {
    "experiments": ("stepsize.benchmarks",),
    "benchmarks": ("stepsize.experiments",),
    **{method: ABOVE_METHODS for method in METHODS},
}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_no_import_crosses_a_layer():
    root = Path(stepsize.__file__).parent
    crossings = []
    for path in sorted(root.rglob("*.py")):
        layer = path.relative_to(root).parts[0]
        for name in _imports(path):
            if name.startswith(FORBIDDEN.get(layer, ())):
                crossings.append(f"{path.relative_to(root)} imports {name}")
    assert crossings == []
    assert len(list(root.rglob("*.py"))) > 50  # the walk saw the package
