"""Scoring part maps against ground truth beside the horizontal-stripe baseline."""
import numpy as np
import pytest

from hspreid.errors import UserError
from hspreid.partmaps import part_iou, partition_scores, segmentation_quality


def test_partition_scores_match_parts_and_skip_absent_ground_truth_parts():
    truth = np.zeros((1, 4, 4), np.uint8)
    truth[0, 0:2, 1:3] = 1
    truth[0, 2:4, 1:3] = 2                                # parts 1, 2 present; 3 never appears
    pred = np.zeros_like(truth)
    pred[0, 0:2, 1:3] = 3                                 # part names permuted
    pred[0, 2:4, 1:3] = 1
    pred[0, 2:4, 3] = 2                                   # a surplus part on the background
    res = partition_scores(pred, truth, num_parts=3)
    assert res["part_iou"] == {"1": 1.0, "2": 1.0} and res["mean_part_iou"] == 1.0
    assert res["matched_part"] == {"1": 3, "2": 1}
    assert res["foreground_iou"] == pytest.approx(8 / 10, abs=1e-4)
    half = partition_scores(np.where(pred == 3, 0, pred), truth, num_parts=3)
    assert half["mean_part_iou"] == 0.5 and half["part_iou"]["1"] == 0.0
    with pytest.raises(UserError, match="num_parts"):
        partition_scores(pred, truth, num_parts=2)


def test_segmentation_quality_scores_model_and_baselines_at_the_frames_resolution():
    truth = np.zeros((3, 8, 4), np.uint8)
    truth[:, 2:4, :2], truth[:, 4:8, :2] = 1, 2
    labels = truth[:, ::2, ::2].copy()                    # a perfect model at half the resolution
    q = segmentation_quality(labels, truth, num_parts=2)
    assert q["frames"] == 3 and q["grid"] == [4, 2] and q["scored_at"] == [8, 4]
    assert q["model"]["mean_part_iou"] == 1.0 and q["model"]["foreground_iou"] == 1.0
    truth[:, 1] = 1                                       # a row the half-resolution grid cannot hold
    assert segmentation_quality(labels, truth, num_parts=2)["model"]["mean_part_iou"] < 1.0
    assert q["stripes"]["foreground_iou"] < 1.0 and q["stripes"]["mean_part_iou"] < 1.0
    assert q["stripes_gt_foreground"]["foreground_iou"] == 1.0
    assert set(q) == {"frames", "grid", "scored_at", "model", "stripes", "stripes_gt_foreground",
                      "stripes_model_foreground"}


def test_part_iou_hungarian_permutation_and_fixed():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (3, 8, 6))
    perm = np.array([0, 3, 1, 2])                 # background stays 0, parts permuted
    pred = perm[gt]
    h = part_iou(pred, gt, 4)
    assert h["mean_iou"] == 1.0 and h["mean_part_iou"] == 1.0 and h["foreground_iou"] == 1.0
    assert h["mapping"] == {0: 0, 3: 1, 1: 2, 2: 3}
    fx = part_iou(pred, gt, 4, match="fixed")
    assert fx["background_iou"] == 1.0 and fx["foreground_iou"] == 1.0 and fx["mean_part_iou"] < 0.5


