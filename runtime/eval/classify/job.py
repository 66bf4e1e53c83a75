"""The classification job (`vggspec run eval`) of one process: load the nets, scan the images,
run the dense and/or multi-crop passes, score the rows on every rank, write the posteriors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.image_folder import ImageFolder
from ...dist import context as distributed
from ...dist.context import Context
from ...io.atomic import atomic_write
from ..prepare import Say, classifiers_only, load_models, pass_settings, quiet, scan, with_workers
from ..requests import EvalRequest
from ..run import write_report


def run_evaluation(request: EvalRequest, ctx: Context, say: Say = quiet) -> dict:
    """The report (the same on every rank; rank 0 also writes the posteriors and the report
    if asked). `say` hears progress on rank 0."""
    from .evaluate import evaluate
    from .protocol import rows, score, settings_for
    from .report import net_entry

    say = say if ctx.is_main else quiet
    images = with_workers(request.images, ctx)
    models = load_models(request.nets, ctx.device)
    classifiers_only(models)
    names, orders, folder = scan(images, request.nets.classes, models)
    for line in folder.report.lines():
        say(line)
    for m in models:
        say(
            f"{m.name} ({m.source}): Q = {','.join(map(str, m.scales))}, "
            f"{m.preprocessing.describe()}"
        )
    settings = settings_for(request.method, grid=request.grid, **vars(pass_settings(images, say)))
    evaluation = evaluate(models, orders, names, folder, settings, ctx)
    table = rows(evaluation, request.method)
    results = score(evaluation, table, ctx)
    unreadable_now = int((~evaluation.readable).sum())
    sums = distributed.all_reduce_sum(
        [unreadable_now, evaluation.seconds["dense"], evaluation.seconds["multi-crop"]], ctx
    )
    seconds = evaluation.seconds["total"]
    count = len(folder) - int(sums[0])
    report = {
        "results": results,
        "nets": [net_entry(m) for m in models],
        "data": str(images.data),
        "split": images.split,
        "classes": len(names),
        "flip": images.flip,
        "images": count,
        "unreadable": len(folder.report.bad) + int(sums[0]),
        "bad_files": [{"path": p, "reason": r} for p, r, _ in folder.report.bad],
        "processes": ctx.world,
        "seconds": {
            "dense": sums[1] / ctx.world,
            "multi-crop": sums[2] / ctx.world,
            "total": seconds,
        },
        "images_per_second": count / seconds if seconds else 0.0,
    }
    if request.posteriors:
        write_posteriors(request.posteriors, evaluation, table, folder, ctx)
    if request.output and ctx.is_main:
        write_report(request.output, report)
    return report


def write_posteriors(path: str, evaluation, table, folder: ImageFolder, ctx: Context) -> None:
    """Rank 0 gathers every rank's posteriors and writes them in the folder's order."""
    local = (
        evaluation.indices,
        evaluation.labels,
        evaluation.readable,
        [row.posteriors.astype(np.float32) for row in table],
    )
    parts = distributed.gather_to_main(local, ctx)
    if parts is None:
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

    def write(tmp) -> None:
        with open(tmp, "wb") as f:  # a file object: numpy adds no ".npz" to the name given
            np.savez(f, **arrays)

    atomic_write(Path(path), write)
