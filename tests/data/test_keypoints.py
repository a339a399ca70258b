"""Key points of a few labelled frames per training tracklet (SSN3D semi-supervised)."""
import numpy as np
import pandas as pd
import pytest

from hspreid.data.keypoints import KeypointConfig, choose_labelled, flip_order, labelled_keypoints
from hspreid.data.keypoints import load_keypoints
from hspreid.errors import UserError


def test_choose_the_most_visible_frames_spread_evenly():
    assert choose_labelled(np.array([3, 3, 3, 3, 3, 3, 3]), 2).tolist() == [0, 6]
    assert choose_labelled(np.array([1, 5, 2, 5, 0]), 3).tolist() == [1, 2, 3]
    assert choose_labelled(np.array([0, 0, 1]), 2).tolist() == [2]           # never a frame without a point
    assert choose_labelled(np.array([4, 4]), 0).tolist() == []


def test_flip_order_swaps_left_and_right():
    assert flip_order(["head", "l_wrist", "r_wrist", "left_knee", "right_knee", "l_only"]).tolist() == \
        [0, 2, 1, 4, 3, 5]


def test_labelled_keypoints_of_the_synthetic_set(tiny_mars):
    root, index = tiny_mars["root"], tiny_mars["index"]
    cfg = KeypointConfig(labelled_per_tracklet=2)
    kp = labelled_keypoints(root, index, cfg)
    train = index[index["subset"] == "train"]
    per_track = pd.Series(train.loc[kp.rows, "tracklet"].to_numpy()).value_counts()
    assert per_track.max() <= 2 and len(per_track) == train["tracklet"].nunique()
    assert kp.values.shape == (len(kp), 9, 3) and kp.joints == cfg.joints
    raw, joints = load_keypoints(root, index.loc[kp.rows])
    head = joints.index("head")
    width, height = 16, 32                                                     # the tiny set's images
    assert np.allclose(kp.values[:, 0, 0], raw[:, head, 0] / width) and np.allclose(kp.values[:, 0, 1],
                                                                                   raw[:, head, 1] / height)
    read = kp.read(np.array([kp.rows[0], train.index[-1] + 1]))
    assert np.array_equal(read[0], kp.values[0]) and np.isnan(read[1]).all()  # test frame: not labelled
    assert kp.flip_order.tolist() == [0, 2, 1, 4, 3, 6, 5, 8, 7]
    with pytest.raises(UserError, match="keypoints.joints"):
        labelled_keypoints(root, index, KeypointConfig(joints=["head", "tail"]))
