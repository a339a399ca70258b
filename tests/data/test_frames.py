import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

import hspreid
from hspreid.data.frames import (
    FramesConfig,
    FrameStore,
    decode_frame,
    frame_encoder,
    resize_frame,
    write_frame_store,
)
from hspreid.data.keypoints import image_size, load_keypoints
from hspreid.data.loading import attach_ground_truth, jpeg_is_complete
from hspreid.data.readers import read_dataset
from hspreid.errors import UserError
from hspreid.partmaps import LIMB_NAMES, LIMB_TO_GROUND_TRUTH


@pytest.fixture(scope="module")
def raw_mars(tiny_mars, tmp_path_factory):
    """The tiny set's raw store (the synthetic demo's encoding), beside tiny_mars' encoded one."""
    out = tmp_path_factory.mktemp("raw") / "frames.zarr"
    write_frame_store(tiny_mars["index"], tiny_mars["root"], out,
                      FramesConfig(height=32, width=16, encoding="raw", chunk_frames=4))
    return out


def _copy(tiny_mars, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_mars["root"], root)
    return root, attach_ground_truth(read_dataset("mars", root), root)


def test_store_matches_the_jpeg_files(tiny_mars):
    store, index, root = FrameStore(tiny_mars["frames"]), tiny_mars["index"], tiny_mars["root"]
    assert store.encoding == "encoded" and len(store) == len(index) and store.frame_size == (32, 16)
    for name in ("pid", "camid", "tracklet", "frame", "label"):
        assert np.array_equal(store.group[name][...], index[name].to_numpy())
    rows = np.array([0, 3, len(index) - 1])
    got = store.read(rows)
    for r, img in zip(rows, got):
        ref = resize_frame(cv2.imread(str(root / index["path"].iat[r])), 32, 16)
        assert np.array_equal(img, ref)
        assert store.read_encoded([r])[0].tobytes() == (root / index["path"].iat[r]).read_bytes()  # the file's bytes
    masks = store.read(rows, "masks")
    assert masks.dtype == np.uint8 and masks.shape == (3, 32, 16) and masks.max() <= 5 and (masks > 0).any()


def test_encoded_store_reads_the_raw_stores_pixels(tiny_mars, raw_mars):
    encoded, raw = FrameStore(tiny_mars["frames"]), FrameStore(raw_mars)
    rows = np.concatenate([np.arange(len(raw)), [5, 5, 1]])                  # every row, repeats, any order
    assert raw.encoding == "raw" and np.array_equal(encoded.read(rows), raw.read(rows))
    assert np.array_equal(encoded.read(rows, "masks"), raw.read(rows, "masks"))
    assert encoded.read([]).shape == (0, 32, 16, 3) and raw.read([]).shape == (0, 32, 16, 3)
    files = sum((tiny_mars["root"] / p).stat().st_size for p in tiny_mars["index"]["path"])
    assert encoded.attrs["summary"]["frame_bytes"] == files                  # no byte re-encoded
    with pytest.raises(UserError, match="holds no encoded frames"):
        raw.read_encoded([0])


def test_sources_smaller_than_the_store_are_kept_and_resized_when_read(tiny_mars, raw_mars, tmp_path):
    index, root = tiny_mars["index"], tiny_mars["root"]
    up = tmp_path / "up.zarr"
    _, summary = write_frame_store(index, root, up,
                                   FramesConfig(height=64, width=32))      # Market: 128 x 64 files at 256 x 128
    raw_up = tmp_path / "raw_up.zarr"
    write_frame_store(index, root, raw_up, FramesConfig(height=64, width=32, encoding="raw"))
    rows = np.arange(len(index))
    assert np.array_equal(FrameStore(up).read(rows), FrameStore(raw_up).read(rows))
    assert summary["frame_bytes"] == sum((root / p).stat().st_size for p in index["path"])
    down = tmp_path / "down.zarr"                                             # larger sources: shrunk, re-encoded
    write_frame_store(index, root, down, FramesConfig(height=16, width=8))
    raw_down = tmp_path / "raw_down.zarr"
    write_frame_store(index, root, raw_down, FramesConfig(height=16, width=8, encoding="raw"))
    lossy, exact = FrameStore(down).read(rows).astype(int), FrameStore(raw_down).read(rows)
    error, contrast = np.abs(lossy - exact).mean(), np.abs(exact[1:].astype(int) - exact[:-1]).mean()
    assert FrameStore(down).frame_size == (16, 8) and 0 < error < contrast / 3, (error, contrast)


