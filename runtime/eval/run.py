"""An evaluation job as the command line asks for it: on this process, or in `--nproc` workers
that rerun the command (after every net loaded once here); its outputs locked meanwhile; the
process group set up and torn down around it."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..dist import context as distributed
from ..dist.launch import relaunch
from ..io.atomic import atomic_write
from ..io.rundir import output_lock
from .prepare import Say, preflight, quiet


@dataclass
class JobResult:
    code: int  # the exit status
    result: dict | None  # what the job found, on the process that reports it (rank 0)


def run_job(request, job: Callable, say: Say = quiet) -> JobResult:
    """`job(request, ctx, say)` (the `job.py` of classify/, localise/ or features/) run as
    `request.processes` says, with what it writes (`request.outputs()`) locked by the process
    that holds the lock (holds_lock) while it runs."""
    with ExitStack() as held:
        if distributed.holds_lock(request.processes.from_parent):
            locks = {}
            for path, folder in request.outputs():
                lock = output_lock(path, f"run {request.processes.command}", folder)
                locks.setdefault(lock.path, lock)  # two outputs in one run folder: one lock
            for lock in locks.values():
                held.enter_context(lock)
        return _run(request, job, say)


def _run(request, job: Callable, say: Say) -> JobResult:
    processes = request.processes
    if not distributed.under_torchrun() and processes.nproc > 1:
        # A wrong net is one message here, not one per worker.
        preflight(request.nets, request.images)
        return JobResult(relaunch(processes.argv, processes.nproc, resolved={"locked": "1"}), None)
    ctx = distributed.setup(processes.device, threads=processes.threads)
    try:
        result = job(request, ctx, say)
        distributed.barrier(ctx)
        return JobResult(0, result if ctx.is_main else None)
    finally:
        distributed.teardown()


def report_text(data: dict) -> str:
    """A report as JSON text, as `--json` prints it and `--output` holds it."""
    return json.dumps(data, indent=2) + "\n"


def write_report(path: str, data: dict) -> None:
    """`data` as JSON text at `path`, atomically."""
    text = report_text(data)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))
