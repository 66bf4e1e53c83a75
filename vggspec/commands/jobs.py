"""`vggspec run eval` and `vggspec run features` share this: their flags (commands/nets.py)
checked before any process starts or any weights load, made into the runtime's request, run
(runtime/eval/run.py) and its progress told on stderr."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from vggspec.commands.nets import parse_ints
from vggspec.errors import UserError
from vggspec.runtime.data.scale import TrainScale
from vggspec.runtime.eval.requests import ImagesRequest, NetsRequest, Processes


def check(args) -> None:
    """Mistakes found before any process starts or any weights load."""
    from vggspec.runtime.dist.devices import check_device

    check_device(args.device, args.backend, ("--device ", "--backend "))
    if not args.checkpoint and not args.weights:
        raise UserError("say which net: --checkpoint RUN_DIR, or --weights FILE --spec SPEC")
    if args.weights and len(args.spec) != len(args.weights):
        raise UserError(
            f"{len(args.weights)} --weights but {len(args.spec)} --spec: give one spec per "
            "weights file, in the same order"
        )
    if not args.weights and args.spec and len(args.spec) != len(args.checkpoint):
        raise UserError("give one --spec per --checkpoint (a check of what each holds)")
    threads = 1 if args.threads is None else args.threads  # 0 passed as "not given"
    if args.nproc < 1 or (args.workers or 0) < 0 or args.batch < 1 or threads < 1:
        raise UserError("--nproc, --batch and --threads must be ≥ 1, --workers ≥ 0")
    if args.train_scale and not args.weights:
        # It was dropped without a word: a run knows the scale it trained at.
        raise UserError("--train-scale is for --weights: a --checkpoint run knows its own")
    if not 0 <= args.max_bad_files < 1:
        raise UserError("--max-bad-files is a fraction in [0, 1)")
    if args.max_aspect < 1:
        raise UserError("--max-aspect must be ≥ 1")
    if args.scales is not None:
        parse_ints(args.scales, "--scales")
    from vggspec.runtime.eval.engines import EngineError, require
    from vggspec.runtime.eval.engines.serving import Serving

    try:
        require(args.engine, _device(args.device))
        Serving(args.engine, args.precision, _device(args.device)).candidates()
    except EngineError as err:
        raise UserError(str(err)) from None
    resolve_nets(args, args.checkpoint)  # first: a run not there has no data to take either
    for path in [*args.weights, *args.spec]:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    from vggspec.compiler import compile_spec, load_spec

    for path in args.spec:  # its own located error, not "a net of another spec than --spec"
        compile_spec(load_spec(path))
    if args.data is None:
        from vggspec.runtime.eval.runs import training_data

        args.data = training_data(args.checkpoint[0]) if args.checkpoint else None
        if args.data is None:
            raise UserError("say which images: --data DIR (an ImageFolder root)")
    if not (Path(args.data) / args.split).is_dir():
        raise UserError(
            f"--data {args.data}: no {args.split}/ folder (expected the ImageFolder layout "
            f"{args.data}/{args.split}/<class>/<image>)"
        )


def resolve_nets(args, paths) -> None:
    """Each of `paths` names a net; a run that has not finished is said to be one."""
    from vggspec.runtime.eval.runs import resolve_net

    for path in paths:
        resolve_net(path, args.from_parent)


def _device(device: str) -> str:
    """The device `auto` stands for (`check_device` has refused a cuda that is not here)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def nets_request(args):
    """The nets of the command line, as the runtime takes them."""
    train_scale = None
    if args.train_scale:
        values = parse_ints(args.train_scale, "--train-scale")
        if len(values) > 2 or (len(values) == 2 and values[0] > values[1]):
            raise UserError("--train-scale is S or S_MIN,S_MAX")
        train_scale = TrainScale(values[0], values[-1], listed=len(values) == 2)
    return NetsRequest(
        checkpoints=list(args.checkpoint),
        weights=list(args.weights),
        specs=list(args.spec),
        preprocess=args.preprocess,
        classes=args.classes,
        train_scale=train_scale,
        scales=None if args.scales is None else parse_ints(args.scales, "--scales"),
        backend=args.backend,
        engine=args.engine,
        precision=args.precision,
    )


def images_request(args):
    """The images of the command line, as the runtime takes them."""
    return ImagesRequest(
        data=args.data,
        split=args.split,
        flip=not args.no_flip,
        max_bad_files=args.max_bad_files,
        max_aspect=args.max_aspect,
        batch=args.batch,
        workers=args.workers,
        reduced_decode=args.reduced_decode,
    )


def processes(args):
    """How many processes, where, as the runtime takes it."""
    return Processes(
        nproc=args.nproc,
        device=args.device,
        threads=args.threads,
        argv=args.argv,
        from_parent=args.from_parent,
        command=args.job,
    )


def execute(request, job, show) -> int:
    """`job` run as `request.processes` says; its result shown with `show(result)` by the
    process that reports it."""
    from vggspec.runtime.eval.run import run_job

    done = run_job(request, job, say)
    if done.result is not None:
        show(done.result)
    return done.code


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
