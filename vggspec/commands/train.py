"""`vggspec run train`: the paper's training recipe on one process, several, or machines."""

from __future__ import annotations

import os
from pathlib import Path

from vggspec.builtin import DEMO_RECIPE, HOME, locate


def add_parser(run_subparsers) -> None:
    p = run_subparsers.add_parser(
        "train",
        help="train a spec with the paper's recipe",
        description="Train a net. With no arguments: the demo spec on built-in demo data "
        "with the demo recipe (specs/demo.yaml). Settings are key=value words on top of "
        "--config (default: the paper's recipe).",
    )
    p.add_argument(
        "settings",
        nargs="*",
        metavar="KEY=VALUE",
        help="e.g. spec=specs/A.vgg data=DIR out=runs/a max_steps=100",
    )
    p.add_argument("--config", metavar="YAML", help="a run config, e.g. specs/paper.yaml")
    p.add_argument("--nproc", type=int, default=1, help="local worker processes (torchrun)")
    p.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restart the workers this many times if one dies (torchrun)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run where it stopped, with its own settings (only epochs, max_steps, "
        "checkpoint_every, log_every and workers may change)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in out= (the old one stays until the new one's first checkpoint)",
    )
    p.set_defaults(run=run)


def _absolute(path: str, config) -> str:
    """A path from the command line or a recipe, made absolute so that the run (and its
    resume) does not depend on the working directory. Relative paths are looked up in
    the working directory, then beside the recipe's folder (specs/demo.yaml names
    specs/demo.vgg), or in vggspec's tree when there is no recipe."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return str(candidate.resolve())
    # Beside the recipe's folder, or for the built-in default (spec: specs/demo.vgg) in
    # vggspec's own tree.
    beside = (Path(config).resolve().parent.parent if config else HOME) / candidate
    return str(beside if beside.exists() else candidate.resolve())


def resolve_config(args):
    """(settings, spec) of the run: a resumed run's as it recorded them, else the recipe's
    with the command line's on top."""
    from vggspec.compiler import load_spec
    from vggspec.runtime.dist.context import holds_lock
    from vggspec.runtime.train.config import ConfigError, load_config
    from vggspec.runtime.train.settings import resumed

    if args.resume:
        if args.config:
            raise ConfigError(
                "--resume continues a run with its own settings; --config starts a new one: "
                "give one"
            )
        return resumed(args.resume, args.settings, warn=holds_lock(args.from_parent))
    config = str(locate(args.config)) if args.config else None
    if config is None and not args.settings:
        config = DEMO_RECIPE  # `vggspec run train` alone: the demo
    cfg = load_config(config, args.settings)
    cfg.spec = _absolute(cfg.spec, config)
    for key in ("data", "finetune"):
        if getattr(cfg, key) is not None:
            setattr(cfg, key, _absolute(getattr(cfg, key), config))
    if cfg.init not in ("gaussian", "glorot"):
        cfg.init = _absolute(cfg.init, config)
    if cfg.out is None:
        from vggspec.runtime.io.rundir import RunDir

        # A worker takes the folder its parent named (the name holds the time).
        cfg.out = args.from_parent.get("out") or str(RunDir.default(cfg.spec))
    return cfg, load_spec(cfg.spec)  # parsed once; the checks and the trainer take it


def run(args) -> int:
    from vggspec.runtime.train.config import ConfigError

    if args.nproc < 1 or args.max_restarts < 0:
        raise ConfigError("--nproc must be ≥ 1 and --max-restarts ≥ 0")
    from vggspec.runtime.dist.context import holds_lock, under_torchrun
    from vggspec.runtime.io.rundir import RunDir
    from vggspec.runtime.train.claim import check_options, claimed
    from vggspec.runtime.train.preflight import check_before_start

    cfg, spec = resolve_config(args)
    check_options(bool(args.resume), args.overwrite, args.from_parent)
    # For the processes of the whole run, and of this machine.
    world = int(os.environ.get("WORLD_SIZE", "1")) if under_torchrun() else args.nproc
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if under_torchrun() else args.nproc
    check_before_start(cfg, spec, world, local, holds_lock(args.from_parent))
    if not holds_lock(args.from_parent):
        return _train(args, cfg, spec, args.from_parent.get("staging"))
    with claimed(RunDir(cfg.out), bool(args.resume), args.overwrite) as staging:
        return _train(args, cfg, spec, staging and str(staging))


def _train(args, cfg, spec, staging: str | None) -> int:
    from vggspec.runtime.dist.context import under_torchrun

    if not under_torchrun() and (args.nproc > 1 or args.max_restarts > 0):
        from vggspec.runtime.dist.launch import relaunch

        # The workers find the run folder (its name may hold the time) and the lock, held
        # here across torchrun's restarts, settled by this process.
        settled = {"out": cfg.out, "locked": "1", **({"staging": staging} if staging else {})}
        return relaunch(args.argv, args.nproc, args.max_restarts, settled)
    from vggspec.runtime.train.trainer import run_training

    summary = run_training(cfg, spec, resume=bool(args.resume), staging=staging)
    if summary is None:  # not rank 0: rank 0 reports
        return 0
    top1, loc = summary["val_top1_error"], summary.get("val_loc_error")
    print(
        f"{summary['outcome']}: {summary['steps']} steps in {summary['wall_seconds']:.0f} s, "
        f"{summary['images_per_second']:.1f} images/s"
        + (f", validation top-1 error {top1:.2%}" if top1 is not None else "")
        + (f", validation GT-class localisation error {loc:.2%}" if loc is not None else "")
        + f"; run folder {cfg.out}"
    )
    return 0
