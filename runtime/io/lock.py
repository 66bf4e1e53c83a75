"""One writer per folder: a lock file held with flock, which the kernel drops if its holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from vggspec.compiler.errors import VggspecError

LOCK_NAME = ".vggspec.lock"


class FolderBusy(VggspecError):
    """Another live process holds the folder's lock."""


class FolderUnwritable(VggspecError):
    """A folder that cannot be made (a dangling link or a file on the way), or that takes no
    lock file (/proc, /sys, read-only)."""


# How many times `acquire` starts again after losing a race with a holder that released the
# lock and removed its folder or file (microseconds each); past that, something else keeps
# the file from being made, and a loop without a bound would spin for ever.
ATTEMPTS = 20


def _not_a_folder(folder: Path) -> str:
    """Why `folder` cannot be made: the first path on the way that exists and is not a
    folder (a link to nothing, a file)."""
    for part in [folder, *folder.parents]:
        if os.path.lexists(part) and not part.is_dir():
            if part.is_symlink():
                return f"{part} is a link to {os.readlink(part)}, which does not exist"
            return f"{part} is a file, not a folder"
    return "it exists and is not a folder"


def _warn(message: str) -> None:
    print(f"vggspec: warning: {message}", file=sys.stderr, flush=True)


def _holder_text(text: str) -> str:
    """'`vggspec run train`, pid 123 on HOST, started 2026-12-02 00:10:03' from a lock file."""
    try:
        info = json.loads(text)
        return (
            f"`vggspec {info['what']}`, " if info.get("what") else ""
        ) + f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no details"


# Locks held by this process. A forked child (a DataLoader worker) inherits their fds, and a
# flock lasts while any fd of the open file lives: a child outliving a killed holder would
# keep the folder locked in a dead pid's name. Children close their copies (closing a copy
# does not drop the parent's lock; flock(LOCK_UN) would).
_HELD: set[FolderLock] = set()


def _close_in_child() -> None:
    for lock in list(_HELD):
        with contextlib.suppress(OSError, TypeError):
            os.close(lock._fd)
        lock._fd = None  # so that the child's release() leaves the parent's file alone
        lock._created = []
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class FolderLock:
    """Held while a process writes into `folder`; a second writer gets FolderBusy naming the
    holder. flock, not O_EXCL: the kernel drops the lock of a process killed with -9, so a
    lock is stale exactly when no live process holds it (on one host; flock over NFS is only
    as good as the server's). The file keeps the holder's pid and start time for messages;
    a released lock's file is removed, so a file found unlocked is a dead holder's."""

    def __init__(
        self,
        folder: str | os.PathLike,
        what: str = "",
        warn=_warn,
        name: str = LOCK_NAME,
        target: str | os.PathLike | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.target = Path(target) if target is not None else self.folder  # for messages
        self.what = what
        self.warn = warn
        self._fd: int | None = None
        # The folders acquire() made (the folder and missing ones above it), deepest first:
        # removed by release() if left empty.
        self._created: list[Path] = []
        self.took_over: str | None = None  # the dead holder's description, if there was one

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock (creating the folder); FolderBusy if a live process holds it. A
        dead holder's lock is taken over with a one-line warning (`warn`)."""
        self._created = []
        failure = None
        for _ in range(ATTEMPTS):
            self._make_folder()
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError as err:
                # A holder releasing it removed the (empty) folder since our mkdir: again.
                failure = err
                continue
            except OSError as err:
                self._refuse(err)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                self._remove_created_folder()
                raise FolderBusy(
                    f"{self.target}: in use by another writer ({_holder_text(text)}); wait for "
                    "it to end, or write somewhere else"
                ) from None
            # The holder may have released and removed the file between our open and flock:
            # then we hold a lock on a file nobody else sees; start again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            if failure is not None and self.folder.is_dir():  # /proc: no file can be made there
                self._refuse(failure)
            self._remove_created_folder()
            raise FolderUnwritable(
                f"{self.target}: cannot take the lock {self.path}: its folder or file changed "
                f"each of {ATTEMPTS} times; try again"
            )
        previous = os.pread(fd, 4096, 0).decode(errors="replace")
        if previous.strip():
            self.took_over = _holder_text(previous)
            self.warn(f"{self.target}: taking over the lock of a dead writer ({self.took_over})")
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "what": self.what,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        _HELD.add(self)
        return self

    def _make_folder(self) -> None:
        missing = [p for p in [self.folder, *self.folder.parents] if not os.path.lexists(p)]
        try:
            self.folder.mkdir(parents=True)
            self._created = missing
        except FileExistsError:
            if not self.folder.is_dir():  # it, or a folder on the way, is a file or a dead link
                raise FolderUnwritable(
                    f"{self.target}: cannot create {self.folder}: {_not_a_folder(self.folder)}"
                ) from None
        except OSError as err:
            raise FolderUnwritable(
                f"{self.target}: cannot create {self.folder} ({err.strerror})"
            ) from None

    def _refuse(self, err: OSError):
        self._remove_created_folder()
        raise FolderUnwritable(
            f"{self.target}: cannot write in {self.folder} ({err.strerror})"
        ) from None

    def extend_to(self, folder: str | os.PathLike) -> None:
        """Hold `folder` too (a fresh folder that will trade places with this one): its lock
        file is a hard link to this one's, so whichever name a writer opens after a rename,
        it finds the file this process has locked."""
        os.link(self.path, Path(folder) / self.path.name)

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        _HELD.discard(self)
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        # A writer refused or failed before writing anything leaves no empty folder behind.
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
