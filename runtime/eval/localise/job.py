"""The localisation job (`vggspec run eval --protocol`) of one process: protocol 1 (Table 8)
and/or protocol 2 (Table 9) over this rank's share of the images with a box of their class."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...data.annotations import load_folder_boxes
from ...data.image_folder import ImageFolder, scan_image_folder
from ...data.image_io import DataError
from ...dist import context as distributed
from ...dist.context import Context, shard
from ..classes import class_order
from ..models import EvalError, check_box_width, load_checkpoint_model, single_scale
from ..prepare import Say, load_models, pass_settings, quiet, with_workers
from ..requests import LocRequest
from ..run import write_report


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
    from ..classify.report import net_entry
    from .report import loc_net_entry

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
    report = {
        "results": results,
        "nets": [loc_net_entry(m) for m in nets],
        "classifier": net_entry(classifier) if classifier else None,
        "data": str(request.images.data),
        "split": request.images.split,
        "images": len(folder),
        "without_box": boxed.without_box,
        "unreadable": max(len(folder) - r["images"] for r in results),
    }
    if request.output and ctx.is_main:  # its JSON form keeps the results alone
        write_report(request.output, {"results": results})
    return report


def _protocol_1(request: LocRequest, net, rows, folder, gt, q: int, ctx: Context, say) -> dict:
    """Table 8's error at Q = q: the central crop's box for the ground-truth class."""
    from .passes import centre_boxes
    from .scoring import box_is_right

    local = shard(len(folder), ctx)
    boxes, readable = centre_boxes(
        net,
        rows,
        folder,
        local,
        q,
        pass_settings(request.images, say),
        ctx.device,
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
    from ..classify.evaluate import EvalSettings, evaluate
    from .passes import dense_guesses
    from .scoring import top5_is_right

    local = shard(len(folder), ctx)
    _, orders = class_order([classifier], names)
    passes = pass_settings(request.images, say)
    ranked = evaluate([classifier], orders, names, folder, EvalSettings(**vars(passes)), ctx)
    top = np.argsort(-ranked.dense[0], axis=1, kind="stable")[:, :5]
    guesses, readable = dense_guesses(
        nets,
        rows,
        classifier,
        top,
        folder,
        local,
        passes,
        ctx.device,
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
