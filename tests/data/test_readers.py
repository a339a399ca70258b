"""Readers of every data set in its native layout, on tiny fixtures written here; frame loading; ground truth."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import scipy.io

from hspreid.data.index import validate_index
from hspreid.data.keypoints import load_keypoints
from hspreid.data.loading import attach_ground_truth, iter_frame_images
from hspreid.data.readers import READERS, read_dataset
from hspreid.errors import UserError


# --------------------------------------------------------------------------- fixture helpers

def write_image(path: Path, value: int = 0) -> None:
    """A tiny 8x4 BGR image written by OpenCV (any extension it knows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 4, 3), value, np.uint8))


def write_mat(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), arrays)


def tracklets(df: pd.DataFrame) -> pd.DataFrame:
    """One row per tracklet: pid, label, camid, subset, query, gallery and its frame file names in order."""
    df = df.assign(name=df["path"].str.rsplit("/", n=1).str[-1])
    return df.groupby("tracklet").agg(pid=("pid", "first"), label=("label", "first"), camid=("camid", "first"),
                                      subset=("subset", "first"), query=("query", "first"),
                                      gallery=("gallery", "first"), names=("name", list))


def frames_in_order(df: pd.DataFrame) -> bool:
    return bool((df.groupby("tracklet")["frame"].apply(lambda f: list(f) == list(range(len(f))))).all())


# --------------------------------------------------------------------------- MARS

# (subset, pid folder, cam, tracklet number, frame numbers in name-list order)
MARS_TRACKS = [
    ("train", "0003", 1, 1, [1, 2, 3]),
    ("train", "0001", 2, 1, [3, 1, 2]),         # unsorted in the name list: the list order is the frame order
    ("train", "00-1", 1, 1, [1, 2]),            # junk
    ("test", "0005", 1, 1, [1, 2, 3]),          # query
    ("test", "0005", 2, 1, [1, 2]),
    ("test", "0000", 3, 1, [1, 2]),             # distractor
    ("test", "00-1", 1, 1, [1, 2]),             # junk
    ("test", "0007", 2, 1, [2, 1]),             # query
    ("test", "0007", 1, 1, [5]),
]
MARS_QUERY_IDX = [1, 5]                         # 1-based rows of track_test_info


def mars_name(pid: str, cam: int, trk: int, frame: int) -> str:
    return f"{pid}C{cam}T{trk:04d}F{frame:03d}.jpg"


def make_mars(root: Path, tracks=MARS_TRACKS, query_idx=MARS_QUERY_IDX, images: bool = True) -> Path:
    (root / "bbox_train").mkdir(parents=True)
    (root / "bbox_test").mkdir()
    for subset in ("train", "test"):
        names, info = [], []
        for sub, pid, cam, trk, frames in tracks:
            if sub != subset:
                continue
            info.append([len(names) + 1, len(names) + len(frames), -1 if pid == "00-1" else int(pid), cam])
            names += [mars_name(pid, cam, trk, f) for f in frames]
        if images:
            for n in names:
                write_image(root / f"bbox_{subset}" / n[:4] / n)
        (root / "info").mkdir(exist_ok=True)
        (root / "info" / f"{subset}_name.txt").write_text("\n".join(names) + "\n")
        write_mat(root / "info" / f"tracks_{subset}_info.mat",
                  **{f"track_{subset}_info": np.array(info, dtype=np.int32).reshape(-1, 4)})
    write_mat(root / "info" / "query_IDX.mat", query_IDX=np.array([query_idx], dtype=np.uint16))
    return root


def test_mars_reads_official_layout(tmp_path):
    df = read_dataset("mars", make_mars(tmp_path / "MARS"))
    validate_index(df)
    t = tracklets(df)
    assert df.attrs["dropped"] == {"junk_tracklets": 2}
    assert len(t) == 7 and len(df) == 3 + 3 + 3 + 2 + 2 + 2 + 1
    train, test = t[t["subset"] == "train"], t[t["subset"] == "test"]
    assert train["pid"].tolist() == [3, 1] and train["label"].tolist() == [1, 0]      # sorted pid order
    assert train["camid"].tolist() == [0, 1]
    assert train["names"].iloc[1] == [mars_name("0001", 2, 1, f) for f in (3, 1, 2)]  # name-list order
    assert test["pid"].tolist() == [5, 5, 0, 7, 7] and (test["label"] == -1).all()
    assert test["camid"].tolist() == [0, 1, 2, 1, 0]
    assert test["query"].tolist() == [True, False, False, True, False]
    assert test["gallery"].all()                                                       # official gallery
    assert df["path"].iloc[0] == "bbox_train/0003/0003C1T0001F001.jpg"
    assert frames_in_order(df)
    assert all((tmp_path / "MARS" / p).is_file() for p in df["path"])


