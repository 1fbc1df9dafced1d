"""The layering of DESIGN.md, checked on the source: experiments and benchmarks never import each
other, the method subpackages import neither them nor the shared ``_reference`` helpers, and no
module imports a private name (a module or a name starting with ``_``) of another subpackage."""

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
# private cross-subpackage imports still in the tree, each with its reason; the test fails when
# one is added or when one listed here is gone (so that the list only shrinks)
KNOWN_PRIVATE = {
    "cli.py imports stepsize.matching._cli": "the `stepsize match` command's parsing and I/O "
                                             "live in matching/_cli.py (issue 15: to move into "
                                             "cli.py or become public)",
}


def _imports(path: Path) -> list[str]:
    """Every module imported by ``path``, and for ``from m import n`` also ``m.n``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _sources():
    root = Path(stepsize.__file__).parent
    paths = sorted(root.rglob("*.py"))
    assert len(paths) > 50  # the walk saw the package
    return root, paths


def test_no_import_crosses_a_layer():
    root, paths = _sources()
    crossings = []
    for path in paths:
        layer = path.relative_to(root).parts[0]
        for name in _imports(path):
            if name.startswith(FORBIDDEN.get(layer, ())):
                crossings.append(f"{path.relative_to(root)} imports {name}")
    assert crossings == []


def _private_crossing(importer: tuple[str, ...], name: str) -> bool:
    """Whether module ``importer`` (path parts under stepsize/) importing ``name`` reaches a
    private module or name of another subpackage (``stepsize._reference``, ``_validation``,
    ``_results``, ... are the shared internal layer, meant to be imported)."""
    parts = name.split(".")
    if parts[0] != "stepsize" or len(parts) < 3 or parts[1] == importer[0]:
        return False
    return any(part.startswith("_") and not part.startswith("__") for part in parts[2:])


def test_no_private_import_across_subpackages():
    root, paths = _sources()
    found = {f"{'/'.join(path.relative_to(root).parts)} imports {name}"
             for path in paths for name in _imports(path)
             if _private_crossing(path.relative_to(root).parts, name)}
    # `from m import n` also yields m.n: keep the shortest private name per import
    found = {entry for entry in found
             if not any(entry != other and entry.startswith(other + ".") for other in found)}
    assert found == set(KNOWN_PRIVATE), (
        f"new: {sorted(found - set(KNOWN_PRIVATE))}; gone: {sorted(set(KNOWN_PRIVATE) - found)}")


def test_the_private_import_rule_sees_a_crossing():
    assert _private_crossing(("experiments", "prox.py"), "stepsize.prox._instances")
    assert _private_crossing(("benchmarks", "dugd.py"), "stepsize.experiments.dugd._helper")
    assert not _private_crossing(("prox", "perspective.py"), "stepsize.prox._root")
    assert not _private_crossing(("benchmarks", "prox.py"), "stepsize._reference.timing")
    assert not _private_crossing(("chebyshev", "solvers.py"), "stepsize._results.SolverResult")
