"""Greedy merging of dense box predictions (Sermanet et al. 2014), as Appendix A uses it.

Spatially close boxes are averaged, then the merged boxes are rated by class scores.

The rule implemented, for the boxes predicted for one class (at every score-map position, every
scale Q and, when several localisation nets are fused, every net: `union` first):

1. Every box starts as its own group, with its rating r = the classification score of the
   class at the place it was predicted (one score per box, given by the caller).
2. The match distance of two groups is that of their mean boxes a and b:
       d(a, b) = (1 − IoU(a, b)) + |centre(a) − centre(b)|² / diag(a ∪ b)²,
   diag(a ∪ b) being the diagonal of the smallest box enclosing both. OverFeat's
   match_score is "the sum of the distance between centers of the two bounding boxes and the
   intersection area of the boxes"; taken literally it adds pixels to square pixels and makes
   overlap push boxes apart. This reads it as the same two terms made dimensionless and
   scale-free, overlap as a dissimilarity: d is 0 for equal boxes and < 2 always.
3. While the closest pair of groups has d <= `threshold`, they become one group: its box is
   the mean of all the predictions in it (OverFeat averages the two boxes' coordinates; a
   mean over members keeps the result independent of the merge order), its rating the sum of
   their ratings (OverFeat's "cumulatively adding the detection class outputs associated
   with the input windows from which each bounding box was predicted"). Ties go to the pair
   with the lowest indices, so the result is deterministic.
4. The class's box is the group with the highest rating (ties: the earlier group).

So many close predictions of a confident class outvote a lone one, and a change in the scores
can change which group wins. OverFeat merges across its top classes at once; the VGG paper
needs one box per top-5 class (the ILSVRC criterion), so groups are formed per class; for
single-class regression the caller passes the same boxes to every class with that class's
scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ...data import boxes as bx
from .greedy import greedy_merge

DEFAULT_MERGE_THRESHOLD = 0.5  # about IoU ≥ 0.5 for boxes of one size a little apart


@dataclass(frozen=True)
class MergedBox:
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1), the mean of its members
    rating: float  # the sum of its members' scores
    members: int


def match_distance(a, b) -> np.ndarray:
    """(N, M) match distance (rule 2 of the module docstring) between boxes a and b."""
    a, b = bx.as_boxes(a), bx.as_boxes(b)
    ca, cb = bx.to_centre_size(a)[:, :2], bx.to_centre_size(b)[:, :2]
    centre2 = ((ca[:, None, :] - cb[None, :, :]) ** 2).sum(axis=2)
    ex0 = np.minimum(a[:, None, 0], b[None, :, 0])
    ey0 = np.minimum(a[:, None, 1], b[None, :, 1])
    ex1 = np.maximum(a[:, None, 2], b[None, :, 2])
    ey1 = np.maximum(a[:, None, 3], b[None, :, 3])
    diag2 = (ex1 - ex0) ** 2 + (ey1 - ey0) ** 2
    # Squares of coordinates past 1e154 overflow to inf (and inf / inf is NaN, which stops
    # the merging): rule 2 read literally, without a warning for each.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        spread = np.where(diag2 > 0, centre2 / np.where(diag2 > 0, diag2, 1), 0.0)
    return 1.0 - bx.iou(a, b) + spread


def merge_boxes(boxes, scores, threshold: float = DEFAULT_MERGE_THRESHOLD) -> list[MergedBox]:
    """Greedy merging of one class's boxes rated by `scores` (one per box); the groups, best
    rated first."""
    boxes = bx.as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    if not np.isfinite(threshold):
        raise ValueError(f"the merge threshold must be a finite number, got {threshold}")
    state = np.empty((len(boxes), 6))  # per group: its members' summed boxes; members; rating
    state[:, :4], state[:, 4], state[:, 5] = boxes, 1.0, scores
    alive = np.ones(len(boxes), dtype=bool)
    greedy_merge(state, alive, float(threshold))
    state = state[alive]
    groups = [
        MergedBox(tuple(float(v) for v in s[:4] / s[4]), float(s[5]), int(s[4])) for s in state
    ]
    # sorted() is stable: equal ratings keep the earlier group first.
    return sorted(groups, key=lambda g: -g.rating)


ClassBoxes = Mapping[int, tuple[np.ndarray, np.ndarray]]  # class → (boxes (N, 4), scores (N,))


def union(predictions: Iterable[ClassBoxes]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The union of several nets' (or scales') per-class boxes and scores, before merging."""
    out: dict[int, tuple[list, list]] = {}
    for prediction in predictions:
        for cls, (boxes, scores) in prediction.items():
            pair = out.setdefault(int(cls), ([], []))
            pair[0].append(bx.as_boxes(boxes))
            pair[1].append(np.asarray(scores, dtype=np.float64).reshape(-1))
    return {c: (np.concatenate(b), np.concatenate(s)) for c, (b, s) in out.items()}


def best_box(boxes, scores, threshold: float = DEFAULT_MERGE_THRESHOLD) -> MergedBox | None:
    """The class's box: the best-rated group after merging; None without any box."""
    groups = merge_boxes(boxes, scores, threshold)
    return groups[0] if groups else None
