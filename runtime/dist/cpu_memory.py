"""CPU memory: what is available to a job, and keeping freed memory for reuse between steps.

By default glibc serves every allocation above a threshold (at most 32 MiB) with its own
mmap and unmaps it on free. A VGG training step on a CPU allocates and frees gigabytes of
activations and gradients (config A at batch 16: ~3.4 GB), so every step faults all of
those pages in again, zero-filled by the kernel: measured on a 2-core machine, ~870,000
minor page faults and 1.5–4 s of system time per 4 s step. With mmap off and trimming
off, freed blocks stay in the heap and the next step reuses them (~150 faults per step;
the step takes ~2.6 s). The price is that the process keeps its peak memory until it
exits (peak RSS of that run: 4.2 GiB vs 3.4 GiB).

Set VGGSPEC_RETAIN_MEMORY=0 to keep the C library's defaults. No-op off glibc.

`available_bytes` is the figure a job's memory estimate is held against (resources.py).
"""

from __future__ import annotations

import ctypes
import os
import platform
from contextlib import contextmanager
from pathlib import Path

from vggspec.compiler.errors import VggspecError

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_MAX = -4


# glibc's defaults (malloc.h): mmap for up to 65536 blocks, trim past 128 KiB free at the top.
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_retaining = False


def switch_on(name: str) -> bool:
    """An on/off environment variable (unset or empty: on). Anything but 0 or 1 is refused:
    VGGSPEC_MEMORY_PROBE=off ran the probe, as if it were 1."""
    value = os.environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise VggspecError(f"{name}={value}: give 0 (off) or 1 (on, the default)")
    return value != "0"


def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to serve large blocks from its heap and never give memory back
    (mallopt: M_MMAP_MAX 0, M_TRIM_THRESHOLD -1). True if it took effect."""
    global _retaining
    if not switch_on("VGGSPEC_RETAIN_MEMORY"):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _retaining = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
    return _retaining


def retaining() -> bool:
    """Whether this process keeps freed memory (retain_freed_memory took effect)."""
    return _retaining


def stop_retaining() -> None:
    """glibc's defaults again, for good: for a process that trained in-process and goes on
    to other work (the test suite after each test: with mmap off, the Triton interpreter's
    large short-lived blocks fragmented the kept heap of a later test to 23 GB)."""
    global _retaining
    mallopt = _mallopt() if _retaining else None
    if mallopt is not None:
        mallopt(M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        mallopt(M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    _retaining = False


@contextmanager
def freed_memory_returned():
    """Within the block, glibc's defaults: large blocks are mapped and unmapped on their own,
    so the resident set follows the memory in use (the memory probe measures that)."""
    mallopt = _mallopt() if _retaining else None
    if mallopt is not None:
        mallopt(M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        mallopt(M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(M_MMAP_MAX, 0)
            mallopt(M_TRIM_THRESHOLD, -1)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _inactive_file(stat: Path, key: str) -> int:
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_room(
    proc: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """What this process's memory cgroup still allows: its limit less what it uses, page
    cache it can drop not counted (as the kernel reclaims it before the OOM killer runs);
    None without a limit. cgroup v2, else v1; the folder named in /proc/self/cgroup, or the
    mount's root inside a container whose namespace hides the rest."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, where = line.split(":", 2)
        if controllers == "":
            root = mount
            limit, usage, key = "memory.max", "memory.current", "inactive_file"
        elif "memory" in controllers.split(","):
            root = mount / "memory"
            limit, usage, key = (
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            )
        else:
            continue
        for folder in (root / where.lstrip("/"), root):
            cap, used = _read_int(folder / limit), _read_int(folder / usage)
            if cap is not None and used is not None and cap < 1 << 60:
                return max(0, cap - used + _inactive_file(folder / "memory.stat", key))
    return None


def available_bytes() -> int | None:
    """Memory a new allocation can have without swapping: /proc/meminfo's MemAvailable, or
    the cgroup's room when that is lower. None where neither can be read (not Linux)."""
    figures = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                figures.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room()
    if room is not None:
        figures.append(room)
    return min(figures) if figures else None
