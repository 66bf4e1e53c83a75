"""`maxpool`: 2×2 max pooling, stride 2; it ends a stage (one Table 1 row, pool<stage>)."""

from __future__ import annotations

from dataclasses import dataclass

from ...frontend.words import register
from .pooling import Pool, Pooling


@register
@dataclass(frozen=True)
class MaxPool(Pool):
    """`maxpool`: 2×2 max pooling, stride 2 (floor mode, as Caffe's VGG release and torch)."""

    word = "maxpool"
    pooling = Pooling("max", 2, 2)

    def forward(self, x, run):
        return run.backend.max_pool(x)

    def launch(self, node, in_shape, batch, training, input_grad):
        from ...kernels.shapes import PoolLaunch

        return PoolLaunch(node, batch, *in_shape)
