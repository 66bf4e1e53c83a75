"""Localisation errors (Appendix A): protocol 1's GT-class error, protocol 2's ILSVRC top-5.

Protocol 1 is Table 8's, protocol 2 Table 9's; both are fractions of images.

A predicted box is right when its IoU with a ground-truth box of the image's class is above
0.5 (Russakovsky et al. 2014); it is wrong when the IoU is ≤ 0.5 with every one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from vggspec.compiler.ir.ops.box import IOU_THRESHOLD as BOX_IOU_THRESHOLD

from ...data import boxes as bx
from .merge import DEFAULT_MERGE_THRESHOLD, ClassBoxes, best_box

IOU_THRESHOLD = BOX_IOU_THRESHOLD  # the box task's
TOP_K = 5


def box_is_right(box, gt_boxes, iou_threshold: float = IOU_THRESHOLD) -> bool:
    """True when `box` overlaps some ground-truth box of the class with IoU > the threshold."""
    gt = bx.as_boxes(gt_boxes)
    return bool(len(gt)) and bool((bx.iou(box, gt)[0] > iou_threshold).any())


def gt_class_error(pred_boxes, gt_boxes: Sequence, iou_threshold: float = IOU_THRESHOLD) -> float:
    """Protocol 1: `pred_boxes[i]` is the box predicted for image i's ground-truth class (from
    the central crop, in the image's coordinates); `gt_boxes[i]` the image's boxes of that
    class. The fraction of images whose box has IoU ≤ 0.5 with every one of them."""
    pred = bx.as_boxes(pred_boxes)
    if len(pred) != len(gt_boxes):
        raise ValueError(f"{len(pred)} predicted boxes for {len(gt_boxes)} images")
    if not len(pred):
        raise ValueError("no images to score")
    wrong = [not box_is_right(p, g, iou_threshold) for p, g in zip(pred, gt_boxes, strict=True)]
    return float(np.mean(wrong))


Guess = tuple[int, Sequence[float]]  # (class, (x0, y0, x1, y1))


def top5_is_right(
    guesses: Sequence[Guess], label: int, gt_boxes, iou_threshold: float = IOU_THRESHOLD
) -> bool:
    """The ILSVRC criterion for one image: one of at most 5 (class, box) guesses has the
    image's class and a box with IoU > 0.5 with one of its ground-truth boxes."""
    if len(guesses) > TOP_K:
        raise ValueError(f"{len(guesses)} guesses for one image: the criterion allows {TOP_K}")
    return any(c == label and box_is_right(b, gt_boxes, iou_threshold) for c, b in guesses)


def top5_error(
    guesses: Sequence[Sequence[Guess]],
    labels: Sequence[int],
    gt_boxes: Sequence,
    iou_threshold: float = IOU_THRESHOLD,
) -> float:
    """Protocol 2's error: the fraction of images none of whose guesses is right."""
    if not len(labels) == len(guesses) == len(gt_boxes):
        raise ValueError(
            f"{len(guesses)} guess lists, {len(labels)} labels, {len(gt_boxes)} box lists"
        )
    if not len(labels):
        raise ValueError("no images to score")
    wrong = [
        not top5_is_right(g, int(c), b, iou_threshold)
        for g, c, b in zip(guesses, labels, gt_boxes, strict=True)
    ]
    return float(np.mean(wrong))


def top5_guesses(
    top_classes: Sequence[int],
    predictions: ClassBoxes,
    threshold: float = DEFAULT_MERGE_THRESHOLD,
) -> list[Guess]:
    """Protocol 2's guesses for one image: for each of the classifier's top classes (best
    first), the best-rated merged box of that class's dense predictions (see merge.py; fuse
    several nets with merge.union first). A class without any box makes no guess."""
    guesses: list[Guess] = []
    for cls in list(top_classes)[:TOP_K]:
        boxes, scores = predictions.get(int(cls), (bx.as_boxes([]), np.zeros(0)))
        best = best_box(boxes, scores, threshold)
        if best is not None:
            guesses.append((int(cls), best.box))
    return guesses
