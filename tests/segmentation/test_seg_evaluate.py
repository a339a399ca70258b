"""Scoring part maps against ground truth beside the horizontal-stripe baseline."""
import numpy as np
import pytest

from hspreid.errors import UserError
from hspreid.segmentation.evaluate import partition_scores, segmentation_quality, stripe_labels


def test_stripes_of_the_whole_image():
    lab = stripe_labels((2, 8, 3), 4)
    assert lab.dtype == np.uint8 and lab.shape == (2, 8, 3)
    assert lab[0, :, 0].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert (lab == lab[:, :, :1]).all() and (lab[0] == lab[1]).all()
    assert stripe_labels((1, 7, 1), 3)[0, :, 0].tolist() == [1, 1, 1, 2, 2, 3, 3]   # floor(row * K / h) + 1


def test_stripes_of_a_foreground_span_its_rows_only():
    fg = np.zeros((2, 10, 2), bool)
    fg[0, 2:6, 1] = True                                  # rows 2..5 -> two stripes of two rows
    lab = stripe_labels(fg.shape, 2, fg)
    assert lab[0, :, 1].tolist() == [0, 0, 1, 1, 2, 2, 0, 0, 0, 0]
    assert (lab[0, :, 0] == 0).all() and (lab[1] == 0).all()                     # off the foreground; empty frame
    with pytest.raises(UserError, match="foreground shape"):
        stripe_labels((1, 10, 2), 2, fg)


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


def test_segmentation_quality_scores_model_and_baselines_on_the_label_grid():
    truth = np.zeros((3, 8, 4), np.uint8)
    truth[:, 1:4, 1:3], truth[:, 4:7, 1:3] = 1, 2
    labels = truth[:, ::2, ::2].copy()                    # a perfect model at half the resolution
    q = segmentation_quality(labels, truth, num_parts=2)
    assert q["frames"] == 3 and q["grid"] == [4, 2]
    assert q["model"]["mean_part_iou"] == 1.0 and q["model"]["foreground_iou"] == 1.0
    assert q["stripes"]["foreground_iou"] < 1.0 and q["stripes"]["mean_part_iou"] < 1.0
    assert q["stripes_gt_foreground"]["foreground_iou"] == 1.0
    assert set(q) == {"frames", "grid", "model", "stripes", "stripes_gt_foreground", "stripes_model_foreground"}


def test_part_labels_argmax_and_foreground_rules():
    import torch

    from hspreid.segmentation.store import part_labels

    masks = torch.tensor([[0.4, 0.2, 0.2, 0.2], [0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1]]).T.reshape(1, 4, 1, 3)
    assert part_labels(masks).tolist() == [[[0, 0, 2]]]
    assert part_labels(masks, "foreground").tolist() == [[[1, 0, 2]]]              # parts together outweigh bg
    with pytest.raises(UserError, match="labels"):
        part_labels(masks, "max")
