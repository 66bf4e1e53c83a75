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


def _distances(
    a: np.ndarray, b: np.ndarray, plain: bool, work: np.ndarray | None = None
) -> np.ndarray:
    """(K, N) match distances between boxes of geometries a (11, K) and b (11, N): the
    floating-point operations of `match_distance`, so that every distance, and so every tie,
    is the same to the last bit (the tests hold it to the reference). With the negated
    corners one maximum gives both boxes' intersection and enclosure, and a − b is the same
    float as −(b − a). `plain` (see `_GreedyMerge`): every union and diagonal is positive,
    no mask is needed. `work`: room for 14·K·N floats to compute in (the result is a view of
    it), so that calls in a loop do not map fresh temporaries."""
    k, n = a.shape[1], b.shape[1]
    work = (np.empty(14 * k * n) if work is None else work[: 14 * k * n]).reshape(14, k, n)
    corners, t = work[:8], work[8:]
    a, b = a[:, :, None], b[:, None, :]
    # max x0, max y0, −min x0, −min y0, −min x1, −min y1, max x1, max y1
    np.maximum(a[:8], b[:8], out=corners)
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
        self.work = np.empty(14 * max(min(_ROWS, n) * n, _MAX_BATCH * (n + _CHAINS + _MAX_BATCH)))
        # Row blocks of the upper triangle (the distance is symmetric to the bit: it adds,
        # multiplies and takes min and max of the two boxes alike).
        for start in range(0, n, _ROWS):
            rows = slice(start, min(start + _ROWS, n))
            block = _distances(
                self.geometry[:, rows], self.geometry[:, start:], self.plain, self.work
            )
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
        """Make the batch's pairs, and the merges of merged groups between them, that the
        rule makes next (the first pair always); False when the merging is over (a NaN
        distance ends it, as the reference's argmin stops at it).

        The batch's groups (its pairs' merged groups, then `_CHAINS` slots for merged groups
        merging again) have rows and columns in `rows`: the live groups' columns first, then
        the slots', then the pairs'; a group's row r is column `live + r`, so that the block
        of merged groups is square and symmetric. A group that ends, or a slot not yet used,
        is all inf. Pairs p and after are still to be made."""
        i, j = np.array(firsts), np.array(seconds)
        n, k = len(self.alive), len(firsts)
        live = np.flatnonzero(self.alive)
        m = len(live)
        pairs = self.state[i] + self.state[j]
        merged = np.empty((11, k))
        if _geometry(pairs[:, :4] / pairs[:, 4:5], merged) < _SMALLEST_SIDE:
            self.plain = False
        # Without `plain`, a NaN may stand anywhere: the batch ends at its first failure.
        x = _CHAINS if self.plain else 0
        c0 = m + x  # the pairs' first column
        size = x + k
        sums = np.empty((size, 6))
        sums[x:] = pairs
        geometry = np.empty((11, c0 + k))
        geometry[:, :m] = self.geometry[:, live]
        geometry[:, m:c0] = geometry[:, :1]  # any box: the slots' columns are not read
        geometry[:, c0:] = merged
        rows = np.full((size, c0 + k), INF)
        rows[x:] = _distances(merged, geometry, self.plain, self.work)
        rows[x:, m:c0] = INF
        own = np.arange(k)
        pi, pj = np.searchsorted(live, i), np.searchsorted(live, j)
        rows[x + own, c0 + own] = INF
        rows[x + own, pi] = INF
        rows[x + own, pj] = INF
        # Every pair's nearest, including its distance to pairs after it and to groups that
        # end before it: never above its true nearest at the time it is made.
        nearest = rows[x:].min(axis=1)
        dead = np.zeros(c0 + k, dtype=bool)
        dead[m:c0] = True  # unused slots
        index = np.empty(c0 + k, dtype=int)  # each column's group: the lowest member index
        index[:m], index[c0:] = live, i
        d = np.array(dists[:k])
        # Each merged group's nearest over the groups there are (a slot's or an ended
        # group's: inf), kept as groups end and begin, so that the smallest is exact.
        low = np.full(size, INF)
        at = np.zeros(size, dtype=int)
        p = used = 0
        while p < k:
            floor = low[: x + p].min(initial=INF)
            # Pair s is next if it is below every merged group's distances so far.
            bound = np.minimum.accumulate(np.concatenate(([floor], nearest[p : k - 1])))
            ok = d[p:] < bound
            s = k if ok.all() else p + int(ok.argmin())
            if s > p:
                ended = np.concatenate((pi[p:s], pj[p:s]))
                dead[ended] = True
                rows[:, ended] = INF
                new = rows[: x + p, c0 + p : c0 + s]  # the groups so far, by the new ones
                if new.size:
                    _nearer(low[: x + p], at[: x + p], new.min(axis=1), new, c0 + p)
                made = rows[x + p : x + s, : c0 + s]
                at[x + p : x + s] = made.argmin(axis=1)
                low[x + p : x + s] = made[np.arange(s - p), at[x + p : x + s]]
                p = s
                _look_again(rows, low, at, dead, x + p, c0 + p)
                continue
            # Pair p fails: a merged group's distance is the smallest; the pair is next.
            r = int(low[: x + p].argmin())
            col = int(at[r])
            grouped = col >= m  # the other is a group merged in this batch too
            if (
                not floor < d[p]  # a tie with pair p (or a NaN): the caches settle it
                or used == x
                # a tie among the merged groups
                or np.count_nonzero(low[: x + p] == floor) != 1 + grouped
                or np.count_nonzero(rows[r, : c0 + p] == floor) != 1
                or (grouped and np.count_nonzero(rows[col - m, : c0 + p] == floor) != 1)
                # a member of a pair still to be made
                or (not grouped and ((pi[p:] == col).any() or (pj[p:] == col).any()))
            ):
                break
            # Merged group r and group col merge, into slot `used`.
            slot, used = used, used + 1
            sums[slot] = sums[r] + (sums[col - m] if grouped else self.state[live[col]])
            index[m + slot] = min(index[m + r], index[col])
            ended = [m + r, col]
            dead[ended] = True
            rows[[r, col - m] if grouped else r] = INF
            rows[:, ended] = INF
            low[[r, col - m] if grouped else r] = INF
            column = geometry[:, m + slot : m + slot + 1]
            mean = sums[slot : slot + 1, :4] / sums[slot : slot + 1, 4:5]
            if _geometry(mean, column) < _SMALLEST_SIDE:
                self.plain = False
            row = _distances(column, geometry, self.plain, self.work)[0]
            row[dead] = INF
            row[m + slot] = INF
            dead[m + slot] = False
            rows[slot] = row
            rows[:, m + slot] = row[m:]
            np.minimum(nearest[p:], row[c0 + p :], out=nearest[p:])
            at[slot] = row[: c0 + p].argmin()
            low[slot] = row[at[slot]]
            others = row[m : m + x + p]
            _nearer(low[: x + p], at[: x + p], others, None, m + slot)
            _look_again(rows, low, at, dead, x + p, c0 + p)
        # The next batch: a little longer than this one's run of pairs.
        self.batch = min(_MAX_BATCH, max(_MIN_BATCH, p + _MIN_BATCH // 2))
        # The batch's groups that remain take the lowest index of their members; the other
        # members end.
        groups = np.flatnonzero(~dead[m : c0 + p])
        kept = index[m + groups]
        columns = np.flatnonzero(~dead[: c0 + p])
        new = np.full((len(groups), n), INF)
        new[:, index[columns]] = rows[groups][:, columns]
        ends = np.zeros(n, dtype=bool)
        ends[live[dead[:m]]] = True
        ends[kept] = False
        ends = np.flatnonzero(ends)
        self.state[kept] = sums[groups]
        self.alive[ends] = False
        self.dead += len(ends)
        self.geometry[:, kept] = geometry[:, m + groups]
        self.dist[kept] = new
        self.dist[:, kept] = new.T
        self.dist[:, ends] = INF
        self.nearest_dist[ends] = INF
        # The rows whose cache named a group of the batch, and the batch's groups.
        touched = np.zeros(n, dtype=bool)
        touched[kept] = True
        touched[ends] = True
        stale = touched[self.nearest]
        stale &= self.alive
        stale[kept] = True
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


def _nearer(low: np.ndarray, at: np.ndarray, values: np.ndarray, block, first: int) -> None:
    """Rows' nearest (`low`, at column `at`) given new columns from `first`: `values`,
    the rows' smallest among them (one column when `block` is None, else `block`'s
    argmin). Equal distances keep the earlier column."""
    nearer = values < low
    if nearer.any():
        low[nearer] = values[nearer]
        at[nearer] = first if block is None else first + block[nearer].argmin(axis=1)


def _look_again(rows, low, at, dead, count: int, width: int) -> None:
    """The first `count` rows whose nearest ended: their nearest over the first `width`
    columns again."""
    stale = np.flatnonzero(dead[at[:count]] & (low[:count] < INF))
    if len(stale):
        block = rows[stale, :width]
        at[stale] = block.argmin(axis=1)
        low[stale] = block[np.arange(len(stale)), at[stale]]


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
_CHAINS = 8  # merged groups that may merge again within a batch


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
