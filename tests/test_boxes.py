"""Box geometry and boxes through the augmentation, against hand-computed cases and the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from vggspec.runtime.data import boxes as bx
from vggspec.runtime.data.augment import CropParams, augment, sample_crop_params
from vggspec.runtime.data.box_augment import (
    centre_crop_geometry,
    crop_to_image,
    image_to_crop,
    through_augmentation,
    through_crop,
    through_rescale,
)
from vggspec.runtime.data.color_stats import ColorStats
from vggspec.runtime.data.scale import TrainScale

ZERO_STATS = ColorStats((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 1, 1)


def test_centre_size_and_the_crop_relative_target_by_hand():
    box = [10, 20, 50, 60]
    assert bx.to_centre_size(box).tolist() == [[30, 40, 40, 40]]
    assert bx.from_centre_size([30, 40, 40, 40]).tolist() == [[10, 20, 50, 60]]
    target = bx.encode(box, (200, 100))  # crop (w, h)
    np.testing.assert_allclose(target, [[0.15, 0.4, 0.2, 0.4]])
    np.testing.assert_allclose(bx.decode(target, (200, 100)), [box])
    # The whole crop is the target (0.5, 0.5, 1, 1) whatever its size: O(1) for any S.
    np.testing.assert_allclose(bx.encode([0, 0, 384, 224], (384, 224)), [[0.5, 0.5, 1, 1]])


def test_as_boxes_shapes():
    assert bx.as_boxes([]).shape == (0, 4)
    assert bx.as_boxes([1, 2, 3, 4]).shape == (1, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        bx.as_boxes([1, 2, 3])


def test_iou_by_hand():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [0, 0, 10, 10], [0, 0, 5, 5], [10, 0, 20, 10], [20, 20, 30, 30]]
    np.testing.assert_allclose(bx.iou(a, b), [[50 / 150, 1.0, 0.25, 0.0, 0.0]])
    assert bx.iou(a, b).shape == (1, 5) and bx.iou(b, a).shape == (5, 1)
    # Empty boxes (zero or negative size) overlap nothing, without a division by zero.
    assert bx.iou([[0, 0, 0, 0]], [[0, 0, 0, 0]]).tolist() == [[0.0]]
    assert bx.iou([[5, 5, 0, 0]], a).tolist() == [[0.0]]


def test_clip_hflip_scale_by_hand():
    clipped = bx.clip([[-5, 10, 30, 120], [110, 0, 120, 10]], (100, 100))
    assert clipped.tolist() == [[0, 10, 30, 100], [100, 0, 100, 10]]
    assert bx.nonempty(clipped).tolist() == [True, False]
    assert bx.hflip([10, 20, 30, 40], 100).tolist() == [[70, 20, 90, 40]]
    assert bx.scale([10, 20, 30, 40], (100, 50), (50, 100)).tolist() == [[5, 40, 15, 80]]
    assert bx.areas([[0, 0, 2, 3], [0, 0, -1, 3]]).tolist() == [6, 0]


# A 400 × 300 image rescaled to S = 150 is 200 × 150; the 100 × 100 crop sits at (30, 20).
SIZE, SCALED, OFFSET, CROP = (400, 300), (200, 150), (30, 20), (100, 100)


def test_box_through_rescale_crop_and_flip_by_hand():
    # [100, 60, 300, 240] → scaled [50, 30, 150, 120] → crop [20, 10, 120, 100] → clipped.
    # [0, 0, 40, 40] → scaled [0, 0, 20, 20] → crop [-30, -20, -10, 0]: wholly outside.
    boxes = [[100, 60, 300, 240], [0, 0, 40, 40]]
    out, keep = through_crop(boxes, SIZE, SCALED, OFFSET, CROP, flip=False)
    assert out.tolist() == [[20, 10, 100, 100]] and keep.tolist() == [True, False]
    # Flipped: [20, 10, 120, 100] → [-20, 10, 80, 100] → clipped [0, 10, 80, 100].
    out, keep = through_crop(boxes, SIZE, SCALED, OFFSET, CROP, flip=True)
    assert out.tolist() == [[0, 10, 80, 100]] and keep.tolist() == [True, False]
    params = CropParams(150, SCALED, OFFSET, True, (0.0, 0.0, 0.0))
    out, keep = through_augmentation(boxes, SIZE, params, CROP)
    assert out.tolist() == [[0, 10, 80, 100]] and keep.tolist() == [True, False]


def test_test_rescale_centre_crop_and_the_way_back_by_hand():
    assert through_rescale([[100, 60, 300, 240]], SIZE, 150).tolist() == [[50, 30, 150, 120]]
    scaled, offset = centre_crop_geometry(SIZE, 150, CROP)
    assert scaled == (200, 150) and offset == (50, 25)
    # A box predicted on the centre crop, back in the stored image: +offset, ×2.
    back = crop_to_image([[10, 5, 60, 55]], SIZE, scaled, offset, CROP, flip=False)
    assert back.tolist() == [[120, 60, 220, 160]]
    boxes = np.array([[100.0, 60.0, 300.0, 240.0], [-3.0, 7.0, 12.5, 500.0]])
    for flip in (False, True):
        there = image_to_crop(boxes, SIZE, SCALED, OFFSET, CROP, flip)
        np.testing.assert_allclose(crop_to_image(there, SIZE, SCALED, OFFSET, CROP, flip), boxes)


def _bright_box(chw: np.ndarray) -> list[int]:
    """Pixel-edge box of the pixels brighter than half."""
    ys, xs = np.nonzero(chw.mean(axis=0) > 127.5)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("seed", range(6))
def test_the_box_follows_the_pixels_through_the_augmentation(seed):
    """A white rectangle on black through `augment` (the training path itself) lands where
    `through_augmentation` puts its box, to within a pixel of resampling blur."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(120, 300)), int(rng.integers(120, 300))
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    x1, y1 = int(rng.integers(x0 + w // 4, w)), int(rng.integers(y0 + h // 4, h))
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[y0:y1, x0:x1] = 255
    crop = (64, 80)
    params = sample_crop_params(rng, (w, h), TrainScale(96, 160), crop)
    patch = augment(Image.fromarray(pixels), params, crop, ZERO_STATS).numpy()
    out, keep = through_augmentation([[x0, y0, x1, y1]], (w, h), params, crop)
    if not keep[0]:
        assert patch.max() < 128  # the rectangle is outside the crop
        return
    assert np.abs(np.asarray(_bright_box(patch)) - out[0]).max() <= 1.0
