"""Localisation nets' outputs as boxes in the image: protocol 1's central crop, protocol 2's maps.

Protocol 2's boxes are rated by the classifier's score map at the same scale and flip.

A net's outputs hold 4 regression targets (runtime/data/boxes.py) per class (PCR) or 4 in all
(SCR); `rows` says which 4 a class takes. Protocol 2 rates each box with the classifier's
soft-max score of the class at the position whose window is nearest the box's window (the
same position when both nets have the same input size and stride, as the paper's do).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...data import boxes as bx
from ...data.box_augment import centre_crop_geometry, crop_to_image
from .box_maps import dense_boxes
from .merge import ClassBoxes


def class_rows(per_class: bool, positions: Sequence[int]) -> list[int]:
    """The box row (of K in a PCR net's outputs, or the single SCR row) of each class, given
    the classes' positions in the net's output order."""
    return [int(p) if per_class else 0 for p in positions]


def targets_of(outputs, row: int) -> np.ndarray:
    """The 4 regression targets of box row `row` of one image's outputs (4K,)."""
    out = np.asarray(outputs, dtype=np.float64).reshape(-1)
    return out[4 * row : 4 * row + 4]


def centre_box(targets, size: tuple[int, int], q: int, crop: tuple[int, int]) -> np.ndarray:
    """Protocol 1: the (4,) box, in the stored image of `size` (w, h), that `targets` place in
    the central H × W `crop` of the image rescaled to smallest side `q`."""
    scaled, offset = centre_crop_geometry(size, q, crop)
    box = bx.decode(targets, (crop[1], crop[0]))
    return crop_to_image(box, size, scaled, offset, crop, False)[0]


def _nearest(count_to: int, count_from: int, stride_to, stride_from, crop_to, crop_from):
    """Per position of one axis of the `from` map, the nearest window of the `to` map."""
    centres = np.arange(count_from) * stride_from + crop_from / 2
    return np.clip(np.rint((centres - crop_to / 2) / stride_to), 0, count_to - 1).astype(int)


def aligned_scores(
    score_map,
    score_stride: int,
    score_crop: tuple[int, int],
    box_hw: tuple[int, int],
    box_stride: int,
    box_crop: tuple[int, int],
) -> np.ndarray:
    """(K, H' · W') classifier scores, one per box-map position (row-major like dense_boxes),
    from a (K, Hc, Wc) score map: at the classifier window whose centre is nearest."""
    m = np.asarray(score_map, dtype=np.float64)
    rows = _nearest(m.shape[1], box_hw[0], score_stride, box_stride, score_crop[0], box_crop[0])
    cols = _nearest(m.shape[2], box_hw[1], score_stride, box_stride, score_crop[1], box_crop[1])
    return m[:, rows[:, None], cols[None, :]].reshape(m.shape[0], -1)


def map_boxes(
    box_map,
    rows: Sequence[int],
    crop: tuple[int, int],
    stride: int,
    shown: tuple[int, int],
    full: tuple[int, int],
    size: tuple[int, int],
    flipped: bool = False,
) -> np.ndarray:
    """(len(rows), H' · W', 4) boxes in the stored image of `size` (w, h) from box rows `rows`
    of a (4K, H', W') map computed on `shown` (w, h): the centre of the image rescaled to
    `full` (w, h) (all of it unless its long side was capped), mirrored if `flipped`."""
    m = np.asarray(box_map)
    picked = m.reshape(-1, 4, *m.shape[1:])[list(rows)].reshape(-1, *m.shape[1:])
    boxes = dense_boxes(picked, crop, stride, shown, shown, flipped)
    dx, dy = (full[0] - shown[0]) / 2, (full[1] - shown[1]) / 2
    moved = bx.translate(boxes.reshape(-1, 4), dx, dy)
    return bx.scale(moved, full, size).reshape(boxes.shape)


def rated_boxes(classes: Sequence[int], boxes: np.ndarray, scores: np.ndarray) -> ClassBoxes:
    """class → (boxes (P, 4), scores (P,)) for protocol 2's merge, from per-class boxes
    (len(classes), P, 4) and their ratings (len(classes), P)."""
    return {int(c): (boxes[i], scores[i]) for i, c in enumerate(classes)}
