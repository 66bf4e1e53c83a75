"""Dense evaluation of whole images (Sect. 3.2): the fully-convolutional twin's class score
map, averaged spatially, soft-max, averaged with the horizontally flipped image."""

from __future__ import annotations

from collections.abc import Callable

import torch
from vggspec.compiler.lowering.net import Net


def with_flip(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, flip: bool = True
) -> torch.Tensor:
    """f(x) per image; with `flip`, the mean of f over each image and its mirror image (the
    mirrored images run in the same batch)."""
    if not flip:
        return f(x)
    n = x.shape[0]
    both = f(torch.cat([x, x.flip(-1)]))
    return (both[:n] + both[n:]) / 2


# What `--engine auto` measures on, before any image: as many random images as fill 4
# images of 224×224 (so that small images are timed in a batch too), with their mirror
# images. Seeded, so that every rank (and every run) measures on the same pixels.
SAMPLE_PIXELS = 4 * 224 * 224


def engine_sample(
    preprocessing: Callable[[torch.Tensor], torch.Tensor], size: tuple[int, int], device
) -> torch.Tensor:
    """Random RGB images of `size` (h, w), preprocessed as the net's images are, and their
    mirror images: what an engine is measured on."""
    h, w = size
    n = max(1, SAMPLE_PIXELS // (h * w))
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 3, h, w), generator=generator, dtype=torch.uint8)
    x = preprocessing(pixels.to(device))
    return torch.cat([x, x.flip(-1)])


@torch.inference_mode()
def dense_posteriors(twin: Net, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """(N, classes) float64 posteriors of a batch of equal-size images (N, 3, h, w), each
    at least the spec's input size. With `flip`, the two soft-max outputs of each image
    and its mirror image are averaged. `twin` is a Net or an engine's Served twin."""
    return with_flip(lambda batch: twin.predict(batch).double(), x, flip)
