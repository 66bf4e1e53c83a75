"""`soft-max`: ends the net; Net.predict runs it, training takes its loss (cross-entropy)."""

from __future__ import annotations

from dataclasses import dataclass

from ...frontend.ast import EndsNet
from ...frontend.steps import Step, Unexpressed
from ...frontend.words import register
from .base import Op
from .spatial_mean import SpatialMean
from .traits import Head


@register
@dataclass(frozen=True)
class SoftMax(EndsNet, Head, Op):
    """`soft-max` (also `softmax`): ends the net."""

    word = "soft-max"
    pattern = "soft-?max"

    def describe(self) -> str:
        return "soft-max"

    def build(self, b) -> None:
        b.add("prob", self)

    def forward(self, x, run):
        # A score map (a net that ends in a conv layer, or a dense twin of a spec without
        # soft-max) is averaged over its positions first, as the dense twin's score_mean does.
        if x.dim() == 4:
            x = run.backend.spatial_mean(x)
        return run.backend.softmax(x)

    def dense(self, node, in_shape):
        # Dense testing averages the class score map, then takes the soft-max.
        return [("score_mean", SpatialMean()), (node, self)]

    def launch(self, node, in_shape, batch, training, input_grad):
        from ...kernels.shapes import SoftmaxLaunch

        return SoftmaxLaunch(node, batch, in_shape[0], loss=training)

    def steps(self, node, in_shape):
        return [Step("softmax", node)]

    @classmethod
    def implied(cls, steps, i):
        if steps[i].kind != "softmax":
            return None
        if i != len(steps) - 1:
            raise Unexpressed("a soft-max before the end")
        return cls(), 1
