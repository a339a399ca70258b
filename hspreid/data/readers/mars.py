"""MARS (Zheng et al. ECCV'16) in its native layout, read from the official ``info/`` metadata.

``info/tracks_{train,test}_info.mat`` rows are ``[start, end, pid, cam]``: 1-based inclusive row numbers
into ``info/{train,test}_name.txt``, cam 1..6. ``info/query_IDX.mat`` holds 1-based (uint16) row numbers into
the test track info. Junk tracklets (pid -1) are dropped; distractors (pid 0) are kept. Query tracklets are
marked ``query=True, gallery=True``: the official gallery is every test tracklet, queries included (the
ranker can exclude queries from the gallery for the torchreid-style protocol).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hspreid.data.index import finalize_index
from hspreid.errors import UserError

from ._common import as_int_matrix, load_mat, require_layout

NAME = "MARS"
LAYOUT = ["bbox_train", "bbox_test", "info/train_name.txt", "info/test_name.txt",
          "info/tracks_train_info.mat", "info/tracks_test_info.mat", "info/query_IDX.mat"]


def read_mars(root: str | Path) -> pd.DataFrame:
    """The MARS frame index; ``attrs["dropped"]["junk_tracklets"]`` counts the pid -1 tracklets left out."""
    root = Path(root)
    require_layout(root, NAME, LAYOUT)
    query_path = root / "info" / "query_IDX.mat"
    query_idx = load_mat(query_path, "query_IDX", "1-based rows of tracks_test_info.mat, one per query")
    query_rows = as_int_matrix(query_idx, query_path, "query_IDX").ravel() - 1
    train, junk_train = _read_subset(root / "info", "train", None)
    test, junk_test = _read_subset(root / "info", "test", query_rows)
    df = finalize_index(pd.concat([train, test], ignore_index=True), name=f"{root} ({NAME})")
    df.attrs.update(dataset="mars", dropped={"junk_tracklets": junk_train + junk_test})
    return df


def _read_subset(info: Path, subset: str, query_rows: np.ndarray | None) -> tuple[pd.DataFrame, int]:
    """Per-frame records of one subset's non-junk tracklets and the number of junk tracklets left out."""
    names = _read_names(info / f"{subset}_name.txt")
    track_path = info / f"tracks_{subset}_info.mat"
    key = f"track_{subset}_info"
    tracks = as_int_matrix(load_mat(track_path, key, "one [start, end, pid, cam] row per tracklet"), track_path, key, 4)
    _check_tracks(tracks, len(names), track_path)
    is_query = np.zeros(len(tracks), dtype=bool)
    if query_rows is not None:
        if query_rows.size == 0 or query_rows.min() < 0 or query_rows.max() >= len(tracks):
            found = f"{query_rows.min() + 1}..{query_rows.max() + 1}" if query_rows.size else "none"
            raise UserError(f"{info / 'query_IDX.mat'}: query_IDX must hold 1-based rows of {track_path.name} "
                            f"(1..{len(tracks)}); found {found}")
        is_query[query_rows] = True
    keep = tracks[:, 2] != -1
    records = _subset_records(names, tracks[keep], np.flatnonzero(keep), is_query[keep], subset, track_path)
    return records, int((~keep).sum())


def _read_names(path: Path) -> np.ndarray:
    """Frame names of one ``*_name.txt`` as a fixed-width unicode array (row i = line i + 1)."""
    names = np.array(path.read_text().split())
    if names.size == 0:
        raise UserError(f"{path}: empty; expected one frame name (e.g. 0001C1T0001F001.jpg) per line")
    return names


def _check_tracks(tracks: np.ndarray, n_names: int, path: Path) -> None:
    """Every track row must name a non-empty range of name-list rows, a pid >= -1 and a camera >= 1."""
    start, end, pid, cam = tracks.T
    bad = (start < 1) | (end < start) | (end > n_names) | (pid < -1) | (cam < 1)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path}: row {r + 1} {tracks[r].tolist()} is not [start, end, pid, cam] with "
                        f"1 <= start <= end <= {n_names} (rows of the name list), pid >= -1 and cam >= 1")


def _subset_records(names: np.ndarray, tracks: np.ndarray, track_rows: np.ndarray, is_query: np.ndarray,
                    subset: str, track_path: Path) -> pd.DataFrame:
    """Per-frame records of the kept tracklets of one subset, built without a per-frame Python loop."""
    lengths = tracks[:, 1] - tracks[:, 0] + 1
    first = np.repeat(tracks[:, 0] - 1, lengths)                         # name row of the tracklet's first frame
    rows = first + np.arange(len(first)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    _check_constant(names, rows, first, np.repeat(track_rows, lengths), track_path)
    frame_names = pd.Series(names[rows])
    test = subset == "test"
    return pd.DataFrame({
        "path": f"bbox_{subset}/" + frame_names.str[:4] + "/" + frame_names,
        "pid": np.repeat(tracks[:, 2], lengths),
        "camid": np.repeat(tracks[:, 3] - 1, lengths),
        "subset": subset,
        "query": np.repeat(is_query, lengths),
        "gallery": test,
        "track_key": np.repeat(track_rows, lengths),
        "order": rows,
    })


def _check_constant(names: np.ndarray, rows: np.ndarray, first: np.ndarray, track_of_frame: np.ndarray,
                    track_path: Path) -> None:
    """Raise unless ``name[:4]`` (pid folder) and ``name[5]`` (camera) equal those of the tracklet's first frame."""
    width = names.dtype.itemsize // 4
    if width < 6:
        raise UserError(f"{track_path.parent}: frame names like {names[0]!r} are too short; expected e.g. "
                        "0001C1T0001F001.jpg")
    chars = names.view(np.uint32).reshape(len(names), width)[:, [0, 1, 2, 3, 5]]   # pid folder + camera digit
    differs = (chars[rows] != chars[first]).any(axis=1)
    if differs.any():
        i = int(np.flatnonzero(differs)[0])
        raise UserError(f"{track_path}: row {int(track_of_frame[i]) + 1} mixes identities or cameras: frame "
                        f"{names[rows[i]]!r} (name-list line {int(rows[i]) + 1}) differs from {names[first[i]]!r}")
