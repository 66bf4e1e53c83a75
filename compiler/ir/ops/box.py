"""`box`: ends a localisation net; its last FC layer regresses boxes (Appendix A), and its task
(box regression) holds the box-width rule."""

from __future__ import annotations

from dataclasses import dataclass

from ...frontend.ast import EndsNet, Layer
from ...frontend.words import register
from .base import Op
from .fc import FullyConnected
from .task import Task
from .traits import Head

# A box is (centre x, centre y, width, height): four outputs per box.
BOX_PARAMS = 4
# A predicted box is right when its IoU with a ground-truth box of the image's class is
# above this (Russakovsky et al. 2014): the GT-class error counts the others.
IOU_THRESHOLD = 0.5


class BoxRegression(Task):
    """Appendix A's task: a class and its box per image, the Euclidean loss, selected by the
    GT-class localisation error. The box-width rule lives here: a box head has 4 outputs
    (one box whatever the class: single-class regression, SCR) or 4 per class (PCR)."""

    def pick(self, *, labels, boxes):
        return boxes

    def per_class(self, outputs: int) -> bool:
        """A box per class (PCR), not one for all (SCR)."""
        return outputs != BOX_PARAMS

    def fits(self, outputs: int, classes: int) -> bool:
        """Whether a box head of `outputs` outputs fits data of `classes` classes."""
        return outputs in (BOX_PARAMS, BOX_PARAMS * classes)

    def width(self, classifier, classes: int) -> int:
        # SCR stays one box; PCR gets a box per class.
        return BOX_PARAMS * classes if self.per_class(classifier.features) else BOX_PARAMS

    def misfit(self, classifier, classes: int) -> str | None:
        features = classifier.features
        if self.fits(features, classes):
            return None
        return (
            f"the box head's FC-{features} does not fit data of {classes} classes: it needs "
            f"FC-4 (one box whatever the class) or FC-{BOX_PARAMS * classes} (a box per class)"
        )

    def classes(self, outputs: int) -> int | None:
        # PCR: 4 outputs per class; SCR's one box is every class's.
        return outputs // BOX_PARAMS if self.per_class(outputs) else None

    def random_target(self, n, classes, device=None, dtype=None, generator=None):
        """(n, 5): a class, then a box (cx, cy, w, h) in [0, 1)."""
        import torch

        labels = super().random_target(n, classes, device, dtype, generator)
        box = torch.rand(n, BOX_PARAMS, generator=generator, device=device)
        return torch.cat([labels[:, None].to(dtype or torch.float32), box], 1)

    def class_boxes(self, scores, classes):
        """(N, 4): each row's box for its class `classes[i]`: the one box of a single-class
        head (SCR), that class's 4 outputs of a per-class head (PCR)."""
        import torch

        if not self.per_class(scores.shape[1]):
            return scores
        rows = scores.reshape(scores.shape[0], -1, BOX_PARAMS)
        return rows[torch.arange(rows.shape[0], device=rows.device), classes.long()]

    def loss(self, scores, target, backend):
        """The paper's Euclidean loss: squared error summed over the 4 box parameters, mean
        over the batch. `target` is (N, 5): the ground-truth class, then its encoded box
        (cx, cy, w, h); a per-class head (PCR) is scored on that class's 4 outputs only."""
        boxes = self.class_boxes(scores, target[:, 0])
        return ((boxes.float() - target[:, 1:].float()) ** 2).sum(1).mean()


BOXES = BoxRegression()


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

    def task(self) -> BoxRegression:
        return BOXES

    def build(self, b) -> None:
        b.add("box", self)

    def describe(self) -> str:
        return "box"

    def forward(self, x, run):
        return x

    def dense(self, node, in_shape):
        # Dense testing keeps the whole box map: each position predicts its own box(es).
        return [(node, self)]

    def torch_reason(self, training: bool) -> str:
        return "the Euclidean loss" if training else ""
