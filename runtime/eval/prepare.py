"""What every evaluation job does first on its process: load the nets it names (checked, with
their engines), scan its images in the nets' class order, decide the loader's processes."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace

from ..data.image_folder import ImageFolder, check_layout, scan_image_folder
from ..data.image_io import DataError
from ..data.loader import default_workers
from ..dist.context import Context
from ..dist.resources import check_evaluation
from .classes import class_order, read_class_names
from .engines.serving import Serving
from .models import EvalError, check_scales, load_checkpoint_model, load_weights_model
from .requests import ImagesRequest, NetsRequest
from .scale_passes import PassSettings

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
    # The specs are the weights' when there are weights; else each checks a checkpoint (above).
    weight_specs = request.specs if request.weights else []
    for weights, spec in zip(request.weights, weight_specs, strict=True):
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


def classifiers_only(models, features: bool = False) -> None:
    """Classification and features take classification nets; a box net is told apart."""
    for m in models:
        if m.boxes and features:  # `run features` has no --protocol to point to
            raise EvalError(
                f"{m.source} is a localisation net (box head): features are taken from "
                "classification nets"
            )
        if m.boxes:
            raise EvalError(
                f"{m.source} is a localisation net (box head): evaluate it with "
                "--protocol centre|dense (and --classifier CLS_RUN for dense)"
            )


def preflight(request: NetsRequest, images: ImagesRequest | None = None) -> None:
    """Before starting workers: load every net once (on the CPU, then let it go), and look
    at the layout of the images' folder, so that a wrong spec, file, scale or folder is one
    message here rather than one per worker."""
    load_models(request, "cpu")
    gc.collect()
    if images is not None:
        try:
            check_layout(images.data, images.split)
        except DataError as err:
            raise EvalError(str(err)) from None


def scan(images: ImagesRequest, classes: str | None, models, split: str | None = None):
    """(class names, per-net output orders, the folder's usable images labelled in that
    class order); data errors as one message."""
    split = split or images.split
    given = read_class_names(classes) if classes else None
    for m in models if given else ():
        if m.num_classes != len(given):  # it said the folder had classes the net did not know
            raise EvalError(
                f"{classes}: {len(given)} class name(s), but {m.source} has {m.num_classes} "
                "outputs: give one name a line for each, in output order"
            )
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


def pass_settings(images: ImagesRequest, say: Say) -> PassSettings:
    """How the request's images go through the nets (its loader processes decided by
    `with_workers`), `say` hearing each pass."""
    return PassSettings(
        flip=images.flip,
        max_images=images.batch,
        workers=images.workers,
        max_aspect=images.max_aspect,
        progress=say,
    )
