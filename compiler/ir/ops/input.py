"""The graph's source node: the image batch (the `input` line is read by the front end)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .base import Op
from .traits import GraphInput


@dataclass(frozen=True)
class Input(GraphInput, Op):
    channels: int
    height: int
    width: int

    def describe(self) -> str:
        return f"input {self.height}x{self.width}x{self.channels}"

    def out_shape(self, in_shape=None) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)

    def at_size(self, height: int, width: int) -> Input:
        return replace(self, height=height, width=width)

    def steps(self, node, in_shape):
        return []  # a file's data or input layer is not a step
