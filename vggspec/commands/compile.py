"""`vggspec compile SPEC`: check and measure a spec, print any stage of the pipeline."""

from __future__ import annotations

import json
import pprint
from pathlib import Path

from vggspec.builtin import locate
from vggspec.commands.argtypes import image_size, positive_int
from vggspec.compiler import compile_spec, dense_graph, format_graph, format_spec, load_spec
from vggspec.compiler.ir.passes.count import DTYPE_BYTES
from vggspec.compiler.ir.report import format_dot, format_table, to_dict
from vggspec.errors import UserError, check_output

EMITS = ("spec", "ast", "ir", "table", "json", "dot")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compile",
        help="check and measure a spec (shapes, params, MACs, memory, receptive fields)",
        description="Compile a .vgg spec and print a per-layer report.",
    )
    p.add_argument("spec", help="path to a .vgg file, e.g. specs/E.vgg")
    p.add_argument(
        "--input",
        type=image_size,
        metavar="HxW",
        help="input size (overrides the spec's; with --dense, the test image size)",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        help="batch size for the memory figures (default 1) and, with --target, "
        "for the kernel report (default 256, the paper's)",
    )
    p.add_argument(
        "--dtype",
        choices=sorted(DTYPE_BYTES),
        default="float32",
        help="element type for memory figures",
    )
    p.add_argument(
        "--dense",
        action="store_true",
        help="show the fully-convolutional twin (FC layers as convs) for dense testing",
    )
    p.add_argument("--no-fuse", action="store_true", help="stop before the conv+ReLU fusion pass")
    p.add_argument("--emit", choices=EMITS, help="which stage to print (default: table)")
    p.add_argument("--json", action="store_true", help="same as --emit json")
    p.add_argument(
        "--target",
        choices=("sm_90", "h200", "sm_80"),
        help="compile every Triton kernel for this GPU (H100 sm_90, H200 = sm_90 with its "
        "own bandwidth, A100 sm_80) without one present, and report registers, spills, "
        "shared memory, tensor-core use, the roofline bound and an estimate of the step",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(run=run)


def render(args) -> str:
    spec = load_spec(locate(args.spec))
    if args.json and args.emit not in (None, "json"):
        raise UserError(f"--json is --emit json: give one of them, not --emit {args.emit} too")
    emit = "json" if args.json else args.emit or "table"
    if args.target and emit in ("ir", "dot"):
        raise UserError(f"--target reports the kernels as a table or JSON, not --emit {emit}")
    if args.target and args.dtype == "float16":  # it showed the bf16 kernels, as "bf16"
        raise UserError("--target: the kernels compute in float32 or bfloat16, not float16")
    if emit == "spec":
        return format_spec(spec)
    if emit == "ast":
        return pprint.pformat(spec, width=100) + "\n"
    name = Path(args.spec).stem
    fused = not args.no_fuse
    batch = args.batch or (256 if args.target else 1)
    if args.dense:
        # The FC layers become convs at the spec's own size; --input is the test image.
        graph = compile_spec(spec, name=name, batch=batch, dtype=args.dtype, fused=fused)
        graph = dense_graph(graph, args.input)
    else:
        graph = compile_spec(
            spec, args.input, name=name, batch=batch, dtype=args.dtype, fused=fused
        )
    if args.target:
        return kernel_report(graph, args, batch, emit)
    if emit == "ir":
        return format_graph(graph)
    if emit == "dot":
        return format_dot(graph)
    if emit == "json":
        return json.dumps(to_dict(graph), indent=2) + "\n"
    return format_table(graph)


def kernel_report(graph, args, batch: int, emit: str) -> str:
    """Every Triton kernel of the graph compiled for args.target, as a table or JSON."""
    from vggspec.compiler.kernels import aot_report, format_aot_report, predicted_step_time
    from vggspec.compiler.kernels.aot import describe_estimate, estimated_step_time
    from vggspec.compiler.lowering.auto_calls import auto_calls, describe_auto_calls
    from vggspec.compiler.lowering.launches import graph_launches, torch_reasons

    training = not args.dense
    launches, fallbacks = graph_launches(graph, batch, training)
    dtype = "bfloat16" if args.dtype == "bfloat16" else "float32"
    try:
        rows = aot_report(launches, args.target, dtype, training)
    except ValueError as err:  # a shape the kernels cannot index (past int32)
        raise UserError(f"--target {args.target}: {err}") from None
    step, estimate = predicted_step_time(rows), estimated_step_time(rows)
    if emit == "json":
        report = {
            "target": args.target,
            "batch": batch,
            "dtype": dtype,
            "training": training,
            "roofline_step_seconds": step,
            "estimated_step_seconds": estimate,
            "estimate": describe_estimate(args.target),
            "torch_fallbacks": fallbacks,
            "auto_measures": auto_calls(launches),
            **({"torch_reasons": reasons} if (reasons := torch_reasons(graph, training)) else {}),
            "kernels": rows,
        }
        return json.dumps(report, indent=2) + "\n"
    what = "training step" if training else "dense forward pass"
    text = format_aot_report(rows) + "\n"
    text += (
        f"{what} at batch {batch}: roofline bound {step * 1e3:.1f} ms, "
        f"estimate {estimate * 1e3:.1f} ms\n"
    )
    if fallbacks:
        text += "runs through torch (no Triton kernel): " + ", ".join(fallbacks) + "\n"
        text += "".join(f"  why: {why}\n" for why in torch_reasons(graph, training))
    return text + describe_auto_calls(launches, training)


def run(args) -> int:
    if args.output:
        check_output(args.output, "-o", inputs=[args.spec])
    text = render(args)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0