def test_png_sources_keep_their_bytes():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (20, 10, 3), dtype=np.uint8), (3, 3), 1)
    png = cv2.imencode(".png", image)[1].reshape(-1)
    kept = frame_encoder("encoded", 40, 20)(image, png)
    assert kept is png and np.array_equal(decode_frame(kept, 40, 20), resize_frame(image, 40, 20))
    crop = frame_encoder("encoded", 40, 20)(image, None)                     # a crop of a video: JPEG, not resized
    assert crop[:3].tobytes() == b"\xff\xd8\xff" and cv2.imdecode(crop, cv2.IMREAD_COLOR).shape == (20, 10, 3)
    with pytest.raises(UserError, match="frames.encoding"):
        frame_encoder("webp", 40, 20)


def test_frames_across_chunk_boundaries(tiny_mars, raw_mars, tmp_path):
    out = tmp_path / "small_chunks.zarr"
    write_frame_store(tiny_mars["index"], tiny_mars["root"], out,
                      FramesConfig(height=32, width=16), chunk_bytes=1000, threads=2)
    store, raw = FrameStore(out), FrameStore(raw_mars)
    assert len(list((out / "encoded" / "c").iterdir())) > 3                  # frames of ~0.6 kB cross chunk ends
    rows = np.arange(len(raw))[::-1]
    assert np.array_equal(store.read(rows), raw.read(rows))
    g = zarr.open_group(str(out), mode="r")                                  # the docstring's reading without hspreid
    off = g["encoded_offsets"][:]
    i = len(raw) // 2
    assert np.array_equal(cv2.imdecode(g["encoded"][off[i]:off[i + 1]], cv2.IMREAD_COLOR)[..., ::-1], raw.read([i])[0])


def test_a_store_of_the_previous_format_still_reads(raw_mars, tmp_path):
    old = tmp_path / "old.zarr"
    shutil.copytree(raw_mars, old)
    group = zarr.open_group(str(old), mode="r+")
    attrs = dict(group.attrs)                                                # format 1: no format, no frame_shape
    group.attrs.clear()
    group.attrs.update({k: v for k, v in attrs.items() if k not in ("format", "frame_shape")})
    store = FrameStore(old)
    assert store.encoding == "raw" and np.array_equal(store.read([0, 7]), FrameStore(raw_mars).read([0, 7]))
    group.attrs["format"] = {"version": 3, "encoding": "avif"}
    with pytest.raises(UserError, match=r"format .* is not one this hspreid reads.*extract_frames") as err:
        FrameStore(old)
    assert "\n" not in str(err.value)
    del group.attrs["summary"]
    with pytest.raises(UserError, match="incomplete frame store"):
        FrameStore(old)



def test_a_damaged_store_names_the_row(tiny_mars, tmp_path):
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(tiny_mars["frames"], damaged)
    with open(damaged / "encoded" / "c" / "0", "r+b") as fh:                 # row 0's JPEG header
        fh.write(bytes(64))
    with pytest.raises(UserError, match=r"damaged.zarr: row 0: .*cannot be decoded.*extract_frames"):
        FrameStore(damaged).read([1, 0])

KILLED = """
import sys, time
import hspreid.data.frames as F
from hspreid.data.readers import read_dataset
encoder = F.frame_encoder
def slow(*args, **kwargs):
    encode = encoder(*args, **kwargs)
    return lambda image, data: (time.sleep(0.05), encode(image, data))[1]
F.frame_encoder = slow
F.write_frame_store(read_dataset("mars", sys.argv[1]), sys.argv[1], sys.argv[2], F.FramesConfig(height=32, width=16),
                    chunk_bytes=2048)
"""


def test_a_killed_extraction_leaves_no_store_that_looks_complete(tiny_mars, raw_mars, tmp_path):
    out = tmp_path / "frames.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(hspreid.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tiny_mars["root"]), str(out)], env=env)
    first_chunk = tmp_path / "frames.zarr.tmp" / "encoded" / "c" / "0"
    deadline = time.monotonic() + 60
    while not first_chunk.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first_chunk.exists() and proc.returncode == -signal.SIGKILL      # killed half-way through
    assert not out.exists()
    with pytest.raises(UserError, match="not a frame store"):
        FrameStore(out)
    with pytest.raises(UserError, match="incomplete frame store"):
        FrameStore(tmp_path / "frames.zarr.tmp")
    write_frame_store(tiny_mars["index"], tiny_mars["root"], out,
                      FramesConfig(height=32, width=16))   # a rerun starts afresh
    assert not (tmp_path / "frames.zarr.tmp").exists() and len(FrameStore(out)) == len(FrameStore(raw_mars))


