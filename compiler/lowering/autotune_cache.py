"""The autotuner's decisions on disk: one JSON file, locked for writers, replaced atomically."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: writers are then only atomic, not serialised
    fcntl = None

log = logging.getLogger("vggspec.autotune")

# Where the decisions live unless VGGSPEC_AUTOTUNE_CACHE names another file.
CACHE_ENV = "VGGSPEC_AUTOTUNE_CACHE"
FORMAT = 1


def default_cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vggspec" / "autotune.json"


def environment_key(env: dict) -> str:
    """One section of the file per (GPU, torch, triton, kernels):
    "NVIDIA H200 | torch 2.11 | triton 3.6 | kernels 0123456789ab"."""
    return f"{env['gpu']} | {_versions(env)}"


def _versions(env: dict) -> str:
    return f"torch {env['torch']} | triton {env['triton']} | kernels {env['kernels']}"


class DecisionCache:
    """Decisions keyed by environment, then by call signature.

    The file is {"format": 1, "environments": {environment_key: {signature: decision}}}.
    Readers never lock (a writer replaces the whole file, so a reader sees the old or
    the new one); writers hold an fcntl lock on a sidecar file, re-read, merge (an entry
    another process wrote first wins, so every process ends up with the same choice)
    and replace the file. Sections whose torch, triton or kernels version differs from
    the current ones are dropped on write: new versions invalidate old measurements (and
    old failures, which are then tried again).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_path()

    def lookup(self, env: dict, signature: str) -> dict | None:
        return self._read().get(environment_key(env), {}).get(signature)

    def store(self, env: dict, signature: str, decision: dict) -> dict:
        """Record `decision` unless one is there already; returns the one that holds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            sections = {
                key: entries
                for key, entries in self._read().items()
                if key.endswith(f"| {_versions(env)}")
            }
            entries = sections.setdefault(environment_key(env), {})
            held = entries.setdefault(signature, decision)
            self._write({"format": FORMAT, "environments": sections})
        return held

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("autotune cache %s unreadable (%s); measuring again", self.path, err)
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return {}
        return data.get("environments", {})

    def _write(self, data: dict) -> None:
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _locked(self):
        if fcntl is None:
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
