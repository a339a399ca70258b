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
