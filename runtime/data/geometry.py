"""Deterministic image geometry shared by training and testing: isotropic rescale and crop."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

# Pillow's BILINEAR widens its kernel when it shrinks, so downscaling is antialiased.
RESAMPLE = Image.Resampling.BILINEAR


def scaled_size(
    size: tuple[int, int], smallest_side: int, at_least: tuple[int, int] = (1, 1)
) -> tuple[int, int]:
    """(w, h) of `size` isotropically rescaled so its smallest side is `smallest_side`,
    enlarged further (still isotropically) if needed to be at least `at_least` (w, h),
    so a non-square crop always fits."""
    w, h = size
    if w <= h:
        new_w, new_h = smallest_side, max(smallest_side, round(h * smallest_side / w))
    else:
        new_w, new_h = max(smallest_side, round(w * smallest_side / h)), smallest_side
    if new_w < at_least[0] or new_h < at_least[1]:
        factor = max(at_least[0] / w, at_least[1] / h)
        new_w, new_h = max(at_least[0], round(w * factor)), max(at_least[1], round(h * factor))
    return new_w, new_h


def rescale_smallest_side(img: Image.Image, smallest_side: int) -> Image.Image:
    """The paper's isotropic rescale (training S, test Q): smallest side becomes exactly
    `smallest_side`, bilinear with antialiasing, like every crop the training pipeline makes."""
    target = scaled_size(img.size, smallest_side)
    return img if target == img.size else img.resize(target, RESAMPLE)


def resized_crop(
    img: Image.Image,
    scaled: tuple[int, int],
    offset: tuple[int, int],
    crop: tuple[int, int],
) -> Image.Image:
    """The (x, y)-offset H×W crop of `img` rescaled to `scaled` (w, h), computing only the
    crop's pixels: same result as rescale-then-crop (Pillow samples from the same source
    positions and weights), but the cost and memory do not grow with S or the aspect ratio."""
    sx, sy = img.size[0] / scaled[0], img.size[1] / scaled[1]
    x, y = offset
    h, w = crop
    box = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
    return img.resize((w, h), RESAMPLE, box=box)


def center_offset(scaled: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """(x, y) of the centre H×W crop of an image of size `scaled` (w, h)."""
    return (scaled[0] - crop[1]) // 2, (scaled[1] - crop[0]) // 2


def as_hw(crop: int | Sequence[int]) -> tuple[int, int]:
    """A crop size given as N or (H, W), as (H, W)."""
    if isinstance(crop, int):
        return crop, crop
    h, w = crop
    return int(h), int(w)
