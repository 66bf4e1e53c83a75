"""`vggspec convert FILE --spec SPEC -o OUT.safetensors`: Caffe or MatConvNet weights in."""

from __future__ import annotations

from pathlib import Path

from vggspec.errors import UserError, check_output


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a Caffe .caffemodel or MatConvNet .mat to vggspec safetensors",
        description="Match the weight layers of FILE to SPEC's by order and shape and write "
        "them, with what the net expects of an image, as a file vggspec.load reads.",
    )
    p.add_argument("file", help="a .caffemodel (V1 or current layout) or a MatConvNet .mat")
    p.add_argument(
        "--spec", required=True, help="the .vgg the weights belong to (e.g. specs/D.vgg)"
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the .safetensors to write")
    p.add_argument(
        "--rgb",
        action="store_true",
        help="reverse conv1_1's input channels so that a Caffe (BGR) net takes RGB",
    )
    p.set_defaults(run=run_convert)


def run_convert(args) -> int:
    from vggspec.builtin import locate
    from vggspec.compiler import load_spec
    from vggspec.runtime.io.convert import convert, write
    from vggspec.runtime.io.rundir import output_lock

    if Path(args.output).suffix != ".safetensors":
        raise UserError(f"-o {args.output}: give a .safetensors file name")
    check_output(args.output, "-o")
    spec = load_spec(locate(args.spec))
    with output_lock(args.output, "convert"):
        converted = convert(args.file, spec, args.spec, rgb=args.rgb)
        write(converted, args.output)
    print(f"{args.output}: {len(converted.arrays) // 2} weight layers from {converted.origin}")
    pixels = converted.info.preprocessing
    if pixels is not None:
        mean = pixels.mean_rgb[::-1] if pixels.bgr else pixels.mean_rgb
        order = "BGR" if pixels.bgr else "RGB"
        values = ", ".join(f"{v:.6g}" for v in mean)
        print(f"  expects {order} pixels 0–255 minus ({values}), in {order} order")
    for note in converted.notes:
        print(f"  note: {note}")
    return 0
