"""Raw videos + MOT boxes: ``videos/<camera>.<ext>`` and ``boxes/<camera>.txt`` (``frame,id,x,y,w,h[,...]``).

Each video is a camera (camid = position of the camera name in sorted order). A tracklet is a run of one id in
one video, cut where more than ``max_gap`` frames are missing and into pieces of at most ``max_len`` frames;
pieces shorter than ``min_len`` are dropped and counted. The first ``train_fraction`` of the sorted ids train, the
others test: for a test id seen by >= 2 cameras, the first tracklet of each (id, camera) is a query that is also in
the gallery (as MARS), its other tracklets are gallery only; a test id seen by one camera is gallery only.
Rows point at the video (``path``) plus ``video_frame`` (0-based) and the integer box ``box_x, box_y, box_w,
box_h`` (the float MOT box rounded outwards); :func:`hspreid.data.loading.iter_frame_images` crops them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hspreid.data.index import finalize_index
from hspreid.errors import UserError

from ._common import fraction_option, int_option, require_layout

NAME = "videos + MOT boxes"
LAYOUT = ["videos", "boxes"]
MOT_COLUMNS = ["frame", "id", "x", "y", "w", "h"]


def read_mot(root: str | Path, *, max_gap: int = 5, max_len: int = 64, min_len: int = 4,
             train_fraction: float = 0.5) -> pd.DataFrame:
    """The frame index of videos + MOT boxes (see the module docstring); drop counts in ``attrs["dropped"]``."""
    max_gap = int_option("mot", "max_gap", max_gap)
    max_len = int_option("mot", "max_len", max_len, minimum=1)
    min_len = int_option("mot", "min_len", min_len, minimum=1)
    train_fraction = fraction_option("mot", "train_fraction", train_fraction)
    root = Path(root)
    require_layout(root, NAME, LAYOUT, note=", with one box file boxes/<camera>.txt per video videos/<camera>.<ext>")
    cameras = _pair_cameras(root)
    boxes = pd.concat([_read_boxes(root / "boxes" / f"{cam}.txt", camid) for camid, cam in enumerate(cameras)],
                      ignore_index=True)
    boxes, dropped = _clean_boxes(boxes)
    boxes["track"] = _cut_tracklets(boxes, max_gap, max_len)
    length = boxes.groupby("track")["frame"].transform("size")
    dropped["short_tracklets"] = int(boxes.loc[length < min_len, "track"].nunique())
    boxes = boxes[length >= min_len].reset_index(drop=True)
    if boxes.empty:
        raise UserError(f"{root / 'boxes'}: no tracklet of at least min_len={min_len} frames")
    records = _records(boxes, cameras, train_fraction)
    df = finalize_index(records, name=NAME)
    df.attrs.update(dataset="mot", cameras=list(cameras), dropped=dropped,
                    options=dict(max_gap=max_gap, max_len=max_len, min_len=min_len, train_fraction=train_fraction))
    return df


def _pair_cameras(root: Path) -> dict[str, str]:
    """Camera name -> video path relative to root, sorted by name; every video needs a box file and vice versa."""
    videos: dict[str, str] = {}
    for name in sorted(os.listdir(root / "videos")):
        stem = os.path.splitext(name)[0]
        if name.startswith(".") or not (root / "videos" / name).is_file():
            continue
        if stem in videos:
            raise UserError(f"{root / 'videos' / name}: two videos for camera {stem!r}; keep one")
        videos[stem] = f"videos/{name}"
    boxes = {os.path.splitext(n)[0] for n in os.listdir(root / "boxes") if n.endswith(".txt") and not n.startswith(".")}
    if not videos:
        raise UserError(f"{root / 'videos'}: no video; expected videos/<camera>.<ext> (any format OpenCV reads)")
    if set(videos) - boxes:
        cam = min(set(videos) - boxes)
        raise UserError(f"{root / 'boxes' / (cam + '.txt')}: missing; video {videos[cam]} needs its MOT box file")
    if boxes - set(videos):
        cam = min(boxes - set(videos))
        raise UserError(f"{root / 'boxes' / (cam + '.txt')}: no video videos/{cam}.<ext> for this box file")
    return dict(sorted(videos.items()))


def _read_boxes(path: Path, camid: int) -> pd.DataFrame:
    """``frame, id, x, y, w, h`` of one MOT file (extra columns ignored) plus its ``camid``."""
    try:
        raw = pd.read_csv(path, header=None, sep=",", skipinitialspace=True, dtype=float)
    except pd.errors.EmptyDataError:
        raw = pd.DataFrame(np.zeros((0, 6)))
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: not a MOT box file ({exc}); expected lines frame,id,x,y,w,h[,conf,...]") from exc
    if raw.shape[1] < 6:
        raise UserError(f"{path}: {raw.shape[1]} columns; expected lines frame,id,x,y,w,h[,conf,...]")
    raw = raw.iloc[:, :6].set_axis(MOT_COLUMNS, axis=1)
    frame_id = raw[["frame", "id"]].to_numpy()
    bad = raw.isna().any(axis=1).to_numpy() | (frame_id != np.round(frame_id)).any(axis=1) | (raw["frame"] < 1)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 1
        raise UserError(f"{path}: line {line} is not frame,id,x,y,w,h with an integer frame >= 1 and integer id")
    raw[["frame", "id"]] = raw[["frame", "id"]].astype(np.int64)
    dup = raw.duplicated(["frame", "id"]) & (raw["id"] >= 0)
    if dup.any():
        row = raw[dup].iloc[0]
        raise UserError(f"{path}: id {int(row['id'])} has two boxes in frame {int(row['frame'])} "
                        f"(line {dup.idxmax() + 1}); expected at most one box per id and frame")
    raw["camid"] = camid
    return raw


def _clean_boxes(boxes: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Integer boxes (rounded outwards); boxes with no id (< 0) or no area dropped and counted."""
    x0, y0 = np.floor(boxes["x"]), np.floor(boxes["y"])
    out = pd.DataFrame({"camid": boxes["camid"], "id": boxes["id"], "frame": boxes["frame"],
                        "box_x": x0.astype(np.int64), "box_y": y0.astype(np.int64),
                        "box_w": (np.ceil(boxes["x"] + boxes["w"]) - x0).astype(np.int64),
                        "box_h": (np.ceil(boxes["y"] + boxes["h"]) - y0).astype(np.int64)})
    no_id = out["id"] < 0
    empty = ~no_id & ((boxes["w"] <= 0) | (boxes["h"] <= 0))
    out = out[~(no_id | empty)].sort_values(["camid", "id", "frame"], kind="stable").reset_index(drop=True)
    return out, {"boxes_without_id": int(no_id.sum()), "empty_boxes": int(empty.sum())}


