"""`box`: ends a localisation net; its last FC layer regresses boxes (Appendix A)."""

from __future__ import annotations

from dataclasses import dataclass

from ...frontend.ast import EndsNet, Layer
from ...frontend.words import register
from .base import Op
from .fc import FullyConnected
from .traits import Head

# A box is (centre x, centre y, width, height): four outputs per box.
BOX_PARAMS = 4


@register
@dataclass(frozen=True)
class Box(EndsNet, Head, Op):
    """`box`: ends the net; the FC layer before it regresses one box (FC-4, single-class
    regression, SCR) or one box per class (FC-4·classes, per-class regression, PCR).
    Prediction gives the raw regression outputs (N, 4) or (N, 4 × classes); the dense twin
    gives the box map (N, 4·k, h, w), one prediction per position."""

    word = "box"

    @classmethod
    def may_follow(cls, previous) -> bool:
        return previous is not None and issubclass(previous, FullyConnected)

    def misplaced(self, previous: Layer | None) -> str | None:
        if not isinstance(previous, FullyConnected):
            return "box must follow an FC layer directly: that last FC layer regresses the boxes"
        if previous.features % BOX_PARAMS:
            return (
                f"box needs FC-4 (one box) or FC-<4 × classes> (a box per class) before it; "
                f"FC-{previous.features} is not a multiple of 4"
            )
        return None

    def head_width(self, classifier: Layer, classes: int) -> int:
        # SCR stays one box; PCR gets a box per class.
        return BOX_PARAMS if classifier.features == BOX_PARAMS else BOX_PARAMS * classes

    def misfit(self, classifier: Layer, classes: int) -> str | None:
        features = classifier.features
        if features in (BOX_PARAMS, BOX_PARAMS * classes):
            return None
        return (
            f"the box head's FC-{features} does not fit data of {classes} classes: it needs "
            f"FC-4 (one box whatever the class) or FC-{BOX_PARAMS * classes} (a box per class)"
        )

    def training_target(self) -> str:
        return "boxes"

    def build(self, b) -> None:
        b.add("box", self)

    def describe(self) -> str:
        return "box"

    def forward(self, x, run):
        return x

    def classes(self, outputs: int) -> int | None:
        # PCR: 4 outputs per class; SCR's one box is every class's.
        return None if outputs == BOX_PARAMS else outputs // BOX_PARAMS

    def class_boxes(self, scores, classes):
        """(N, 4): each row's box for its class `classes[i]`: the one box of a single-class
        head (SCR), that class's 4 outputs of a per-class head (PCR)."""
        import torch

        if scores.shape[1] == BOX_PARAMS:
            return scores
        rows = scores.reshape(scores.shape[0], -1, BOX_PARAMS)
        return rows[torch.arange(rows.shape[0], device=rows.device), classes.long()]

    def loss(self, scores, target, backend):
        """The paper's Euclidean loss: squared error summed over the 4 box parameters, mean
        over the batch. `target` is (N, 5): the ground-truth class, then its encoded box
        (cx, cy, w, h); a per-class head (PCR) is scored on that class's 4 outputs only."""
        boxes = self.class_boxes(scores, target[:, 0])
        return ((boxes.float() - target[:, 1:].float()) ** 2).sum(1).mean()

    def dense(self, node, in_shape):
        # Dense testing keeps the whole box map: each position predicts its own box(es).
        return [(node, self)]

    def torch_reason(self, training: bool) -> str:
        return "the Euclidean loss" if training else ""
