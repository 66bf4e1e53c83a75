"""Dense evaluation of whole images (Sect. 3.2): the fully-convolutional twin's class score
map, averaged spatially, soft-max, averaged with the horizontally flipped image."""

from __future__ import annotations

import torch
from vggspec.compiler.lowering.net import Net


@torch.inference_mode()
def dense_posteriors(twin: Net, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """(N, classes) float64 posteriors of a batch of equal-size images (N, 3, h, w), each
    at least the spec's input size. With `flip`, the mirrored images run in the same batch
    and the two soft-max outputs are averaged."""
    if not flip:
        return twin.predict(x).double()
    n = x.shape[0]
    both = twin.predict(torch.cat([x, x.flip(-1)])).double()
    return (both[:n] + both[n:]) / 2
