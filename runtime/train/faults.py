"""Stopping cleanly on SIGTERM, and injecting faults so that tests can prove recovery.

Fault injection is off unless the environment sets VGGSPEC_FAULT=<kind>:<step>[:<rank>]
(kinds: kill — SIGKILL this process as step <step> begins; nan — make that step's loss
NaN; kill-in-checkpoint — SIGKILL halfway through writing the checkpoint of that step;
enospc-in-checkpoint — the disk fills up (ENOSPC) halfway through writing it;
kill-in-validation — SIGKILL as the validation after step <step> begins; kill-in-final-save
— SIGKILL just before model.safetensors is written, <step> being the last step;
kill-before-swap / kill-in-swap — with --overwrite, SIGKILL once the first checkpoint (that
of step <step>) is written, before the new run takes the old one's place / once it has, before
the old one is deleted).
It fires on torchrun's first attempt only, so a restarted worker runs clean.
"""

from __future__ import annotations

import errno
import os
import signal

from ..dist.context import restart_count


class StopRequest:
    """Set by SIGTERM (and SIGINT), or by the memory watch; the trainer checkpoints at its
    next loss read and exits (0 for a signal)."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.request(signal.Signals(signum).name)

    def request(self, why: str) -> None:
        """Stop at the end of this step, saying `why` (a signal's name, the memory cap)."""
        self.requested = True
        self.signal_name = why


def _planned() -> tuple[str, int, int | None] | None:
    spec = os.environ.get("VGGSPEC_FAULT")
    if not spec or restart_count() > 0:
        return None
    kind, step, *rank = spec.split(":")
    return kind, int(step), int(rank[0]) if rank else None


def fires(kind: str, step: int, rank: int) -> bool:
    planned = _planned()
    return planned is not None and planned[:2] == (kind, step) and planned[2] in (None, rank)


def kill_if_planned(kind: str, step: int, rank: int) -> None:
    if fires(kind, step, rank):
        os.kill(os.getpid(), signal.SIGKILL)


def fail_if_planned(kind: str, step: int, rank: int, path) -> None:
    """Raise the OSError a full disk gives, as if writing `path`."""
    if fires(kind, step, rank):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
