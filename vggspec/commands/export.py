"""`vggspec export RUN_OR_WEIGHTS -o model.onnx [--dense]`: a net for any ONNX runtime."""

from __future__ import annotations

from pathlib import Path

from vggspec.errors import UserError, check_output


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a trained or converted net as ONNX (the classifier, or the dense twin)",
        description="The net of a run folder or a vggspec .safetensors as ONNX: the "
        "classifier at the spec's input size, or with --dense the fully-convolutional twin "
        "with dynamic batch, height and width. Its preprocessing is in the model's metadata.",
    )
    p.add_argument("weights", metavar="RUN_OR_WEIGHTS", help="a run folder or a .safetensors")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the .onnx to write")
    p.add_argument("--dense", action="store_true", help="export the dense twin (class score map)")
    p.set_defaults(run=run_export)


def run_export(args) -> int:
    from vggspec.runtime.eval.models import resolve_checkpoint
    from vggspec.runtime.io.model_info import read_model_info
    from vggspec.runtime.io.onnx_export import export_onnx
    from vggspec.runtime.io.weights import load

    if Path(args.output).suffix != ".onnx":
        raise UserError(f"-o {args.output}: give a .onnx file name")
    check_output(args.output, "-o")
    source = resolve_checkpoint(args.weights)
    if source.suffix != ".safetensors":
        raise UserError(f"{source}: export a finished run's model.safetensors")
    net = load(source, backend="torch")
    export_onnx(net, args.output, dense=args.dense, info=read_model_info(source))
    kind = "dense twin: class score map" if args.dense else "classifier: class scores"
    height, width = net.input_size
    print(f"{args.output}: {kind}, input {height}x{width}{' or larger' if args.dense else ''}")
    return 0
