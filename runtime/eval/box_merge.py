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

import functools
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..data import boxes as bx

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
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(diag2 > 0, centre2 / np.where(diag2 > 0, diag2, 1), 0.0)
    return 1.0 - bx.iou(a, b) + spread


def _geometry(boxes: np.ndarray) -> np.ndarray:
    """(7, N) per box: x0, y0, x1, y1, centre x, centre y, area (as bx.to_centre_size and
    bx.areas compute them)."""
    x0, y0, x1, y1 = boxes.T
    w = np.maximum(x1 - x0, 0.0)
    h = np.maximum(y1 - y0, 0.0)
    return np.stack([x0, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2, w * h])


def _plain(geometry: np.ndarray) -> bool:
    """True when, between these boxes, no union and no enclosing diagonal can be 0 or
    non-finite: sides and coordinates of sane magnitudes, so `_distances` may divide
    without masks."""
    sides = geometry[2:4] - geometry[:2]
    return bool((np.abs(geometry[:4]) <= _LARGEST).all() and (sides >= _SMALLEST_SIDE).all())


def _distances(a: np.ndarray, b: np.ndarray, plain: bool) -> np.ndarray:
    """(K, N) match distances between boxes of geometries a (7, K) and b (7, N): the
    floating-point operations of `match_distance` in its order, so that every distance, and
    so every tie, is the same to the last bit (the tests hold it to the reference). `plain`
    (see `_plain`, for both sets): every union and diagonal is positive, no mask is needed."""
    ax0, ay0, ax1, ay1, acx, acy, aarea = (v[:, None] for v in a)
    bx0, by0, bx1, by1, bcx, bcy, barea = b
    inter = np.minimum(ax1, bx1)
    inter -= np.maximum(ax0, bx0)
    np.maximum(inter, 0.0, out=inter)
    h = np.minimum(ay1, by1)
    h -= np.maximum(ay0, by0)
    np.maximum(h, 0.0, out=h)
    inter *= h
    union = aarea + barea
    union -= inter
    ext = np.maximum(ax1, bx1)
    ext -= np.minimum(ax0, bx0)
    ext *= ext
    diag2 = np.maximum(ay1, by1)
    diag2 -= np.minimum(ay0, by0)
    diag2 *= diag2
    diag2 += ext  # (ex1 − ex0)² + (ey1 − ey0)², in match_distance's order of the sum
    centre2 = acx - bcx
    centre2 *= centre2
    dy = acy - bcy
    dy *= dy
    centre2 += dy
    if plain:
        np.divide(inter, union, out=inter)
        np.divide(centre2, diag2, out=centre2)
    else:
        np.divide(inter, union, out=inter, where=union > 0)
        inter[~(union > 0)] = 0.0
        np.divide(centre2, diag2, out=centre2, where=diag2 > 0)
        centre2[~(diag2 > 0)] = 0.0
    out = np.subtract(1.0, inter, out=inter)
    out += centre2
    return out


