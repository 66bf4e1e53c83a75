"""The evaluation and feature jobs of one process (one torchrun worker or the only one): load
the nets, scan the images, run, gather on rank 0, build the report or write the features.

`vggspec run eval` and `vggspec run features` turn their flags into an `EvalRequest` or a
`FeaturesRequest`, start the process group and call `run_evaluation` / `run_features`; what
they print is theirs, what is computed and written is here."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data.annotations import load_folder_boxes
from ..data.image_folder import ImageFolder, scan_image_folder
from ..data.image_io import DataError
from ..data.loader import default_workers
from ..dist import context as distributed
from ..dist.context import Context, shard
from ..dist.resources import check_evaluation
from ..io.rundir import RunDir
from .classes import class_order, read_class_names
from .engines.serving import Serving
from .models import (
    EvalError,
    check_box_width,
    check_scales,
    load_checkpoint_model,
    load_weights_model,
    single_scale,
)
from .requests import EvalRequest, FeaturesRequest, ImagesRequest, LocRequest, NetsRequest

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
    for m in models:  # each net of a fusion chooses its own engine
        m.serving = Serving(request.engine, request.precision, device)
        m.serving.candidates()  # an impossible engine and precision: told before any image
    # Before any image: held at once (for fusion), with one image at the largest scale each.
    check_evaluation([(m.name, m.net.spec, max(m.scales)) for m in models], device)
    return models


def classifiers_only(models) -> None:
    """Classification and features take classification nets; a box net is told apart."""
    for m in models:
        if m.boxes:
            raise EvalError(
                f"{m.source} is a localisation net (box head): evaluate it with "
                "--protocol centre|dense (and --classifier CLS_RUN for dense)"
            )


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
        ImageFolder(
            folder.root,
            folder.split,
            names,
            samples,
            folder.sizes,
            folder.report,
            images.reduced_decode,
        ),
    )


def with_workers(images: ImagesRequest, ctx: Context) -> ImagesRequest:
    """The request with its loader processes decided (`default_workers` when not given)."""
    if images.workers is not None:
        return images
    return replace(images, workers=default_workers(ctx.world))


def run_evaluation(request: EvalRequest, ctx: Context, say: Say = quiet) -> dict:
    """The report (the same on every rank; rank 0 also writes the posteriors if asked).
    `say` hears progress on rank 0."""
    from .classify.evaluate import evaluate
    from .classify.protocol import rows, score, settings_for
    from .classify.report import net_entry

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
    from .features.extract import extract_features, gather
    from .features.linear_probe import fit_and_score

    say = say if ctx.is_main else quiet
    images = with_workers(request.images, ctx)
    models = load_models(request.nets, ctx.device)
    classifiers_only(models)
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
    # Features need no class scores: only nets that name their classes order the labels
    # (a convolutional body's outputs are channels, not classes).
    named = [m for m in models if m.class_names]
    for split in splits:
        names, _, folder = scan(images, request.nets.classes, named, split)
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
    for entry, m in zip(summary["nets"], models, strict=True):
        entry["engine"] = m.serving.label  # as chosen (under --nproc, rank 0's, every rank's)
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


def _box_rows(model, names: list[str], named_by: str) -> list[int]:
    """Per class of `names` (those of `named_by`), the box row of `model`'s outputs (PCR:
    its class's, found by name, or in that order when the net does not name them; SCR: 0)."""
    if not model.per_class:
        return [0] * len(names)
    own = model.class_names
    if own is None:
        check_box_width(model.outputs, len(names), model.source)
        own = names
    if sorted(own) != sorted(names):
        raise EvalError(
            f"{model.source} regresses boxes for other classes than {named_by}: "
            f"{len(own)} classes ({', '.join(own[:3])}, …) against {len(names)}"
        )
    position = {c: i for i, c in enumerate(own)}
    return [position[c] for c in names]


@dataclass
class BoxedImages:
    """The images a localisation evaluation scores: those with a box of their class."""

    names: list[str]  # class names, in the order of the labels
    folder: ImageFolder  # the images with a box
    boxes: list[np.ndarray]  # per image, its class's boxes in the stored image
    without_box: int  # images of the split left out for want of a box
    lines: list[str]  # the scan's and the annotations' report


def localisation_images(request: LocRequest, names: list[str] | None) -> BoxedImages:
    """The split's images labelled in the order `names` (None: the folder's), with boxes."""
    images = request.images
    try:
        folder = scan_image_folder(
            images.data, images.split, classes=names, max_bad_fraction=images.max_bad_files
        )
    except DataError as err:
        raise EvalError(str(err)) from None
    names = names or list(folder.classes)
    try:
        found = load_folder_boxes(folder, request.boxes)
    except DataError as err:
        raise EvalError(str(err)) from None
    keep = found.usable()
    if not keep:
        raise EvalError(
            f"{images.data}/{images.split}: no image has a box of its class "
            f"({len(found.report.missing)} without one: see the annotations)"
        )
    boxed = ImageFolder(
        folder.root,
        folder.split,
        names,
        [folder.samples[i] for i in keep],
        [folder.sizes[i] for i in keep],
        folder.report,
        images.reduced_decode,
    )
    lines = [*folder.report.lines(), *found.report.lines()]
    return BoxedImages(
        names, boxed, [found.boxes[i] for i in keep], len(found.report.missing), lines
    )