def test_mars_rejects_tracklet_mixing_cameras(tmp_path):
    tracks = MARS_TRACKS[:3] + [("test", "0005", 1, 1, [1, 2])]
    root = make_mars(tmp_path / "MARS", tracks, query_idx=[1], images=False)
    names = (root / "info" / "test_name.txt").read_text().split()
    names[1] = mars_name("0005", 2, 1, 2)
    (root / "info" / "test_name.txt").write_text("\n".join(names))
    with pytest.raises(UserError, match=r"tracks_test_info.mat: row 1 mixes"):
        read_dataset("mars", root)


def test_mars_rejects_query_idx_out_of_range(tmp_path):
    root = make_mars(tmp_path / "MARS", query_idx=[1, 99], images=False)
    with pytest.raises(UserError, match="query_IDX"):
        read_dataset("mars", root)


def one_line_error(kind: str, root: Path, **options) -> str:
    """The message of the :class:`UserError` that reading ``root`` raises; it must be one line."""
    with pytest.raises(UserError) as err:
        read_dataset(kind, root, **options)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("length", [0, 20, 128, "half", "all but 1"])
@pytest.mark.parametrize("file, key", [("query_IDX.mat", "query_IDX"), ("tracks_test_info.mat", "track_test_info")])
def test_mars_truncated_mat_is_one_line_naming_the_file(tmp_path, file, key, length, compressed):
    """scipy raises MatReadError (0 bytes), IndexError (20), ValueError (the data cut), zlib.error (compressed)..."""
    root = make_mars(tmp_path / "MARS", images=False)
    path = root / "info" / file
    scipy.io.savemat(str(path), {key: scipy.io.loadmat(str(path))[key]}, do_compression=compressed)
    data = path.read_bytes()
    cut = {"half": len(data) // 2, "all but 1": len(data) - 1}.get(length, length)
    path.write_bytes(data[:cut])
    message = one_line_error("mars", root)
    assert message.startswith(f"{path}: ") and f"expected variable {key!r}" in message
    if cut == 128:                                      # the header alone: readable, but holds nothing
        assert "no variable" in message and "truncated?" in message
    else:
        assert f"not a readable MATLAB .mat file ({cut} bytes; " in message


def test_mat_of_another_kind_names_the_variable_found(tmp_path):
    root = make_ilidsvid(tmp_path / "ilids-vid")
    path = root / "train-test people splits" / "train_test_splits_ilidsvid.mat"
    write_mat(path, splits=np.ones((2, 4)))
    assert one_line_error("ilidsvid", root) == (
        f"{path}: no variable 'ls_set' (it holds splits); expected variable 'ls_set' (one row of 1-based person "
        "indices per train/test split) as in the data set's original release; re-download or re-unpack it")
    path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 2)     # a v5 header, then garbage
    assert one_line_error("ilidsvid", root).startswith(f"{path}: not a readable MATLAB .mat file (531 bytes; ")


def test_mars_needs_no_image_files(tmp_path):
    """The reader works from info/ alone (it never opens or stats a frame): 3,000 tracklets x 20 frames."""
    tracks = [("train" if i < 1000 else "test", f"{i % 600 + 1:04d}", i // 600 % 6 + 1, i, list(range(1, 21)))
              for i in range(3000)]
    df = read_dataset("mars", make_mars(tmp_path / "MARS", tracks, query_idx=[1, 2, 3], images=False))
    assert len(df) == 60_000 and df["tracklet"].nunique() == 3000 and df["query"].sum() == 60


# --------------------------------------------------------------------------- Market-style image folders

MARKET_FILES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0010_c3s2_000101_01.jpg",
                           "0007_c6s1_000001_02.png", "Thumbs.db"],
    "query": ["0005_c1s1_001051_00.jpg", "0010_c2s1_000001_00.jpg"],
    "bounding_box_test": ["0005_c2s1_000976_01.jpg", "0000_c1s1_000000_01.jpg", "-1_c1s1_000401_03.jpg",
                          "-1_c3s1_000001_01.jpg", "0010_c5s3_065187_04.jpg"],
}


def make_image_folders(base: Path, files=MARKET_FILES) -> None:
    for folder, names in files.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            if n.endswith((".jpg", ".png")):
                write_image(base / folder / n)
            else:
                (base / folder / n).write_bytes(b"not an image")


