"""Taking a run folder for one training run: its lock, and --resume / --overwrite / refuse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..dist.context import restart_count, under_torchrun
from ..io import replace
from ..io.atomic import left_by_dead_writer, temporary_of
from ..io.rundir import RunDir
from .config import ConfigError
from .settings import is_record

# What a start writes before its first checkpoint (its records, log, lock, the mark of an
# --overwrite's staging folder, and temporaries of a start killed mid-write), and the
# figure `vggspec plot` draws of its log.
_LEFTOVER_NAMES = frozenset(
    {RunDir.SETTINGS, RunDir.CONFIG, RunDir.LOG, RunDir.METRICS, RunDir.LOCK, replace.MARKER}
    | {RunDir.CURVES}
)


def is_leftover(run: RunDir) -> bool:
    """Whether the folder `run` (holding no run) is empty or what an earlier start of a run
    left before its first checkpoint: nothing but the files it writes, its settings among
    them once it wrote any (a folder of the user's own config.yaml and metrics.jsonl is not)."""
    entries = list(run.path.iterdir())
    names = {temporary_of(p.name) or p.name for p in entries}
    if not names <= _LEFTOVER_NAMES:
        return False
    # A dead writer's temporary (settings.json's, a start killed mid-write) is not a file
    # written: the start removes it.
    written = {temporary_of(p.name) or p.name for p in entries if not left_by_dead_writer(p)}
    return not (written - {RunDir.LOCK, replace.MARKER}) or is_record(run)


def check_fresh(run: RunDir) -> None:
    if run.holds_run():
        raise ConfigError(
            f"{run} already holds a run: continue it with --resume {run}, replace it with "
            "--overwrite, or choose another out="
        )
    if run.path.exists() and not run.path.is_dir():
        raise ConfigError(f"out={run}: not a folder; name a new or empty one")
    if run.path.is_dir() and not is_leftover(run):
        raise ConfigError(f"out={run}: holds files but not a run; name a new or empty folder")


def check_options(resume: bool, overwrite: bool, from_parent: dict) -> None:
    if overwrite and resume:
        raise ConfigError("--overwrite starts a new run and --resume continues one: give one")
    if overwrite and under_torchrun() and not from_parent.get("locked"):
        raise ConfigError(
            "--overwrite needs `vggspec run train --nproc N` (not a torchrun of your own): "
            "move the old run away first"
        )


@contextmanager
def claimed(run: RunDir, resume: bool, overwrite: bool) -> Iterator[RunDir | None]:
    """Hold `run`'s lock for the block; yields the staging folder an --overwrite trains in
    (the run replaces `run` at its first checkpoint, see io/replace.py), else None. A run
    already there is refused unless resumed or overwritten. Whatever happens in the block,
    on leaving it the old run or the new one is in `run`, whole, and no staging folder is
    left."""
    with run.lock("run train") as lock:
        replace.settle(run)  # an --overwrite killed part-way, finished or undone
        staging = None
        if not resume and not overwrite:
            # A rank 0 that torchrun restarted (a torchrun of one's own, --max-restarts)
            # finds its own run here, and resumes it (run_training).
            if restart_count() == 0:
                check_fresh(run)
        elif not resume and run.holds_run():
            staging = replace.staging_folder(run)
            replace.start(run, staging)
            lock.extend_to(staging.path)
        elif not resume and restart_count() == 0:
            check_fresh(run)  # --overwrite replaces a run, not a folder of other files
        try:
            yield staging
        finally:
            replace.settle(run)
