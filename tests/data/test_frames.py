import cv2
import numpy as np
import pytest

from hspreid.data.frames import FrameStore, resize_frame, write_frame_store
from hspreid.data.readers import read_dataset
from hspreid.errors import UserError


def test_store_matches_the_jpeg_files(tiny_mars):
    store, index, root = FrameStore(tiny_mars["frames"]), tiny_mars["index"], tiny_mars["root"]
    assert len(store) == len(index)
    for name in ("pid", "camid", "tracklet", "frame", "label"):
        assert np.array_equal(store.group[name][...], index[name].to_numpy())
    rows = np.array([0, 3, len(index) - 1])
    got = store.read(rows)
    for r, img in zip(rows, got):
        ref = resize_frame(cv2.imread(str(root / index["path"].iat[r])), 32, 16)
        assert np.array_equal(img, ref)
    masks = store.read(rows, "masks")
    assert masks.shape == (3, 32, 16) and masks.max() <= 5 and (masks > 0).any()


def test_scattered_and_repeated_rows(tiny_mars):
    store = FrameStore(tiny_mars["frames"])
    rows = np.array([1, 1, 2, len(store) - 1])
    assert np.array_equal(store.read(rows), np.stack([store.images[int(r)] for r in rows]))


def test_corrupt_frame_raises_or_is_skipped_and_counted(tiny_mars, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_mars["root"], root)
    index = read_dataset("mars", root)
    bad = index["path"].iat[5]
    (root / bad).write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=bad.split("/")[-1]):
        write_frame_store(index, root, tmp_path / "f.zarr", height=32, width=16)
    assert not (tmp_path / "f.zarr").exists()  # nothing that looks complete
    kept, summary = write_frame_store(index, root, tmp_path / "f.zarr", height=32, width=16, on_error="skip")
    assert summary["skipped_frames"] == 1 and len(kept) == len(index) - 1
    assert len(FrameStore(tmp_path / "f.zarr")) == len(kept)
    assert bad not in set(kept["path"])
    assert kept.groupby("tracklet")["frame"].apply(lambda f: list(f) == list(range(len(f)))).all()
