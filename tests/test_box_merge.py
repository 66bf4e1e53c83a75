"""Greedy box merging (runtime/eval/localise/merge.py) against the reference it replaced.

tests/box_merge_reference.py is the merge as first written: one `argmin` over the whole
distance matrix per merge. The fast one must return the same groups, in the same order, with
the same floats: ties (equal distances, equal ratings), identical boxes, empty and inverted
boxes, one box and none.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from box_merge_reference import merge_boxes_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vggspec.runtime.eval.localise.greedy import distances
from vggspec.runtime.eval.localise.merge import match_distance, merge_boxes

THRESHOLDS = [0.0, 0.25, 0.5, 0.9, 1.0, 1.25, 2.0]


@st.composite
def cases(draw):
    """(boxes, scores, threshold): boxes on a small integer grid (many equal distances,
    identical boxes, empty and inverted ones), copies of a few boxes, small shifts of one box,
    or any floats."""
    n = draw(st.integers(0, 40))
    kind = draw(st.sampled_from(["grid", "copies", "shifts", "floats"]))
    if kind == "grid":
        boxes = draw(st.lists(st.lists(st.integers(-2, 8), min_size=4, max_size=4), min_size=n,
                              max_size=n))  # fmt: skip
    elif kind == "copies":
        bases = draw(st.lists(st.lists(st.integers(0, 20), min_size=4, max_size=4), min_size=1,
                              max_size=3))  # fmt: skip
        boxes = [bases[draw(st.integers(0, len(bases) - 1))] for _ in range(n)]
    elif kind == "shifts":
        x0, y0, w, h = draw(st.tuples(*[st.integers(0, 30)] * 2, *[st.integers(1, 30)] * 2))
        shifts = draw(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=n,
                               max_size=n))  # fmt: skip
        boxes = [[x0 + dx, y0 + dy, x0 + w + dx, y0 + h + dy] for dx, dy in shifts]
    else:
        coordinate = st.floats(-100, 400, allow_nan=False, allow_infinity=False)
        boxes = draw(st.lists(st.lists(coordinate, min_size=4, max_size=4), min_size=n,
                              max_size=n))  # fmt: skip
    rating = st.integers(0, 2).map(float) | st.floats(0, 1)
    scores = draw(st.lists(rating, min_size=n, max_size=n))
    boxes = np.array(boxes, dtype=np.float64).reshape(n, 4)
    return boxes, np.array(scores), draw(st.sampled_from(THRESHOLDS))


def _same_as_reference(boxes, scores, threshold) -> None:
    assert merge_boxes(boxes, scores, threshold) == merge_boxes_reference(boxes, scores, threshold)


@settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_the_same_groups_as_the_reference(case):
    _same_as_reference(*case)


@pytest.mark.slow  # the 1,000-case sibling above runs by default
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_the_same_groups_as_the_reference_on_10000_cases(case):
    _same_as_reference(*case)


def _random_case(rng: np.random.Generator):
    """Larger sets than hypothesis draws (up to 250 boxes: batches of merges and the
    compaction of the distance matrix), from the same kinds and from clusters."""
    n = int(rng.integers(1, 60)) if rng.random() < 0.8 else int(rng.integers(60, 250))
    kind = rng.integers(4)
    if kind == 0:  # a small grid: ties, copies, empty and inverted boxes
        boxes = rng.integers(-2, 12, (n, 4)).astype(float)
    elif kind == 1:  # clusters around a few objects
        xy = rng.uniform(0, 300, (3, 2))
        objects = np.concatenate([xy, xy + rng.uniform(20, 200, (3, 2))], axis=1)
        pick = rng.integers(0, 3, n)
        size = (objects[pick, 2] - objects[pick, 0])[:, None]
        boxes = objects[pick] + rng.normal(0, 0.1, (n, 4)) * size
    elif kind == 2:  # boxes anywhere
        xy = rng.uniform(0, 400, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 300, (n, 2))], axis=1)
    else:  # one box moved by whole pixels: many equal distances
        boxes = np.array([10.0, 20.0, 60.0, 50.0]) + np.repeat(rng.integers(-4, 5, (n, 2)), 2, 1)
    scores = rng.integers(0, 3, n).astype(float) if rng.random() < 0.5 else rng.random(n)
    return boxes, scores, float(rng.choice(THRESHOLDS))


def test_the_same_groups_on_1000_random_sets():
    rng = np.random.default_rng(0)
    for _ in range(1_000):
        _same_as_reference(*_random_case(rng))


@pytest.mark.slow  # the 1,000-set sibling above runs by default
def test_the_same_groups_on_10000_random_sets():
    rng = np.random.default_rng(1)
    for _ in range(10_000):
        _same_as_reference(*_random_case(rng))


@pytest.mark.parametrize("count", [600, pytest.param(1200, marks=pytest.mark.slow)])
def test_the_same_groups_at_the_protocols_scale(count):
    """As many boxes as D-loc gives a class at three scales with flips, two nets fused."""
    rng = np.random.default_rng(count)
    xy = rng.uniform(0, 300, (2, 2))
    objects = np.concatenate([xy, xy + rng.uniform(50, 200, (2, 2))], axis=1)
    near = objects[rng.integers(0, 2, count // 2)]
    near = near + rng.normal(0, 0.08, near.shape) * (near[:, 2:3] - near[:, :1])
    xy = rng.uniform(0, 400, (count - len(near), 2))
    anywhere = np.concatenate([xy, xy + rng.uniform(20, 250, xy.shape)], axis=1)
    boxes = np.concatenate([near, anywhere])
    scores = rng.random(count)
    groups = merge_boxes(boxes, scores)
    assert groups == merge_boxes_reference(boxes, scores)
    assert sum(g.members for g in groups) == count and len(groups) < count // 2


@pytest.mark.parametrize("count", [600, pytest.param(1200, marks=pytest.mark.slow)])
def test_the_same_groups_with_many_ties_at_the_protocols_scale(count):
    """Whole-pixel boxes about three objects, moved and resized by a pixel: most boxes are
    copies of others and most distances equal others, through batches of merges and the
    compaction of the matrix. The ratings are sums of scores that are not whole numbers, in
    the order the members merged: a tie broken otherwise changes their last bits."""
    rng = np.random.default_rng(count + 1)
    pick = rng.integers(0, 3, count)
    xy = rng.integers(0, 200, (3, 2))[pick] + rng.integers(-1, 2, (count, 2))
    wh = rng.integers(20, 120, (3, 2))[pick] + rng.integers(-1, 2, (count, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(float)
    scores = rng.random(count)
    assert len(np.unique(boxes, axis=0)) < count // 2
    distances = match_distance(boxes, boxes)
    assert len(np.unique(distances)) < distances.size // 50
    for threshold in (0.25, 0.5):
        groups = merge_boxes(boxes, scores, threshold)
        assert groups == merge_boxes_reference(boxes, scores, threshold)
        assert len(groups) < count // 4


def test_distances_are_match_distance_to_the_bit():
    """The compiled loop's distances are match_distance's floats exactly, for odd boxes too
    (empty, inverted, points, NaN, squares that overflow): equal distances stay equal, so
    ties break alike, and a NaN is a NaN where numpy's is."""
    rng = np.random.default_rng(0)
    sane = np.concatenate([xy := rng.uniform(0, 50, (40, 2)), xy + rng.uniform(1, 30, (40, 2))], 1)
    odd = rng.integers(-3, 4, (40, 4)).astype(float)  # empty, inverted and point boxes
    odd[:5] = [[0, 0, 0, 0], [1e300, 0, 1e300, 5], [np.nan, 0, 1, 1], [0, np.nan, 1, 1],
               [0, 0, np.inf, 1]]  # fmt: skip
    tiny = sane * 1e-160  # squares that underflow: diagonals of 0
    for boxes in (sane, odd, tiny):
        with np.errstate(over="ignore", invalid="ignore"):
            expected = match_distance(boxes[:7], boxes)
        assert np.isnan(expected).any() == (boxes is odd)
        np.testing.assert_array_equal(distances(boxes[:7], boxes), expected, strict=True)


