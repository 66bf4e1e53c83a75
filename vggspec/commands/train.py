"""`vggspec run train`: the paper's training recipe on one process, several, or machines."""

from __future__ import annotations

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


def train_request(args):
    """The run the command line asks for, as the runtime takes it."""
    from vggspec.runtime.train.start import TrainRequest

    return TrainRequest(
        settings=list(args.settings),
        config=str(locate(args.config)) if args.config else None,
        default_config=str(DEMO_RECIPE),
        home=str(HOME),
        nproc=args.nproc,
        max_restarts=args.max_restarts,
        resume=args.resume,
        overwrite=args.overwrite,
        argv=args.argv,
        from_parent=args.from_parent,
    )


def run(args) -> int:
    from vggspec.runtime.train.start import start_training

    result = start_training(train_request(args))
    summary = result.summary
    if summary is None:  # a parent of workers, or not rank 0: rank 0 reports
        return result.code
    top1, loc = summary["val_top1_error"], summary.get("val_loc_error")
    print(
        f"{summary['outcome']}: {summary['steps']} steps in {summary['wall_seconds']:.0f} s, "
        f"{summary['images_per_second']:.1f} images/s"
        + (f", validation top-1 error {top1:.2%}" if top1 is not None else "")
        + (f", validation GT-class localisation error {loc:.2%}" if loc is not None else "")
        + f"; run folder {result.out}"
    )
    return result.code
