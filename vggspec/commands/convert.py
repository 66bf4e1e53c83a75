"""`vggspec convert FILE [--spec SPEC] -o OUT.safetensors`: Caffe, MatConvNet, Keras weights in."""

from __future__ import annotations

import contextlib
from pathlib import Path

from vggspec.errors import UserError, check_output


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a Caffe .caffemodel, MatConvNet .mat or Keras .h5 to vggspec safetensors",
        description="Check that the net of FILE computes what SPEC's computes (without "
        "--spec: take the spec FILE implies, written beside OUT), match its weight layers "
        "to SPEC's by order and shape and write them, with what the net expects of an "
        "image, as a file vggspec.load reads.",
    )
    p.add_argument(
        "file",
        help="a .caffemodel (V1 or current layout), a MatConvNet .mat, or Keras weights "
        "(.h5: keras.applications' files, or Keras 3's .weights.h5)",
    )
    p.add_argument(
        "--spec",
        help="the .vgg the weights belong to (e.g. specs/D.vgg); default: the spec the "
        "file implies, written as OUT with the suffix .vgg",
    )
    p.add_argument("-o", "--output", metavar="OUT", help="the .safetensors to write")
    p.add_argument(
        "--emit",
        choices=("spec",),
        help="spec: print the spec the file implies (canonical notation) and write nothing",
    )
    p.add_argument(
        "--rgb",
        action="store_true",
        help="reverse conv1_1's input channels so that a Caffe (BGR) net takes RGB",
    )
    p.set_defaults(run=run_convert)


def run_convert(args) -> int:
    from vggspec.builtin import locate
    from vggspec.compiler import format_spec, load_spec
    from vggspec.runtime.io.convert import convert, spec_of, write
    from vggspec.runtime.io.rundir import output_lock

    if args.emit == "spec":
        if args.output or args.spec or args.rgb:
            raise UserError("--emit spec prints the spec the file implies: give only FILE")
        print(format_spec(spec_of(args.file)), end="")
        return 0
    if args.output is None:
        raise UserError("give -o OUT.safetensors (or --emit spec to print the file's spec)")
    if Path(args.output).suffix != ".safetensors":
        raise UserError(f"-o {args.output}: give a .safetensors file name")
    spec_file = Path(args.output).with_suffix(".vgg")
    if args.spec is None and spec_file.is_dir():
        raise UserError(f"{spec_file}: is a folder, where the spec the file implies goes")
    made = _missing_folders(Path(args.output).parent)
    check_output(args.output, "-o")
    try:
        spec = load_spec(locate(args.spec)) if args.spec else None
        with output_lock(args.output, "convert"):
            converted = convert(args.file, spec, args.spec or "the spec", rgb=args.rgb)
            text = format_spec(converted.net.spec) if converted.implied else None
            # Bytes, not text: a file that is not UTF-8 is another spec too, not a traceback.
            if text is not None and spec_file.exists() and spec_file.read_bytes() != text.encode():
                raise UserError(
                    f"{spec_file}: exists and says another net than {Path(args.file).name} "
                    "implies: remove it, or give --spec"
                )
            write(converted, args.output)
            if text is not None:
                from vggspec.runtime.io.atomic import atomic_write

                atomic_write(spec_file, lambda tmp: Path(tmp).write_text(text))
    except BaseException:
        for folder in made:  # a refused conversion leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    print(f"{args.output}: {len(converted.arrays) // 2} weight layers from {converted.origin}")
    if text is not None:
        print(f"{spec_file}: the spec it implies{_builtin_name(converted.net.spec)}")
    pixels = converted.info.preprocessing
    if pixels is not None:
        mean = pixels.mean_rgb[::-1] if pixels.bgr else pixels.mean_rgb
        order = "BGR" if pixels.bgr else "RGB"
        values = ", ".join(f"{v:.6g}" for v in mean)
        print(f"  expects {order} pixels 0–255 minus ({values}), in {order} order")
    for note in converted.notes:
        print(f"  note: {note}")
    return 0


def _missing_folders(folder: Path) -> list[Path]:
    """The folders of `folder`'s path that do not exist yet, deepest first (check_output
    makes them before any work)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _builtin_name(spec) -> str:
    """`: configuration D (specs/D.vgg)` where the spec is one of the paper's nets."""
    from vggspec.builtin import SPECS
    from vggspec.compiler import load_spec

    for name in ("A", "A-LRN", "B", "C", "D", "E"):
        paper = load_spec(SPECS / f"{name}.vgg")
        if (paper.layers, paper.input) == (spec.layers, spec.input):
            return f": configuration {name} (specs/{name}.vgg)"
    return ""
