"""`avgpool`: 2×2 average pooling, stride 2, like `maxpool`; it ends a stage (pool<stage>)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...frontend.ast import Layer, Loc
from ...frontend.words import register
from .base import Op
from .maxpool import MaxPool2d


@dataclass(frozen=True)
class AvgPool2d(Op):
    kernel: int = 2
    stride: int = 2

    section = "features"

    def describe(self) -> str:
        return f"avgpool{self.kernel}/{self.stride}"

    def out_shape(self, in_shape):
        # The same shape rule (and errors) as max pooling: floor mode, no padding.
        return MaxPool2d(self.kernel, self.stride).out_shape(in_shape)

    def window(self, in_shape):
        return (self.kernel,) * 2, (0, 0), (self.stride,) * 2

    def forward(self, x, run):
        return run.backend.avg_pool(x)

    def torch_reason(self, training: bool) -> str:
        return "average pooling has no Triton kernel yet"

    def torchvision_modules(self) -> int:
        return 1


@register
@dataclass(frozen=True)
class AvgPool(Layer):
    """`avgpool`: 2×2 average pooling, stride 2."""

    loc: Loc | None = field(default=None, compare=False, repr=False)

    word = "avgpool"
    ends_stage = True

    def build(self, b) -> None:
        b.add(f"pool{b.namer.stage}", AvgPool2d())
