"""A training run folder: the one place that knows its files' names and how to find them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from vggspec.compiler.errors import VggspecError

from .atomic import remove_stale_temporaries
from .lock import LOCK_NAME, FolderLock


class RunDirError(VggspecError):
    """A path that should be, or be in, a training run folder and is not."""


def _file(*parts: str) -> property:
    return property(lambda self: self.path.joinpath(*parts), doc="/".join(parts))


class RunDir:
    """runs/<spec>-<date>-<time>/ as `vggspec run train` writes it:

    settings.json        the settings and the spec, with their sha256 (what --resume uses)
    config.yaml          the same settings, for people and for --config (an edit is refused)
    train.log            the log, as printed
    metrics.jsonl        one JSON line per logged step and per validation
    checkpoints/last.pt  the latest training state (resume); best.pt: best validation
    model.safetensors    the trained net, with its spec and model information
    summary.json         the outcome
    curves.png           `vggspec plot`'s figure
    .vggspec.lock        while a run writes here: its pid, host and start time (lock.py)
    """

    CONFIG = "config.yaml"
    SETTINGS = "settings.json"
    LOG = "train.log"
    METRICS = "metrics.jsonl"
    CHECKPOINTS = "checkpoints"
    LAST = f"{CHECKPOINTS}/last.pt"
    BEST = f"{CHECKPOINTS}/best.pt"
    MODEL = "model.safetensors"
    SUMMARY = "summary.json"
    CURVES = "curves.png"
    LOCK = LOCK_NAME

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @classmethod
    def default(cls, spec: str | os.PathLike, base: str | os.PathLike = "runs") -> RunDir:
        """runs/<spec name>-<date>-<time>, the folder of a run given no out=."""
        return cls(Path(base) / f"{Path(spec).stem}-{time.strftime('%Y%m%d-%H%M%S')}")

    @classmethod
    def containing(cls, path: str | os.PathLike) -> RunDir | None:
        """The run folder `path` is, or holds a file of (its model, a checkpoint, its
        config…); None when it is not in a run folder (no config.yaml there)."""
        p = Path(path)
        run = p if p.is_dir() else p.parent
        if run.name == cls.CHECKPOINTS:
            run = run.parent
        found = cls(run)
        return found if found.config.is_file() else None

    # -- the files (paths; whether they exist is the caller's question) ---------------------

    config = _file(CONFIG)
    settings = _file(SETTINGS)
    log = _file(LOG)
    metrics = _file(METRICS)
    checkpoints = _file(CHECKPOINTS)
    last = _file(LAST)
    best = _file(BEST)
    model = _file(MODEL)
    summary = _file(SUMMARY)
    curves = _file(CURVES)

    # -- what it holds ---------------------------------------------------------------------

    def not_regular(self) -> list[Path]:
        """The files a run writes that are here but are not regular files (a FIFO, a
        folder, a device): a resume would block on a FIFO's open() for ever."""
        named = (self.CONFIG, self.SETTINGS, self.LOG, self.METRICS, self.LAST, self.BEST)
        paths = [self.path / name for name in (*named, self.MODEL, self.SUMMARY)]
        return [p for p in paths if os.path.lexists(p) and not p.is_file()]

    def holds_run(self) -> bool:
        """Whether a run got as far as its first checkpoint here, finished or not (a folder
        with a config but no checkpoints is a run that failed to start, and may be reused)."""
        return any(p.exists() for p in (self.checkpoints, self.model, self.summary))

    def lock(self, what: str = "run train") -> FolderLock:
        """This folder's writer lock, to hold (`with run.lock():`) while writing here; a
        second writer is refused with FolderBusy, naming the holder."""
        return FolderLock(self.path, what)

    def trained_model(self) -> Path | None:
        """The net to use: model.safetensors, else the last checkpoint of a run that has not
        finished; None when it holds neither."""
        for candidate in (self.model, self.last):
            if candidate.is_file():
                return candidate
        return None

    def remove_leftovers(self) -> list[Path]:
        """Delete the temporaries that writers killed mid-write left in this folder (a dead
        process's .NAME.PID.*.tmp, beside any of its files); returns them. Every training
        start calls it, so a run killed and resumed over and over does not fill the disk."""
        return remove_stale_temporaries(self.path)


def output_lock(path: str | os.PathLike, what: str, folder: bool = False) -> FolderLock:
    """The lock a job holds while it writes `path`: the folder's (`folder`: an output folder),
    or for a file in a run folder (or in a folder a writer holds) that folder's (a run folder
    has one writer at a time), else one for that file alone (.NAME.lock beside it)."""
    p = Path(path)
    if folder:
        return FolderLock(p, what)
    run = RunDir.containing(p.parent)
    if run is not None:
        return run.lock(what)
    if (p.parent / LOCK_NAME).exists():
        return FolderLock(p.parent, what)
    return FolderLock(p.parent, what, name=f".{p.name}.lock", target=p)


def model_file(path: str | os.PathLike) -> Path:
    """A model file, given it or a training run folder (its model.safetensors, or the last
    training checkpoint of a run that has not finished)."""
    p = Path(path)
    if p.is_dir():
        found = RunDir(p).trained_model()
        if found is None:
            raise RunDirError(f"{p}: no {RunDir.MODEL} (nor {RunDir.LAST}) in this folder")
        return found
    if not p.exists():
        raise RunDirError(f"{p}: no such checkpoint file or run folder")
    return p
