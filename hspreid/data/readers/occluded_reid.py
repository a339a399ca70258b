"""Occluded-REID (Zhuo et al. ICME'18): test only, 200 ids x 5 occluded queries and 5 whole-body gallery images.

``occluded_body_images/<pid>/<pid>_<nn>.tif`` are queries, ``whole_body_images/...`` the gallery. The names carry
no camera, so by the bpbreid convention queries get camid 0 and gallery images camid 1 (otherwise the same-pid
same-camera removal of the ranker would delete every true match).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hspreid.data.index import finalize_index
from hspreid.errors import UserError

from ._common import IMAGE_EXTS, rel_prefix, require_layout, resolve_inner

NAME = "Occluded-REID"
EXTS = IMAGE_EXTS | {".tif", ".tiff"}
# folder -> (camid, query, gallery)
FOLDERS = {"occluded_body_images": (0, True, False), "whole_body_images": (1, False, True)}


def read_occluded_reid(root: str | Path) -> pd.DataFrame:
    """The Occluded-REID index (test subset only; ``Occluded_REID/`` accepted inside ``root``)."""
    root = Path(root)
    base = resolve_inner(root, ("Occluded_REID", "Occluded-REID"), "occluded_body_images")
    prefix = rel_prefix(base, root)
    require_layout(root, NAME, [prefix + folder for folder in FOLDERS])
    records = pd.concat([_folder_records(base, folder) for folder in FOLDERS], ignore_index=True)
    records["path"] = prefix + records["path"]
    records["track_key"] = np.arange(len(records))
    records["order"] = 0
    df = finalize_index(records, name=f"{root} ({NAME})")
    df.attrs.update(dataset="occluded_reid", dropped={})
    return df


def _folder_records(base: Path, folder: str) -> pd.DataFrame:
    """One record per image under ``base/folder`` (any depth), pid parsed from the text before ``_``."""
    camid, query, gallery = FOLDERS[folder]
    paths = sorted(_walk_images(base / folder))
    pids = pd.Series([os.path.basename(p) for p in paths], dtype=object).str.extract(r"^(\d+)_")[0]
    if pids.isna().any():
        raise UserError(f"{base / folder / paths[int(np.flatnonzero(pids.isna())[0])]}: file name does not start "
                        "with <pid>_, e.g. 001_01.tif")
    return pd.DataFrame({"path": [f"{folder}/{p}" for p in paths], "pid": pids.astype(np.int64), "camid": camid,
                         "subset": "test", "query": query, "gallery": gallery})


def _walk_images(top: Path) -> list[str]:
    """POSIX paths, relative to ``top``, of the image files below it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(top).as_posix()
        out += [n if rel == "." else f"{rel}/{n}" for n in filenames
                if not n.startswith(".") and os.path.splitext(n)[1].lower() in EXTS]
    return out
