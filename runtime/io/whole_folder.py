"""A folder written whole: into FOLDER.partial, one writer at a time, renamed when complete."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from vggspec.compiler.errors import VggspecError

from .lock import FolderLock

# In FOLDER.partial while it is written: a .partial without it is not ours to delete.
PARTIAL_MARK = ".vggspec-partial"


class PartialInTheWay(VggspecError):
    """FOLDER.partial exists and is not a set vggspec was writing."""


def write_whole(
    root: Path, write: Callable[[Path], None], what: str, done: Callable[[], bool] = lambda: False
) -> None:
    """Have `write` fill ROOT.partial, then rename it ROOT (an empty ROOT folder is replaced).
    A lock beside ROOT (.ROOT.lock, dropped by the kernel if its holder dies) lets one writer
    at a time in: a second gets FolderBusy naming the first (two that deleted each other's
    ROOT.partial left an incomplete set and said "wrote"). A ROOT.partial that a killed
    writer left (it carries PARTIAL_MARK) is replaced; any other is refused, never deleted.
    `done`, asked once the lock is held: ROOT is already complete (another writer finished
    it meanwhile), nothing to write."""
    partial = root.with_name(root.name + ".partial")
    with FolderLock(root.parent, what, name=f".{root.name}.lock", target=root):
        if done():
            return
        if partial.is_symlink() or partial.exists():
            if partial.is_symlink() or not (partial / PARTIAL_MARK).is_file():
                raise PartialInTheWay(
                    f"{partial}: exists and is not a set vggspec was writing; remove it or "
                    "name another folder"
                )
            shutil.rmtree(partial)  # a killed writer's
        partial.mkdir()
        (partial / PARTIAL_MARK).write_text(f"{what}\n")
        write(partial)
        (partial / PARTIAL_MARK).unlink()
        if root.is_dir() and not root.is_symlink():
            root.rmdir()  # empty (the callers check): never a folder with anything in it
        partial.rename(root)
