"""Very deep features (Appendix B): the penultimate layer's activations computed densely over
the whole image, globally averaged, averaged with the flipped image, over several scales
(stacked or pooled), L2-normalised; several nets' descriptors stacked (late fusion)."""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass

import numpy as np
import torch
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.ir.graph import nodes, op
from vggspec.compiler.ir.ops.traits import Epilogue, Weighted
from vggspec.compiler.lowering.net import Net, cut

from ...data.image_folder import ImageFolder
from ...dist.context import Context, gather_to_main, shard
from ..classify.dense import with_flip
from ..engines.serving import quiet
from ..models import EvalError, EvalModel
from ..scale_passes import PassSettings, scale_passes

AGGREGATES = ("stack", "pool")


def penultimate_net(twin: Net) -> Net:
    """The dense twin cut after its second-to-last weight layer and that layer's ReLU
    (fc7 of the VGG nets: a 4096-channel map); shares the twin's weights."""
    g = twin.graph
    order = nodes(g)
    weighted = [n for n in order if op(g, n).trait(Weighted)]
    if len(weighted) < 2:
        raise EvalError("features need a net with at least two weight layers")
    end = order.index(weighted[-2]) + 1
    while end < len(order) and op(g, order[end]).trait(Epilogue):
        end += 1  # an unfused graph keeps the ReLU as its own node
    head = Net(g.subgraph(order[:end]).copy(), twin.backend_name, twin.dropout)
    for name, module in head.named_children():
        source = getattr(twin, name)
        module.share(source)
    return head.eval()


def layer_net(twin: Net, layer: str) -> Net:
    """The dense twin cut after the named layer; shares the twin's weights."""
    try:
        return cut(twin, layer).eval()
    except VggspecError as err:
        raise EvalError(f"--layer {layer}: {err}") from None


@torch.inference_mode()
def dense_descriptor(head: Net, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """(N, D) float64: the penultimate map of each image averaged over all positions, and
    with `flip` averaged with the mirrored image's."""
    return with_flip(lambda batch: head(batch).double().mean(dim=(2, 3)), x, flip)


def l2_normalise(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, 1e-12)


@dataclass
class Features:
    """Descriptors of this rank's images (or of all, after `gather`)."""

    indices: np.ndarray
    labels: np.ndarray
    readable: np.ndarray
    descriptors: np.ndarray  # (n, D) float32, rows L2-normalised
    seconds: float


def extract_features(
    models: list[EvalModel],
    folder: ImageFolder,
    ctx: Context,
    settings: PassSettings | None = None,
    *,
    aggregate: str = "stack",
    layer: str | None = None,
) -> Features:
    """Per net: the descriptor at each of its scales, stacked (ascending Q) or pooled
    (averaged) across scales, L2-normalised; the nets' descriptors stacked, and the whole
    L2-normalised again. `layer` names the layer to take instead of the penultimate one
    (relu5_3, pool5, fc6 …, as `vggspec compile --no-fuse` names them)."""
    if aggregate not in AGGREGATES:
        raise EvalError(f"aggregate must be stack or pool, not {aggregate!r}")
    settings = settings or PassSettings()
    flip = settings.flip
    started = time.perf_counter()
    local = shard(len(folder), ctx)
    heads = [penultimate_net(m.twin) if layer is None else layer_net(m.twin, layer) for m in models]
    per_scale: dict[tuple[int, int], np.ndarray] = {}
    readable = np.ones(len(local), dtype=bool)
    for m, head in zip(models, heads, strict=True):  # before any image: all ranks, in order
        m.choose_engine(head, settings.progress or quiet)
    copies = 2 if flip else 1
    with closing(
        scale_passes(models, folder, local, settings, ctx.device, copies=copies, inputs=True)
    ) as batches:
        for batch in batches:
            readable[batch.rows] &= batch.readable
            for i in batch.nets:
                d = dense_descriptor(models[i].serving.serve(heads[i]), batch.inputs[i], flip)
                if (i, batch.q) not in per_scale:
                    per_scale[i, batch.q] = np.zeros((len(local), d.shape[1]))
                per_scale[i, batch.q][batch.rows] = d.cpu().numpy()
    parts = []
    for i, m in enumerate(models):
        scales = [per_scale.get((i, q)) for q in sorted(m.scales)]
        if any(s is None for s in scales):  # this rank has no images
            width = heads[i].num_classes * (len(scales) if aggregate == "stack" else 1)
            parts.append(np.zeros((0, width)))
            continue
        if aggregate == "stack":
            parts.append(l2_normalise(np.concatenate(scales, axis=1)))
        else:
            parts.append(l2_normalise(sum(scales) / len(scales)))
    descriptors = l2_normalise(np.concatenate(parts, axis=1)) if len(parts) > 1 else parts[0]
    labels = np.array([folder.samples[i][1] for i in local], dtype=np.int64)
    return Features(
        np.arange(local.start, local.stop),
        labels,
        readable,
        descriptors.astype(np.float32),
        time.perf_counter() - started,
    )


def gather(features: Features, ctx: Context) -> Features | None:
    """All ranks' features in the folder's order, on rank 0 (None elsewhere)."""
    local = (features.indices, features.labels, features.readable, features.descriptors)
    parts = gather_to_main(local, ctx)
    if parts is None:
        return None
    return Features(
        *(np.concatenate([p[k] for p in parts]) for k in range(4)), seconds=features.seconds
    )
