"""Dense box maps, greedy merging and the two localisation errors (Appendix A), by hand."""

from __future__ import annotations

import numpy as np
import pytest
from vggspec.runtime.data.box_augment import centre_crop_geometry, crop_to_image
from vggspec.runtime.data.boxes import decode
from vggspec.runtime.eval.localise.box_maps import dense_boxes, window_offsets
from vggspec.runtime.eval.localise.merge import best_box, match_distance, merge_boxes, union
from vggspec.runtime.eval.localise.scoring import (
    box_is_right,
    gt_class_error,
    top5_error,
    top5_guesses,
    top5_is_right,
)


def test_match_distance_by_hand():
    # IoU 90/110; centres 1 apart; the enclosing box is 11 × 10, diagonal² 221.
    d = match_distance([[0, 0, 10, 10]], [[1, 0, 11, 10]])
    np.testing.assert_allclose(d, [[1 - 90 / 110 + 1 / 221]])
    assert match_distance([[3, 4, 7, 9]], [[3, 4, 7, 9]]).tolist() == [[0.0]]
    # Disjoint boxes: 1 − 0 plus a spread term, below 2.
    far = match_distance([[0, 0, 1, 1]], [[100, 100, 101, 101]])[0, 0]
    assert 1.9 < far < 2.0


def test_two_close_boxes_merge_into_their_mean_with_the_summed_rating():
    groups = merge_boxes([[0, 0, 10, 10], [1, 0, 11, 10]], [0.25, 0.5])
    assert len(groups) == 1
    assert groups[0].box == (0.5, 0.0, 10.5, 10.0)
    assert groups[0].rating == 0.75 and groups[0].members == 2


def test_two_distant_boxes_do_not_merge():
    # IoU 20/180, centres 8 apart, enclosing box 18 × 10: d = 1 − 1/9 + 64/424 ≈ 1.04.
    np.testing.assert_allclose(
        match_distance([[0, 0, 10, 10]], [[8, 0, 18, 10]]), [[1 - 1 / 9 + 64 / 424]]
    )
    groups = merge_boxes([[0, 0, 10, 10], [8, 0, 18, 10]], [0.25, 0.5])
    assert [(g.box, g.rating, g.members) for g in groups] == [
        ((8.0, 0.0, 18.0, 10.0), 0.5, 1),
        ((0.0, 0.0, 10.0, 10.0), 0.25, 1),
    ]
    # The threshold decides: from 1.04 on the same pair merges.
    assert len(merge_boxes([[0, 0, 10, 10], [8, 0, 18, 10]], [0.25, 0.5], threshold=1.03)) == 2
    assert len(merge_boxes([[0, 0, 10, 10], [8, 0, 18, 10]], [0.25, 0.5], threshold=1.04)) == 1


def test_a_merged_box_is_the_mean_of_all_its_members():
    # (0, 1) merge first (the tie with (1, 2) goes to the lower indices), then box 2 joins:
    # the mean of the three, not the mean of [0.5, 0, 10.5, 10] and box 2.
    groups = merge_boxes([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10]], [1, 1, 1])
    assert [(g.box, g.members, g.rating) for g in groups] == [((1.0, 0.0, 11.0, 10.0), 3, 3.0)]


def test_the_rating_decides_which_group_wins():
    cluster = [[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11]]
    lone = [[50, 50, 60, 60]]
    boxes = cluster + lone
    # Three close predictions at 0.2 each (0.6) outvote a lone one at 0.5 ...
    win = best_box(boxes, [0.2, 0.2, 0.2, 0.5])
    assert win.members == 3 and win.rating == pytest.approx(0.6)
    np.testing.assert_allclose(win.box, [1 / 3, 1 / 3, 31 / 3, 31 / 3])
    # ... but not one at 0.7: the same boxes, other scores, the other winner.
    win = best_box(boxes, [0.2, 0.2, 0.2, 0.7])
    assert win.box == (50.0, 50.0, 60.0, 60.0) and win.members == 1


def test_merging_edge_cases():
    assert merge_boxes([], []) == [] and best_box(np.zeros((0, 4)), []) is None
    assert merge_boxes([[1, 2, 3, 4]], [0.5])[0].box == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        merge_boxes([[0, 0, 1, 1], [0, 0, 1, 1]], [1.0])


def test_union_of_several_nets_boxes_before_merging():
    net_a = {3: ([[0, 0, 10, 10]], [0.4]), 7: ([[5, 5, 9, 9]], [0.1])}
    net_b = {3: ([[1, 0, 11, 10], [40, 40, 50, 50]], [0.4, 0.6])}
    fused = union([net_a, net_b])
    assert sorted(fused) == [3, 7]
    assert fused[3][0].tolist() == [[0, 0, 10, 10], [1, 0, 11, 10], [40, 40, 50, 50]]
    assert fused[3][1].tolist() == [0.4, 0.4, 0.6]
    # Neither net alone puts class 3's box on the left; together they do (0.8 > 0.6).
    assert best_box(*net_b[3]).box == (40.0, 40.0, 50.0, 50.0)
    assert best_box(*fused[3]).box == (0.5, 0.0, 10.5, 10.0)


GT = [[0, 0, 10, 10], [20, 20, 40, 40]]  # two boxes of the image's class


def test_a_box_is_right_above_iou_one_half_with_some_gt_box():
    assert box_is_right([20, 20, 40, 40], GT)
    assert box_is_right([0, 0, 10, 11], GT)  # IoU 100/110
    assert not box_is_right([0, 0, 10, 20], GT)  # IoU exactly 0.5 with the first: wrong
    assert not box_is_right([0, 0, 10, 10], [])


