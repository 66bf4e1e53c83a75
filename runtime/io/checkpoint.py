"""Training checkpoints: written atomically, read back with weights_only=True."""

from __future__ import annotations

from pathlib import Path

import torch
from vggspec.compiler.frontend.errors import VggspecError

from .atomic import atomic_write

FORMAT = "vggspec-checkpoint/1"  # the "format" entry of every checkpoint's state


class CheckpointError(VggspecError):
    """A checkpoint that is missing, unreadable or not one of ours."""


def save_checkpoint(state: dict, path: Path, before_rename=None) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp), before_rename)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's state; only tensors and plain data are unpickled (weights_only)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load reports damage in many ways; all are the file's
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vggspec training checkpoint")
    return state