def test_equal_boxes_are_one_group_in_input_order():
    boxes = np.tile([[3.0, 4.0, 9.0, 8.0]], (100, 1))  # 100: the matrix is compacted too
    groups = merge_boxes(boxes, np.ones(100))
    assert [(g.box, g.rating, g.members) for g in groups] == [((3.0, 4.0, 9.0, 8.0), 100.0, 100)]
    assert merge_boxes([[1, 2, 3, 4]], [0.5]) == merge_boxes_reference([[1, 2, 3, 4]], [0.5])
    assert merge_boxes(np.zeros((0, 4)), []) == []


def test_a_nan_distance_stops_merging_as_in_the_reference():
    """Squares that overflow (a box 1e300 away) make a distance inf / inf = NaN; the
    reference's argmin stops at the first NaN: no merge at all, even of the equal boxes."""
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [1e300, 0, 1e300, 5]]
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(match_distance(boxes, boxes)).any()
        groups = merge_boxes(boxes, [1.0, 2.0, 3.0])
        assert groups == merge_boxes_reference(boxes, [1.0, 2.0, 3.0])
    assert [g.members for g in groups] == [1, 1, 1]


@pytest.mark.parametrize("threshold", [np.inf, np.nan])
def test_a_threshold_that_is_not_a_number_is_refused(threshold):
    # (The reference, given inf, merged the last group with itself forever.)
    with pytest.raises(ValueError, match="finite"):
        merge_boxes([[0, 0, 1, 1], [0, 0, 1, 1]], [1.0, 1.0], threshold)


def test_the_merge_works_where_numba_cannot_write_its_cache(tmp_path):
    """A read-only install and home: numba finds no cache folder and refuses cache=True; the
    loop is then compiled in each process, and merges as before."""
    code = (
        "from numba.core import caching\n"
        "caching.CacheImpl._locator_classes = []\n"
        "from vggspec.runtime.eval.localise.merge import merge_boxes\n"
        "groups = merge_boxes([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], [1, 2, 4])\n"
        "print([g.members for g in groups])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1,", "2]"]


def test_the_merge_works_where_numba_fails_to_write_its_cache(tmp_path):
    """The disk full when numba saves the compiled loop: compiled again without the cache."""
    code = (
        "import errno\n"
        "from numba.core import caching\n"
        "def full(*a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "caching.IndexDataCacheFile.save = full\n"
        "from vggspec.runtime.eval.localise.merge import merge_boxes\n"
        "groups = merge_boxes([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], [1, 2, 4])\n"
        "print([g.members for g in groups])\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}  # nothing cached yet
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1,", "2]"]
