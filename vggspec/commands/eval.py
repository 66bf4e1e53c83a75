"""`vggspec run eval`: the paper's test protocol (Sect. 3.2, 4.2–4.4) on one process or many."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vggspec.commands import nets as eval_args
from vggspec.errors import UserError, check_output


def add_parser(run_subparsers) -> None:
    p = run_subparsers.add_parser(
        "eval",
        help="test nets as the paper does: dense multi-scale, multi-crop, fusion",
        description="Top-1/top-5 error of one net or several fused (their soft-max "
        "posteriors averaged), by dense evaluation of whole images and/or multi-crop "
        "evaluation (5x5 crops x 2 flips per scale), over several test scales Q.",
    )
    eval_args.add_arguments(p, "evaluate")
    p.add_argument(
        "--method",
        choices=("dense", "multi-crop", "both", "all"),
        default="dense",
        help="dense (default); multi-crop; both: dense, multi-crop and their average; "
        "all: also single-scale dense (each net at its single scale, Table 3)",
    )
    p.add_argument("--grid", type=int, default=5, help="n×n crops per scale (default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the JSON report here")
    p.add_argument(
        "--posteriors",
        metavar="FILE.npz",
        help="write every image's posteriors per result row (float32), with labels and paths",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from vggspec.runtime.dist.context import under_torchrun

    eval_args.check(args)
    if args.grid < 1:
        raise UserError("--grid must be ≥ 1")
    for flag, value in (("--output", args.output), ("--posteriors", args.posteriors)):
        if value:
            check_output(value, flag)
    if not under_torchrun() and args.nproc > 1:
        from vggspec.runtime.dist.launch import launch_local

        eval_args.preflight(args)
        extra = ["--method", args.method, "--grid", str(args.grid)]
        if args.json:
            extra.append("--json")
        for flag, value in (("--output", args.output), ("--posteriors", args.posteriors)):
            if value:
                extra += [flag, str(Path(value).resolve())]
        return launch_local(args.nproc, 0, eval_args.worker_args(args, "eval", extra))
    from vggspec.runtime.dist import context as distributed

    ctx = eval_args.start(args)
    try:
        report, table, evaluation, folder = _evaluate(args, ctx)
        if ctx.is_main:
            _write(args, report)
        if args.posteriors:
            _write_posteriors(args.posteriors, evaluation, table, folder, ctx)
        distributed.barrier(ctx)
        return 0
    finally:
        distributed.teardown()


def _evaluate(args, ctx):
    from vggspec.runtime.dist import context as distributed
    from vggspec.runtime.eval.evaluate import evaluate
    from vggspec.runtime.eval.protocol import rows, score, settings_for
    from vggspec.runtime.eval.report import net_entry

    say = eval_args.say if ctx.is_main else (lambda _message: None)
    models = eval_args.load_models(args, ctx.device)
    names, orders, folder = eval_args.scan(args, models)
    if ctx.is_main:
        for line in folder.report.lines():
            say(line)
        for m in models:
            say(
                f"{m.name} ({m.source}): Q = {','.join(map(str, m.scales))}, "
                f"{m.preprocessing.describe()}"
            )
    settings = settings_for(
        args.method,
        flip=not args.no_flip,
        grid=args.grid,
        max_images=args.batch,
        workers=args.workers,
        max_aspect=args.max_aspect,
    )
    evaluation = evaluate(models, orders, names, folder, settings, ctx, say)
    table = rows(evaluation, args.method)
    results = score(evaluation, table, ctx)
    unreadable_now = int((~evaluation.readable).sum())
    sums = distributed.all_reduce_sum(
        [unreadable_now, evaluation.seconds["dense"], evaluation.seconds["multi-crop"]], ctx
    )
    seconds = evaluation.seconds["total"]
    images = len(folder) - int(sums[0])
    report = {
        "results": results,
        "nets": [net_entry(m) for m in models],
        "data": str(args.data),
        "split": args.split,
        "classes": len(names),
        "flip": not args.no_flip,
        "images": images,
        "unreadable": len(folder.report.bad) + int(sums[0]),
        "bad_files": [{"path": p, "reason": r} for p, r, _ in folder.report.bad],
        "processes": ctx.world,
        "seconds": {
            "dense": sums[1] / ctx.world,
            "multi-crop": sums[2] / ctx.world,
            "total": seconds,
        },
        "images_per_second": images / seconds if seconds else 0.0,
    }
    return report, table, evaluation, folder


def _write(args, report: dict) -> None:
    from vggspec.runtime.eval.report import summary_line, table_lines
    from vggspec.runtime.io.atomic import atomic_write

    text = json.dumps(report, indent=2) + "\n"
    if args.output:
        atomic_write(Path(args.output), lambda tmp: Path(tmp).write_text(text))
    if args.json:
        sys.stdout.write(text)
    else:
        print("\n".join(table_lines(report)))
        print(summary_line(report))


def _write_posteriors(path: str, evaluation, table, folder, ctx) -> None:
    """Rank 0 gathers every rank's posteriors and writes them in the folder's order."""
    import numpy as np
    import torch.distributed as dist

    local = (
        evaluation.indices,
        evaluation.labels,
        evaluation.readable,
        [row.posteriors.astype(np.float32) for row in table],
    )
    parts = [local]
    if ctx.distributed:
        parts = [None] * ctx.world
        dist.all_gather_object(parts, local)
    if not ctx.is_main:
        return
    index = np.concatenate([p[0] for p in parts])
    arrays = {
        "index": index,
        "path": np.array([folder.samples[i][0] for i in index]),
        "label": np.concatenate([p[1] for p in parts]),
        "readable": np.concatenate([p[2] for p in parts]),
        "class_names": np.array(evaluation.class_names),
    }
    for r, row in enumerate(table):
        scales = "+".join(",".join(map(str, qs)) for qs in row.scales)
        arrays[f"{row.method}@{scales}"] = np.concatenate([p[3][r] for p in parts])
    np.savez(path, **arrays)
