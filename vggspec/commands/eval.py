"""`vggspec run eval`: the paper's test protocol (Sect. 3.2, 4.2–4.4) on one process or many."""

from __future__ import annotations

import sys
from pathlib import Path

from vggspec.commands import jobs, nets, outputs
from vggspec.errors import UserError
from vggspec.runtime.eval.requests import PROTOCOLS, EvalRequest, LocRequest, NetsRequest

# The largest --grid: 20×20 = 400 crops a scale and flip, 16 times the paper's 5×5.
MAX_GRID = 20


def add_parser(run_subparsers) -> None:
    p = run_subparsers.add_parser(
        "eval",
        help="test nets as the paper does: dense multi-scale, multi-crop, fusion",
        description="Top-1/top-5 error of one net or several fused (their soft-max "
        "posteriors averaged), by dense evaluation of whole images and/or multi-crop "
        "evaluation (5x5 crops x 2 flips per scale), over several test scales Q.",
    )
    nets.add_arguments(p, "evaluate")
    p.add_argument(
        "--method",
        choices=("dense", "multi-crop", "both", "all"),
        default=EvalRequest.method,
        help="dense (default); multi-crop; both: dense, multi-crop and their average; "
        "all: also single-scale dense (each net at Q = S, or the mean of its S range)",
    )
    p.add_argument(
        "--grid",
        type=int,
        default=EvalRequest.grid,
        help=f"n×n crops per scale, 1 to {MAX_GRID}, with --method multi-crop, both or all "
        f"(default {EvalRequest.grid}, the paper's)",
    )
    loc = p.add_argument_group(
        "localisation (Appendix A): --checkpoint gives localisation nets (box head), several "
        "fused by the union of their boxes"
    )
    loc.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="centre: the central crop's box for the ground-truth class (Table 8); dense: "
        "the nets on whole images, boxes merged and rated by --classifier's top-5 classes "
        "(Table 9); both. Given --classifier alone: " + LocRequest.protocol,
    )
    loc.add_argument(
        "--classifier",
        metavar="CLS_RUN",
        help="the classification run (or its model file) that names the top-5 classes of "
        "--protocol dense",
    )
    loc.add_argument(
        "--boxes",
        metavar="PATH",
        help="the images' box annotations: a folder of VOC XML files or a .json/.csv table "
        "(default: the first --checkpoint run's, else DATA/annotations/SPLIT)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the JSON report here")
    p.add_argument(
        "--posteriors",
        metavar="FILE.npz",
        help="write every image's posteriors per result row (float32), with labels and paths",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from vggspec.runtime.eval.classify.job import run_evaluation

    if args.protocol or args.classifier:
        return _localise(args)
    if args.boxes:
        raise UserError("--boxes is for localisation: say which --protocol (centre or dense)")
    jobs.check(args)
    if not 1 <= args.grid <= MAX_GRID:
        # 1000 held 2.5 GB of crop lists and ran for ever on the demo's 40-pixel images.
        raise UserError(f"--grid must be 1 to {MAX_GRID} (the paper's is {EvalRequest.grid})")
    if args.grid != EvalRequest.grid and args.method == "dense":
        raise UserError("--grid is for multi-crop: give --method multi-crop, both or all")
    outputs.check_outputs(args, [("--output", args.output), ("--posteriors", args.posteriors)])
    request = EvalRequest(
        jobs.nets_request(args),
        jobs.images_request(args),
        method=args.method,
        grid=args.grid,
        posteriors=args.posteriors,
        output=args.output,
        processes=jobs.processes(args),
    )
    return jobs.execute(request, run_evaluation, lambda report: _show(args, report))


def _localise(args) -> int:
    from vggspec.runtime.eval.localise.job import run_localisation

    args.protocol = args.protocol or LocRequest.protocol  # given --classifier alone
    if args.classifier and args.protocol == "centre":
        # The centre crop's box is rated by the loc net's own class: it was dropped unread.
        raise UserError("--classifier is for --protocol dense or both, not centre")
    if args.weights:
        raise UserError("localisation evaluates training runs: give them as --checkpoint")
    if args.method != EvalRequest.method or args.grid != EvalRequest.grid or args.posteriors:
        raise UserError("--method, --grid and --posteriors are for classification, not --protocol")
    if (args.engine, args.precision) != (NetsRequest.engine, NetsRequest.precision):
        raise UserError(
            "localisation runs on the torch engine in fp32: leave out --engine and --precision"
        )
    if args.data is None and args.boxes is None and args.checkpoint:
        from vggspec.runtime.eval.runs import training_boxes

        # The run's data (jobs.check) with the run's boxes, as it trained on them.
        args.boxes = training_boxes(args.checkpoint[0], args.split)
    jobs.check(args)
    if args.boxes and not Path(args.boxes).exists():
        raise UserError(f"--boxes {args.boxes}: no such file or folder")
    jobs.resolve_nets(args, [args.classifier] if args.classifier else [])
    outputs.check_outputs(args, [("--output", args.output)], classifier=args.classifier)
    request = LocRequest(
        jobs.nets_request(args),
        jobs.images_request(args),
        protocol=args.protocol,
        classifier=args.classifier,
        boxes=args.boxes,
        output=args.output,
        processes=jobs.processes(args),
    )
    return jobs.execute(request, run_localisation, lambda report: _show(args, report, loc=True))


def _show(args, report: dict, loc: bool = False) -> None:
    """With --json the report as JSON (the job wrote it to --output; localisation's keeps the
    results alone, the table and its summary line say the rest); else the table."""
    from vggspec.runtime.eval.classify import report as classify
    from vggspec.runtime.eval.localise import report as localise
    from vggspec.runtime.eval.run import report_text

    if args.json:
        sys.stdout.write(report_text({"results": report["results"]} if loc else report))
    elif loc:
        print("\n".join(localise.loc_table_lines(report)))
        print(localise.loc_summary_line(report))
    else:
        print("\n".join(classify.table_lines(report)))
        print(classify.summary_line(report))