def _cut_tracklets(boxes: pd.DataFrame, max_gap: int, max_len: int) -> np.ndarray:
    """Tracklet number of each box (boxes sorted by camera, id, frame): new run at a new id/camera or a gap."""
    cam, pid, frame = (boxes[c].to_numpy() for c in ("camid", "id", "frame"))
    new_run = np.ones(len(boxes), dtype=bool)
    new_run[1:] = (cam[1:] != cam[:-1]) | (pid[1:] != pid[:-1]) | (frame[1:] - frame[:-1] - 1 > max_gap)
    run = np.cumsum(new_run) - 1
    pos_in_run = np.arange(len(run)) - np.flatnonzero(new_run)[run]
    return np.cumsum(new_run | (pos_in_run % max_len == 0)) - 1


def _records(boxes: pd.DataFrame, cameras: dict[str, str], train_fraction: float) -> pd.DataFrame:
    """Per-box ``finalize_index`` records with the train/test split and the query/gallery roles."""
    tracks = boxes.groupby("track").agg(camid=("camid", "first"), pid=("id", "first"), start=("frame", "min"))
    ids = np.sort(tracks["pid"].unique())
    train_ids = ids[: int(len(ids) * train_fraction)]
    tracks["train"] = tracks["pid"].isin(train_ids)
    n_cams = tracks[~tracks["train"]].groupby("pid")["camid"].nunique()
    first_of_cam = tracks.groupby(["pid", "camid"])["start"].transform("min") == tracks["start"]
    tracks["query"] = ~tracks["train"] & first_of_cam & tracks["pid"].map(n_cams).ge(2)
    tracks["key"] = np.argsort(np.lexsort((tracks["pid"], tracks["start"], tracks["camid"])))  # by camera, time
    per_box = tracks.loc[boxes["track"]].reset_index(drop=True)
    return pd.DataFrame({
        "path": np.array(list(cameras.values()), dtype=object)[boxes["camid"]],
        "pid": boxes["id"], "camid": boxes["camid"],
        "subset": np.where(per_box["train"], "train", "test"),
        "query": per_box["query"], "gallery": ~per_box["train"],
        "track_key": per_box["key"], "order": boxes["frame"],
        "video_frame": boxes["frame"] - 1,
        "box_x": boxes["box_x"], "box_y": boxes["box_y"], "box_w": boxes["box_w"], "box_h": boxes["box_h"],
    })
