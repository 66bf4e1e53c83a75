"""Dropout after the first two hidden FC layers (Sect. 3.1); its ratio is a run setting."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Op


@dataclass(frozen=True)
class Dropout(Op):
    """Dropout in training; its ratio is a run setting, not part of the network."""

    fuses_as = "dropout"
    keeps_mask = True

    def describe(self) -> str:
        return "dropout"

    def dense(self, node, in_shape):
        return []  # the dense twin is for testing

    def forward(self, x, run):
        return run.dropout(x)
