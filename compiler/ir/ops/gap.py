"""`gap`: global average pooling to 1×1, so that an FC after it sees C inputs; ends a stage."""

from __future__ import annotations

from dataclasses import dataclass

from ...frontend.ast import EndsStage
from ...frontend.words import register
from .base import NotInTorchvision, Op, ShapeError


@register
@dataclass(frozen=True)
class Gap(EndsStage, Op):
    """`gap`: global average pooling, the mean over all positions of each channel:
    (C, H, W) → (C, 1, 1)."""

    word = "gap"

    def build(self, b) -> None:
        b.add(f"pool{b.namer.stage}", self)

    def describe(self) -> str:
        return "global-avgpool"

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError("global average pooling cannot follow a fully connected layer")
        return (in_shape[0], 1, 1)

    def window(self, in_shape):
        return tuple(in_shape[1:]), (0, 0), (1, 1)

    def forward(self, x, run):
        return run.backend.spatial_mean(x)[:, :, None, None]

    def launch(self, node, in_shape, batch, training, input_grad):
        from ...kernels.shapes import SpatialMeanLaunch

        return SpatialMeanLaunch(node, batch, *in_shape)

    def torchvision(self):
        raise NotInTorchvision("torchvision's VGG has no global average pooling")
