"""Import this checkout under its installed names (vggspec.compiler, …) without installing it."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

# Installed name → folder of the tree, as pyproject's [tool.setuptools.package-dir] maps them.
PACKAGE_DIRS = {
    "vggspec.compiler": "compiler",
    "vggspec.runtime": "runtime",
    "vggspec.specs": "specs",
}


class _TreeFinder(importlib.abc.MetaPathFinder):
    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        folder = PACKAGE_DIRS.get(fullname)
        if folder is None:
            return None
        where = self.root / folder
        return importlib.util.spec_from_file_location(
            fullname, where / "__init__.py", submodule_search_locations=[str(where)]
        )


def use_this_tree(root: Path) -> None:
    """Put `root` first on sys.path and map the package-dir folders onto their names, so
    that a plain `python3` with torch and triton (and lark on PYTHONPATH) runs the tree."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if not any(isinstance(f, _TreeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TreeFinder(root))
