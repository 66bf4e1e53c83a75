"""What the pooling words share: a square window without padding that ends a stage (pool<stage>),
its shape rule, and how weights files write it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...frontend.ast import EndsStage
from ...frontend.steps import Step
from .base import Modules, Op, ShapeError


@dataclass(frozen=True)
class Pooling:
    """A pooling window: method ("max" or "average"), kernel and stride, and whether the
    output size is rounded up (Caffe's default, torch's ceil_mode) rather than down."""

    method: str
    kernel: int
    stride: int
    ceil: bool = False

    def size(self, n: int) -> int:
        """The output size along a side of `n` ≥ kernel (the last window starts inside)."""
        span = n - self.kernel
        return (-(-span // self.stride) if self.ceil else span // self.stride) + 1


@dataclass(frozen=True)
class Pool(EndsStage, Op):
    """Base of the pooling words; a subclass names its word, its `pooling` and its forward."""

    pooling: ClassVar[Pooling]

    def describe(self) -> str:
        p = self.pooling
        name = "maxpool" if p.method == "max" else "avgpool"
        return f"{name}{p.kernel}/{p.stride}" + (" ceil" if p.ceil else "")

    def build(self, b) -> None:
        b.add(f"pool{b.namer.stage}", self)

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError("max pooling cannot follow a fully connected layer")
        c, h, w = in_shape
        k = self.pooling.kernel
        if h < k or w < k:
            raise ShapeError(
                f"the spatial size collapses: {h}x{w} is too small to pool {k}x{k}"
                " (too many maxpools for this input size)"
            )
        return (c, self.pooling.size(h), self.pooling.size(w))

    def window(self, in_shape):
        return (self.pooling.kernel,) * 2, (0, 0), (self.pooling.stride,) * 2

    def torchvision(self) -> Modules:
        return Modules("features", 1)

    def steps(self, node, in_shape):
        p = self.pooling
        kernel, stride = (p.kernel,) * 2, (p.stride,) * 2
        return [Step("pool", node, kernel=kernel, stride=stride, method=p.method, ceil=p.ceil)]

    @classmethod
    def implied(cls, steps, i):
        # The rounding is not read here: the comparison with the file tells where it matters.
        step, p = steps[i], cls.pooling
        same = step.kind == "pool" and step.method == p.method and not any(step.pad)
        if same and step.kernel == (p.kernel,) * 2 and step.stride == (p.stride,) * 2:
            return cls(), 1
        return None

    @classmethod
    def unlike(cls, step):
        if step.kind != "pool":
            return None
        k, s = cls.pooling.kernel, cls.pooling.stride
        return f"the notation pools {k}×{k}, stride {s}"