def test_protocol_1_gt_class_error_by_hand():
    preds = [[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 20], [100, 100, 110, 110]]
    assert gt_class_error(preds, [GT, GT, GT, GT]) == 0.5
    assert gt_class_error(preds[:2], [GT, GT]) == 0.0
    assert gt_class_error(preds[2:], [GT, GT]) == 1.0
    with pytest.raises(ValueError, match="4 predicted boxes for 3 images"):
        gt_class_error(preds, [GT, GT, GT])


def test_the_ilsvrc_top5_criterion_by_hand():
    right_box = [20, 20, 40, 40]
    assert top5_is_right([(1, [0, 0, 1, 1]), (4, right_box)], 4, GT)
    assert not top5_is_right([(1, right_box), (2, right_box)], 4, GT)  # box right, class not
    assert not top5_is_right([(4, [0, 0, 10, 20])], 4, GT)  # class right, IoU 0.5
    with pytest.raises(ValueError, match="6 guesses"):
        top5_is_right([(c, right_box) for c in range(6)], 4, GT)
    guesses = [[(4, right_box)], [(1, right_box)]]
    assert top5_error(guesses, [4, 4], [GT, GT]) == 0.5


def _dense_predictions(rng, gt_box, classes, perfect_class):
    """A synthetic dense regressor over a 6 × 6 score map for each class: the perfect class
    predicts the GT box at 30 positions (background positions elsewhere, rated low); the
    other classes predict random boxes."""
    out = {}
    for c in classes:
        xy = rng.uniform(0, 200, size=(36, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 80, size=(36, 2))], axis=1)
        scores = rng.uniform(0.0, 0.05, size=36)
        if c == perfect_class:
            boxes[:30] = gt_box
            scores[:30] = rng.uniform(0.1, 0.9, size=30)
        out[c] = (boxes, scores)
    return out


def test_protocol_2_perfect_regressor_and_classifier_0_percent_every_class_wrong_100():
    rng = np.random.default_rng(0)
    labels, gts, right, wrong = [], [], [], []
    for _ in range(25):
        label = int(rng.integers(0, 10))
        x0, y0 = rng.uniform(0, 150, size=2)
        gt_box = [x0, y0, x0 + rng.uniform(20, 100), y0 + rng.uniform(20, 100)]
        others = [c for c in range(10) if c != label]
        rng.shuffle(others)
        # A correct classifier: the label among its top 5, not necessarily first.
        top_right = [*others[:4]]
        top_right.insert(int(rng.integers(0, 5)), label)
        top_wrong = others[:5]
        dense = _dense_predictions(rng, gt_box, range(10), label)
        labels.append(label)
        gts.append([gt_box])
        right.append(top5_guesses(top_right, dense))
        wrong.append(top5_guesses(top_wrong, dense))
        assert [c for c, _ in right[-1]] == top_right
    assert top5_error(right, labels, gts) == 0.0
    assert top5_error(wrong, labels, gts) == 1.0


def test_dense_box_map_by_hand():
    # A 1 × 2 map of an SCR net (K = 1) with 100 × 100 windows, stride 50, on an image
    # rescaled from 300 × 200 to 150 × 100: window 1 sits at x = 50.
    box_map = np.zeros((4, 1, 2))
    box_map[:, 0, 0] = [0.5, 0.5, 0.2, 0.4]  # centre of window 0, 20 × 40
    box_map[:, 0, 1] = [0.1, 0.5, 0.2, 1.0]  # left edge of window 1, 20 × 100
    out = dense_boxes(box_map, (100, 100), 50, (150, 100), (300, 200))
    assert out.shape == (1, 2, 4)
    # Rescaled image: [40, 30, 60, 70] and [50, 0, 70, 100]; stored image: × 2.
    assert out[0].tolist() == [[80, 60, 120, 140], [100, 0, 140, 200]]
    # The net saw the mirrored image: mirror back across the rescaled width 150.
    flipped = dense_boxes(box_map, (100, 100), 50, (150, 100), (300, 200), flipped=True)
    assert flipped[0].tolist() == [[180, 60, 220, 140], [160, 0, 200, 200]]
    assert window_offsets((2, 3), 32).tolist() == [
        [0, 0],
        [32, 0],
        [64, 0],
        [0, 32],
        [32, 32],
        [64, 32],
    ]


def test_dense_pcr_map_keeps_each_class_apart():
    box_map = np.zeros((8, 1, 1))  # two classes
    box_map[:4, 0, 0] = [0.5, 0.5, 1.0, 1.0]
    box_map[4:, 0, 0] = [0.25, 0.25, 0.5, 0.5]
    out = dense_boxes(box_map, (64, 64), 32, (64, 64), (64, 64))
    assert out.tolist() == [[[0, 0, 64, 64]], [[0, 0, 32, 32]]]
    with pytest.raises(ValueError, match="4K"):
        dense_boxes(np.zeros((6, 1, 1)), (64, 64), 32, (64, 64), (64, 64))


def test_dense_at_q_equal_to_the_crop_is_the_centre_crop_path():
    """A square image at Q = crop size: the map has one position, the central crop's."""
    size, crop, q = (300, 300), (224, 224), 224
    targets = np.array([0.4, 0.55, 0.3, 0.5])
    scaled, offset = centre_crop_geometry(size, q, crop)
    centre = crop_to_image(decode(targets, (224, 224)), size, scaled, offset, crop, flip=False)
    dense = dense_boxes(targets.reshape(4, 1, 1), crop, 32, scaled, size)
    np.testing.assert_allclose(dense[0], centre)