def load_localisation_nets(request: LocRequest, device):
    """(the localisation nets, the classifier or None), each checked to be what its flag says."""
    nets = load_models(request.nets, device)
    for m in nets:
        if not m.boxes:
            raise EvalError(
                f"{m.source} is a classification net (no box head): give it as --classifier; "
                "--checkpoint takes localisation nets"
            )
    classifier = None
    if request.classifier:
        classifier = load_checkpoint_model(
            request.classifier, request.nets.backend, device, preprocessing=request.nets.preprocess
        )
        if classifier.boxes:
            raise EvalError(
                f"{classifier.source} is a localisation net (box head): --classifier takes a "
                "classification net"
            )
    if request.protocol != "centre" and classifier is None:
        raise EvalError(
            "--protocol dense rates boxes with a classification net's top-5 classes: "
            "give --classifier CLS_RUN"
        )
    if request.protocol != "dense" and len(nets) > 1:
        raise EvalError(
            "--protocol centre tests one localisation net at a time (Table 8); several "
            "are fused by --protocol dense"
        )
    return nets, classifier


def run_localisation(request: LocRequest, ctx: Context, say: Say = quiet) -> dict:
    """Protocol 1 and/or 2 (Tables 8–9); the report is the same on every rank."""
    from .classify.report import loc_net_entry, net_entry

    say = say if ctx.is_main else quiet
    request = replace(request, images=with_workers(request.images, ctx))
    nets, classifier = load_localisation_nets(request, ctx.device)
    reference = classifier or nets[0]
    boxed = localisation_images(request, reference.class_names)
    names, folder, gt = boxed.names, boxed.folder, boxed.boxes
    if reference.class_names is None:
        named_by = f"the data folder {request.images.data}"
    else:
        named_by = "the classifier" if classifier else reference.source
    rows = [_box_rows(m, names, named_by) for m in nets]
    for line in boxed.lines:
        say(line)
    results = []
    if request.protocol in ("centre", "both"):
        net = nets[0]
        scales = net.scales if request.nets.scales is not None else [single_scale(net)]
        for q in scales:
            results.append(_protocol_1(request, net, rows[0], folder, gt, q, ctx, say))
    if request.protocol in ("dense", "both"):
        results.append(_protocol_2(request, nets, rows, classifier, names, folder, gt, ctx, say))
    return {
        "results": results,
        "nets": [loc_net_entry(m) for m in nets],
        "classifier": net_entry(classifier) if classifier else None,
        "data": str(request.images.data),
        "split": request.images.split,
        "images": len(folder),
        "without_box": boxed.without_box,
        "unreadable": max(len(folder) - r["images"] for r in results),
    }


def _protocol_1(request: LocRequest, net, rows, folder, gt, q: int, ctx: Context, say) -> dict:
    """Table 8's error at Q = q: the central crop's box for the ground-truth class."""
    from .localise.passes import centre_boxes
    from .localise.scoring import box_is_right

    images = request.images
    local = shard(len(folder), ctx)
    boxes, readable = centre_boxes(
        net,
        rows,
        folder,
        local,
        q,
        max_images=images.batch,
        workers=images.workers,
        device=ctx.device,
    )
    wrong = sum(not box_is_right(boxes[k], gt[i]) for k, i in enumerate(local) if readable[k])
    wrong, counted = distributed.all_reduce_sum([wrong, int(readable.sum())], ctx)
    say(f"protocol 1 at Q={q}: {int(wrong)} of {int(counted)} images wrong")
    return _result("centre", [q], wrong, counted)


def _protocol_2(
    request: LocRequest, nets, rows, classifier, names, folder, gt, ctx: Context, say
) -> dict:
    """Table 9's error: the classifier's top-5 classes (its own dense evaluation at its
    scales), each with the best merged box of the nets' dense predictions."""
    from .classify.evaluate import EvalSettings, evaluate
    from .localise.passes import dense_guesses
    from .localise.scoring import top5_is_right

    images = request.images
    local = shard(len(folder), ctx)
    _, orders = class_order([classifier], names)
    settings = EvalSettings(
        flip=images.flip,
        max_images=images.batch,
        workers=images.workers,
        max_aspect=images.max_aspect,
    )
    ranked = evaluate([classifier], orders, names, folder, settings, ctx, say)
    top = np.argsort(-ranked.dense[0], axis=1, kind="stable")[:, :5]
    guesses, readable = dense_guesses(
        nets,
        rows,
        classifier,
        top,
        folder,
        local,
        flip=images.flip,
        max_images=images.batch,
        max_pixels=settings.max_pixels,
        workers=images.workers,
        max_aspect=images.max_aspect,
        device=ctx.device,
        progress=say,
    )
    keep = readable & ranked.readable
    wrong = sum(
        not top5_is_right(guesses[k], folder.samples[i][1], gt[i])
        for k, i in enumerate(local)
        if keep[k]
    )
    wrong, counted = distributed.all_reduce_sum([wrong, int(keep.sum())], ctx)
    scales = sorted({q for m in nets for q in m.scales})
    say(f"protocol 2 at Q={','.join(map(str, scales))}: {int(wrong)} of {int(counted)} wrong")
    return _result("dense", scales, wrong, counted)


def _result(protocol: str, scales: list[int], wrong: float, counted: float) -> dict:
    return {
        "protocol": protocol,
        "scales": [int(q) for q in scales],
        "loc_error": float(wrong) / counted if counted else None,
        "images": int(counted),
    }


def training_boxes(checkpoint: str, split: str) -> str | None:
    """The box annotations the training run holding `checkpoint` read for `split` (its
    config's `boxes`, "{split}" standing for the split); None for the default place."""
    from ..train.config import ConfigError, read_yaml

    run = RunDir.containing(checkpoint)
    if run is None:
        return None
    try:
        boxes = read_yaml(run.config).get("boxes")
    except ConfigError:
        return None
    return str(boxes).replace("{split}", split) if boxes else None
