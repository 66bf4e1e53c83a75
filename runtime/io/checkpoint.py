"""Training checkpoints: written atomically, read back with weights_only=True."""

from __future__ import annotations

import errno
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import torch
from vggspec.compiler.errors import VggspecError

from .atomic import atomic_write

FORMAT = "vggspec-checkpoint/1"  # the "format" entry of every checkpoint's state

# How torch.load(weights_only=True) names what it refused to unpickle.
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointError(VggspecError):
    """A checkpoint that is missing, unreadable or not one of ours."""


def _torch_save(state: dict, path: Path) -> None:
    try:
        torch.save(state, path)
    except RuntimeError as err:
        # torch's zip writer reports a failed write (a full disk, a quota) as RuntimeError
        # "[enforce fail at inline_container.cc:...] . unexpected pos ...".
        free = shutil.disk_usage(path.parent).free
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OSError(
            errno.ENOSPC if free < (1 << 20) else errno.EIO,
            f"write failed with {free / 1e6:.1f} MB free on its disk (torch: {first})",
        ) from None


def save_checkpoint(state: dict, path: Path, before_rename=None) -> None:
    """Write `state` to `path` atomically; a failed write (a full disk) leaves the previous
    checkpoint as it was and says so in one line."""
    try:
        atomic_write(path, lambda tmp: _torch_save(state, Path(tmp)), before_rename)
    except OSError as err:
        raise OSError(
            err.errno,
            f"cannot write the checkpoint {path}: {err.strerror or err}; "
            "the previous checkpoint is unchanged",
        ) from None


def _check_crc(path: Path) -> None:
    """torch.save records a CRC-32 of every entry of its zip, and torch.load never checks
    them: a checkpoint whose bytes changed on disk loads, and a resume trains on from
    weights nobody trained. Read each entry once against its CRC (zlib: ~0.6 s a GB)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip (an old format, or cut short): torch.load says what it is
    if bad is not None:
        entry = bad.partition("/")[2] or bad  # torch names the top folder after the file
        raise CheckpointError(
            f"{path}: damaged: its entry {entry} fails its CRC-32 check (the file changed "
            "after it was written, on its disk or in a copy)"
        )


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's state; only tensors and plain data are unpickled (weights_only)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    _check_crc(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's text is a dozen lines of advice
        found = _UNSAFE_GLOBAL.search(str(err))
        raise CheckpointError(
            f"{path}: refused: it holds pickled objects that are not tensors or plain data"
            + (f" ({found.group(1)})" if found else "")
            + "; vggspec loads checkpoints with weights_only=True and never runs pickled code"
        ) from None
    except Exception as err:  # torch.load reports damage in many ways; all are the file's
        lines = str(err).strip().splitlines()
        gist = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({gist})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vggspec training checkpoint")
    return state
