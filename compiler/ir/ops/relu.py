"""ReLU: its own node after conv/FC until the fuse pass folds it into that layer."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Op


@dataclass(frozen=True)
class ReLU(Op):
    fuses_as = "relu"
    part_of_previous = True

    def describe(self) -> str:
        return "relu"

    def forward(self, x, run):
        return run.backend.relu(x)