def check_market_index(df: pd.DataFrame, prefix: str = "") -> None:
    validate_index(df)
    t = tracklets(df)
    assert len(df) == len(t) == 4 + 2 + 3 and df.attrs["dropped"] == {"junk_images": 2}
    train = df[df["subset"] == "train"]
    assert dict(zip(train["pid"], train["label"])) == {2: 0, 7: 1, 10: 2}              # integer order, not "10"<"2"
    assert sorted(train["camid"]) == [0, 1, 2, 5]
    query = df[df["query"]]
    assert sorted(query["pid"]) == [5, 10] and not query["gallery"].any()
    gallery = df[df["gallery"]]
    assert sorted(gallery["pid"]) == [0, 5, 10] and not gallery["query"].any()
    assert sorted(gallery["camid"]) == [0, 1, 4]
    assert df["path"].str.startswith(prefix).all()
    assert f"{prefix}query/0005_c1s1_001051_00.jpg" in set(df["path"])


@pytest.mark.parametrize("kind", ["market1501", "dukemtmc_reid", "occluded_duke"])
def test_image_folder_readers(tmp_path, kind):
    make_image_folders(tmp_path / "data")
    df = read_dataset(kind, tmp_path / "data")
    check_market_index(df)
    assert df.attrs["dataset"] == kind


def test_market_accepts_release_top_folder(tmp_path):
    make_image_folders(tmp_path / "market1501" / "Market-1501-v15.09.15")
    df = read_dataset("market1501", tmp_path / "market1501")
    check_market_index(df, prefix="Market-1501-v15.09.15/")
    assert all((tmp_path / "market1501" / p).is_file() for p in df["path"])


def test_image_folders_reject_stray_file_name(tmp_path):
    make_image_folders(tmp_path / "data")
    write_image(tmp_path / "data" / "query" / "holiday.jpg")
    with pytest.raises(UserError, match=r"query/holiday.jpg: file name does not match"):
        read_dataset("market1501", tmp_path / "data")


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_cuhk03_np_variants(tmp_path, variant):
    make_image_folders(tmp_path / "cuhk03" / variant)
    df = read_dataset("cuhk03_np", tmp_path / "cuhk03", variant=variant)
    check_market_index(df, prefix=f"{variant}/")
    assert df.attrs["variant"] == variant


def test_cuhk03_np_default_is_labeled_and_rejects_bad_variant(tmp_path):
    make_image_folders(tmp_path / "cuhk03" / "labeled")
    assert read_dataset("cuhk03_np", tmp_path / "cuhk03").attrs["variant"] == "labeled"
    with pytest.raises(UserError, match=r"variant='both'.*'labeled' and 'detected'"):
        read_dataset("cuhk03_np", tmp_path / "cuhk03", variant="both")
    with pytest.raises(UserError, match=r"cuhk03/detected"):
        read_dataset("cuhk03_np", tmp_path / "cuhk03", variant="detected")


# --------------------------------------------------------------------------- Occluded-REID

def test_occluded_reid(tmp_path):
    root = tmp_path / "Occluded_REID"
    for n in ("001/001_01.tif", "001/001_02.tif", "012/012_01.tif"):
        write_image(root / "occluded_body_images" / n)
    for n in ("001/001_01.tif", "012/012_01.jpg", "012/012_02.tif"):
        write_image(root / "whole_body_images" / n)
    df = read_dataset("occluded_reid", root)
    validate_index(df)
    assert (df["subset"] == "test").all() and len(df) == 6 and df["tracklet"].nunique() == 6
    query, gallery = df[df["query"]], df[df["gallery"]]
    assert sorted(query["pid"]) == [1, 1, 12] and (query["camid"] == 0).all() and not query["gallery"].any()
    assert sorted(gallery["pid"]) == [1, 12, 12] and (gallery["camid"] == 1).all()
    assert "occluded_body_images/012/012_01.tif" in set(df["path"])
    assert (df["label"] == -1).all()


# --------------------------------------------------------------------------- iLIDS-VID

ILIDS_PERSONS = {"person001": [317, 300, 301], "person002": [12, 10], "person005": [7, 8, 9],
                 "person010": [100, 99]}       # folder names are not contiguous; frames written unsorted


def make_ilidsvid(root: Path) -> Path:
    for cam in (1, 2):
        for person, frames in ILIDS_PERSONS.items():
            for f in frames:
                name = f"cam{cam}_{person}_{f + cam:05d}.png"
                write_image(root / "i-LIDS-VID/sequences" / f"cam{cam}" / person / name)
    ls_set = np.array([[4, 1, 3, 2], [2, 3, 4, 1]], dtype=np.float64)   # MATLAB doubles, 1-based, sorted folders
    write_mat(root / "train-test people splits" / "train_test_splits_ilidsvid.mat", ls_set=ls_set)
    return root


