"""`LRN`: AlexNet's local response normalisation (configuration A-LRN); torch runs it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...frontend.ast import Layer, Loc
from .base import Op, ShapeError
from .registry import register


@dataclass(frozen=True)
class LocalResponseNorm(Op):
    """AlexNet's LRN with the paper's (and Caffe's) constants."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    torchvision_missing = "torchvision has no VGG with LRN (configuration A-LRN)"

    def describe(self) -> str:
        return f"lrn size {self.size}"

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError("LRN cannot follow a fully connected layer")
        return in_shape

    def forward(self, x, run):
        return run.backend.lrn(x, self.size, self.alpha, self.beta, self.k)


@register
@dataclass(frozen=True)
class Lrn(Layer):
    """`LRN`: AlexNet local response normalisation (size 5, alpha 1e-4, beta 0.75, k 2)."""

    loc: Loc | None = field(default=None, compare=False, repr=False)

    word = "lrn"
    terminal = "LRN"
    expected = "LRN"

    def text(self) -> str:
        return "LRN"

    def build(self, b) -> None:
        index = b.namer.next("norm")
        stage = b.namer.stage
        b.add(f"norm{stage}" if index == 1 else f"norm{stage}_{index}", LocalResponseNorm())
