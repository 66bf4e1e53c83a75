"""The greedy merge's loop (merge.py's rule), compiled by numba: O(n²) time and memory.

numpy's cost per call, not its arithmetic, set the pace of the merge when it was written in
numpy (about 30 µs a merge at 1,200 boxes, 38 ms in all on the 2-core machine); one loop
compiled once does the same merges in about 11 ms. The loop releases the GIL (`nogil`), so
protocol 2's merges in their worker thread run beside the next image's forward passes.

Every distance is computed with the floating-point operations of `merge.match_distance`, in
its order (no fused multiply-adds: numba does not contract without `fastmath`), and min and
max carry a NaN as numpy's do, so each distance, and so each tie, is the same float to the
last bit: tests/test_box_merge.py holds the loop to the reference merge and the distances to
match_distance.
"""

from __future__ import annotations

import numpy as np
from numba import njit

INF = np.inf


def _compiled(**options):
    """njit with numba's on-disk cache (the first call compiles for a few seconds, later
    processes read the cache), or without it where numba finds no folder it can write (a
    read-only install and home: each process then compiles once), or where writing or
    reading the cache fails on the first call (a full disk): compiled again without it."""

    def wrap(fn):
        try:
            cached = njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function …: no locator available"
            return njit(**options)(fn)
        plain = []

        def call(*args):
            if not plain:
                try:
                    return cached(*args)
                except OSError:  # the cache's file, before the loop ran (it does no I/O)
                    plain.append(njit(**options)(fn))
            return plain[0](*args)

        return call

    return wrap


@njit(inline="always")
def _max(a, b):
    return a if a >= b or a != a else b  # np.maximum: a NaN either side is the result


@njit(inline="always")
def _min(a, b):
    return a if a <= b or a != a else b


@njit(inline="always")
def _distance(g, a, b):
    """Rule 2's distance between the mean boxes of groups a and b, from their geometry rows
    (x0, y0, x1, y1, centre x, centre y, area), as match_distance computes it."""
    iw = _max(_min(g[a, 2], g[b, 2]) - _max(g[a, 0], g[b, 0]), 0.0)
    ih = _max(_min(g[a, 3], g[b, 3]) - _max(g[a, 1], g[b, 1]), 0.0)
    inter = iw * ih
    union = (g[a, 6] + g[b, 6]) - inter
    iou = inter / union if union > 0 else 0.0
    dx = g[a, 4] - g[b, 4]
    dy = g[a, 5] - g[b, 5]
    ew = _max(g[a, 2], g[b, 2]) - _min(g[a, 0], g[b, 0])
    eh = _max(g[a, 3], g[b, 3]) - _min(g[a, 1], g[b, 1])
    diag2 = ew * ew + eh * eh
    spread = (dx * dx + dy * dy) / diag2 if diag2 > 0 else 0.0
    return (1.0 - iou) + spread


@njit(inline="always")
def _set_box(g, k, x0, y0, x1, y1):
    g[k, 0], g[k, 1], g[k, 2], g[k, 3] = x0, y0, x1, y1
    g[k, 4] = (x0 + x1) / 2
    g[k, 5] = (y0 + y1) / 2
    g[k, 6] = _max(x1 - x0, 0.0) * _max(y1 - y0, 0.0)


@njit(inline="always")
def _nearest(dist, r):
    """Row r's smallest distance and its column, the lowest among equals."""
    best, at = INF, 0
    for c in range(dist.shape[1]):
        if dist[r, c] < best:
            best, at = dist[r, c], c
    return at, best


@_compiled()
def distances(a, b):
    """(N, M) distances between boxes a and b, as the loop computes them (for the tests)."""
    g = np.empty((len(a) + len(b), 7))
    for k, box in enumerate(np.concatenate((a, b))):
        _set_box(g, k, box[0], box[1], box[2], box[3])
    out = np.empty((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = _distance(g, i, len(a) + j)
    return out


@_compiled(nogil=True)
def greedy_merge(state, alive, threshold):
    """Merges in place, by merge.py's rule, the groups of `state` (n, 6): per group the sum
    of its members' boxes, their number and their summed rating; `alive` marks the groups
    left. Group j joins group i (i < j), as in the reference.

    Every group caches its nearest group (the lowest index among equals) and its distance;
    the caches are exact after every merge, so the closest pair is the smallest cached
    (distance, lower index, higher index): the reference's first minimum of the upper
    triangle in row-major order. A merge recomputes one row and rescans only the rows whose
    nearest was merged away and is now farther. A NaN distance stops the merging, as the
    reference's argmin stops at it (before any merge none is NaN, so after one only the
    merged group's row can hold one).
    """
    n = state.shape[0]
    g = np.empty((n, 7))
    for k in range(n):
        c = state[k, 4]
        _set_box(g, k, state[k, 0] / c, state[k, 1] / c, state[k, 2] / c, state[k, 3] / c)
    dist = np.empty((n, n))
    for i in range(n):
        dist[i, i] = INF
        for j in range(i + 1, n):
            d = _distance(g, i, j)
            if d != d:
                return
            dist[i, j] = d
            dist[j, i] = d
    nearest = np.zeros(n, np.int64)
    nearest_dist = np.full(n, INF)
    for r in range(n):
        nearest[r], nearest_dist[r] = _nearest(dist, r)
    while True:
        best, i, j = INF, -1, -1
        for r in range(n):
            d = nearest_dist[r]
            if d <= threshold and d <= best:
                lo, hi = min(r, nearest[r]), max(r, nearest[r])
                if d < best or lo < i or (lo == i and hi < j):
                    best, i, j = d, lo, hi
        if i < 0:
            return
        state[i] += state[j]
        alive[j] = False
        nearest_dist[j] = INF
        c = state[i, 4]
        _set_box(g, i, state[i, 0] / c, state[i, 1] / c, state[i, 2] / c, state[i, 3] / c)
        dist[j, :] = INF
        dist[:, j] = INF
        stop = False
        for r in range(n):
            if r == i or not alive[r]:
                continue
            d = _distance(g, i, r)
            stop |= d != d
            dist[i, r] = d
            dist[r, i] = d
            near = nearest[r]
            if near in (i, j):
                # Its nearest moved or left. Where the merged group is no farther than the
                # nearest was, it is the nearest now (lowest index too: the columns at the
                # old distance lay beyond the old nearest, and i < j); else look again.
                if d <= nearest_dist[r]:
                    nearest[r], nearest_dist[r] = i, d
                else:
                    nearest[r], nearest_dist[r] = _nearest(dist, r)
            elif d < nearest_dist[r] or (d == nearest_dist[r] and i < near):
                nearest[r], nearest_dist[r] = i, d
        if stop:
            return
        nearest[i], nearest_dist[i] = _nearest(dist, i)
