"""Idle OpenMP threads sleep instead of spinning: set for vggspec's commands before torch loads."""

from __future__ import annotations

import os
import sys


def sleep_when_idle() -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE (unless the user set it, or GOMP_SPINCOUNT) if torch is not
    imported yet: the OpenMP runtime reads it once, when torch loads it, and the processes
    a command starts (loader workers, --nproc ranks) inherit it. True if it now holds.

    By default an idle thread of libgomp (torch's OpenMP on Linux) spins for 300,000 rounds
    before it sleeps. On a machine whose cores other processes also use, the spinning
    threads take the cores that their siblings, the loader and an inference engine need,
    and each small parallel op waits for a sibling that is not running: on the shared
    2-core Zen 5 (2026-12-06, load 10-15) `run eval` of the demo took 77 s spinning and
    4.5 s sleeping (README, "Threads")."""
    if "torch" not in sys.modules and "GOMP_SPINCOUNT" not in os.environ:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
