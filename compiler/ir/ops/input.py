"""The graph's source node: the image batch (the `input` line is read by the front end)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Op


@dataclass(frozen=True)
class Input(Op):
    channels: int
    height: int
    width: int

    is_input = True

    def describe(self) -> str:
        return f"input {self.height}x{self.width}x{self.channels}"

    def out_shape(self, in_shape=None) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)
