"""`avgpool`: 2×2 average pooling, stride 2, like `maxpool`; it ends a stage (pool<stage>)."""

from __future__ import annotations

from dataclasses import dataclass

from ...frontend.words import register
from .pooling import Pool, Pooling


@register
@dataclass(frozen=True)
class AvgPool(Pool):
    """`avgpool`: 2×2 average pooling, stride 2."""

    word = "avgpool"
    pooling = Pooling("average", 2, 2)

    def forward(self, x, run):
        return run.backend.avg_pool(x)

    def torch_reason(self, training: bool) -> str:
        return "average pooling has no Triton kernel yet"
