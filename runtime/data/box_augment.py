"""Boxes through the data pipeline: the training augmentation, the test rescale, and back.

Each function takes the same numbers the image path uses (augment.CropParams, geometry's
scaled_size / resized_crop / center_offset), so a box moves exactly as its pixels do: the
image of stored `size` (w, h) is rescaled to `scaled` (w, h), the (x, y) `offset` H × W `crop`
is cut from it (crops are (H, W), as everywhere in the data code), then flipped if `flip`.
"""

from __future__ import annotations

import numpy as np

from . import boxes as bx
from .augment import CropParams
from .geometry import center_offset, scaled_size


def image_to_crop(boxes, size, scaled, offset, crop, flip: bool) -> np.ndarray:
    """Image boxes in crop coordinates, not clipped (a box may stick out of the crop)."""
    out = bx.translate(bx.scale(boxes, size, scaled), -offset[0], -offset[1])
    return bx.hflip(out, crop[1]) if flip else out


def crop_to_image(boxes, size, scaled, offset, crop, flip: bool) -> np.ndarray:
    """The inverse of `image_to_crop`: a box predicted on the crop, in the stored image's
    coordinates (not clipped to the image)."""
    out = bx.hflip(boxes, crop[1]) if flip else bx.as_boxes(boxes)
    return bx.scale(bx.translate(out, offset[0], offset[1]), scaled, size)


def through_crop(boxes, size, scaled, offset, crop, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """(boxes in crop coordinates clipped to the crop, boolean mask of the input boxes kept):
    a box cut by the crop is clipped to it, one wholly outside is dropped."""
    out = bx.clip(image_to_crop(boxes, size, scaled, offset, crop, flip), (crop[1], crop[0]))
    keep = bx.nonempty(out)
    return out[keep], keep


def through_augmentation(
    boxes, size: tuple[int, int], params: CropParams, crop: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A training sample's boxes, given the CropParams its image was augmented with."""
    return through_crop(boxes, size, params.scaled, params.offset, crop, params.flip)


def through_rescale(boxes, size: tuple[int, int], smallest_side: int) -> np.ndarray:
    """Boxes of an image after the test rescale to smallest side Q (geometry's
    rescale_smallest_side)."""
    return bx.scale(boxes, size, scaled_size(size, smallest_side))


def centre_crop_geometry(
    size: tuple[int, int], smallest_side: int, crop: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(scaled, offset) of the central crop the validation path takes (rescale to the
    smallest side, enlarged if the crop does not fit, then the centre crop), for protocol 1:
    `crop_to_image(pred, size, *centre_crop_geometry(size, S, crop), crop, False)`."""
    scaled = scaled_size(size, smallest_side, at_least=(crop[1], crop[0]))
    return scaled, center_offset(scaled, crop)
