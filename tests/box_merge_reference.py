"""The greedy merge as first written (O(n³) time, O(n²) memory): the reference that
runtime/eval/localise/merge.py must equal group for group, for the tests and bench/localisation.py.

It is the module's rule read literally: a full matrix of match distances, one `argmin` over
all of it per merge (its first minimum in row-major order: ties to the lowest indices), and
the merged group's distances recomputed from its mean.
"""

from __future__ import annotations

import numpy as np
from vggspec.runtime.data import boxes as bx
from vggspec.runtime.eval.localise.merge import DEFAULT_MERGE_THRESHOLD, MergedBox, match_distance


def merge_boxes_reference(
    boxes, scores, threshold: float = DEFAULT_MERGE_THRESHOLD
) -> list[MergedBox]:
    boxes = bx.as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    sums = boxes.copy()  # per group: the sum of its members' boxes
    counts = np.ones(len(boxes))
    ratings = scores.copy()
    alive = np.ones(len(boxes), dtype=bool)
    dist = match_distance(boxes, boxes)
    dist[np.tril_indices(len(boxes))] = np.inf  # each pair once, never a box with itself
    while len(boxes) > 1:
        i, j = np.unravel_index(np.argmin(dist), dist.shape)
        if not dist[i, j] <= threshold:
            break
        # Group j joins group i (i < j); i's distances to the others are recomputed.
        sums[i] += sums[j]
        counts[i] += counts[j]
        ratings[i] += ratings[j]
        alive[j] = False
        dist[j, :] = dist[:, j] = np.inf
        mean_i = sums[i] / counts[i]
        row = match_distance(mean_i, sums / counts[:, None])[0]
        row[~alive] = np.inf
        row[i] = np.inf
        dist[i, i + 1 :] = row[i + 1 :]
        dist[:i, i] = row[:i]
    groups = [
        MergedBox(tuple(float(v) for v in sums[k] / counts[k]), float(ratings[k]), int(counts[k]))
        for k in np.flatnonzero(alive)
    ]
    # sorted() is stable: equal ratings keep the earlier group first.
    return sorted(groups, key=lambda g: -g.rating)
