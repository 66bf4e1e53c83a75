"""The test passes of one process: for each scale Q, this rank's share of the images through
every net that is tested at Q, densely and/or by multi-crop; posteriors kept per image.

How it is run (through `vggspec run eval`, which calls `evaluate` and then `score`):

    vggspec run eval --checkpoint runs/demo --data DIR                  # dense, 3 scales
    vggspec run eval --checkpoint runs/d --checkpoint runs/e --method all --nproc 2

Rank r takes images [r·n/w, (r+1)·n/w) of the folder's order: nothing padded, nothing seen
twice. Everything about one image (every scale, crop, flip and net) is computed on one
rank, so fusion and averaging are local and only correct-counts cross processes.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np
import torch

from ...data.image_folder import ImageFolder
from ...dist.context import Context, shard
from ..engines.serving import quiet
from ..models import EvalModel, single_scale
from ..scale_passes import PassSettings, scale_passes
from .dense import dense_posteriors
from .multicrop import GRID, multicrop_posteriors

METHODS = ("dense", "multi-crop")


@dataclass
class EvalSettings(PassSettings):
    """How to test (with how the images go through the nets: flip, batches, loader, aspect
    cap, progress); the defaults are the paper's protocol."""

    methods: tuple[str, ...] = ("dense",)  # "dense" and/or "multi-crop"
    single_scale: bool = False  # also keep each net's dense posteriors at Table 3's Q
    grid: int = GRID  # n×n crops per scale


@dataclass
class Evaluation:
    """One rank's results: per net, the posteriors of its images summed over the net's
    scales (float64, in the order of `class_names`); memory is (images × classes) per
    array, not per scale."""

    models: list[EvalModel]
    class_names: list[str]
    settings: EvalSettings
    indices: np.ndarray  # this rank's images, as indices into the folder
    labels: np.ndarray
    readable: np.ndarray  # False: the file failed to decode at test time (left out)
    dense: dict[int, np.ndarray] = field(default_factory=dict)  # net → Σ_Q dense
    crops: dict[int, np.ndarray] = field(default_factory=dict)  # net → Σ_Q multi-crop
    single: dict[int, np.ndarray] = field(default_factory=dict)  # net → dense at its single Q
    seconds: dict[str, float] = field(default_factory=dict)  # "dense", "multi-crop", "total"


def single_process() -> Context:
    return Context(0, 1, 0, torch.device("cpu"))


def evaluate(
    models: list[EvalModel],
    orders: list[np.ndarray],
    class_names: list[str],
    folder: ImageFolder,
    settings: EvalSettings,
    ctx: Context | None = None,
) -> Evaluation:
    """Run every scale pass on this rank's share. `orders[i]` puts net i's outputs in the
    order of `class_names` (see `class_order`); `settings.progress` hears one line a pass."""
    ctx = ctx or single_process()
    started = time.perf_counter()
    local = shard(len(folder), ctx)
    labels = np.array([folder.samples[i][1] for i in local], dtype=np.int64)
    result = Evaluation(
        models,
        class_names,
        settings,
        np.arange(local.start, local.stop),
        labels,
        np.ones(len(local), dtype=bool),
    )
    seconds = {"dense": 0.0, "multi-crop": 0.0}
    single = [single_scale(m) for m in models]
    stores = [result.dense if method == "dense" else result.crops for method in settings.methods]
    if settings.single_scale:
        stores.append(result.single)
    for i in range(len(models)):
        for store in stores:
            store[i] = np.zeros((len(local), len(class_names)))
    for m in models:  # before any image: every rank, in the same order
        m.choose_engine(
            m.twin if "dense" in settings.methods else m.net, settings.progress or quiet
        )
    # Closed as soon as this stops, also by an exception: no batch is read ahead for nothing.
    passes = scale_passes(
        models, folder, local, settings, ctx.device, copies=2 if settings.flip else 1, inputs=True
    )
    with closing(passes) as batches:
        for batch in batches:
            result.readable[batch.rows] &= batch.readable
            for i in batch.nets:
                m = models[i]
                x = batch.inputs[i]
                for method in settings.methods:
                    tick = time.perf_counter()
                    if method == "dense":
                        p = dense_posteriors(m.serving.serve(m.twin), x, settings.flip)
                        store = result.dense
                    else:
                        max_crops = max(
                            1, settings.max_pixels // (m.input_size[0] * m.input_size[1])
                        )
                        net = m.serving.serve(m.net)
                        p = multicrop_posteriors(net, x, settings.grid, settings.flip, max_crops)
                        store = result.crops
                    p = p.cpu().numpy()[:, orders[i]]
                    store[i][batch.rows] += p
                    if method == "dense" and settings.single_scale and batch.q == single[i]:
                        result.single[i][batch.rows] = p
                    seconds[method] += time.perf_counter() - tick
    result.seconds = {**seconds, "total": time.perf_counter() - started}
    return result