class _GreedyMerge:
    """The greedy rule in O(n²) time and memory (n² distances once, then O(n) per merge),
    group for group the reference's `argmin` over the whole matrix per merge.

    Every group caches its nearest group (the lowest index among equals) over a symmetric
    distance matrix; the closest pair is the row with the smallest cache (the lowest row
    among equals), which is the first minimum of the upper triangle in row-major order: the
    reference's tie rule. A merge rewrites the merged group's row and column and rescans
    only the rows whose nearest group took part in it.

    Merges are made in speculative batches, because numpy's cost per call, not arithmetic,
    would otherwise set the pace. The rows in cache order give disjoint pairs, the order
    the rule would merge them in if no merged group came closer (a row whose nearest group
    is taken is looked at again over the groups left). The batch's merged groups get their
    distances to everything at once, and pair s is kept while its distance is below every
    distance that a group merged before it has to the groups that exist at step s: exactly
    when the rule would make it next. The first pair that fails, and those after it, wait
    for the next batch; a tie fails too, and the cache order settles it there.
    """

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, threshold: float) -> None:
        n = len(boxes)
        self.sums = boxes.copy()  # per group: the sum of its members' boxes
        self.counts = np.ones(n)
        self.ratings = scores.copy()
        self.alive = np.ones(n, dtype=bool)
        self.threshold = threshold
        self.geometry = _geometry(boxes)
        self.plain = _plain(self.geometry)
        self.dist = np.empty((n, n))
        # Row blocks of the upper triangle (the distance is symmetric to the bit: it adds,
        # multiplies and takes min and max of the two boxes alike), small enough for the
        # temporaries to stay in cache.
        for start in range(0, n, _ROWS):
            rows = slice(start, min(start + _ROWS, n))
            block = _distances(self.geometry[:, rows], self.geometry[:, start:], self.plain)
            self.dist[rows, start:] = block
            self.dist[start:, rows] = block.T
        np.fill_diagonal(self.dist, np.inf)
        self.nearest = self.dist.argmin(axis=1) if n else np.zeros(0, dtype=int)
        self.nearest_dist = self.dist[np.arange(n), self.nearest]
        self.batch = _MIN_BATCH

    def run(self) -> None:
        if not self.plain and np.isnan(self.dist).any():  # the reference stops at a NaN
            return
        while (pairs := self._candidates())[0] and self._merge(*pairs):
            if 4 * self.alive.sum() <= 3 * len(self.alive) and len(self.alive) >= _COMPACT_FROM:
                self._compact()

    def _candidates(self) -> tuple[list[int], list[int], list[float]]:
        """Up to `batch` disjoint pairs (i, j), i < j, within the threshold, in the order
        the rule would merge them if no merged group came closer."""
        near = self.nearest_dist
        head, bound = _smallest(near, 4 * self.batch)
        rows, pairs, dists = head.tolist(), self.nearest[head].tolist(), near[head].tolist()
        firsts: list[int] = []
        seconds: list[int] = []
        kept_dists: list[float] = []
        taken: list[int] = []
        # Rows whose nearest group was taken, with their nearest among the others; only
        # those nearer than `bound` can come before the rows beyond the head.
        again: list[tuple[float, int, int]] = []
        k = 0
        while len(firsts) < self.batch:
            if again and (k == len(rows) or again[0][:2] < (dists[k], rows[k])):
                d, i, j = heapq.heappop(again)
                if not d < bound:
                    break
            elif k < len(rows):
                d, i, j = dists[k], rows[k], pairs[k]
                k += 1
            else:
                break
            if not d <= self.threshold:
                break
            if i in taken:  # merged in this batch: its cached pair is gone
                continue
            if j in taken:
                row = self.dist[i].copy()
                row[taken] = np.inf
                j = int(row.argmin())
                heapq.heappush(again, (float(row[j]), i, j))
                continue
            firsts.append(i)
            seconds.append(j)
            kept_dists.append(d)
            taken += (i, j)
        return firsts, seconds, kept_dists

    def _merge(self, firsts: list[int], seconds: list[int], dists: list[float]) -> bool:
        """Make the batch's pairs that the rule makes next (the first always); False when
        the merging is over (a NaN distance ends it, as the reference's argmin stops at it)."""
        i, j = np.array(firsts), np.array(seconds)
        n = len(self.alive)
        sums = self.sums[i] + self.sums[j]
        counts = self.counts[i] + self.counts[j]
        merged = _geometry(sums / counts[:, None])
        self.plain = self.plain and _plain(merged)
        both = _distances(merged, np.concatenate([self.geometry, merged], axis=1), self.plain)
        to_old, to_new = both[:, :n], both[:, n:]
        to_old[:, ~self.alive] = np.inf
        np.fill_diagonal(to_new, np.inf)
        kept = self._kept(to_old, to_new, i, j, np.array(dists)) if len(i) > 1 else 1
        # The next batch: a little longer than this one's run of merges.
        self.batch = min(_MAX_BATCH, max(_MIN_BATCH, kept + _MIN_BATCH // 2))
        i, j = i[:kept], j[:kept]
        self.sums[i] = sums[:kept]
        self.counts[i] = counts[:kept]
        self.ratings[i] += self.ratings[j]
        self.alive[j] = False
        self.geometry[:, i] = merged[:, :kept]
        rows = to_old[:kept]
        rows[:, i] = to_new[:kept, :kept]
        rows[:, j] = np.inf
        self.dist[:, j] = np.inf
        self.dist[i] = rows
        self.dist[:, i] = rows.T
        self._update_nearest(i, j, rows)
        return not np.isnan(rows).any()

    def _kept(self, to_old, to_new, i, j, dists) -> int:
        """How many of the batch's pairs, from the first, the rule makes in a row: pair s
        while its distance is below every distance of a group merged before it to the
        groups of step s (the other merged ones, the members of pairs s.. and all others)."""
        k = len(i)
        members_i, members_j = to_old[:, i], to_old[:, j]  # [l, t]: to pair t's members
        to_old[:, i] = np.inf
        to_old[:, j] = np.inf
        to_others = to_old.min(axis=1)
        to_old[:, i], to_old[:, j] = members_i, members_j
        before = _before(k)  # [l, s]: l merged before s
        # Pair t's members exist until step t: merged group l sees them at steps l < s <= t.
        to_members = np.minimum(members_i, members_j)
        until = np.minimum.accumulate(to_members[:, ::-1], axis=1)[:, ::-1]
        bound = np.where(before, until, np.inf).min(axis=0)
        # Merged groups l < m both exist from step m + 1 on; the others at every step.
        among_merged = np.where(before, to_new, np.inf).min(axis=0)
        seen = np.minimum.accumulate(np.minimum(to_others, among_merged))
        np.minimum(bound[1:], seen[:-1], out=bound[1:])
        ok = dists < bound  # NaN compares False: the batch ends before it
        ok[0] = True
        return k if ok.all() else int(ok.argmin())

    def _update_nearest(self, i: np.ndarray, j: np.ndarray, rows: np.ndarray) -> None:
        """The caches after groups j joined groups i, whose new distances are `rows`."""
        n = len(self.alive)
        touched = np.zeros(n, dtype=bool)
        touched[i] = True
        touched[j] = True
        self.nearest_dist[j] = np.inf
        stale = np.flatnonzero(self.alive & touched[self.nearest])
        # The others keep their nearest unless a merged group is now nearer (or as near
        # with a lower index); stale rows and the merged ones are set below.
        by_index = np.argsort(i)
        first = rows[by_index].argmin(axis=0)
        new_dist = rows[by_index[first], np.arange(n)]
        new_index = i[by_index[first]]
        near = self.nearest_dist
        better = (new_dist < near) | ((new_dist == near) & (new_index < self.nearest))
        better &= self.alive
        near[better] = new_dist[better]
        self.nearest[better] = new_index[better]
        for group in (i, stale):
            block = self.dist[group]
            nearest = block.argmin(axis=1)
            self.nearest[group] = nearest
            near[group] = block[np.arange(len(group)), nearest]

    def _compact(self) -> None:
        """Drop the dead groups (their order, and so every tie, is kept)."""
        keep = np.flatnonzero(self.alive)
        renumber = np.zeros(len(self.alive), dtype=int)
        renumber[keep] = np.arange(len(keep))
        self.dist = self.dist[np.ix_(keep, keep)]
        # A group with nothing finite left may point at a dead one; its inf never merges.
        self.nearest = renumber[self.nearest[keep]]
        self.nearest_dist = self.nearest_dist[keep]
        for name in ("sums", "counts", "ratings", "alive"):
            setattr(self, name, getattr(self, name)[keep])
        self.geometry = self.geometry[:, keep]


def _smallest(values: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """The positions of about `count` smallest values in (value, position) order, and a
    bound: every value left out is >= it (all of them, sorted, where ties straddle the cut)."""
    if count < len(values):
        part = np.argpartition(values, count)
        bound = values[part[count]]
        head = part[:count][values[part[:count]] < bound]
        if 2 * len(head) >= count:
            head.sort()
            return head[np.argsort(values[head], kind="stable")], float(bound)
    return np.argsort(values, kind="stable"), np.inf


@functools.cache
def _before(k: int) -> np.ndarray:
    """[l, s]: l < s."""
    return np.arange(k)[:, None] < np.arange(k)[None, :]


_LARGEST = 1e100  # |coordinates| up to this: no square or sum overflows
_SMALLEST_SIDE = 1e-100  # widths and heights from this: no square underflows to 0
_ROWS = 32  # rows of the first distance matrix computed at once
_MIN_BATCH, _MAX_BATCH = 8, 64
_COMPACT_FROM = 64  # smaller matrices are not worth copying


def merge_boxes(boxes, scores, threshold: float = DEFAULT_MERGE_THRESHOLD) -> list[MergedBox]:
    """Greedy merging of one class's boxes rated by `scores` (one per box); the groups, best
    rated first."""
    boxes = bx.as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    if not np.isfinite(threshold):
        raise ValueError(f"the merge threshold must be a finite number, got {threshold}")
    merge = _GreedyMerge(boxes, scores, float(threshold))
    merge.run()
    groups = [
        MergedBox(
            tuple(float(v) for v in merge.sums[k] / merge.counts[k]),
            float(merge.ratings[k]),
            int(merge.counts[k]),
        )
        for k in np.flatnonzero(merge.alive)
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
