"""Protocol 2's geometry: a densely applied localisation net's box map as boxes in the image.

One box per score-map position (and per class for PCR), in the stored image's pixels.

The densified net (FC → conv) run on an image rescaled to `scaled` (w, h) gives a map of
H' × W' positions; position (i, j) is the net applied to the crop-sized window at
(x, y) = (stride · j, stride · i) (stride 32 for five 2 × 2 pools), so its 4 outputs per box are
the regression targets of runtime/data/boxes.py relative to that window. Decoding, moving by
the window's offset, un-flipping (when the net saw the mirrored image) and undoing the rescale
gives boxes comparable with the ground truth.
"""

from __future__ import annotations

import numpy as np

from ...data import boxes as bx


def window_offsets(map_hw: tuple[int, int], stride: int) -> np.ndarray:
    """(H' · W', 2) offsets (x, y) of every position's window, row-major like the map."""
    rows, cols = np.meshgrid(np.arange(map_hw[0]), np.arange(map_hw[1]), indexing="ij")
    return np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64) * stride


def dense_boxes(
    box_map,
    crop: tuple[int, int],
    stride: int,
    scaled: tuple[int, int],
    size: tuple[int, int],
    flipped: bool = False,
) -> np.ndarray:
    """(K, H' · W', 4) boxes in the stored image of `size` (w, h) from a (4K, H', W') box map
    (K = 1 for SCR, the number of classes for PCR, each class's 4 outputs consecutive) of the
    image rescaled to `scaled` (w, h) and seen through H × W `crop` windows."""
    m = np.asarray(box_map, dtype=np.float64)
    if m.ndim != 3 or m.shape[0] % 4:
        raise ValueError(f"a box map is (4K, H', W'), got shape {m.shape}")
    k, h, w = m.shape[0] // 4, m.shape[1], m.shape[2]
    targets = m.reshape(k, 4, h * w).transpose(0, 2, 1).reshape(-1, 4)
    offsets = np.tile(window_offsets((h, w), stride), (k, 1))
    boxes = bx.decode(targets, (crop[1], crop[0])) + np.concatenate([offsets, offsets], axis=1)
    if flipped:
        boxes = bx.hflip(boxes, scaled[0])
    return bx.scale(boxes, scaled, size).reshape(k, h * w, 4)
