"""--overwrite: a new run trained beside the old one, swapped in at its first checkpoint."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from pathlib import Path

from .rundir import RunDir

# In the new run's folder from its creation: after the swap it marks the run folder whose
# old contents (now in the staging folder it names) are still to be deleted.
MARKER = ".replacing"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_folder(run: RunDir) -> RunDir:
    """Where the new run trains until its first checkpoint: DIR.new-PID beside DIR."""
    return RunDir(run.path.with_name(f"{run.path.name}.new-{os.getpid()}"))


def start(run: RunDir, staging: RunDir) -> None:
    """Make the staging folder, marked as the replacement of `run`."""
    staging.path.mkdir(parents=True, exist_ok=False)
    (staging.path / MARKER).write_text(staging.path.name + "\n")


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE): at every moment both
    names hold a complete run. Where the file system cannot, two renames (a kill between
    them leaves `a` under the name `b.old-PID`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        renameat2.argtypes += [ctypes.c_uint]
        result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(a))
    aside = b.with_name(f"{b.name}.old-{os.getpid()}")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def swap_in(staging: RunDir, run: RunDir, between=None) -> None:
    """The new run (in `staging`, with its first checkpoint written) takes `run`'s place; the
    old run is deleted. (`between`: a hook for fault-injection tests, after the swap.)"""
    _exchange(staging.path, run.path)
    if between is not None:
        between()
    settle(run)


def settle(run: RunDir) -> None:
    """Finish or undo an --overwrite that stopped part-way, whatever the moment: after the
    swap, delete the old run (in the staging folder the marker names) and the marker; before
    it, delete the new run's staging folders (DIR.new-PID, marked) — the old run stays."""
    marker = run.path / MARKER
    if marker.is_file():
        old = run.path.with_name(marker.read_text().strip())
        if old.name.startswith(f"{run.path.name}.new-") and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
    for staging in run.path.parent.glob(f"{run.path.name}.new-*"):
        if (staging / MARKER).is_file():
            shutil.rmtree(staging, ignore_errors=True)


def swapped(run: RunDir, staging: RunDir) -> bool:
    """Whether the swap has happened (the new run is in `run`), for a restarted worker."""
    return (run.path / MARKER).is_file() or not staging.path.exists()
