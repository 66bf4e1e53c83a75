"""The evaluation and feature jobs of one process (one torchrun worker or the only one): load
the nets, scan the images, run, gather on rank 0, build the report or write the features.

`vggspec run eval` and `vggspec run features` turn their flags into an `EvalRequest` or a
`FeaturesRequest`, start the process group and call `run_evaluation` / `run_features`; what
they print is theirs, what is computed and written is here."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.image_folder import ImageFolder, scan_image_folder
from ..data.image_io import DataError
from ..dist import context as distributed
from ..dist.context import Context
from ..dist.resources import check_evaluation
from ..io.rundir import RunDir
from .classes import class_order, read_class_names
from .models import EvalError, check_scales, load_checkpoint_model, load_weights_model
from .requests import EvalRequest, FeaturesRequest, ImagesRequest, NetsRequest

Say = Callable[[str], None]


def quiet(_message: str) -> None:
    pass


def load_models(request: NetsRequest, device) -> list:
    """Every net asked for, with its test scales (`scales`, or its training scale's)."""
    models = []
    for i, path in enumerate(request.checkpoints):
        expected = request.specs[i] if request.specs and not request.weights else None
        models.append(
            load_checkpoint_model(
                path,
                request.backend,
                device,
                expected_spec=expected,
                preprocessing=request.preprocess if not request.weights else None,
            )
        )
    names = read_class_names(request.classes) if request.classes else None
    for weights, spec in zip(request.weights, request.specs, strict=True):
        models.append(
            load_weights_model(
                weights,
                spec,
                request.preprocess,
                request.backend,
                device,
                names,
                request.train_scale,
            )
        )
    if request.scales is not None:
        for m in models:
            m.scales = check_scales(m, request.scales)
    # Before any image: held at once (for fusion), with one image at the largest scale each.
    check_evaluation([(m.name, m.net.spec, max(m.scales)) for m in models], device)
    return models


def preflight(request: NetsRequest) -> None:
    """Before starting workers: load every net once (on the CPU, then let it go), so that a
    wrong spec, file or scale is one message here rather than one per worker."""
    load_models(request, "cpu")
    gc.collect()


def scan(images: ImagesRequest, classes: str | None, models, split: str | None = None):
    """(class names, per-net output orders, the folder's usable images labelled in that
    class order); data errors as one message."""
    split = split or images.split
    given = read_class_names(classes) if classes else None
    try:
        folder = scan_image_folder(
            images.data, split, classes=given, max_bad_fraction=images.max_bad_files
        )
    except DataError as err:  # not a VggspecError: told here as one message
        raise EvalError(str(err)) from None
    names, orders = class_order(models, folder.classes, given)
    unknown = sorted(set(folder.classes) - set(names))
    if unknown:
        raise EvalError(
            f"{images.data}/{split} has classes the net(s) do not know: {', '.join(unknown[:5])}"
        )
    position = {c: i for i, c in enumerate(names)}
    samples = [(path, position[folder.classes[label]]) for path, label in folder.samples]
    return (
        names,
        orders,
        ImageFolder(folder.root, folder.split, names, samples, folder.sizes, folder.report),
    )


def run_evaluation(request: EvalRequest, ctx: Context, say: Say = quiet) -> dict:
    """The report (the same on every rank; rank 0 also writes the posteriors if asked).
    `say` hears progress on rank 0."""
    from .evaluate import evaluate
    from .protocol import rows, score, settings_for
    from .report import net_entry

    say = say if ctx.is_main else quiet
    images = request.images
    models = load_models(request.nets, ctx.device)
    names, orders, folder = scan(images, request.nets.classes, models)
    for line in folder.report.lines():
        say(line)
    for m in models:
        say(
            f"{m.name} ({m.source}): Q = {','.join(map(str, m.scales))}, "
            f"{m.preprocessing.describe()}"
        )
    settings = settings_for(
        request.method,
        flip=images.flip,
        grid=request.grid,
        max_images=images.batch,
        workers=images.workers,
        max_aspect=images.max_aspect,
    )
    evaluation = evaluate(models, orders, names, folder, settings, ctx, say)
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
    np.savez(path, **arrays)


def run_features(request: FeaturesRequest, ctx: Context, say: Say = quiet) -> dict | None:
    """Writes OUT/<split>.npy, _labels.npy, _files.txt (and features.json) for the split and,
    with a classifier, the training split; the summary on rank 0, None elsewhere."""
    from .features import extract_features, gather
    from .linear_probe import fit_and_score

    say = say if ctx.is_main else quiet
    images = request.images
    models = load_models(request.nets, ctx.device)
    out = Path(request.out)
    splits = [images.split] + ([request.train_split] if request.classifier else [])
    summary = {
        "nets": [{"name": m.name, "source": m.source, "scales": sorted(m.scales)} for m in models],
        "aggregate": request.aggregate,
        **({"layer": request.layer} if request.layer else {}),
        "flip": images.flip,
        "splits": {},
    }
    gathered = {}
    for split in splits:
        names, _, folder = scan(images, request.nets.classes, models, split)
        for line in folder.report.lines():
            say(line)
        local = extract_features(
            models,
            folder,
            ctx,
            aggregate=request.aggregate,
            layer=request.layer,
            flip=images.flip,
            max_images=images.batch,
            workers=images.workers,
            max_aspect=images.max_aspect,
            progress=say,
        )
        features = gather(local, ctx)
        if features is None:
            continue
        keep = features.readable
        paths = [folder.samples[i][0] for i in features.indices[keep]]
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"{split}.npy", features.descriptors[keep])
        np.save(out / f"{split}_labels.npy", features.labels[keep])
        (out / f"{split}_files.txt").write_text("".join(p + "\n" for p in paths))
        gathered[split] = features
        summary["splits"][split] = {
            "images": int(keep.sum()),
            "unreadable": len(folder.report.bad) + int((~keep).sum()),
            "dimension": int(features.descriptors.shape[1]),
            "features": str(out / f"{split}.npy"),
            "seconds": round(features.seconds, 3),
        }
        summary["classes"] = names
    if not ctx.is_main:
        return None
    if request.classifier:
        train, test = gathered[request.train_split], gathered[images.split]
        summary["classifier"] = fit_and_score(
            request.classifier,
            train.descriptors[train.readable],
            train.labels[train.readable],
            test.descriptors[test.readable],
            test.labels[test.readable],
            len(summary["classes"]),
            request.reg,
        )
    (out / "features.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def training_data(checkpoint: str) -> str | None:
    """The data folder the training run holding `checkpoint` read, or None when it is not
    in a run folder."""
    run = RunDir.containing(checkpoint)
    return run.data_folder() if run else None
