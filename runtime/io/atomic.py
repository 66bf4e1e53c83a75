"""Writing files so that a crash leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# .NAME.PID.XXXXXXXX.tmp: mkstemp's random part has no dots.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp")


def temporary_of(name: str) -> str | None:
    """The file a temporary named `name` (.NAME.PID.*.tmp) was written for; None when `name`
    is not one."""
    match = _TEMPORARY.fullmatch(name)
    return match["name"] if match else None


def left_by_dead_writer(path: Path) -> bool:
    """Whether `path` is a temporary (.NAME.PID.*.tmp) whose writer is gone."""
    return _stale(Path(path), None)


def _stale(tmp: Path, name: str | None) -> bool:
    match = _TEMPORARY.fullmatch(tmp.name)
    return bool(match) and name in (None, match["name"]) and not _alive(int(match["pid"]))


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete what writers of the file `path` (or, given a folder, of any file under it)
    killed mid-write left behind: .NAME.PID.*.tmp whose PID is gone. Returns them."""
    path = Path(path)
    if path.is_dir():
        candidates, name = path.rglob(".*.tmp"), None
    else:
        candidates, name = path.parent.glob(f".{glob.escape(path.name)}.*.tmp"), path.name
    removed = []
    for tmp in sorted(candidates):
        if _stale(tmp, name):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _create_temporary(path: Path) -> str:
    """An empty .NAME.PID.RANDOM.tmp beside `path`, created as open() creates files (0666
    less the umask): mkstemp's 0600 would survive the rename, and a run folder's weights
    would be unreadable to the people it is shared with."""
    for _ in range(100):  # 32 random bits: a clash is rare, 100 in a row is another fault
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return str(tmp)
    raise FileExistsError(f"cannot create a temporary file beside {path}: every name is taken")


def cannot_create_in(folder: Path) -> str | None:
    """Why no file can be created in `folder` (an existing folder), or None if one can: tried
    with an empty temporary, removed at once (os.access tells root yes everywhere, /proc too)."""
    try:
        os.unlink(_create_temporary(Path(folder) / "probe"))
    except OSError as err:
        return err.strerror or str(err)
    return None


def _file_mode() -> int:
    """The mode open() gives a new file: 0666 less the umask (read without changing it
    where Linux tells, else set and restored, which is safe while importing)."""
    try:
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write, before_rename=None) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: a crash at any moment
    leaves either the old file or the new one, never a torn one. A kill -9 mid-write
    leaves its temporary file (.NAME.PID.*.tmp), which the next write of `path` removes.
    (`before_rename` is a hook for fault-injection tests.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _create_temporary(path)
    try:
        write(tmp)
        # A writer that makes its own file (safetensors does) may make it 0600.
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