def test_ilidsvid_split_0(tmp_path):
    df = read_dataset("ilidsvid", make_ilidsvid(tmp_path / "ilids-vid"))
    validate_index(df)
    t = tracklets(df)
    train, test = t[t["subset"] == "train"], t[t["subset"] == "test"]
    assert sorted(train["pid"]) == [2, 2, 5, 5] and dict(zip(train["pid"], train["label"])) == {2: 0, 5: 1}
    assert sorted(test["pid"]) == [1, 1, 10, 10]
    assert (test["query"] == (test["camid"] == 0)).all() and (test["gallery"] == (test["camid"] == 1)).all()
    assert not (train["query"] | train["gallery"]).any()
    p1 = t[(t["pid"] == 1) & (t["camid"] == 0)]["names"].iloc[0]
    assert p1 == ["cam1_person001_00301.png", "cam1_person001_00302.png", "cam1_person001_00318.png"]
    assert frames_in_order(df) and df.attrs["split_id"] == 0


def test_ilidsvid_other_split_and_bad_split(tmp_path):
    root = make_ilidsvid(tmp_path / "ilids-vid")
    df = read_dataset("ilidsvid", root, split_id=1)
    assert sorted(df.loc[df["subset"] == "test", "pid"].unique()) == [2, 5]
    with pytest.raises(UserError, match=r"split_id=2 is out of range"):
        read_dataset("ilidsvid", root, split_id=2)
    with pytest.raises(UserError, match=r"split_id='0'"):
        read_dataset("ilidsvid", root, split_id="0")


# --------------------------------------------------------------------------- PRID-2011

# person -> (frames in cam_a, frames in cam_b); eligible: >= 27 in both
PRID_PERSONS = {"person_0001": (27, 28), "person_0002": (30, 26), "person_0003": (27, 27),
                "person_0004": (40, 0), "person_0006": (29, 30), "person_0007": (27, 27), "person_0009": (0, 30)}


def make_prid(root: Path, split_dir: str) -> Path:
    for person, counts in PRID_PERSONS.items():
        for cam, n in zip(("cam_a", "cam_b"), counts):
            for f in reversed(range(1, n + 1)):
                write_image(root / "prid_2011/multi_shot" / cam / person / f"{f:04d}.png")
    write_mat(root / split_dir / "train_test_splits_prid.mat", ls_set=np.array([[4, 1, 2, 3]], dtype=np.uint8))
    return root


@pytest.mark.parametrize("split_dir", [".", "train-test people splits"])
def test_prid2011(tmp_path, split_dir):
    df = read_dataset("prid2011", make_prid(tmp_path / "prid2011", split_dir))
    validate_index(df)
    t = tracklets(df)
    # eligible, sorted: 0001, 0003, 0006, 0007 -> test = [#4, #1] = 7, 1; train = [#2, #3] = 3, 6
    assert sorted(t.loc[t["subset"] == "test", "pid"]) == [1, 1, 7, 7]
    assert sorted(t.loc[t["subset"] == "train", "pid"]) == [3, 3, 6, 6]
    q, g = t[t["query"]], t[t["gallery"]]
    assert (q["camid"] == 0).all() and (g["camid"] == 1).all() and len(q) == len(g) == 2
    assert t.loc[(t["pid"] == 1) & (t["camid"] == 1), "names"].iloc[0] == [f"{f:04d}.png" for f in range(1, 29)]
    assert df["path"].iloc[0] == "prid_2011/multi_shot/cam_a/person_0003/0001.png"


def test_prid2011_split_indexes_too_many_persons(tmp_path):
    root = make_prid(tmp_path / "prid2011", ".")
    write_mat(root / "train_test_splits_prid.mat", ls_set=np.array([[5, 1, 2, 3]], dtype=np.float64))
    with pytest.raises(UserError, match=r"4 sorted persons with >= 27 frames"):
        read_dataset("prid2011", root)


# --------------------------------------------------------------------------- DukeMTMC-VideoReID

DUKE_VIDEO = {   # (folder, pid, tracklet) -> frame names (written in this order)
    ("train", "0001", "0001"): ["0001C6F0004X30823.jpg", "0001C6F0002X30821.jpg", "0001C6F0003X30822.jpg"],  # old
    ("train", "0023", "0002"): ["0023_C2_F0010_X00100.jpg", "0023_C2_F0009_X00099.jpg"],                      # new
    ("query", "0005", "0010"): ["0005_C1_F0001_X00001.jpg", "0005_C1_F0002_X00002.jpg"],
    ("gallery", "0005", "0011"): ["0005_C3_F0001_X00005.jpg"],
    ("gallery", "0100", "0012"): ["0100_C4_F0001_D00007.jpg", "0100_C4_F0002_D00008.jpg"],   # gallery-only id
}


def make_duke_video(base: Path, tracks=DUKE_VIDEO) -> None:
    for (folder, pid, trk), names in tracks.items():
        for n in names:
            write_image(base / folder / pid / trk / n)


