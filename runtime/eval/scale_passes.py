"""One pass per test scale Q over this rank's share of the images, in uint8 batches of one
size, each with the nets that are tested at that Q (shared by evaluation, localisation and
features), and the settings of those passes, which every job hands down as one object."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass

import numpy as np
import torch

from ..data.image_folder import ImageFolder
from ..data.loader import make_loader
from ..data.prefetch import prefetched
from .images import (
    KEEP_DECODED_BYTES,
    MAX_ASPECT,
    ScaledImages,
    batches_by_size,
    collate,
    kept_decoded,
)
from .models import EvalModel


@dataclass
class PassSettings:
    """How the images go through the nets in every job."""

    flip: bool = True  # also the horizontally flipped image
    max_images: int = 32  # images per batch
    max_pixels: int = 50 * 224 * 224  # pixels per batch (flips and crops counted)
    workers: int = 0  # data-loading processes
    prefetch: bool = True  # with no workers: a thread reads the next batches during this one
    keep_decoded: int = KEEP_DECODED_BYTES  # with no workers: decode once for every Q if all fit
    max_aspect: float = MAX_ASPECT  # cap on the rescaled long side / short side
    progress: Callable[[str], None] | None = None  # hears one line a pass


@dataclass
class Batch:
    q: int
    nets: list[int]  # which of the models run at this Q
    rows: np.ndarray  # positions of the images in this rank's share
    pixels: torch.Tensor  # (N, 3, h, w) uint8 RGB, on the device
    readable: np.ndarray  # False: the file failed to decode (zeros stand in)
    images: ScaledImages  # the pass's images, whose `geometry` places each in its file
    inputs: dict[int, torch.Tensor]  # net → its preprocessed input (asked for with `inputs`)


def scale_passes(
    models: list[EvalModel],
    folder: ImageFolder,
    local: range,
    settings: PassSettings,
    device: torch.device,
    *,
    copies: int,
    inputs: bool = False,
) -> Iterator[Batch]:
    """Every batch of every pass, smallest Q first. An image is rescaled once per Q and
    shared by the nets (each normalises it its own way). `copies` counts images per
    image in the pixel budget (2 when the flip shares the batch). With `inputs`, each
    batch also carries each of its nets' preprocessed input, made with the batch (ahead of
    the caller when prefetching)."""
    max_images, max_pixels, workers = settings.max_images, settings.max_pixels, settings.workers
    max_aspect, progress = settings.max_aspect, settings.progress
    at_least = (max(m.input_size[1] for m in models), max(m.input_size[0] for m in models))
    # Worker processes would each keep their own copy, and end with their pass.
    decoded = kept_decoded(folder, local, settings.keep_decoded) if workers == 0 else None
    for q in sorted({q for m in models for q in m.scales}):
        nets = [i for i, m in enumerate(models) if q in m.scales]
        images = ScaledImages(folder, q, at_least, max_aspect, decoded)
        batches = batches_by_size(images, local, max_images, max_pixels, copies)
        # Pinned by torch's pin thread behind loader processes; not in this process, where
        # the read-ahead thread would make that CUDA call (and a CPU run would start CUDA).
        pin = workers > 0 and torch.device(device).type == "cuda"
        loader = make_loader(
            images, None, workers, batch_sampler=batches, collate_fn=collate, pin_memory=pin
        )
        started = time.perf_counter()
        # Worker processes read ahead already; in this process, a thread does (PIL's decode
        # and resize let go of the GIL), two batches ahead at most.
        ahead = 2 if workers == 0 and settings.prefetch else 0
        steps = {i: models[i].preprocessing for i in nets} if inputs else {}
        if torch.device(device).type == "cpu":  # the thread makes the nets' inputs too
            loaded = prefetched(_made(loader, device, steps), ahead)
        else:  # GPU work stays on this thread: the thread only reads and decodes
            loaded = _made(prefetched(loader, ahead), device, steps)
        with closing(loaded):  # closed here if the caller stops
            for pixels, index, readable, ready in loaded:
                rows = (index - local.start).numpy()
                yield Batch(q, nets, rows, pixels, readable.numpy(), images, ready)
        del loader  # its worker processes end with the pass
        if progress is not None:
            progress(
                f"Q={q}: {len(local)} images through {len(nets)} net(s) in "
                f"{time.perf_counter() - started:.1f} s"
            )


def _made(batches, device, steps: dict[int, Callable]) -> Iterator[tuple]:
    """The loader's batches on the device, each with its input for every net of `steps`
    (net → its preprocessing). Closing this closes `batches` (a read-ahead) at once."""
    try:
        for pixels, _, index, readable in batches:
            pixels = pixels.to(device)
            yield pixels, index, readable, {i: step(pixels) for i, step in steps.items()}
    finally:
        if hasattr(batches, "close"):
            batches.close()
