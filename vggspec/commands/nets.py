"""The flags shared by `vggspec run eval` and `vggspec run features`: which nets, which data,
how many processes (commands/jobs.py checks them and makes the runtime's request)."""

from __future__ import annotations

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
