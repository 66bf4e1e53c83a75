"""The dense twin's average of the class score map over its positions (before soft-max)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Op
from .traits import Head


@dataclass(frozen=True)
class SpatialMean(Head, Op):
    """Average of the class score map over its spatial positions (dense evaluation)."""

    def describe(self) -> str:
        return "spatial-mean"

    def out_shape(self, in_shape):
        return in_shape[:1]

    def forward(self, x, run):
        return run.backend.spatial_mean(x)

    def window(self, in_shape):
        return tuple(in_shape[1:]), (0, 0), (1, 1)

    def launch(self, node, in_shape, batch, training, input_grad):
        from ...kernels.shapes import SpatialMeanLaunch

        return SpatialMeanLaunch(node, batch, *in_shape)
