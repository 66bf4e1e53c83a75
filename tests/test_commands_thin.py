"""Commands parse and print: every module under vggspec/commands/ is short and starts no
processes of its own (no torch.distributed, no process group, no relaunch, no lock), read
from the source, imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted((ROOT / "vggspec" / "commands").glob("*.py"))
MAX_LINES = 150

# The orchestration that lives in the runtime: the process group and the workers
# (runtime/dist/context.py, launch.py) and the writers' locks (runtime/io/lock.py).
FORBIDDEN = (
    "torch.distributed",
    "vggspec.runtime.dist.context",
    "vggspec.runtime.dist.launch",
    "vggspec.runtime.io.lock",
)


def imported(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a module imports, wherever the import stands; a
    name imported from a module counts as that module's (`from torch import distributed`
    is torch.distributed)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def forbidden_imports(source: str) -> list[tuple[int, str]]:
    return [
        (line, name)
        for line, name in imported(source)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]


def test_the_commands_are_found():
    names = {p.name for p in COMMANDS}
    assert {"train.py", "eval.py", "features.py", "compile.py"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_a_command_module_is_under_150_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines < MAX_LINES, f"{path.name}: {lines} lines"


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_a_command_module_starts_no_processes(path):
    assert forbidden_imports(path.read_text()) == []


@pytest.mark.parametrize(
    "planted",
    [
        "import torch.distributed as dist\n",
        "from torch import distributed\n",
        "def run(args):\n    from torch.distributed import barrier\n",
        "def run(args):\n    if args:\n        from vggspec.runtime.dist import context\n",
        "from vggspec.runtime.dist.launch import relaunch\n",
        "def run(args):\n    from vggspec.runtime.io.lock import FolderLock\n",
    ],
)
def test_the_check_finds_a_planted_import(planted):
    assert len(forbidden_imports(planted)) == 1
    assert forbidden_imports("import torch\nfrom vggspec.runtime.dist.devices import x\n") == []