@pytest.mark.parametrize("inner", [True, False])
def test_dukemtmc_videoreid(tmp_path, inner):
    base = tmp_path / "dukemtmc-vidreid" / "DukeMTMC-VideoReID"
    make_duke_video(base)
    df = read_dataset("dukemtmc_videoreid", base.parent if inner else base)
    validate_index(df)
    t = tracklets(df)
    assert len(t) == 5 and df.attrs["dropped"] == {"empty_tracklets": 0}
    train = t[t["subset"] == "train"]
    assert train["pid"].tolist() == [1, 23] and train["label"].tolist() == [0, 1]
    assert train["camid"].tolist() == [5, 1]                                  # old name: char 5, new: char 6
    assert train["names"].iloc[0] == sorted(DUKE_VIDEO[("train", "0001", "0001")])
    assert train["names"].iloc[1] == ["0023_C2_F0009_X00099.jpg", "0023_C2_F0010_X00100.jpg"]
    q, g = t[t["query"]], t[t["gallery"]]
    assert q["pid"].tolist() == [5] and not q["gallery"].any() and q["camid"].tolist() == [0]
    assert sorted(g["pid"]) == [5, 100] and not g["query"].any() and sorted(g["camid"]) == [2, 3]
    assert df["path"].iloc[0] == ("DukeMTMC-VideoReID/" if inner else "") + "train/0001/0001/0001C6F0002X30821.jpg"


def test_dukemtmc_videoreid_rejects_tracklet_with_two_cameras(tmp_path):
    make_duke_video(tmp_path / "duke", {**DUKE_VIDEO, ("gallery", "0005", "0011"): ["0005_C3_F0001_X1.jpg",
                                                                                      "0005_C4_F0002_X2.jpg"]})
    with pytest.raises(UserError, match=r"gallery/0005/0011: tracklet mixes cameras"):
        read_dataset("dukemtmc_videoreid", tmp_path / "duke")


# --------------------------------------------------------------------------- videos + MOT boxes

N_VIDEO_FRAMES = 30


