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

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ...data import boxes as bx

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


def _geometry(boxes: np.ndarray, out: np.ndarray) -> float:
    """Fills `out` (11, N) with each box's x0, y0, −x0, −y0, −x1, −y1, x1, y1, centre x,
    centre y and area (as bx.to_centre_size and bx.areas compute them); returns the smallest
    side (inf for no box)."""
    t = boxes.T
    np.multiply(t[_CORNERS], _SIGNS, out=out[:8])  # negating is exact
    np.add(t[:2], t[2:], out=out[8:10])
    out[8:10] /= 2
    sides = t[2:] - t[:2]
    smallest = float(sides.min(initial=INF))
    np.maximum(sides, 0.0, out=sides)
    np.multiply(sides[0], sides[1], out=out[10])
    return smallest


def _distances(a: np.ndarray, b: np.ndarray, plain: bool) -> np.ndarray:
    """(K, N) match distances between boxes of geometries a (11, K) and b (11, N): the
    floating-point operations of `match_distance`, so that every distance, and so every tie,
    is the same to the last bit (the tests hold it to the reference). With the negated
    corners one maximum gives both boxes' intersection and enclosure, and a − b is the same
    float as −(b − a). `plain` (see `_GreedyMerge`): every union and diagonal is positive,
    no mask is needed."""
    a, b = a[:, :, None], b[:, None, :]
    # max x0, max y0, −min x0, −min y0, −min x1, −min y1, max x1, max y1
    corners = np.maximum(a[:8], b[:8])
    t = np.empty((6, *corners.shape[1:]))
    np.add(corners[:4], corners[4:], out=t[:4])  # −w, −h of the intersection, w, h of the enclosure
    np.subtract(a[8:10], b[8:10], out=t[4:])  # centre x, y differences
    np.minimum(t[:2], 0.0, out=t[:2])  # −max(w, 0), −max(h, 0)
    np.multiply(t[0], t[1], out=t[0])  # the intersection's area
    np.multiply(t[2:], t[2:], out=t[2:])
    np.add(t[2::2], t[3::2], out=t[2::2])  # the enclosure's diagonal², the centre distance²
    np.add(a[10], b[10], out=t[1])
    t[1] -= t[0]  # the union's area
    if plain:
        np.divide(t[::4], t[1:3], out=t[::4])  # IoU, spread
    else:
        positive = t[1:3] > 0
        np.divide(t[::4], t[1:3], out=t[::4], where=positive)
        t[::4][~positive] = 0.0
    out = np.subtract(1.0, t[0], out=t[0])
    out += t[4]
    return out


