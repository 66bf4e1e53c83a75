"""Compiled kernel figures on disk: one small JSON file per kernel specialisation and target."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .version import kernels_version

# Where the figures live unless VGGSPEC_AOT_CACHE names another folder.
CACHE_ENV = "VGGSPEC_AOT_CACHE"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vggspec" / "aot"


def job_key(job: dict, capability: int) -> str:
    """The compile's identity: the kernel's specialisation and options, the target, and the
    triton and kernels versions (a changed kernel or compiler is compiled again)."""
    import triton

    text = json.dumps([job, capability, triton.__version__, kernels_version()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(key: str) -> dict | None:
    try:
        return json.loads((cache_dir() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None


def store(key: str, figures: dict) -> None:
    """Write atomically; a folder that cannot be written only costs a compile next time."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=key, suffix=".tmp", dir=folder)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(figures, f)
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        Path(tmp).unlink(missing_ok=True)
