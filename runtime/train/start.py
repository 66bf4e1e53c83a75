"""`vggspec run train` as one call: the run's settings resolved (a resumed run's as recorded,
else the recipe's with the command line's on top, paths made absolute), checked, its run
folder claimed, then trained here or in `--nproc` workers that rerun the command line."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vggspec.compiler import Spec, load_spec

from ..dist.context import holds_lock, under_torchrun
from ..io import replace
from ..io.rundir import RunDir
from .claim import check_options, claimed
from .config import ConfigError, TrainConfig, load_config, parse_overrides
from .preflight import check_before_start
from .settings import is_record, resumed


@dataclass
class TrainRequest:
    settings: list[str] = field(default_factory=list)  # key=value words
    config: str | None = None  # a recipe (found already), on which the settings go
    default_config: str | None = None  # the recipe when neither config nor settings are given
    home: str = "."  # where a relative path of a run with no recipe is found (vggspec's tree)
    nproc: int = 1
    max_restarts: int = 0
    resume: str | None = None  # a run folder to continue with its own settings
    overwrite: bool = False
    argv: list[str] = field(default_factory=list)  # the command line, as workers rerun it
    from_parent: dict = field(default_factory=dict)  # what a --nproc parent settled


@dataclass
class TrainResult:
    code: int  # the exit status
    out: str  # the run folder
    summary: dict | None = None  # the run's outcome, on the process that reports it (rank 0)


def _absolute(path: str, config: str | None, home: str) -> str:
    """A path from the command line or a recipe, made absolute so that the run (and its
    resume) does not depend on the working directory. Relative paths are looked up in
    the working directory, then beside the recipe's folder (specs/demo.yaml names
    specs/demo.vgg), then in vggspec's tree (its built-in specs)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return str(candidate.resolve())
    # Beside the recipe's folder, or for the built-in default (spec: specs/demo.vgg) in
    # vggspec's own tree.
    beside = (Path(config).resolve().parent.parent if config else Path(home)) / candidate
    if not beside.exists() and (Path(home) / candidate).is_file():
        # A built-in file (spec: specs/A.vgg) named by the user's own recipe elsewhere, as
        # `vggspec compile specs/A.vgg` takes it from any folder.
        return str(Path(home) / candidate)
    return str(beside if beside.exists() else candidate.resolve())


def resolve_config(request: TrainRequest) -> tuple[TrainConfig, Spec]:
    """(settings, spec) of the run: a resumed run's as it recorded them, else the recipe's
    with the command line's on top."""
    if request.resume:
        if request.config:
            raise ConfigError(
                "--resume continues a run with its own settings; --config starts a new one: "
                "give one"
            )
        return resumed(request.resume, request.settings, warn=holds_lock(request.from_parent))
    config = request.config
    if config is None and not request.settings:
        config = request.default_config  # `vggspec run train` alone: the demo
    cfg = load_config(config, request.settings)
    if request.config and "out" not in parse_overrides(request.settings):
        _check_not_a_record(Path(request.config), cfg.out)
    cfg.spec = _absolute(cfg.spec, config, request.home)
    for key in ("data", "finetune"):
        if getattr(cfg, key) is not None:
            setattr(cfg, key, _absolute(getattr(cfg, key), config, request.home))
    if cfg.init not in ("gaussian", "glorot"):
        cfg.init = _absolute(cfg.init, config, request.home)
    if cfg.out is None:
        # A worker takes the folder its parent named (the name holds the time).
        cfg.out = request.from_parent.get("out") or str(RunDir.default(cfg.spec))
    return cfg, load_spec(cfg.spec)  # parsed once; the checks and the trainer take it


def _check_not_a_record(config: Path, out: str | None) -> None:
    """A run's config.yaml names that run's folder as out: a new run from it without out=
    would train there (and --overwrite replace it)."""
    run = RunDir(config.parent)
    if config.name == RunDir.CONFIG and (run.settings.is_file() or is_record(run)):
        raise ConfigError(
            f"{config} is the record of the run in {out or run}: a new run from its settings "
            f"needs its own folder: vggspec run train --config {config} out=NEW_FOLDER"
        )


def start_training(request: TrainRequest) -> TrainResult:
    """The run, checked before any worker starts and anything is written; its folder locked
    (by the process that holds the lock) across torchrun's restarts."""
    if request.nproc < 1 or request.max_restarts < 0:
        raise ConfigError("--nproc must be ≥ 1 and --max-restarts ≥ 0")
    cfg, spec = resolve_config(request)
    check_options(bool(request.resume), request.overwrite, request.from_parent)
    # For the processes of the whole run, and of this machine.
    world = int(os.environ.get("WORLD_SIZE", "1")) if under_torchrun() else request.nproc
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if under_torchrun() else request.nproc
    check_before_start(cfg, spec, world, local, holds_lock(request.from_parent))
    if not holds_lock(request.from_parent):
        return _train(request, cfg, spec, request.from_parent.get("staging"))
    with claimed(RunDir(cfg.out), bool(request.resume), request.overwrite) as staging:
        return _train(request, cfg, spec, staging and str(staging))


def _train(request: TrainRequest, cfg: TrainConfig, spec: Spec, staging: str | None):
    if not under_torchrun() and (request.nproc > 1 or request.max_restarts > 0):
        from ..dist.launch import relaunch

        # The workers find the run folder (its name may hold the time) and the lock, held
        # here across torchrun's restarts, settled by this process.
        settled = {"out": cfg.out, "locked": "1", **({"staging": staging} if staging else {})}
        code = relaunch(request.argv, request.nproc, request.max_restarts, settled)
        run = RunDir(cfg.out)  # after an --overwrite's swap, the new run is there
        new_run_there = staging is None or replace.swapped(run, RunDir(staging))
        if code == 1 and new_run_there and run.last.is_file():
            print(
                f"vggspec: the run's last checkpoint is kept: continue with "
                f"vggspec run train --resume {cfg.out}",
                file=sys.stderr,
            )
        return TrainResult(code, cfg.out)
    from .trainer import run_training

    summary = run_training(cfg, spec, resume=bool(request.resume), staging=staging)
    # Interrupted by Ctrl-C, checkpoint written: 130 as an interrupted command, so that `run
    # train && next` stops there (SIGTERM, a scheduler's stop, exits 0). Not in a worker:
    # torchrun would take it for a failure and restart the group; its parent says 130.
    interrupted = summary is not None and summary.get("stopped_by") == "SIGINT"
    code = 130 if interrupted and not under_torchrun() else 0
    return TrainResult(code, cfg.out, summary)  # summary None: not rank 0 (rank 0 reports)
