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
    names hold a complete run. Where the file system cannot, three renames: `b` (the old run)
    to `b.old-PID`, `a` to `b`, `b.old-PID` to `a`; a kill between them leaves the old run
    as `b.old-PID`, which settle() puts back or deletes."""
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


def _beside(run: RunDir, kind: str) -> list[Path]:
    """The DIR.new-PID / DIR.old-PID folders beside `run`."""
    prefix = f"{run.path.name}.{kind}-"
    return [
        p
        for p in run.path.parent.glob(f"{prefix}*")
        if p.name[len(prefix) :].isdigit() and p.is_dir() and not p.is_symlink()
    ]


def _put_back(run: RunDir, old: Path) -> None:
    """The old run, left as DIR.old-PID by a kill inside the three-rename swap, back to DIR.
    DIR may hold just the lock file of the process settling: moved into the old run first
    (replacing the dead writer's link there), so that the lock file held stays at DIR's."""
    lock = run.path / run.LOCK
    if lock.exists():
        os.rename(lock, old / run.LOCK)
    with contextlib.suppress(FileNotFoundError):
        run.path.rmdir()
    os.rename(old, run.path)


def settle(run: RunDir) -> None:
    """Finish or undo an --overwrite that stopped part-way, whatever the moment: after the
    swap, delete the old run (in the staging folder the marker names, or at DIR.old-PID) and
    the marker; before it, delete the new run's staging folders (DIR.new-PID, marked, or
    still empty) — the old run stays, put back from DIR.old-PID if a kill left it there."""
    marker = run.path / MARKER
    if marker.is_file():
        old = run.path.with_name(marker.read_text().strip())
        if old.name.startswith(f"{run.path.name}.new-") and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        for aside in _beside(run, "old"):
            shutil.rmtree(aside, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
    elif not run.holds_run():
        asides = [p for p in _beside(run, "old") if RunDir(p).holds_run()]
        leftovers = {p.name for p in run.path.iterdir()} if run.path.is_dir() else set()
        if len(asides) == 1 and leftovers <= {run.LOCK}:
            _put_back(run, asides[0])
    for staging in _beside(run, "new"):
        if (staging / MARKER).is_file():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # killed before marking it: empty
                staging.rmdir()


def swapped(run: RunDir, staging: RunDir) -> bool:
    """Whether the swap has happened (the new run is in `run`), for a restarted worker."""
    return (run.path / MARKER).is_file() or not staging.path.exists()
