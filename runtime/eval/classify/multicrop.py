"""Multi-crop evaluation (Sect. 3.2): a regular grid of crops of the spec's input size over
the rescaled image, and their mirror images, each through the classifier; posteriors averaged."""

from __future__ import annotations

from typing import NamedTuple

import torch
from vggspec.compiler.lowering.net import Net

GRID = 5  # the paper's 5×5 grid: 25 crops, 50 with flips, per scale


class Window(NamedTuple):
    y: int
    x: int
    flip: bool


def grid_offsets(length: int, crop: int, n: int = GRID) -> list[int]:
    """n crop starts spread evenly from one border to the other (rounded half up); one
    crop is centred. All zero when the crop spans the side."""
    if crop > length:
        raise ValueError(f"a crop of {crop} does not fit in {length} pixels")
    if n == 1:
        return [(length - crop) // 2]
    span = length - crop
    return [(2 * i * span + n - 1) // (2 * (n - 1)) for i in range(n)]


def grid_windows(
    size: tuple[int, int], crop: tuple[int, int], n: int = GRID, flip: bool = True
) -> list[Window]:
    """The crops of an image of `size` (h, w): the n×n grid row by row, then (with `flip`)
    the same crops mirrored."""
    ys, xs = grid_offsets(size[0], crop[0], n), grid_offsets(size[1], crop[1], n)
    return [Window(y, x, f) for f in ((False, True) if flip else (False,)) for y in ys for x in xs]


def cut(image: torch.Tensor, window: Window, crop: tuple[int, int]) -> torch.Tensor:
    """One crop (3, ch, cw) of one image (3, H, W)."""
    patch = image[:, window.y : window.y + crop[0], window.x : window.x + crop[1]]
    return patch.flip(-1) if window.flip else patch


@torch.inference_mode()
def multicrop_posteriors(
    net: Net, x: torch.Tensor, n: int = GRID, flip: bool = True, max_crops: int = 50
) -> torch.Tensor:
    """(N, classes) float64: the mean soft-max over each image's grid crops (and flips) of
    a batch of equal-size images (N, 3, H, W). Crops are cut `max_crops` at a time, so
    memory does not grow with the batch."""
    crop = tuple(net.input_size)
    windows = grid_windows(tuple(x.shape[-2:]), crop, n, flip)
    jobs = [(i, w) for i in range(x.shape[0]) for w in windows]
    total = None
    for start in range(0, len(jobs), max_crops):
        chunk = jobs[start : start + max_crops]
        p = net.predict(torch.stack([cut(x[i], w, crop) for i, w in chunk])).double()
        if total is None:
            total = torch.zeros(x.shape[0], p.shape[1], dtype=p.dtype, device=p.device)
        total.index_add_(0, torch.tensor([i for i, _ in chunk], device=p.device), p)
    return total / len(windows)
