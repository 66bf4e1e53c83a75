"""ReLU: its own node after conv/FC until the fuse pass folds it into that layer."""

from __future__ import annotations

from dataclasses import dataclass

from ...frontend.steps import Step
from .base import Op
from .traits import Absorbable, Epilogue


@dataclass(frozen=True)
class ReLU(Epilogue, Absorbable, Op):
    absorbed_as = "relu"

    def describe(self) -> str:
        return "relu"

    def forward(self, x, run):
        return run.backend.relu(x)

    def steps(self, node, in_shape):
        return [Step("relu", node)]


def relu_steps(node: str, present: bool = True) -> list[Step]:
    """The step of a layer's own ReLU once fused into it: it keeps its layer's number
    (conv1_1 → relu1_1, fc6 → relu6)."""
    return [Step("relu", node.replace("conv", "relu").replace("fc", "relu"))] if present else []
