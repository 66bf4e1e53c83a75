"""runtime.cpu_memory: freed memory stays with the process for the next step to reuse."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Fills a 256 MiB tensor, frees it, prints whether the setting took and how many MiB of
# resident memory the free gave back to the kernel.
PROGRAM = """
import os, torch
from vggspec.runtime.dist.cpu_memory import retain_freed_memory
took = retain_freed_memory()
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
x = torch.ones(64 * 2**20)
held = resident()
del x
print(took, held - resident())
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc"
)
@pytest.mark.parametrize("setting", ["1", "0"])
def test_freed_memory_is_kept_for_reuse(setting):
    env = {**os.environ, "VGGSPEC_RETAIN_MEMORY": setting, "PYTHONPATH": str(ROOT)}
    took, released = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True,
        timeout=120, check=True,
    ).stdout.split()  # fmt: skip
    if setting == "1":
        assert took == "True"
        assert float(released) < 16  # MiB: the block stays in the heap
    else:  # the C library's default, and the control that shows the figure measures
        assert took == "False"
        assert float(released) > 240  # the block went back to the kernel
