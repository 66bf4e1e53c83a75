"""Imports run one way between the sub-packages: each one may import only those below it
(the layers drawn in the README's Layout section)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import its own sub-package and any sub-package on a lower
# rank; two on the same rank may not import each other. `compiler` stands for the
# compiler's own top-level modules (errors, targets, table), `compiler/__init__` for the
# compiler's public face, which imports its stages.
RANKS = {
    "compiler.errors": 0,
    "compiler.targets": 0,
    "compiler.table": 0,
    "compiler.frontend": 1,
    "compiler.kernels": 1,
    "compiler.ir": 2,
    "compiler.lowering": 3,
    "compiler/__init__": 4,
    "runtime.dist": 5,
    "runtime.data": 6,
    "runtime.io": 7,
    "runtime.train": 8,
    "runtime.eval": 9,
    "runtime/__init__": 10,
    "vggspec": 11,
}


def _layer(module: str) -> str:
    """The layer of a dotted module name of ours (vggspec.compiler.ir.ops.conv → compiler.ir)."""
    parts = module.split(".")
    if parts[0] == "vggspec" and len(parts) > 1 and parts[1] in ("compiler", "runtime"):
        parts = parts[1:]
    if parts[0] not in ("compiler", "runtime"):
        return "vggspec"
    if len(parts) == 1:
        return f"{parts[0]}/__init__"
    return f"{parts[0]}.{parts[1]}"


def _module_name(path: Path) -> tuple[str, bool]:
    """The installed dotted name of a file's module, and whether it is a package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[-1] == "__init__"
    if package:
        parts.pop()
    if parts[0] != "vggspec":
        parts.insert(0, "vggspec")
    return ".".join(parts), package


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of ours in a file, those inside functions
    too (a lazy import is an import)."""
    module, package = _module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # `from . import x` and `from .pkg import mod` name a module in the names
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "vggspec"]


def _files() -> list[Path]:
    return sorted(
        p for top in ("compiler", "runtime", "vggspec") for p in (ROOT / top).rglob("*.py")
    )


def _layer_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "vggspec":
        return "vggspec"
    if len(rel.parts) == 2:  # a top-level module of compiler/ or runtime/
        stem = rel.stem
        return f"{rel.parts[0]}/__init__" if stem == "__init__" else f"{rel.parts[0]}.{stem}"
    return f"{rel.parts[0]}.{rel.parts[1]}"


def _target_layer(name: str) -> str:
    """The layer an imported name lives in (a name imported from a module is that module's:
    vggspec.compiler.SpecError is the compiler's face)."""
    layer = _layer(name)
    return layer if layer in RANKS else _layer(name.rsplit(".", 1)[0])


def backward_imports() -> list[tuple[str, int, str, str]]:
    """(file, line, its layer, the layer it imports) of every import that runs up."""
    found = []
    for path in _files():
        mine = _layer_of_file(path)
        for line, name in _imports(path):
            theirs = _target_layer(name)
            if theirs == mine:
                continue
            if RANKS[theirs] >= RANKS[mine]:
                found.append((str(path.relative_to(ROOT)), line, mine, theirs))
    return found


def test_every_module_is_on_a_layer():
    layers = {_layer_of_file(path) for path in _files()}
    assert layers <= set(RANKS), layers - set(RANKS)
    assert {"compiler.frontend", "compiler.ir", "compiler.kernels", "runtime.io"} <= layers


def test_imports_run_down_the_layers_only():
    found = [f"{f}:{n} ({mine} imports {theirs})" for f, n, mine, theirs in backward_imports()]
    assert found == []


def test_the_compiler_has_no_backward_import_at_all():
    assert [hit for hit in backward_imports() if hit[0].startswith("compiler/")] == []


@pytest.mark.parametrize(
    "where, planted",
    [
        ("compiler/frontend/_probe.py", "from ..ir.ops.conv import Conv\n"),
        ("compiler/kernels/_probe.py", "def f():\n    from ..ir.graph import nodes\n"),
        ("runtime/io/_probe.py", "from vggspec.runtime.eval import metrics\n"),
    ],
)
def test_the_finder_finds_a_planted_backward_import(where, planted):
    probe = ROOT / where
    probe.write_text(planted)
    try:
        hits = [hit for hit in backward_imports() if hit[0] == where]
        assert len(hits) == 1
    finally:
        probe.unlink()