@pytest.mark.parametrize("encoding", ["encoded", "raw"])
def test_a_truncated_jpeg_fails_extraction_naming_the_file(tiny_mars, tmp_path, encoding):
    root, index = _copy(tiny_mars, tmp_path)
    bad = root / index["path"].iat[4]
    bad.write_bytes(bad.read_bytes()[:-40])
    with pytest.raises(UserError, match=str(bad)) as err:
        write_frame_store(index, root, tmp_path / "f.zarr", FramesConfig(height=32, width=16, encoding=encoding))
    assert "\n" not in str(err.value) and not (tmp_path / "f.zarr").exists()


def test_jpeg_is_complete():
    image = np.random.default_rng(0).integers(0, 255, (32, 16, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", image)[1].reshape(-1)
    assert jpeg_is_complete(data) and not jpeg_is_complete(data[:-1]) and not jpeg_is_complete(data[:len(data) // 2])
    assert jpeg_is_complete(np.concatenate([data, np.zeros(64, np.uint8)]))  # padding after the end marker
    thumb = b"\xff\xd8\xff\xe1\x00\x10" + b"\xff\xd8\xff\xda\x00\x02ab\xff\xd9"  # an EXIF thumbnail ends in FFD9
    cut = np.frombuffer(thumb + data[2:len(data) // 2].tobytes(), np.uint8)  # the main image cut in its scan
    assert not jpeg_is_complete(cut)


def test_corrupt_frame_raises_or_is_skipped_and_counted(tiny_mars, tmp_path):
    root, index = _copy(tiny_mars, tmp_path)
    bad = index["path"].iat[5]
    (root / bad).write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=bad.split("/")[-1]):
        write_frame_store(index, root, tmp_path / "f.zarr", FramesConfig(height=32, width=16))
    assert not (tmp_path / "f.zarr").exists()  # nothing that looks complete
    kept, summary = write_frame_store(index, root, tmp_path / "f.zarr",
                                      FramesConfig(height=32, width=16, on_error="skip"))
    assert summary["skipped_frames"] == 1 and len(kept) == len(index) - 1
    store = FrameStore(tmp_path / "f.zarr")
    assert len(store) == len(kept) and len(store.read(np.arange(len(kept)), "masks")) == len(kept)
    assert np.array_equal(store.read([4, 5]), FrameStore(tiny_mars["frames"]).read([4, 6]))   # row 5 dropped
    assert bad not in set(kept["path"])
    assert kept.groupby("tracklet")["frame"].apply(lambda f: list(f) == list(range(len(f)))).all()


def test_limb_maps_and_key_points_follow_the_kept_frames(tiny_mars, tmp_path):
    root, index = _copy(tiny_mars, tmp_path)
    points, joints = load_keypoints(root, index)
    (root / index["path"].iat[5]).write_bytes(b"not a jpeg")                # skipped: rows shift up by one
    kept, summary = write_frame_store(index, root, tmp_path / "f.zarr",
                                      FramesConfig(height=64, width=32, on_error="skip", chunk_frames=4),
                                      keypoints=(points, joints))
    store = FrameStore(tmp_path / "f.zarr")
    assert summary["has_limbs"] and summary["has_keypoints"] and len(store) == len(index) - 1
    assert store.limb_names == list(LIMB_NAMES) and store.limbs.attrs["fold"] == list(LIMB_TO_GROUND_TRUTH)
    rows = np.arange(len(store))
    limbs, masks = store.read(rows, "limbs"), store.read(rows, "masks")
    assert limbs.shape == masks.shape == (len(store), 64, 32) and limbs.max() >= 8     # legs, not just regions
    assert np.array_equal(np.asarray(LIMB_TO_GROUND_TRUTH, np.uint8)[limbs], masks)
    png = cv2.imread(str(root / kept["limb_path"].iat[5]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(limbs[5], cv2.resize(png, (32, 64), interpolation=cv2.INTER_NEAREST))
    got = store.read(np.array([4, 5]), "keypoints")                             # index rows 4 and 6
    assert got.dtype == np.float32 and got.shape == (2, len(joints), 3) and store.joints == joints
    for g, r in zip(got, (4, 6)):
        w, h = image_size(root / index["path"].iat[r])
        assert np.allclose(g, points[r] / np.array([w, h, 1], np.float32))      # fractions of the source image
    assert np.isin(got[..., 2], (0, 1)).all()
    assert FrameStore(tiny_mars["frames"]).keypoints is None                   # none given, none stored
    with pytest.raises(UserError, match=r"key points of shape \(3, 14, 3\)"):
        write_frame_store(index, root, tmp_path / "g.zarr", keypoints=(points[:3], joints))
