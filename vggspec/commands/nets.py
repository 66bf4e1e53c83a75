"""Options shared by `vggspec run eval` and `vggspec run features`: which nets, which data,
how many processes; checked, turned into the runtime's requests (runtime/eval/jobs.py) and
run on one process or many, the same way for both."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from vggspec.errors import UserError
from vggspec.runtime.eval.requests import ImagesRequest, NetsRequest


def add_arguments(p, what: str) -> None:
    nets = p.add_argument_group("nets (repeat --checkpoint, or --weights with --spec, to fuse)")
    nets.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="CKPT",
        help="a training run folder or its model.safetensors (or a checkpoints/*.pt)",
    )
    nets.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="FILE",
        help="weights from elsewhere: a torchvision VGG .pth, safetensors (torchvision's "
        "or vggspec's names), a Caffe .caffemodel or a MatConvNet .mat; needs --spec",
    )
    nets.add_argument(
        "--spec",
        action="append",
        default=[],
        metavar="SPEC",
        help="the .vgg of each --weights (in order); with --checkpoint only, a check that "
        "the checkpoint is that net",
    )
    nets.add_argument(
        "--preprocess",
        choices=("caffe", "torchvision", "vggspec"),
        help="pixel convention of --weights: caffe (BGR minus the VGG release's mean pixel) "
        "or torchvision (RGB on [0,1], mean/std); vggspec: a checkpoint's own mean RGB",
    )
    nets.add_argument("--classes", metavar="FILE", help="class names in output order, one a line")
    nets.add_argument(
        "--train-scale",
        metavar="S|SMIN,SMAX",
        help="training scale of --weights, for the default test scales (default 256)",
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        metavar="DIR",
        help="an ImageFolder root (default: the data the first --checkpoint's run trained on)",
    )
    data.add_argument(
        "--split",
        default=ImagesRequest.split,
        help=f"the sub-folder to read (default {ImagesRequest.split})",
    )
    data.add_argument(
        "--scales",
        metavar="Q1,Q2,…",
        help="test scales (smallest image side); default from each net's training scale: "
        "{S−32, S, S+32}, or {S_min, (S_min+S_max)/2, S_max} if jittered",
    )
    data.add_argument("--no-flip", action="store_true", help=f"{what} without the mirror image")
    data.add_argument(
        "--reduced-decode",
        action="store_true",
        help="decode each JPEG at the DCT reduction (1/2, 1/4, 1/8) that stays at least its "
        "test size: faster and smaller for large photos, but not the pixels of a full decode "
        "(the default, as torchvision's readers)",
    )
    data.add_argument(
        "--max-bad-files",
        type=float,
        default=ImagesRequest.max_bad_files,
        metavar="FRACTION",
        help=f"stop if more of the files are unreadable (default {ImagesRequest.max_bad_files:g})",
    )
    data.add_argument(
        "--max-aspect",
        type=float,
        default=ImagesRequest.max_aspect,
        help="keep at most this long side / short side of each rescaled image, centred "
        f"(default {ImagesRequest.max_aspect:g})",
    )
    run = p.add_argument_group("running")
    run.add_argument("--nproc", type=int, default=1, help="local worker processes (torchrun)")
    run.add_argument(
        "--workers",
        type=int,
        default=ImagesRequest.workers,
        help="data-loading processes per worker (default: none up to 4 cores per worker, "
        "else one per 8 cores, at most 4)",
    )
    run.add_argument(
        "--batch", type=int, default=ImagesRequest.batch, help="images per batch at most"
    )
    run.add_argument(
        "--threads", type=int, help="torch threads per process (default: cores / processes)"
    )
    run.add_argument("--backend", choices=("auto", "torch", "triton"), default=NetsRequest.backend)
    run.add_argument(
        "--engine",
        choices=("torch", "onnxruntime", "openvino", "auto"),
        default=NetsRequest.engine,
        help="what computes the nets: torch (default, the --backend); onnxruntime or openvino "
        "(vggspec's exported ONNX model, on the CPU; extras vggspec[onnx], vggspec[openvino]); "
        "auto: each installed one measured on the first images, the fastest that agrees with "
        "torch kept",
    )
    run.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default=NetsRequest.precision,
        help="arithmetic: fp32 (default), bf16, or auto: bf16 where the CPU (AVX512_BF16, "
        "AMX) or GPU has it natively, else fp32",
    )
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"{option} takes whole numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{option} takes positive whole numbers, got {text!r}")
    return values


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
    if args.nproc < 1 or (args.workers or 0) < 0 or args.batch < 1 or (args.threads or 1) < 1:
        raise UserError("--nproc, --batch and --threads must be ≥ 1, --workers ≥ 0")
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
    if args.data is None:
        from vggspec.runtime.eval.jobs import training_data

        args.data = training_data(args.checkpoint[0]) if args.checkpoint else None
        if args.data is None:
            raise UserError("say which images: --data DIR (an ImageFolder root)")
    if not (Path(args.data) / args.split).is_dir():
        raise UserError(
            f"--data {args.data}: no {args.split}/ folder (expected the ImageFolder layout "
            f"{args.data}/{args.split}/<class>/<image>)"
        )
    from vggspec.runtime.eval.models import resolve_checkpoint

    for path in args.checkpoint:
        resolve_checkpoint(path)
    for path in [*args.weights, *args.spec]:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device cuda: no CUDA GPU here (torch {torch.__version__})")
    return device


def nets_request(args):
    """The nets of the command line, as the runtime takes them."""
    train_scale = None
    if args.train_scale:
        values = parse_ints(args.train_scale, "--train-scale")
        if len(values) > 2 or (len(values) == 2 and values[0] > values[1]):
            raise UserError("--train-scale is S or S_MIN,S_MAX")
        train_scale = values[0] if len(values) == 1 else values
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


def execute(args, request, job, show, outputs=()) -> int:
    """`job(request, ctx, say)` (runtime.eval.jobs) on this process, its result shown by
    rank 0 with `show(result)`; or, with --nproc N outside torchrun, this command again in N
    workers (after every net has loaded once here, so that a wrong net is one message, not
    one per worker). `outputs`: (path, is_folder) of what it writes, locked meanwhile."""
    from contextlib import ExitStack

    from vggspec.runtime.dist import context as distributed
    from vggspec.runtime.io.rundir import output_lock

    with ExitStack() as held:
        if distributed.holds_lock(args.from_parent):
            locks = {}
            for path, folder in outputs:
                lock = output_lock(path, f"run {args.job}", folder)
                locks.setdefault(lock.path, lock)  # two outputs in one run folder: one lock
            for lock in locks.values():
                held.enter_context(lock)
        return _execute(args, request, job, show)


def _execute(args, request, job, show) -> int:
    from vggspec.runtime.dist import context as distributed
    from vggspec.runtime.dist.launch import relaunch
    from vggspec.runtime.eval.jobs import preflight

    if not distributed.under_torchrun() and args.nproc > 1:
        preflight(request.nets)
        return relaunch(args.argv, args.nproc, resolved={"locked": "1"})
    ctx = distributed.setup(args.device, threads=args.threads)
    try:
        result = job(request, ctx, say)
        if ctx.is_main:
            show(result)
        distributed.barrier(ctx)
        return 0
    finally:
        distributed.teardown()


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
