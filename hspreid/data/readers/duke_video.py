"""DukeMTMC-VideoReID: ``{train,query,gallery}/<pid4>/<tracklet4>/<frame>.jpg``.

Frame names come in two formats: ``0001_C6_F0099_X30823.jpg`` (new) and ``0001C6F0099X30823.jpg`` (old); the
camera follows ``C`` (camid = digit - 1) and the frame order is the number after ``F``. Queries are not in the
gallery in this data set (the query folder holds one tracklet per test id).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hspreid.data.index import finalize_index
from hspreid.errors import UserError

from ._common import Tracklet, list_files, list_subdirs, rel_prefix, require_layout, resolve_inner, tracklets_to_records

NAME = "DukeMTMC-VideoReID"
PATTERN = r"/\d+_?C(\d)_?F(\d+)[^/]*$"   # on the frame's path: <pid>[_]C<cam>[_]F<frame>..., the file name
# folder -> (subset, query, gallery)
FOLDERS = {"train": ("train", False, False), "query": ("test", True, False), "gallery": ("test", False, True)}


def read_dukemtmc_videoreid(root: str | Path) -> pd.DataFrame:
    """The DukeMTMC-VideoReID index (``root`` may be the archive's ``DukeMTMC-VideoReID/`` folder or its parent)."""
    root = Path(root)
    base = resolve_inner(root, ("DukeMTMC-VideoReID",), "train")
    prefix = rel_prefix(base, root)
    require_layout(root, NAME, [prefix + folder for folder in FOLDERS])
    tracklets = [t for folder in FOLDERS for t in _folder_tracklets(base, folder, prefix)]
    records, empty = tracklets_to_records(tracklets)
    records["camid"], records["order"] = _parse_frames(records, root)
    df = finalize_index(records, name=f"{root} ({NAME})")
    df.attrs.update(dataset="dukemtmc_videoreid", dropped={"empty_tracklets": empty})
    return df


def _folder_tracklets(base: Path, folder: str, prefix: str) -> list[Tracklet]:
    """Tracklets of ``base/folder/<pid>/<tracklet>``; the camera is filled in from the frame names later."""
    subset, query, gallery = FOLDERS[folder]
    out = []
    for pid_dir in list_subdirs(base / folder):
        if not pid_dir.isdigit():
            raise UserError(f"{base / folder / pid_dir}: expected identity folders named by a number, e.g. 0001")
        for trk in list_subdirs(base / folder / pid_dir):
            out.append(Tracklet(f"{prefix}{folder}/{pid_dir}/{trk}", list_files(base / folder / pid_dir / trk),
                                int(pid_dir), -1, subset, query, gallery))
    return out


def _parse_frames(records: pd.DataFrame, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(camid, F number) of every frame; a :class:`UserError` on a stray name or a tracklet with two cameras."""
    parts = records["path"].str.extract(PATTERN)
    if parts.isna().any(axis=None):
        path = records["path"][parts.isna().any(axis=1)].iloc[0]
        raise UserError(f"{root / path}: frame name is neither 0001_C6_F0099_X30823.jpg nor "
                        "0001C6F0099X30823.jpg")
    camid = parts[0].astype(np.int64).to_numpy() - 1
    cams_per_track = pd.Series(camid).groupby(records["track_key"].to_numpy()).nunique()
    if (cams_per_track > 1).any():
        path = records["path"][records["track_key"] == cams_per_track.index[cams_per_track > 1][0]].iloc[0]
        raise UserError(f"{(root / path).parent}: tracklet mixes cameras (frame names carry different C<n>)")
    return camid, parts[1].astype(np.int64).to_numpy()
