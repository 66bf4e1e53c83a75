"""Dropout after the first two hidden FC layers (Sect. 3.1); its ratio is a run setting."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .base import Op
from .traits import Absorbable


@dataclass(frozen=True)
class Dropout(Absorbable, Op):
    """Dropout in training; its ratio is a run setting, not part of the network."""

    absorbed_as = "dropout"

    def describe(self) -> str:
        return "dropout"

    def mask_elements(self, shape) -> int:
        return prod(shape)

    def dense(self, node, in_shape):
        return []  # the dense twin is for testing

    def forward(self, x, run):
        return run.dropout(x)

    def steps(self, node, in_shape):
        return []  # training only: a converted net's files have nothing to compare
