"""Child processes that die with their parent (Linux): `--nproc` workers, and pool workers."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

# The launcher's pid, in the workers' environment (torchrun passes its own on to them).
LAUNCHER_PID = "VGGSPEC_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def mark_launcher() -> None:
    """In the launcher, before it starts workers: they will know whose death to follow."""
    os.environ[LAUNCHER_PID] = str(os.getpid())


def die_with_parent(expected: int, parent: str = "parent", what: str = "this worker") -> None:
    """In a child of process `expected`: SIGKILL when it dies (the kernel sends the signal
    when the thread that started the child ends, so start children from the main thread).
    A parent already gone before the signal was set: exit now."""
    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != expected:
        print(f"vggspec: the {parent} (pid {expected}) is gone: {what} stops", file=sys.stderr)
        raise SystemExit(1)


def die_with_launcher() -> None:
    """In a worker: SIGKILL when the launcher dies. Only the launcher holds the folder's lock,
    and torchrun starts workers in a new session, so a kill -9 of the launcher would leave
    them writing while a new writer takes the lock over. (torchrun's agent starts them from
    the launcher's main thread.)"""
    expected = os.environ.get(LAUNCHER_PID)
    if expected:
        die_with_parent(int(expected), "launcher")
