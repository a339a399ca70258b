import numpy as np

from hspreid.data.datasets import AugmentConfig, augment_clip


def test_label_maps_move_with_the_image():
    """Flip, pad+crop and erasing must transform part-label maps exactly like the pixels."""
    rng0 = np.random.default_rng(0)
    t, h, w = 3, 16, 8
    maps = rng0.integers(1, 6, size=(t, h, w)).astype(np.uint8)
    frames = np.repeat(maps[..., None] * 40, 3, axis=-1).astype(np.uint8)  # pixel value encodes the label
    for seed in range(20):
        cfg = AugmentConfig(flip=0.5, pad=3, erase=0.0)
        f2, m2 = augment_clip(frames.copy(), np.random.default_rng(seed), cfg, maps=maps.copy())
        assert f2.shape == frames.shape and m2.shape == maps.shape
        assert np.array_equal(f2[..., 0], m2.astype(np.uint8) * 40)  # padding is 0 in both


def test_erasing_zeroes_labels_and_is_clip_consistent():
    frames = np.full((4, 32, 16, 3), 200, np.uint8)
    maps = np.ones((4, 32, 16), np.uint8)
    cfg = AugmentConfig(flip=0.0, pad=0, erase=1.0)
    f2, m2 = augment_clip(frames, np.random.default_rng(3), cfg, maps=maps)
    erased = f2[..., 0] != 200
    assert erased.any() and np.array_equal(erased, m2 == 0)
    assert all(np.array_equal(erased[0], erased[i]) for i in range(4))


def test_key_points_move_like_the_pixels_by_hand():
    """8 x 4 frames, flip then pad 1 and crop at (dy, dx) = (0, 2): pixel column 0 ends in column 2."""
    from hspreid.data.datasets import ClipAugment

    aug = ClipAugment(size=(8, 4), flip=True, pad=1, dy=0, dx=2)
    frames = np.zeros((1, 8, 4, 3), np.uint8)
    frames[0, 5, 0] = 255                                         # the pixel under the key point
    points = np.array([[[0.5 / 4, 5.5 / 8, 1.0], [np.nan, np.nan, np.nan]]], np.float32)
    moved = aug.points(points, flip_order=np.array([1, 0]))       # joints swap on a flip
    assert np.isnan(moved[0, 0]).all()
    assert moved[0, 1].tolist() == [2.5 / 4, 6.5 / 8, 1.0]        # column 0 -> 3 (flip) -> 2 (pad 1, crop 2)
    f2 = aug.frames(frames)
    assert f2[0, 6, 2, 0] == 255 and f2.sum() == 3 * 255          # the pixel went to the same place
    hidden = ClipAugment(size=(8, 4), erase=(6, 2, 2, 2)).points(moved[:, 1:])
    assert hidden[0, 0, 2] == 0                                   # erased under the point: not visible


def test_train_clips_move_parsing_and_key_points_with_flip_and_pad_crop(tiny_mars, tmp_path):
    """A marker pixel in the parsing maps and a key point on it: wherever the augmentation moves the
    frame, the point still lands on the marker (and the flip swaps the left/right joints)."""
    import torch
    import zarr

    from hspreid.data.datasets import TrainClips
    from hspreid.data.frames import FrameStore
    from hspreid.data.keypoints import Keypoints
    from hspreid.engine.trainer import _collate

    n, (h, w) = len(tiny_mars["index"]), FrameStore(tiny_mars["frames"]).frame_size
    labels = np.zeros((n, h, w), np.uint8)
    labels[:, 10, 3], labels[:, 20, 12] = 1, 4                    # l_wrist marker (1), r_wrist marker (4)
    group = zarr.open_group(str(tmp_path / "parsing.zarr"), mode="w")
    group.create_array("rows", data=np.arange(n))
    group.create_array("labels", data=labels)
    train_rows = np.flatnonzero(tiny_mars["index"]["subset"].to_numpy() == "train")
    point = [[3.5 / w, 10.5 / h, 1.0], [12.5 / w, 20.5 / h, 1.0]]
    keypoints = Keypoints(train_rows, np.array([point] * len(train_rows)), ["l_wrist", "r_wrist"])
    for flip in (0.0, 1.0):
        data = TrainClips(tiny_mars["frames"], tiny_mars["index"], 3, AugmentConfig(flip=flip, pad=4, erase=0.0),
                          parsing=tmp_path / "parsing.zarr", keypoints=keypoints)
        for seed in range(6):
            item = data[(seed % len(data), seed)]
            parsing, kp = item["parsing"].numpy(), item["keypoints"].numpy()
            assert item["parsing"].dtype == torch.uint8 and parsing.shape == (3, h, w) and kp.shape == (3, 2, 3)
            for t in range(3):
                for j, marker in enumerate((1, 4) if flip == 0 else (4, 1)):
                    x, y = kp[t, j, 0] * w, kp[t, j, 1] * h
                    if 0 <= x < w and 0 <= y < h:
                        assert parsing[t, int(y), int(x)] == marker
                    else:                                         # cropped away: the marker is gone too
                        assert not (parsing[t] == marker).any()
    batch = _collate([data[(0, 0)], data[(1, 1)]])
    assert batch["parsing"].shape == (2, 3, h, w) and batch["keypoints"].shape == (2, 3, 2, 3)