def write_video(path: Path) -> None:
    """An MJPG .avi of 64x48 frames; frame f is flat grey 8 * f, so a crop tells which frame it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for f in range(N_VIDEO_FRAMES):
        writer.write(np.full((48, 64, 3), 8 * f, np.uint8))
    writer.release()


def mot_lines(pid: int, frames, box=(10.5, 4, 10, 20), extra: str = ",1,-1,-1,-1") -> list[str]:
    return [f"{f},{pid},{box[0]},{box[1]},{box[2]},{box[3]}{extra}" for f in frames]


def make_mot(root: Path) -> Path:
    cam_a = (mot_lines(1, range(1, 11)) + mot_lines(2, range(1, 4)) + mot_lines(3, range(1, 7), box=(-3, 30, 10, 30))
             + mot_lines(4, [*range(1, 6), *range(12, 16), *range(21, 24)]))
    cam_b = (mot_lines(1, range(2, 7)) + mot_lines(4, range(3, 9)) + mot_lines(5, range(1, 6))
             + mot_lines(-1, range(1, 4)) + ["6,5,1,1,0,10,1,-1,-1,-1"])
    for cam, lines in (("cam_b", cam_b), ("cam_a", cam_a)):
        write_video(root / "videos" / f"{cam}.avi")
        (root / "boxes").mkdir(parents=True, exist_ok=True)
        (root / "boxes" / f"{cam}.txt").write_text("\n".join(sorted(lines, key=lambda s: int(s.split(",")[0]))))
    return root


def mot_tracklets(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby("tracklet").agg(pid=("pid", "first"), camid=("camid", "first"), subset=("subset", "first"),
                                      query=("query", "first"), gallery=("gallery", "first"),
                                      frames=("video_frame", list))


def test_mot_tracklets_split_and_roles(tmp_path):
    df = read_dataset("mot", make_mot(tmp_path / "mot"), max_len=8)
    validate_index(df)
    assert df.attrs["cameras"] == ["cam_a", "cam_b"]
    assert df.attrs["dropped"] == {"boxes_without_id": 3, "ignored_boxes": 0, "other_class_boxes": 0,
                                   "low_visibility_boxes": 0, "empty_boxes": 1, "short_tracklets": 2}
    t = mot_tracklets(df)
    got = {(r.pid, r.camid, r.frames[0], len(r.frames)): (r.subset, r.query, r.gallery) for r in t.itertuples()}
    assert got == {
        (1, 0, 0, 8): ("train", False, False),         # frames 1..10 cut at max_len=8; the 2-frame rest dropped
        (3, 0, 0, 6): ("train", False, False),
        (1, 1, 1, 5): ("train", False, False),
        (4, 0, 0, 5): ("test", True, True),            # first tracklet of id 4 in camera 0: query (and gallery)
        (4, 0, 11, 7): ("test", False, True),          # gap of 6 frames splits, gap of 5 does not
        (4, 1, 2, 6): ("test", True, True),
        (5, 1, 0, 5): ("test", False, True),           # test id seen by one camera: gallery only
    }
    assert dict(zip(df["pid"], df["label"])) == {1: 0, 3: 1, 4: -1, 5: -1}
    assert set(df["path"]) == {"videos/cam_a.avi", "videos/cam_b.avi"}
    assert frames_in_order(df) and all(np.all(np.diff(f) > 0) for f in t["frames"])
    row = df[df["pid"] == 1].iloc[0]
    assert (row["box_x"], row["box_y"], row["box_w"], row["box_h"]) == (10, 4, 11, 20)   # rounded outwards


def test_mot_crops_come_from_the_right_frames(tmp_path):
    root = make_mot(tmp_path / "mot")
    df = read_dataset("mot", root)
    seen = 0
    for pos, image in iter_frame_images(root, df):
        row = df.iloc[pos]
        assert pos == seen and image.dtype == np.uint8
        assert image.shape == (min(row["box_h"], 48 - row["box_y"]), row["box_w"] + min(row["box_x"], 0), 3)
        assert abs(float(image.mean()) - 8 * row["video_frame"]) < 4
        seen += 1
    assert seen == len(df)


def test_mot_boxes_beyond_the_video(tmp_path, caplog):
    root = make_mot(tmp_path / "mot")
    with (root / "boxes" / "cam_b.txt").open("a") as fh:
        fh.write("\n" + "\n".join(mot_lines(6, range(28, 36))))   # 0-based 27..34; the video has 0..29
    df = read_dataset("mot", root)
    with pytest.raises(UserError, match=r"cam_b.avi: frame 30 \(0-based\) cannot be decoded"):
        list(iter_frame_images(root, df))
    counter: dict = {}
    with caplog.at_level(logging.WARNING, logger="hspreid"):
        got = [pos for pos, _ in iter_frame_images(root, df, on_error="skip", counter=counter)]
    assert counter["skipped"] == 5 and len(got) == len(df) - 5 and "cannot be decoded" in caplog.text


def test_mot_layout_and_options(tmp_path):
    root = make_mot(tmp_path / "mot")
    (root / "boxes" / "cam_b.txt").unlink()
    with pytest.raises(UserError, match=r"boxes/cam_b.txt: missing"):
        read_dataset("mot", root)
    with pytest.raises(UserError, match=r"train_fraction=1.5"):
        read_dataset("mot", root, train_fraction=1.5)
    with pytest.raises(UserError, match=r"max_len=0"):
        read_dataset("mot", root, max_len=0)


def test_mot_train_fraction(tmp_path):
    df = read_dataset("mot", make_mot(tmp_path / "mot"), train_fraction=0.0, min_len=1)
    assert (df["subset"] == "test").all() and sorted(df["pid"].unique()) == [1, 2, 3, 4, 5]


def add_mot_gt_rows(root: Path) -> None:
    """MOT17-style ground-truth rows (conf, class, visibility) for ids 6..9, seen by both cameras, 6 frames each."""
    rows = {6: ",1,1,0.9", 7: ",0,1,0.8", 8: ",0,7,1.0", 9: ",1,1,0.2"}   # pedestrian; ignored; static; occluded
    for cam in ("cam_a", "cam_b"):
        with (root / "boxes" / f"{cam}.txt").open("a") as fh:
            fh.write("\n" + "\n".join(line for pid, extra in rows.items()
                                       for line in mot_lines(pid, range(1, 7), extra=extra)))


@pytest.mark.parametrize("options, kept, dropped", [
    ({}, [6, 9], {"ignored_boxes": 24, "other_class_boxes": 0, "low_visibility_boxes": 0}),
    ({"keep_ignored": True}, [6, 7, 9], {"ignored_boxes": 0, "other_class_boxes": 12, "low_visibility_boxes": 0}),
    ({"keep_ignored": True, "classes": None}, [6, 7, 8, 9], {"ignored_boxes": 0, "other_class_boxes": 0,
                                                             "low_visibility_boxes": 0}),
    ({"keep_ignored": True, "classes": [1, 7], "min_visibility": 0.5}, [6, 7, 8],
     {"ignored_boxes": 0, "other_class_boxes": 0, "low_visibility_boxes": 12}),
])
def test_mot_ignored_class_and_visibility_filters(tmp_path, options, kept, dropped):
    """conf 0 (MOTChallenge's "ignore"), class != pedestrian and low visibility are dropped and counted;
    the fixture's original rows (class and visibility -1: not given) are never dropped by these filters."""
    root = make_mot(tmp_path / "mot")
    add_mot_gt_rows(root)
    df = read_dataset("mot", root, train_fraction=0.0, **options)
    assert sorted(set(df["pid"]) - {1, 2, 3, 4, 5}) == kept
    assert df.attrs["dropped"] == {"boxes_without_id": 3, **dropped, "empty_boxes": 1, "short_tracklets": 1}
    assert df.attrs["options"]["keep_ignored"] == options.get("keep_ignored", False)


def test_mot_filter_options_are_checked(tmp_path):
    root = make_mot(tmp_path / "mot")
    assert "keep_ignored=1 must be true or false" in one_line_error("mot", root, keep_ignored=1)
    assert "classes=1 must be a non-empty list of integers" in one_line_error("mot", root, classes=1)
    assert "classes=[] must be" in one_line_error("mot", root, classes=[])
    assert "min_visibility=2 must be a number between 0 and 1" in one_line_error("mot", root, min_visibility=2)


def test_mot_one_camera_fails_at_reading_not_at_rank(tmp_path):
    root = make_mot(tmp_path / "mot")
    (root / "boxes" / "cam_b.txt").unlink()
    (root / "videos" / "cam_b.avi").unlink()
    assert one_line_error("mot", root) == (
        f"{root} (videos + MOT boxes): 3 test tracklets but no query: only one camera (camid 0) has test "
        "tracklets, and the cross-camera protocol needs >= 2; add a second camera (only videos/cam_a.avi is "
        "there): videos/<camera>.<ext> + boxes/<camera>.txt showing the same people under the same ids")


@pytest.mark.parametrize("train_fraction, why", [
    (1.0, ("no test tracklet (7 train tracklets), so nothing to rank; 2 of the 4 ids appear in >= 2 of the 2 "
           "cameras and the test split is the last 0 sorted ids (reader.train_fraction=1.0)")),
    (0.75, ("1 test tracklet but no query: only one camera (camid 1) has test tracklets, and the cross-camera "
            "protocol needs >= 2; 2 of the 4 ids appear in >= 2 of the 2 cameras and the test split is the last 1 "
            "sorted ids (reader.train_fraction=0.75)")),
])
def test_mot_split_without_queries(tmp_path, train_fraction, why):
    root = make_mot(tmp_path / "mot")
    assert one_line_error("mot", root, train_fraction=train_fraction) == (
        f"{root} (videos + MOT boxes): {why}: give a person the same id in every box file, or lower "
        "reader.train_fraction")


def test_every_reader_checks_that_queries_can_be_ranked(tmp_path):
    """The check sits in finalize_index: a MARS set whose queries have no gallery match in another camera."""
    tracks = [("train", "0003", 1, 1, [1]), ("test", "0005", 1, 1, [1]), ("test", "0005", 1, 2, [2]),
              ("test", "0007", 2, 1, [1])]
    root = make_mars(tmp_path / "MARS", tracks, query_idx=[1], images=False)
    assert one_line_error("mars", root) == (
        f"{root} (MARS): none of the 1 queries has a gallery tracklet of its identity from another camera, so rank "
        "would skip them all; expected the data set's original query and gallery lists")
    tracks[2] = ("test", "0005", 2, 2, [2])                  # the same person seen by another camera: rankable
    assert read_dataset("mars", make_mars(tmp_path / "MARS2", tracks, query_idx=[1], images=False))["query"].any()
    market = tmp_path / "Market-1501"
    make_image_folders(market, {**MARKET_FILES, "bounding_box_test": ["-1_c3s1_000001_01.jpg"]})   # junk only
    assert one_line_error("market1501", market) == (
        f"{market} (Market-1501): 2 test tracklets but no gallery tracklet; expected the data set's original query "
        "and gallery lists")


# --------------------------------------------------------------------------- errors common to all readers

LAYOUT_HINTS = {"mars": "bbox_train", "market1501": "bounding_box_train", "dukemtmc_reid": "bounding_box_train",
                "occluded_duke": "bounding_box_train", "occluded_reid": "occluded_body_images",
                "cuhk03_np": "labeled/bounding_box_train", "ilidsvid": "i-LIDS-VID/sequences/cam1",
                "prid2011": "multi_shot/cam_a", "dukemtmc_videoreid": "query", "mot": "videos"}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_missing_root_names_the_path_and_layout(tmp_path, kind):
    root = tmp_path / "data" / "nowhere"
    with pytest.raises(UserError) as err:
        read_dataset(kind, root)
    message = str(err.value)
    assert message.startswith(f"{root}: ") and "\n" not in message
    assert f"{root}/" in message and LAYOUT_HINTS[kind] in message and "see README" in message


def test_incomplete_layout_names_what_is_missing(tmp_path):
    root = make_mars(tmp_path / "MARS", images=False)
    (root / "info" / "query_IDX.mat").unlink()
    with pytest.raises(UserError, match=r"layout incomplete \(.*info/query_IDX.mat is missing\)"):
        read_dataset("mars", root)


def test_unknown_kind_and_option(tmp_path):
    with pytest.raises(UserError, match=r"unknown data-set kind 'marz'.*mars"):
        read_dataset("marz", tmp_path)
    with pytest.raises(UserError, match=r"mars: unknown option 'protocol'; allowed options: none"):
        read_dataset("mars", tmp_path, protocol="official")
    with pytest.raises(UserError, match=r"unknown option 'split'; allowed options: split_id"):
        read_dataset("ilidsvid", tmp_path, split=1)


# --------------------------------------------------------------------------- frame loading

def test_iter_frame_images_reads_every_row_in_order(tmp_path):
    root = make_mars(tmp_path / "MARS")
    df = read_dataset("mars", root)
    got = list(iter_frame_images(root, df))
    assert [pos for pos, _ in got] == list(range(len(df)))
    assert all(img.shape == (8, 4, 3) and img.dtype == np.uint8 for _, img in got)


def test_iter_frame_images_corrupt_and_missing_files(tmp_path, caplog):
    make_image_folders(tmp_path / "data")
    df = read_dataset("market1501", tmp_path / "data")
    (tmp_path / "data" / df["path"].iloc[1]).write_bytes(b"\xff\xd8 truncated jpeg")
    (tmp_path / "data" / df["path"].iloc[3]).unlink()
    with pytest.raises(UserError, match=rf"{df['path'].iloc[1]}: unreadable or corrupt"):
        list(iter_frame_images(tmp_path / "data", df))
    counter: dict = {}
    with caplog.at_level(logging.WARNING, logger="hspreid"):
        got = [pos for pos, _ in iter_frame_images(tmp_path / "data", df, on_error="skip", counter=counter)]
    assert got == [p for p in range(len(df)) if p not in (1, 3)] and counter["skipped"] == 2
    assert "missing" in caplog.text and "unreadable or corrupt" in caplog.text
    with pytest.raises(UserError, match="on_error"):
        list(iter_frame_images(tmp_path / "data", df, on_error="ignore"))


# --------------------------------------------------------------------------- ground truth

def test_attach_ground_truth_maps(tmp_path):
    root = tmp_path / "data"
    make_image_folders(root)
    df = read_dataset("market1501", root)
    assert "mask_path" not in attach_ground_truth(df, root).columns
    for p in df["path"]:
        write_image(root / "ground_truth" / "masks" / (p.rsplit(".", 1)[0] + ".png"))
    out = attach_ground_truth(df, root)
    assert out["mask_path"].iloc[0] == "ground_truth/masks/" + df["path"].iloc[0].rsplit(".", 1)[0] + ".png"
    assert all((root / m).is_file() for m in out["mask_path"])
    assert "limb_path" not in out.columns
    for p in df["path"]:
        write_image(root / "ground_truth" / "limbs" / (p.rsplit(".", 1)[0] + ".png"))
    both = attach_ground_truth(df, root)
    assert both["limb_path"].tolist() == [m.replace("/masks/", "/limbs/") for m in out["mask_path"]]
    (root / out["mask_path"].iloc[2]).unlink()
    with pytest.raises(UserError, match=r"masks/.*: missing ground-truth map \(1 of 9"):
        attach_ground_truth(df, root)


def test_load_keypoints(tmp_path):
    root = tmp_path / "data"
    make_image_folders(root)
    df = read_dataset("market1501", root)
    lines = ["path,nose_x,nose_y,nose_v,neck_x,neck_y,neck_v",
             "bounding_box_test/-1_c1s1_000401_03.jpg,-1,-1,0,-1,-1,0"]                # junk: not in the index
    lines += [f"{p},{i},1.5,1,2,{i},0" for i, p in enumerate(df["path"][::-1])]    # file order != index order
    (root / "ground_truth").mkdir()
    (root / "ground_truth" / "keypoints.csv").write_text("\n".join(lines))
    kp, joints = load_keypoints(root, df)
    assert joints == ["nose", "neck"] and kp.shape == (len(df), 2, 3) and kp.dtype == np.float32
    assert kp[-1, 0].tolist() == [0, 1.5, 1] and kp[0, 1].tolist() == [2, len(df) - 1, 0]
    (root / "ground_truth" / "keypoints.csv").write_text("\n".join(lines[:-1]))
    with pytest.raises(UserError, match=r"no keypoints for frame"):
        load_keypoints(root, df)
    some, _ = load_keypoints(root, df, partial=True)                            # a user's file of some frames
    assert np.isnan(some[0]).all() and np.array_equal(some[1:], kp[1:])
    (root / "ground_truth" / "keypoints.csv").write_text("\n".join(lines[:-1] + [lines[-1].replace(",0", ",")]))
    with pytest.raises(UserError, match=r"empty or non-numeric"):
        load_keypoints(root, df)
