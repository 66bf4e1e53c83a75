"""`soft-max`: ends the net; Net.predict applies it, training fuses it with the loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...frontend.ast import Layer, Loc
from .base import Op
from .registry import register
from .spatial_mean import SpatialMean


@dataclass(frozen=True)
class SoftMaxOp(Op):
    in_head = True

    def describe(self) -> str:
        return "soft-max"

    def dense(self, node, in_shape):
        # Dense testing averages the class score map, then takes the soft-max.
        return [("score_mean", SpatialMean(), {}), (node, self, {})]

    def launch(self, node, in_shape, batch, training, input_grad):
        from ...kernels.shapes import SoftmaxLaunch

        return SoftmaxLaunch(node, batch, in_shape[0], loss=training)


@register
@dataclass(frozen=True)
class SoftMax(Layer):
    """`soft-max`: ends the net."""

    loc: Loc | None = field(default=None, compare=False, repr=False)

    word = "softmax"
    terminal = "SOFTMAX"
    expected = "soft-max"
    ends_net = True

    def text(self) -> str:
        return "soft-max"

    def build(self, b) -> None:
        b.add("prob", SoftMaxOp())
