"""Paths shared by the tests (a module of its own: two conftest.py files cannot both be
imported as `conftest`)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
TABLE1 = ("A", "A-LRN", "B", "C", "D", "E")


def vggspec_cmd(*args, env=None, timeout=240) -> subprocess.CompletedProcess:
    """`python -m vggspec ARGS` in a fresh process (for exit codes, signals, torchrun)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vggspec", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
