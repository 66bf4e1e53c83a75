"""A soft memory cap while training: a thread that watches this process's resident set.

RLIMIT_AS would be the kernel's own cap, but torch reserves far more address space than it
touches (thread stacks, the allocator's arenas, mapped libraries), so a cap on it either
fails healthy runs or sits too high to help. What the OOM killer looks at is resident
memory: a thread reads it (/proc/self/statm) every INTERVAL_S and, past the cap, asks the
trainer to stop; the trainer writes a checkpoint at the end of the step and says why. It
also stops a run when the machine itself runs short (other processes grew), before the OOM
killer picks the largest process. A step that alone jumps past what the machine has is the
memory probe's to refuse (train/memory_probe.py); the watch cannot interrupt a step, nor
the validation between two.

VGGSPEC_MEMORY_CAP sets the cap (bytes, or with K, M, G: 12G), or switches it off (0).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable

from vggspec.compiler.errors import VggspecError
from vggspec.compiler.ir.report import format_bytes as size_text

from .cpu_memory import available_bytes

CAP_SETTING = "VGGSPEC_MEMORY_CAP"
INTERVAL_S = 0.1
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def resident_bytes() -> int | None:
    """This process's resident set, from /proc/self/statm (None off Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def cap_from_environment() -> int | None:
    """The cap VGGSPEC_MEMORY_CAP asks for: bytes, 0 for none, None when unset."""
    text = os.environ.get(CAP_SETTING, "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if match is None:
        raise VggspecError(
            f"{CAP_SETTING}={text}: give a size (bytes, or like 512M or 12G), or 0 for no cap"
        )
    return int(float(match[1]) * _UNITS[match[2].upper()])


class MemoryWatch:
    """Calls `exceeded(why)` once, from its thread, when this process's resident set passes
    `cap` bytes, or (with `floor`) when the machine has less than `floor` bytes available:
    other processes may take what this one was counting on, and the OOM killer would then
    pick the largest process, likely this one."""

    def __init__(
        self,
        cap: int | None,
        exceeded: Callable[[str], None],
        floor: int | None = None,
        interval_s: float | None = None,
    ):
        self.cap, self.floor, self.exceeded = cap, floor, exceeded
        self.interval_s = INTERVAL_S if interval_s is None else interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vggspec-memory", daemon=True)

    def start(self) -> MemoryWatch:
        if resident_bytes() is not None:
            self._thread.start()
        return self

    def _why(self) -> str | None:
        resident = resident_bytes()
        if self.cap is not None and resident is not None and resident > self.cap:
            return f"this process holds {size_text(resident)}, past its cap of {size_text(self.cap)}"
        if self.floor is not None:
            left = available_bytes()
            if left is not None and left < self.floor:
                held = f"; this process holds {size_text(resident)}" if resident else ""
                return (
                    f"the machine has {size_text(left)} of memory left, under "
                    f"{size_text(self.floor)}{held}"
                )
        return None

    def _watch(self) -> None:
        while True:  # looks first: a process already past its cap stops after one step
            why = self._why()
            if why is not None:
                self.exceeded(why)
                return
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5 * self.interval_s)