def test_part_iou_hand_computed():
    gt = np.array([[0, 0, 1, 1],
                   [0, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 2, 2]])
    r = part_iou(pred, gt, 3, match="fixed")
    # bg: inter {(0,0),(1,0)} = 2, union {(0,0),(0,1),(1,0),(1,1)} = 4
    # part 1: inter {(0,2),(0,3)} = 2, union {(0,1),(0,2),(0,3),(1,3)} = 4
    # part 2: inter {(1,2)} = 1, union {(1,1),(1,2),(1,3)} = 3
    assert np.allclose(r["iou"], [0.5, 0.5, 1 / 3])
    assert r["mean_part_iou"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert r["mean_iou"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    # foreground: pred fg {(0,1),(0,2),(0,3),(1,2),(1,3)}, gt fg {(0,2),(0,3),(1,1),(1,2),(1,3)}: 4 / 6
    assert r["foreground_iou"] == pytest.approx(4 / 6)
    assert r["pixel_accuracy"] == pytest.approx(5 / 8)
    # a class absent from both is NaN and left out of the means
    r = part_iou(np.zeros((2, 2)), np.zeros((2, 2)), 3)
    assert r["background_iou"] == 1.0 and np.isnan(r["part_iou"]).all() and r["mean_iou"] == 1.0
    # ignore_index and bad labels
    g2 = gt.copy()
    g2[0, 0] = 255
    assert part_iou(pred, g2, 3, match="fixed", ignore_index=255)["iou"][0] == pytest.approx(1 / 3)
    with pytest.raises(UserError):
        part_iou(pred, gt + 5, 3)
    with pytest.raises(UserError):
        part_iou(pred, gt, 3, match="bogus")


def test_many_to_one_gives_a_ground_truth_part_all_the_parts_that_cover_it():
    from hspreid.partmaps import many_to_one_iou

    truth = np.zeros((1, 4, 4), np.uint8)
    truth[0, :2, 1:3], truth[0, 2:, 1:3] = 1, 2                    # two ground-truth parts, 4 pixels each
    labels = np.zeros_like(truth)
    labels[0, 0, 1:3], labels[0, 1, 1:3] = 1, 2                    # part 1 split in two predicted parts
    labels[0, 2:, 1:3] = 3                                          # part 2 covered by one
    labels[0, 0, 0] = 4                                             # a part on the background scores nowhere
    m = many_to_one_iou(labels, truth)
    assert m["per_part"] == {"1": 1.0, "2": 1.0} and m["mean"] == 1.0
    assert m["assigned"] == {"1": 1, "2": 1, "3": 2, "4": 0}
    assert partition_scores(labels, truth, 4)["mean_part_iou"] == 0.75          # one-to-one: half of part 1
    labels[0, 2:] = 0                                                            # part 2 now receives nothing
    assert many_to_one_iou(labels, truth)["per_part"]["2"] == 0.0


def test_keypoint_error_is_zero_for_parts_that_follow_the_key_points_and_the_spread_for_fixed_ones():
    from hspreid.partmaps import keypoint_error, part_centroids

    rng = np.random.default_rng(0)
    n, h, w = 40, 16, 8
    rows, cols = rng.integers(2, h - 2, n), rng.integers(2, w - 2, n)
    labels = np.zeros((n, h, w), np.uint8)
    labels[np.arange(n), rows, cols] = 1                                   # a one-pixel part on the joint
    kp = np.stack([(cols + 0.5) / w, (rows + 0.5) / h, np.ones(n)], axis=1)[:, None]   # [n, 1, 3]
    assert np.allclose(part_centroids(labels, 1)[:, 0], kp[:, 0, :2])
    fit = np.arange(n) < 20
    assert keypoint_error(labels, kp, fit, 1) < 1e-6
    fixed = np.ones_like(labels)                                            # the whole frame: a fixed centroid
    spread = (kp[~fit, 0, :2] - kp[fit, 0, :2].mean(0)) * [w / h, 1]
    assert keypoint_error(fixed, kp, fit, 1) == pytest.approx(np.sqrt((spread ** 2).sum(1)).mean(), abs=1e-4)
    kp[:, :, 2] = 0                                                         # nothing visible: no score
    assert keypoint_error(labels, kp, fit, 1) is None


def test_segmentation_quality_by_split_fits_the_key_points_on_train_and_scores_the_others():
    rng = np.random.default_rng(1)
    n, h, w = 30, 16, 8
    truth = np.zeros((n, h, w), np.uint8)
    tops = rng.integers(0, 6, n)
    for i, t in enumerate(tops):                         # a person of two parts at a varying height
        truth[i, t:t + 4, 2:6], truth[i, t + 4:t + 9, 2:6] = 1, 2
    limbs = truth.copy()
    kp = np.stack([np.full(n, 0.5), (tops + 2.0) / h, np.ones(n)], axis=1)[:, None]     # the top part's middle
    split = np.where(np.arange(n) < 20, "train", "test")
    q = segmentation_quality(truth, truth, 2, limbs=limbs, keypoints=kp, split=split)
    assert set(q) == {"train", "test"} and q["test"]["frames"] == 10
    model, stripes = q["test"]["model"], q["test"]["stripes"]
    assert model["mean_part_iou"] == model["many_to_one_iou"] == model["many_to_one_iou_limbs"] == 1.0
    assert model["keypoint_error"] < 0.01 < stripes["keypoint_error"]      # parts follow the person, stripes don't
    assert "keypoint_error" not in q["train"]["model"] and set(q["test"]) >= {"limbs", "stripes_gt_foreground"}
    only = segmentation_quality(truth, truth, 2, limbs=limbs, keypoints=kp, split=split, only=("model",))
    assert only["test"]["model"] == model and set(only["test"]) == {"frames", "grid", "scored_at", "model"}


def test_label_quality_scores_at_the_frames_resolution_beside_stripes_of_its_own_foreground():
    from hspreid.partmaps import label_quality

    truth = np.zeros((4, 8, 4), np.uint8)
    truth[:, 0:4, 1:3], truth[:, 4:8, 1:3] = 1, 3                  # head, lower body
    labels = np.zeros((4, 4, 2), np.uint8)
    labels[:, 0:2, 0], labels[:, 2:4, 0] = 1, 2                   # a half-resolution parser, shifted left
    kp = np.zeros((4, 1, 3))
    kp[:, 0] = [0.25, 0.25, 1]
    q = label_quality(labels, truth, 3, limbs=truth, keypoints=kp, fit=np.array([1, 1, 0, 0], bool))
    assert q["grid"] == [4, 2] and q["scored_at"] == [8, 4]
    assert q["foreground_iou"] == pytest.approx(1 / 3, abs=1e-4)   # 8 of 24 foreground pixels overlap
    assert q["many_to_one_iou"] == q["many_to_one_iou_limbs"] and q["keypoint_error"] == 0.0
    assert set(q["stripes_own_foreground"]) >= {"mean_part_iou", "many_to_one_iou", "keypoint_error"}
    assert q["mean_layout"]["foreground_iou"] == q["mean_layout"]["mean_part_iou"] == 1.0   # every frame alike


def test_mean_layout_is_each_pixels_most_frequent_label_and_scores_as_one_fixed_map():
    from hspreid.partmaps import mean_layout

    truth = np.zeros((4, 8, 4), np.uint8)
    truth[:3, 0:4, 1:3] = 1                                      # three maps: the person in the top half
    truth[3, 4:8, 1:3] = 2                                       # one: a different part in the bottom half
    expected = np.zeros((8, 4), np.uint8)
    expected[0:4, 1:3] = 1
    np.testing.assert_array_equal(mean_layout(truth), expected)
    split = np.array(["train", "train", "train", "test"])
    q = segmentation_quality(truth, truth, 2, split=split)
    layout = q["test"]["mean_layout"]                            # the test person lies where no train person did
    assert layout["foreground_iou"] == 0.0 and q["test"]["model"]["foreground_iou"] == 1.0
    assert q["train"]["mean_layout"]["foreground_iou"] == 1.0
    assert "mean_layout" not in segmentation_quality(truth, truth, 2)    # no train maps to fit it on


def test_label_fit_compares_maps_with_their_labels_at_the_maps_grid():
    from hspreid.partmaps import IGNORE, label_fit

    pred = np.array([[[0, 1], [0, 1], [0, 2], [0, 2]]], np.uint8)      # column 0 missed, column 1 right
    labels = np.array([[[1], [2]]], np.uint8)                           # half the grid: rows 0-1 part 1, 2-3 part 2
    fit = label_fit(pred, labels, 3)
    assert fit["pixel_accuracy"] == 0.5 and fit["foreground_iou"] == 0.5
    assert fit["iou"] == [0.0, 0.5, 0.5] and fit["mean_part_iou"] == 0.5
    assert label_fit(pred, labels[:, ::-1], 3, match="hungarian")["iou"] == [0.0, 0.5, 0.5]   # ids swapped
    assert label_fit(pred, labels[:, ::-1], 3)["mean_part_iou"] == 0.0                          # fixed ids
    labels[0, 0, 0] = IGNORE                                            # the top half is left out
    assert label_fit(pred, labels, 3)["iou"] == [0.0, None, 0.5]
    labels[:] = IGNORE                                                  # nothing left: None, not NaN (JSON)
    assert label_fit(pred, labels, 3)["pixel_accuracy"] is None


def test_mean_layout_skips_ignored_pixels_and_label_quality_takes_a_layout_fitted_elsewhere():
    from hspreid.partmaps import IGNORE, label_quality, mean_layout

    truth = np.zeros((3, 4, 2), np.uint8)
    truth[:, 0:2] = 1
    truth[:2, 2:4, 0] = IGNORE                                          # mostly ignored: the next label wins
    assert mean_layout(truth).tolist() == [[1, 1], [1, 1], [0, 0], [0, 0]]
    shifted = np.zeros((2, 4, 2), np.uint8)
    shifted[:, 2:4] = 1                                                 # frames whose person is lower
    own = label_quality(shifted, shifted, 2)["mean_layout"]
    elsewhere = label_quality(shifted, shifted, 2, layout=mean_layout(truth))["mean_layout"]
    assert own["foreground_iou"] == 1.0 and elsewhere["foreground_iou"] == 0.0


def test_foreground_iou_off_layout_scores_the_frames_where_people_stand_off_their_usual_place():
    truth = np.zeros((12, 8, 4), np.uint8)
    truth[:, 0:4, 1:3] = 1                                       # the person in the top half ...
    truth[[8, 11], 4:8, 1:3], truth[[8, 11], 0:4] = 1, 0         # ... but in two test frames in the bottom half
    split = np.where(np.arange(12) < 8, "train", "test")
    q = segmentation_quality(truth, truth, 1, split=split)["test"]
    assert q["model"]["foreground_iou_off_layout"] == 1.0        # maps that follow the person
    assert q["mean_layout"]["foreground_iou_off_layout"] == 0.0  # the layout misses them
    assert q["mean_layout"]["foreground_iou"] == pytest.approx(1 / 3, abs=1e-4)   # 16 of 48 pixels, 4 test frames