class _GreedyMerge:
    """The greedy rule in O(n²) time and memory (n² distances once, then O(n) per merge),
    group for group the reference's `argmin` over the whole matrix per merge.

    Every group caches its nearest group (the lowest index among equals) over a symmetric
    distance matrix; a merge writes the merged group's row and column and rescans only the
    rows whose nearest group took part in it. Other rows keep their cache even when the new
    group is nearer: the pair is then in the new group's own cache (it looked at every
    group), so the closest pair is always the smallest cached (distance, lower index, higher
    index), the first minimum of the upper triangle in row-major order: the reference's tie
    rule.

    Merges are made in speculative batches, because numpy's cost per call, not arithmetic,
    would otherwise set the pace. The cached pairs in that order give disjoint pairs, the
    order the rule would merge them in if no merged group came closer (a group whose nearest
    is taken is looked at again over the groups left). The batch's merged groups get their
    distances to every live group at once, and pair s is kept while its distance is below
    every distance of a group merged before it (to anything but its own members): then no
    pair that involves a merged group can come first. The first pair that fails, and those
    after it, wait for the next batch; a tie fails too, and the caches settle it there.

    `plain`: the boxes' coordinates lie within _LARGEST / 2 (so do their means) and every
    box, and every merged box so far, has sides of at least _SMALLEST_SIDE, so no union or
    diagonal is 0 and no square overflows: `_distances` needs no mask.
    """

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, threshold: float) -> None:
        n = len(boxes)
        self.threshold = threshold
        self.state = np.empty((n, 6))  # per group: its members' summed boxes; members; rating
        self.state[:, :4], self.state[:, 4], self.state[:, 5] = boxes, 1.0, scores
        self.alive = np.ones(n, dtype=bool)
        self.geometry = np.empty((11, n))
        smallest = _geometry(boxes, self.geometry)
        self.plain = bool(np.abs(boxes).max(initial=0.0) <= _LARGEST / 2) and (
            smallest >= _SMALLEST_SIDE
        )
        self.dist = np.empty((n, n))
        # Row blocks of the upper triangle (the distance is symmetric to the bit: it adds,
        # multiplies and takes min and max of the two boxes alike).
        for start in range(0, n, _ROWS):
            rows = slice(start, min(start + _ROWS, n))
            block = _distances(self.geometry[:, rows], self.geometry[:, start:], self.plain)
            self.dist[rows, start:] = block
            self.dist[start:, rows] = block.T
        np.fill_diagonal(self.dist, INF)
        self.nearest = self.dist.argmin(axis=1) if n else np.zeros(0, dtype=int)
        self.nearest_dist = self.dist.min(axis=1, initial=INF)
        self.batch = _MIN_BATCH
        self.dead = 0

    def run(self) -> None:
        if not self.plain and np.isnan(self.dist).any():  # the reference stops at a NaN
            return
        while (pairs := self._candidates())[0] and self._merge(*pairs):
            if 2 * self.dead >= len(self.alive) >= _COMPACT_FROM:
                self._compact()

    def _candidates(self) -> tuple[list[int], list[int], list[float]]:
        """Up to `batch` disjoint pairs (i, j), i < j, within the threshold, in the order
        the rule would merge them if no merged group came closer."""
        near = self.nearest_dist
        head, bound = _smallest(near, 4 * self.batch)
        other, dists = self.nearest[head], near[head]
        first, second = np.minimum(head, other), np.maximum(head, other)
        order = np.lexsort((second, first, dists))
        cached = zip(*(v[order].tolist() for v in (dists, first, second, head)), strict=True)
        firsts: list[int] = []
        seconds: list[int] = []
        kept_dists: list[float] = []
        taken: set[int] = set()
        # Groups whose nearest was taken, with their nearest among the others; only those
        # nearer than `bound` can come before the groups beyond the head.
        again: list[tuple[float, int, int, int]] = []
        following = next(cached, None)
        while len(firsts) < self.batch:
            if again and (following is None or again[0] < following):
                d, i, j, row = heapq.heappop(again)
                if not d < bound:
                    break
            elif following is not None:
                d, i, j, row = following
                following = next(cached, None)
            else:
                break
            if not d <= self.threshold:
                break
            if row in taken:  # merged in this batch: its cached pair is gone
                continue
            if i in taken or j in taken:
                dist = self.dist[row].copy()
                dist[list(taken)] = INF
                j = int(dist.argmin())
                heapq.heappush(again, (float(dist[j]), min(row, j), max(row, j), row))
                continue
            firsts.append(i)
            seconds.append(j)
            kept_dists.append(d)
            taken.update((i, j))
        return firsts, seconds, kept_dists

    def _merge(self, firsts: list[int], seconds: list[int], dists: list[float]) -> bool:
        """Make the batch's pairs that the rule makes next (the first always); False when
        the merging is over (a NaN distance ends it, as the reference's argmin stops at it)."""
        i, j = np.array(firsts), np.array(seconds)
        n, k = len(self.alive), len(firsts)
        live = np.flatnonzero(self.alive)
        m = len(live)
        sums = self.state[i] + self.state[j]
        geometry = np.empty((11, m + k))  # the live groups', then the merged ones'
        geometry[:, :m] = self.geometry[:, live]
        if _geometry(sums[:, :4] / sums[:, 4:5], geometry[:, m:]) < _SMALLEST_SIDE:
            self.plain = False
        rows = _distances(geometry[:, m:], geometry, self.plain)
        own = np.arange(k)
        rows[own, m + own] = INF
        if k > 1:
            rows[own, np.searchsorted(live, i)] = INF
            rows[own, np.searchsorted(live, j)] = INF
            seen = np.minimum.accumulate(rows.min(axis=1))
            ok = np.array(dists[1:]) < seen[:-1]  # NaN compares False: the batch ends there
            if not ok.all():
                k = 1 + int(ok.argmin())
                i, j = i[:k], j[:k]
        # The next batch: a little longer than this one's run of merges.
        self.batch = min(_MAX_BATCH, max(_MIN_BATCH, k + _MIN_BATCH // 2))
        new = np.full((k, n), INF)
        new[:, live] = rows[:k, :m]
        new[:, i] = rows[:k, m : m + k]
        new[:, j] = INF
        self.state[i] = sums[:k]
        self.alive[j] = False
        self.dead += k
        self.geometry[:, i] = geometry[:, m : m + k]
        self.dist[i] = new
        self.dist[:, i] = new.T
        self.dist[:, j] = INF
        self.nearest_dist[j] = INF
        # The rows whose cache named a merged group, and the merged groups themselves.
        touched = np.zeros(n, dtype=bool)
        touched[i] = True
        touched[j] = True
        stale = touched[self.nearest]
        stale &= self.alive
        stale[i] = True
        stale = np.flatnonzero(stale)
        block = self.dist[stale]
        self.nearest[stale] = block.argmin(axis=1)
        self.nearest_dist[stale] = block.min(axis=1)
        return self.plain or not np.isnan(new).any()

    def _compact(self) -> None:
        """Drop the dead groups (their order, and so every tie, is kept)."""
        keep = np.flatnonzero(self.alive)
        renumber = np.zeros(len(self.alive), dtype=int)
        renumber[keep] = np.arange(len(keep))
        self.dist = self.dist.take(keep, axis=0).take(keep, axis=1)
        # A group with nothing finite left may point at a dead one; its inf never merges.
        self.nearest = renumber[self.nearest[keep]]
        self.nearest_dist = self.nearest_dist[keep]
        self.state, self.alive = self.state[keep], self.alive[keep]
        self.geometry = self.geometry[:, keep]
        self.dead = 0


def _smallest(values: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """The positions of about `count` smallest values, and a bound: every value left out
    is >= it (all of them where ties straddle the cut)."""
    if count < len(values):
        part = np.argpartition(values, count)
        bound = values[part[count]]
        head = part[:count][values[part[:count]] < bound]
        if 2 * len(head) >= count:
            return head, float(bound)
    return np.arange(len(values)), INF


INF = np.inf
_CORNERS = [0, 1, 0, 1, 2, 3, 2, 3]  # x0 y0 x0 y0 x1 y1 x1 y1, signed by _SIGNS
_SIGNS = np.array([1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0, 1.0])[:, None]
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
    state = merge.state[merge.alive]
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
