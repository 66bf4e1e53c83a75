"""Bounding boxes: pixel corners ↔ regression targets (centre, size) relative to a crop; IoU.

A box is (x0, y0, x1, y1) in continuous pixel coordinates: the origin is the top-left corner
of the top-left pixel and pixel (i, j) covers [i, i+1) × [j, j+1), so a W × H image spans
[0, W] × [0, H] and a box's width is x1 − x0. This is the coordinate system Pillow resizes
in, so a box follows an image through any rescale by multiplying by the same factors.
Pascal VOC's 1-based inclusive pixel indices convert as x0 = xmin − 1, x1 = xmax.

The regression target is the paper's (centre x, centre y, width, height), each divided by the
crop's width or height: (cx / W, cy / H, w / W, h / H). A box inside the crop has all four in
[0, 1], whatever the crop size or S, so SCR and PCR outputs and the Euclidean loss are O(1)
and a net's targets do not change when its input size does.

Boxes are float64 arrays of shape (N, 4); functions take anything `as_boxes` accepts.
"""

from __future__ import annotations

import numpy as np

# A predicted box is right when its IoU with a ground-truth box of the image's class is above
# this (Russakovsky et al. 2014): the one threshold of training's validation and of the test.
IOU_THRESHOLD = 0.5


def as_boxes(boxes) -> np.ndarray:
    """(N, 4) float64 from a box, a list of boxes or an array; (0, 4) when empty."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def widths_heights(boxes) -> tuple[np.ndarray, np.ndarray]:
    b = as_boxes(boxes)
    return b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]


def areas(boxes) -> np.ndarray:
    """Area of each box; 0 for an empty one (x1 <= x0 or y1 <= y0)."""
    w, h = widths_heights(boxes)
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def nonempty(boxes) -> np.ndarray:
    """Boolean mask of the boxes with a positive width and height."""
    w, h = widths_heights(boxes)
    return (w > 0) & (h > 0)


def to_centre_size(boxes) -> np.ndarray:
    """(x0, y0, x1, y1) → (cx, cy, w, h)."""
    b = as_boxes(boxes)
    return np.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
        axis=1,
    )


def from_centre_size(cxcywh) -> np.ndarray:
    """(cx, cy, w, h) → (x0, y0, x1, y1)."""
    c = as_boxes(cxcywh)
    half_w, half_h = c[:, 2] / 2, c[:, 3] / 2
    return np.stack([c[:, 0] - half_w, c[:, 1] - half_h, c[:, 0] + half_w, c[:, 1] + half_h], 1)


def encode(boxes, crop_size: tuple[int, int]) -> np.ndarray:
    """Regression targets of boxes given in the coordinates of a crop of `crop_size` (w, h)."""
    w, h = crop_size
    return to_centre_size(boxes) / np.array([w, h, w, h], dtype=np.float64)


def decode(targets, crop_size: tuple[int, int]) -> np.ndarray:
    """Boxes, in the crop's pixel coordinates, from regression targets (the inverse of encode).
    A negative predicted width or height gives an empty box (x1 < x0), which IoU scores 0."""
    w, h = crop_size
    return from_centre_size(as_boxes(targets) * np.array([w, h, w, h], dtype=np.float64))


def iou(a, b) -> np.ndarray:
    """(N, M) intersection over union of every box of `a` with every box of `b`; 0 where the
    union is empty."""
    a, b = as_boxes(a), as_boxes(b)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def clip(boxes, size: tuple[int, int]) -> np.ndarray:
    """Boxes cut to the [0, w] × [0, h] of an image or crop of `size` (w, h). A box wholly
    outside becomes empty (see `nonempty`)."""
    b = as_boxes(boxes).copy()
    w, h = size
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    return b


def scale(boxes, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Boxes of an image of `from_size` (w, h) in that image resized to `to_size` (w, h)."""
    fx, fy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return as_boxes(boxes) * np.array([fx, fy, fx, fy])


def translate(boxes, dx: float, dy: float) -> np.ndarray:
    return as_boxes(boxes) + np.array([dx, dy, dx, dy], dtype=np.float64)


def hflip(boxes, width: float) -> np.ndarray:
    """Boxes of an image `width` pixels wide after a left-right flip."""
    b = as_boxes(boxes)
    return np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1)
