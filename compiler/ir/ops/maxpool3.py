"""`maxpool3`: 3×3 max pooling, stride 2, rounding up: AlexNet's overlapping pooling as Caffe
computes it (torch's ceil_mode); it ends a stage (pool<stage>) like `maxpool`."""

from __future__ import annotations

from dataclasses import dataclass

from ...frontend.words import register
from .pooling import Pool, Pooling


@register
@dataclass(frozen=True)
class MaxPool3(Pool):
    """`maxpool3`: 3×3 max pooling, stride 2; neighbouring windows overlap by one row and
    column (Krizhevsky et al. 2012, Sect. 3.4), and the output size is rounded up, as Caffe's
    AlexNet pools: a 55×55 map gives 27×27, a 13×13 one 6×6, a 16×16 one 8×8."""

    word = "maxpool3"
    pooling = Pooling("max", 3, 2, ceil=True)

    def forward(self, x, run):
        p = self.pooling
        return run.backend.max_pool(x, p.kernel, p.stride, p.ceil)

    def torch_reason(self, training: bool) -> str:
        return "3×3 max pooling has no Triton kernel yet"
