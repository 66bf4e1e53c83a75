"""Options shared by `vggspec run eval` and `vggspec run features`: which nets, which data,
how many processes; read, checked and loaded the same way for both."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from vggspec.errors import UserError


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
    data.add_argument("--split", default="val", help="the sub-folder to read (default val)")
    data.add_argument(
        "--scales",
        metavar="Q1,Q2,…",
        help="test scales (smallest image side); default from each net's training scale: "
        "{S−32, S, S+32}, or {S_min, (S_min+S_max)/2, S_max} if jittered",
    )
    data.add_argument("--no-flip", action="store_true", help=f"{what} without the mirror image")
    data.add_argument(
        "--max-bad-files",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="stop if more of the files are unreadable (default 0.1)",
    )
    data.add_argument(
        "--max-aspect",
        type=float,
        default=3.0,
        help="keep at most this long side / short side of each rescaled image, centred (default 3)",
    )
    run = p.add_argument_group("running")
    run.add_argument("--nproc", type=int, default=1, help="local worker processes (torchrun)")
    run.add_argument("--workers", type=int, default=1, help="data-loading processes per worker")
    run.add_argument("--batch", type=int, default=32, help="images per batch at most")
    run.add_argument(
        "--threads", type=int, help="torch threads per process (default: cores / processes)"
    )
    run.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto")
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
    if not args.checkpoint and not args.weights:
        raise UserError("say which net: --checkpoint RUN_DIR, or --weights FILE --spec SPEC")
    if args.weights and len(args.spec) != len(args.weights):
        raise UserError(
            f"{len(args.weights)} --weights but {len(args.spec)} --spec: give one spec per "
            "weights file, in the same order"
        )
    if not args.weights and args.spec and len(args.spec) != len(args.checkpoint):
        raise UserError("give one --spec per --checkpoint (a check of what each holds)")
    if args.nproc < 1 or args.workers < 0 or args.batch < 1 or (args.threads or 1) < 1:
        raise UserError("--nproc, --batch and --threads must be ≥ 1, --workers ≥ 0")
    if not 0 <= args.max_bad_files < 1:
        raise UserError("--max-bad-files is a fraction in [0, 1)")
    if args.max_aspect < 1:
        raise UserError("--max-aspect must be ≥ 1")
    if args.scales is not None:
        parse_ints(args.scales, "--scales")
    if args.data is None:
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


def training_data(checkpoint: str) -> str | None:
    """The data folder a training run read (its config.yaml; the built-in demo data's
    folder when it trained on that), or None when `checkpoint` is not in a run folder."""
    from vggspec.runtime.train.config import ConfigError, read_yaml

    path = Path(checkpoint)
    run = path if path.is_dir() else path.parent
    if run.name == "checkpoints":
        run = run.parent
    if not (run / "config.yaml").is_file():
        return None
    try:
        config = read_yaml(run / "config.yaml")
    except ConfigError:
        return None
    if config.get("data"):
        return str(config["data"])
    from vggspec.runtime.train.data import demo_data_root

    return str(demo_data_root(int(config.get("seed", 0))))


def worker_args(args, job: str, extra: list[str]) -> list[str]:
    """The command line each torchrun worker runs: this one, without --nproc."""
    words = ["vggspec", "run", job]
    for flag, values in (
        ("--checkpoint", args.checkpoint),
        ("--weights", args.weights),
        ("--spec", args.spec),
    ):
        for value in values:
            words += [flag, str(value)]
    for flag, value in (
        ("--preprocess", args.preprocess),
        ("--classes", args.classes),
        ("--train-scale", args.train_scale),
        ("--data", args.data),
        ("--split", args.split),
        ("--scales", args.scales),
        ("--max-bad-files", args.max_bad_files),
        ("--max-aspect", args.max_aspect),
        ("--workers", args.workers),
        ("--batch", args.batch),
        ("--threads", args.threads),
        ("--backend", args.backend),
        ("--device", args.device),
    ):
        if value is not None:
            words += [flag, str(value)]
    if args.no_flip:
        words.append("--no-flip")
    return words + extra


def load_models(args, device) -> list:
    """Every net asked for, with its test scales (--scales, or its training scale's)."""
    from vggspec.runtime.eval.models import check_scales, load_checkpoint_model, load_weights_model

    models = []
    for i, path in enumerate(args.checkpoint):
        expected = args.spec[i] if args.spec and not args.weights else None
        models.append(
            load_checkpoint_model(
                path,
                args.backend,
                device,
                expected_spec=expected,
                preprocessing=args.preprocess if not args.weights else None,
            )
        )
    names = None
    if args.classes:
        from vggspec.runtime.eval.classes import read_class_names

        names = read_class_names(args.classes)
    train_scale = None
    if args.train_scale:
        values = parse_ints(args.train_scale, "--train-scale")
        if len(values) > 2 or (len(values) == 2 and values[0] > values[1]):
            raise UserError("--train-scale is S or S_MIN,S_MAX")
        train_scale = values[0] if len(values) == 1 else values
    for weights, spec in zip(args.weights, args.spec, strict=True):
        models.append(
            load_weights_model(
                weights, spec, args.preprocess, args.backend, device, names, train_scale
            )
        )
    if args.scales is not None:
        scales = parse_ints(args.scales, "--scales")
        for m in models:
            m.scales = check_scales(m, scales)
    return models


def preflight(args) -> None:
    """Before starting workers: load every net once (on the CPU, then let it go), so that a
    wrong spec, file or scale is one message here rather than one per worker."""
    import gc

    load_models(args, "cpu")
    gc.collect()


def scan(args, models, split: str | None = None):
    """(class names, per-net output orders, the folder's usable images labelled in that
    class order); data errors as one message."""
    from vggspec.runtime.data.image_folder import ImageFolder, scan_image_folder
    from vggspec.runtime.data.image_io import DataError
    from vggspec.runtime.eval.classes import class_order, read_class_names
    from vggspec.runtime.eval.models import EvalError

    split = split or args.split
    given = read_class_names(args.classes) if args.classes else None
    try:
        folder = scan_image_folder(
            args.data, split, classes=given, max_bad_fraction=args.max_bad_files
        )
    except DataError as err:  # not a VggspecError: told here as one message
        raise EvalError(str(err)) from None
    names, orders = class_order(models, folder.classes, given)
    unknown = sorted(set(folder.classes) - set(names))
    if unknown:
        raise EvalError(
            f"{args.data}/{split} has classes the net(s) do not know: {', '.join(unknown[:5])}"
        )
    position = {c: i for i, c in enumerate(names)}
    samples = [(path, position[folder.classes[label]]) for path, label in folder.samples]
    return (
        names,
        orders,
        ImageFolder(folder.root, folder.split, names, samples, folder.sizes, folder.report),
    )


def start(args):
    """Join torchrun's process group (if any): the process's Context."""
    import torch

    from vggspec.runtime.dist import context as distributed

    ctx = distributed.setup(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    return ctx


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
