"""`maxpool`: 2×2 max pooling, stride 2; it ends a stage (one Table 1 row, pool<stage>)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...frontend.ast import Layer, Loc
from ...frontend.words import register
from .base import Op, ShapeError


@dataclass(frozen=True)
class MaxPool2d(Op):
    kernel: int = 2
    stride: int = 2

    section = "features"

    def describe(self) -> str:
        return f"maxpool{self.kernel}/{self.stride}"

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError("max pooling cannot follow a fully connected layer")
        c, h, w = in_shape
        k, s = self.kernel, self.stride
        if h < k or w < k:
            raise ShapeError(
                f"the spatial size collapses: {h}x{w} is too small to pool {k}x{k}"
                " (too many maxpools for this input size)"
            )
        return (c, (h - k) // s + 1, (w - k) // s + 1)  # floor mode, as Caffe and torch

    def window(self, in_shape):
        return (self.kernel,) * 2, (0, 0), (self.stride,) * 2

    def forward(self, x, run):
        return run.backend.max_pool(x)

    def launch(self, node, in_shape, batch, training, input_grad):
        from ...kernels.shapes import PoolLaunch

        return PoolLaunch(node, batch, *in_shape)

    def torchvision_modules(self) -> int:
        return 1


@register
@dataclass(frozen=True)
class MaxPool(Layer):
    """`maxpool`: 2×2 max pooling, stride 2."""

    loc: Loc | None = field(default=None, compare=False, repr=False)

    word = "maxpool"
    ends_stage = True

    def build(self, b) -> None:
        b.add(f"pool{b.namer.stage}", MaxPool2d())
