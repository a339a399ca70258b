"""The frame index: one table row per frame, the contract between readers and every later stage.

Every reader (native data-set layouts, the synthetic generator, raw videos + MOT boxes) returns a
:class:`pandas.DataFrame` with the columns of :data:`INDEX_COLUMNS`, built with :func:`finalize_index`.

Columns
-------
path      str   frame path relative to the data-set root, POSIX separators
pid       int   raw identity as the data set names it (0 = distractor); junk (-1) never appears
label     int   train identities relabelled 0..N-1 in sorted integer order; -1 outside the train subset
camid     int   camera, 0-based
tracklet  int   tracklet number, 0..T-1, contiguous; an image data set has one frame per tracklet
frame     int   order of the frame inside its tracklet, 0..len-1
subset    str   "train" or "test"
query     bool  the tracklet is a query (test subset only)
gallery   bool  the tracklet belongs to the gallery (test subset only; MARS queries are both)

Optional: ``mask_path`` and ``limb_path`` (ground-truth part mask and limb map, relative paths) where the data
set has them; for raw videos + MOT boxes, ``video_frame`` (0-based) and ``box_x, box_y, box_w, box_h`` (ints)
locate the crop inside the video named by ``path``. :data:`EXTRA_COLUMNS` lists the optional columns that are kept.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from hspreid.errors import UserError

INDEX_COLUMNS = ["path", "pid", "label", "camid", "tracklet", "frame", "subset", "query", "gallery"]
_INT_COLUMNS = ["pid", "label", "camid", "tracklet", "frame"]
EXTRA_COLUMNS = ("mask_path", "limb_path", "video_frame", "box_x", "box_y", "box_w", "box_h")


class DatasetIndexError(UserError):
    """A reader produced an index that breaks the contract."""


def finalize_index(records: Iterable[dict] | pd.DataFrame, *, name: str = "dataset",
                   hint: str = "expected the data set's original query and gallery lists") -> pd.DataFrame:
    """Turn per-frame records into a valid index.

    Each record needs ``path, pid, camid, subset, query, gallery`` and a ``track_key`` (any hashable
    that is equal for the frames of one tracklet, unique across the data set) plus ``order`` (any
    sortable value giving the frame order inside the tracklet). ``finalize_index`` sorts tracklets
    deterministically (subset train first, then by ``track_key``), numbers tracklets and frames,
    relabels train pids in sorted order, validates the result and checks that it can be ranked
    (:func:`check_rankable`; ``hint`` ends that message with what to do).
    """
    df = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(list(records))
    if df.empty:
        raise DatasetIndexError(f"{name}: no frames found")
    for col in ("path", "pid", "camid", "subset", "query", "gallery", "track_key", "order"):
        if col not in df.columns:
            raise DatasetIndexError(f"{name}: reader did not provide column {col!r}")
    subset_rank = df["subset"].map({"train": 0, "test": 1})
    if subset_rank.isna().any():
        bad = df.loc[subset_rank.isna(), "subset"].iloc[0]
        raise DatasetIndexError(f"{name}: subset must be 'train' or 'test', got {bad!r}")
    df["_subset_rank"] = subset_rank.astype(np.int8)
    if df["track_key"].map(type).eq(tuple).any():  # tuples do not sort as a column: use their rank
        df["track_key"] = pd.Series(pd.factorize(df["track_key"], sort=True)[0], index=df.index)
    # stable: frames with equal `order` keep the reader's order
    df = df.sort_values(["_subset_rank", "track_key", "order"], kind="stable").reset_index(drop=True)
    new_track = (df["_subset_rank"].ne(df["_subset_rank"].shift()) | df["track_key"].ne(df["track_key"].shift()))
    df["tracklet"] = new_track.cumsum() - 1
    df["frame"] = df.groupby("tracklet").cumcount()
    train = df["subset"] == "train"
    train_pids = np.sort(df.loc[train, "pid"].unique())
    relabel = {int(p): i for i, p in enumerate(train_pids)}
    df["label"] = -1
    df.loc[train, "label"] = df.loc[train, "pid"].map(relabel)
    extra = [c for c in df.columns if c not in INDEX_COLUMNS and c not in ("track_key", "order", "_subset_rank")]
    df = df[INDEX_COLUMNS + [c for c in extra if c in EXTRA_COLUMNS]]
    for col in _INT_COLUMNS:
        df[col] = df[col].astype(np.int64)
    df["query"] = df["query"].astype(bool)
    df["gallery"] = df["gallery"].astype(bool)
    validate_index(df, name=name)
    check_rankable(df, name=name, hint=hint)
    return df


def validate_index(df: pd.DataFrame, *, name: str = "dataset") -> None:
    """Raise :class:`DatasetIndexError` with one clear line if ``df`` breaks the index contract."""
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetIndexError(f"{name}: index lacks columns {missing}")
    if (df["pid"] < 0).any():
        raise DatasetIndexError(f"{name}: junk pid -1 must be dropped by the reader")
    if (df["camid"] < 0).any():
        raise DatasetIndexError(f"{name}: camids must be 0-based and non-negative")
    per_track = df.groupby("tracklet").agg(pid=("pid", "nunique"), cam=("camid", "nunique"),
                                           sub=("subset", "nunique"), q=("query", "nunique"))
    bad = per_track[(per_track[["pid", "cam", "sub", "q"]] > 1).any(axis=1)]
    if len(bad):
        raise DatasetIndexError(f"{name}: tracklet {int(bad.index[0])} mixes identities, cameras or subsets")
    train = df["subset"] == "train"
    if (df.loc[train, "query"] | df.loc[train, "gallery"]).any():
        raise DatasetIndexError(f"{name}: train frames cannot be query or gallery")
    test = ~train
    if test.any() and not (df.loc[test, "query"] | df.loc[test, "gallery"]).all():
        raise DatasetIndexError(f"{name}: every test tracklet must be a query, a gallery item or both")


def check_rankable(df: pd.DataFrame, *, name: str = "dataset", hint: str = "") -> None:
    """Raise one :class:`DatasetIndexError` line unless some query can be scored at ``rank``.

    Under the cross-camera protocol of every re-ID benchmark (``hspreid.eval.rank``: same identity and camera
    is junk) a query counts only if a gallery tracklet of its identity comes from another camera; a data set
    without one would train for nothing and fail at ``rank``. ``hint`` (what to do) ends the message.
    """
    t = df.drop_duplicates("tracklet")
    test = t[t["subset"] == "test"]
    query, gallery = test[test["query"]], test[test["gallery"]]
    cameras = np.unique(test["camid"])
    one_camera = f": only one camera (camid {cameras[0]}) has test tracklets, and the cross-camera protocol " \
                 "needs >= 2" if len(cameras) == 1 else ""
    if test.empty:
        why = f"no test tracklet ({len(t)} train tracklets), so nothing to rank"
    elif query.empty or gallery.empty:
        n_test = f"{len(test)} test tracklet{'s' if len(test) > 1 else ''}"
        why = f"{n_test} but {'no query' if query.empty else 'no gallery tracklet'}{one_camera}"
    else:
        pairs = query[["pid", "camid"]].merge(gallery[["pid", "camid"]], on="pid", suffixes=("_q", "_g"))
        if (pairs["camid_q"] != pairs["camid_g"]).any():
            return
        why = (f"none of the {len(query)} queries has a gallery tracklet of its identity from another camera, "
               f"so rank would skip them all{one_camera}")
    raise DatasetIndexError(f"{name}: {why}; {hint}" if hint else f"{name}: {why}")


def tracklet_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per tracklet: first row, number of frames, and its identity/camera/role."""
    g = df.groupby("tracklet", sort=True)
    out = g.agg(pid=("pid", "first"), label=("label", "first"), camid=("camid", "first"),
                subset=("subset", "first"), query=("query", "first"), gallery=("gallery", "first"))
    out["start"] = g.apply(lambda rows: rows.index[0], include_groups=False).astype(np.int64)
    out["length"] = g.size()
    return out
