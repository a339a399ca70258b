"""Raw videos + MOT boxes: ``videos/<camera>.<ext>`` and ``boxes/<camera>.txt`` (``frame,id,x,y,w,h[,...]``).

Box files follow MOTChallenge (Milan et al., MOT16, arXiv:1603.00831): ``frame, id, x, y, w, h, conf, class,
visibility``, the last three optional. Boxes are dropped and counted in ``attrs["dropped"]``, in this order:
no id (``id < 0``, detections), ``ignored_boxes`` (``conf`` exactly 0, ground truth's "ignore" flag; kept with
``keep_ignored``), ``other_class_boxes`` (``class`` not in ``classes``, default pedestrians (1) only),
``low_visibility_boxes`` (``visibility < min_visibility``, default 0: none) and empty boxes (no area). A class or
visibility of -1 or a missing column means "not given" (MOT15 and tracker outputs write -1 there): never dropped.
Ids must name the same person in every video (MOTChallenge ids are per sequence).

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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hspreid.data.index import finalize_index
from hspreid.errors import UserError

from ._common import bool_option, fraction_option, int_list_option, int_option, require_layout

NAME = "videos + MOT boxes"
LAYOUT = ["videos", "boxes"]
MOT_COLUMNS = ["frame", "id", "x", "y", "w", "h", "conf", "class", "visibility"]
PEDESTRIAN = 1  # MOT16's class ids: 1 pedestrian, 2 person on vehicle, 7 static person, 8 distractor, 12 reflection


def read_mot(root: str | Path, *, max_gap: int = 5, max_len: int = 64, min_len: int = 4,
             train_fraction: float = 0.5, keep_ignored: bool = False, classes: Sequence[int] | None = (PEDESTRIAN,),
             min_visibility: float = 0.0) -> pd.DataFrame:
    """The frame index of videos + MOT boxes (see the module docstring); drop counts in ``attrs["dropped"]``."""
    max_gap = int_option("mot", "max_gap", max_gap)
    max_len = int_option("mot", "max_len", max_len, minimum=1)
    min_len = int_option("mot", "min_len", min_len, minimum=1)
    train_fraction = fraction_option("mot", "train_fraction", train_fraction)
    keep_ignored = bool_option("mot", "keep_ignored", keep_ignored)
    classes = None if classes is None else int_list_option("mot", "classes", classes)
    min_visibility = fraction_option("mot", "min_visibility", min_visibility)
    root = Path(root)
    require_layout(root, NAME, LAYOUT, note=", with one box file boxes/<camera>.txt per video videos/<camera>.<ext>")
    cameras = _pair_cameras(root)
    boxes = pd.concat([_read_boxes(root / "boxes" / f"{cam}.txt", camid) for camid, cam in enumerate(cameras)],
                      ignore_index=True)
    boxes, dropped = _clean_boxes(boxes, keep_ignored, classes, min_visibility)
    boxes["track"] = _cut_tracklets(boxes, max_gap, max_len)
    length = boxes.groupby("track")["frame"].transform("size")
    dropped["short_tracklets"] = int(boxes.loc[length < min_len, "track"].nunique())
    boxes = boxes[length >= min_len].reset_index(drop=True)
    if boxes.empty:
        raise UserError(f"{root / 'boxes'}: no tracklet of at least min_len={min_len} frames")
    records = _records(boxes, cameras, train_fraction)
    df = finalize_index(records, name=f"{root} ({NAME})", hint=_rankable_hint(boxes, cameras, train_fraction))
    df.attrs.update(dataset="mot", cameras=list(cameras), dropped=dropped,
                    options=dict(max_gap=max_gap, max_len=max_len, min_len=min_len, train_fraction=train_fraction,
                                 keep_ignored=keep_ignored, classes=classes, min_visibility=min_visibility))
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
    """:data:`MOT_COLUMNS` of one MOT file (absent ones NaN, further ones ignored) plus its ``camid``."""
    try:
        raw = pd.read_csv(path, header=None, sep=",", skipinitialspace=True, dtype=float)
    except pd.errors.EmptyDataError:
        raw = pd.DataFrame(np.zeros((0, 6)))
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: not a MOT box file ({exc}); expected lines frame,id,x,y,w,h[,conf,...]") from exc
    if raw.shape[1] < 6:
        raise UserError(f"{path}: {raw.shape[1]} columns; expected lines frame,id,x,y,w,h[,conf,...]")
    raw = raw.reindex(columns=range(len(MOT_COLUMNS))).set_axis(MOT_COLUMNS, axis=1)
    frame_id = raw[["frame", "id"]].to_numpy()
    bad = (raw[MOT_COLUMNS[:6]].isna().any(axis=1).to_numpy() | (frame_id != np.round(frame_id)).any(axis=1)
           | (raw["frame"] < 1))
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


def _clean_boxes(boxes: pd.DataFrame, keep_ignored: bool, classes: list[int] | None,
                 min_visibility: float) -> tuple[pd.DataFrame, dict[str, int]]:
    """Integer boxes (rounded outwards); the boxes the module docstring lists dropped, each counted once."""
    x0, y0 = np.floor(boxes["x"]), np.floor(boxes["y"])
    out = pd.DataFrame({"camid": boxes["camid"], "id": boxes["id"], "frame": boxes["frame"],
                        "box_x": x0.astype(np.int64), "box_y": y0.astype(np.int64),
                        "box_w": (np.ceil(boxes["x"] + boxes["w"]) - x0).astype(np.int64),
                        "box_h": (np.ceil(boxes["y"] + boxes["h"]) - y0).astype(np.int64)})
    given = boxes[["class", "visibility"]].notna() & boxes[["class", "visibility"]].ne(-1)
    reasons = {
        "boxes_without_id": boxes["id"] < 0,
        "ignored_boxes": (boxes["conf"] == 0) & (not keep_ignored),
        "other_class_boxes": given["class"] & ~boxes["class"].isin(classes) if classes is not None else False,
        "low_visibility_boxes": given["visibility"] & (boxes["visibility"] < min_visibility),
        "empty_boxes": (boxes["w"] <= 0) | (boxes["h"] <= 0),
    }
    drop = np.zeros(len(boxes), dtype=bool)
    dropped = {}
    for reason, mask in reasons.items():
        mask = np.asarray(mask, dtype=bool) & ~drop      # each box counted under its first reason only
        dropped[reason] = int(mask.sum())
        drop |= mask
    out = out[~drop].sort_values(["camid", "id", "frame"], kind="stable").reset_index(drop=True)
    return out, dropped


def _cut_tracklets(boxes: pd.DataFrame, max_gap: int, max_len: int) -> np.ndarray:
    """Tracklet number of each box (boxes sorted by camera, id, frame): new run at a new id/camera or a gap."""
    cam, pid, frame = (boxes[c].to_numpy() for c in ("camid", "id", "frame"))
    new_run = np.ones(len(boxes), dtype=bool)
    new_run[1:] = (cam[1:] != cam[:-1]) | (pid[1:] != pid[:-1]) | (frame[1:] - frame[:-1] - 1 > max_gap)
    run = np.cumsum(new_run) - 1
    pos_in_run = np.arange(len(run)) - np.flatnonzero(new_run)[run]
    return np.cumsum(new_run | (pos_in_run % max_len == 0)) - 1


def _rankable_hint(boxes: pd.DataFrame, cameras: dict[str, str], train_fraction: float) -> str:
    """What to do when the split leaves nothing to rank (the end of :func:`check_rankable`'s message)."""
    if len(cameras) == 1:
        return (f"add a second camera (only {next(iter(cameras.values()))} is there): videos/<camera>.<ext> + "
                "boxes/<camera>.txt showing the same people under the same ids")
    cams_per_id = boxes.groupby("id")["camid"].nunique()
    n_test = len(cams_per_id) - int(len(cams_per_id) * train_fraction)
    return (f"{int((cams_per_id >= 2).sum())} of the {len(cams_per_id)} ids appear in >= 2 of the {len(cameras)} "
            f"cameras and the test split is the last {n_test} sorted ids (reader.train_fraction={train_fraction}): "
            "give a person the same id in every box file, or lower reader.train_fraction")


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
