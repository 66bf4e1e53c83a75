"""The localisation passes of one process (Appendix A) over this rank's share of the images.

Protocol 1 runs on central crops; protocol 2 runs densely, its boxes rated by the classifier.

Protocol 1 (`centre_boxes`): the central crop of each image at Q, the ground-truth class's box.
Protocol 2 (`dense_guesses`): every localisation net densely at each of its scales Q (and on the
mirrored image, mirrored back), a box per map position for each of the classifier's top-5
classes, rated by the classifier's soft-max score there; the union over nets, scales and flips
is merged greedily per class (merge.py) and the best group of each class is its guess. An
image's boxes are complete after the largest Q; its merge then runs in a worker thread while
the next batches go through the nets (merge_worker.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from contextlib import closing

import numpy as np
import torch
from torch.utils.data import Dataset
from vggspec.compiler.ir.graph import meta
from vggspec.compiler.lowering.net import Net

from ...data.box_augment import centre_crop_geometry
from ...data.geometry import resized_crop
from ...data.image_folder import ImageFolder
from ...data.image_io import UnreadableImage, load_rgb
from ...data.loader import make_loader
from ..models import EvalModel
from ..scale_passes import PassSettings, scale_passes
from .merge import union
from .merge_worker import BackgroundMerges
from .net_boxes import aligned_scores, centre_box, map_boxes, rated_boxes, targets_of
from .scoring import Guess, top5_guesses

log = logging.getLogger(__name__)


def map_stride(twin: Net) -> int:
    """Pixels between neighbouring positions of a dense twin's output map (32 for 5 pools)."""
    last, _ = twin.layers()[-1]
    return int(meta(twin.graph, last).jump[0])


class CentreCrops(Dataset):
    """Item i: (uint8 (3, H, W) central crop of image i rescaled to smallest side q, label, i,
    readable); a file that fails to decode now yields zeros and readable=False."""

    def __init__(self, folder: ImageFolder, q: int, crop: tuple[int, int]) -> None:
        self.folder, self.q, self.crop = folder, int(q), crop

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        path, label = self.folder.samples[index]
        scaled, offset = centre_crop_geometry(self.folder.sizes[index], self.q, self.crop)
        try:
            img = load_rgb(path, scaled if self.folder.reduced_decode else None)
        except UnreadableImage as err:
            log.warning("leaving out %s: %s (%s)", path, err.reason, err.detail)
            return torch.zeros(3, *self.crop, dtype=torch.uint8), label, index, False
        patch = np.asarray(resized_crop(img, scaled, offset, self.crop), dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1))), label, index, True


@torch.inference_mode()
def centre_boxes(
    model: EvalModel,
    rows: Sequence[int],
    folder: ImageFolder,
    local: range,
    q: int,
    settings: PassSettings,
    device,
) -> tuple[np.ndarray, np.ndarray]:
    """Protocol 1 on this rank's images at Q = q: (each image's box for its ground-truth
    class, in the stored image, (n, 4); readable). `rows[c]` is class c's box row."""
    crops = CentreCrops(folder, q, model.input_size)
    loader = make_loader(crops, settings.max_images, settings.workers, sampler=list(local))
    boxes = np.zeros((len(local), 4))
    readable = np.ones(len(local), dtype=bool)
    for pixels, labels, indices, ok in loader:
        outputs = model.net(model.preprocessing(pixels.to(device))).double().cpu().numpy()
        for out, label, i, good in zip(outputs, labels, indices, ok, strict=True):
            k = int(i) - local.start
            readable[k] = bool(good)
            targets = targets_of(out, rows[int(label)])
            boxes[k] = centre_box(targets, folder.sizes[int(i)], q, crops.crop)
    del loader
    return boxes, readable


def _maps(twin: Net, x: torch.Tensor, flip: bool) -> list[tuple[bool, np.ndarray]]:
    """[(flipped, (N, C, H', W') output map)] of x and, with `flip`, its mirror image."""
    views = [(False, x), (True, x.flip(-1))] if flip else [(False, x)]
    return [(flipped, twin(v).double().cpu().numpy()) for flipped, v in views]


def _class_scores(twin: Net, x: torch.Tensor, flip: bool) -> list[tuple[bool, np.ndarray]]:
    return [(f, _softmax(m)) for f, m in _maps(twin, x, flip)]


def _softmax(m: np.ndarray) -> np.ndarray:
    e = np.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@torch.inference_mode()
def dense_guesses(
    nets: list[EvalModel],
    rows: list[Sequence[int]],
    classifier: EvalModel,
    top: np.ndarray,
    folder: ImageFolder,
    local: range,
    settings: PassSettings,
    device,
    *,
    overlap: bool = True,
) -> tuple[list[list[Guess]], np.ndarray]:
    """Protocol 2 on this rank's images: (each image's (class, box) guesses, readable).
    `top[k]` are image k's top classes (best first, by the classifier's own evaluation);
    `rows[n][c]` is class c's box row in net n's outputs. `overlap`: merge in a worker
    thread while the nets run on (False: in line; the guesses are the same)."""
    scales = sorted({q for m in nets for q in m.scales})
    rater = dataclasses.replace(classifier, scales=scales)
    models = [*nets, rater]
    strides = [map_stride(m.twin) for m in models]
    predictions: list[list] = [[] for _ in local]
    readable = np.ones(len(local), dtype=bool)
    flip = settings.flip
    views = 2 if flip else 1
    passes = scale_passes(models, folder, local, settings, device, copies=views)
    merges = BackgroundMerges(_merge, lambda k: folder.samples[local.start + k][0], overlap)
    with merges, closing(passes) as batches:  # the read-ahead stops as soon as this does
        for batch in batches:
            readable[batch.rows] &= batch.readable
            ratings = _class_scores(rater.twin, rater.preprocessing(batch.pixels), flip)
            for n in batch.nets[:-1]:  # the rater runs at every Q and comes last
                m = nets[n]
                box_maps = _maps(m.twin, m.preprocessing(batch.pixels), flip)
                for (flipped, box_map), (_, score_map) in zip(box_maps, ratings, strict=True):
                    for k, row in enumerate(batch.rows):
                        if not batch.readable[k]:
                            continue
                        index = local.start + int(row)
                        shown, full = batch.images.geometry(index)
                        classes = [int(c) for c in top[row]]
                        boxes = map_boxes(
                            box_map[k],
                            [rows[n][c] for c in classes],
                            m.input_size,
                            strides[n],
                            shown,
                            full,
                            folder.sizes[index],
                            flipped,
                        )
                        scores = aligned_scores(
                            score_map[k][classes],
                            strides[-1],
                            rater.input_size,
                            box_map.shape[2:],
                            strides[n],
                            m.input_size,
                        )
                        predictions[row].append(rated_boxes(classes, boxes, scores))
            if batch.q == scales[-1]:  # these images' boxes are all there: merge them
                for k in batch.rows.tolist():
                    merges.submit(k, top[k], predictions[k])
                    predictions[k] = None
        for k, boxes in enumerate(predictions):  # none left unless a pass missed an image
            if boxes is not None:
                merges.submit(k, top[k], boxes)
        guesses = [merges.result(k) for k in range(len(local))]
    return guesses, readable


def _merge(top_classes, predictions: list) -> list[Guess]:
    """One image's guesses from all its nets', scales' and flips' rated boxes."""
    return top5_guesses(top_classes, union(predictions))
