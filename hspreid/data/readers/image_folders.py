"""Market-style image data sets: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``.

File names carry ``<pid>_c<cam>`` (regex ``([-\\d]+)_c(\\d)``, as torchreid and fast-reid parse them); camid =
digit - 1. Junk images (pid -1) are dropped and counted; distractors (pid 0) are kept. Each image is its own
tracklet. Market-1501, DukeMTMC-reID, Occluded-Duke and CUHK03-NP's Market-style release share this code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hspreid.data.index import finalize_index
from hspreid.errors import UserError

from ._common import list_files, rel_prefix, require_layout, resolve_inner

PATTERN = r"([-\d]+)_c(\d)"
# folder -> (subset, query, gallery)
FOLDERS = {"bounding_box_train": ("train", False, False),
           "query": ("test", True, False),
           "bounding_box_test": ("test", False, True)}


def read_image_folders(root: str | Path, name: str, dataset: str, inners: Sequence[str] = (),
                       sub: str = "") -> pd.DataFrame:
    """Index of a Market-style release under ``root/sub`` (or ``root/sub/<inner>``, an archive's top folder).

    Paths are relative to ``root``. ``attrs["dropped"]["junk_images"]`` counts the pid -1 images left out.
    """
    root = Path(root)
    base = resolve_inner(root / sub if sub else root, inners, "bounding_box_train")
    prefix = rel_prefix(base, root)
    require_layout(root, name, [prefix + folder for folder in FOLDERS])
    files = pd.concat([_folder_files(base, folder) for folder in FOLDERS], ignore_index=True)
    records = _parse_names(files, base)
    junk = records["pid"] == -1
    records = records.loc[~junk].reset_index(drop=True)
    records["path"] = prefix + records["path"]
    records["track_key"] = np.arange(len(records))   # listing order: train, query, gallery; names sorted
    records["order"] = 0
    df = finalize_index(records, name=f"{root} ({name})")
    df.attrs.update(dataset=dataset, dropped={"junk_images": int(junk.sum())})
    return df


def _folder_files(base: Path, folder: str) -> pd.DataFrame:
    """One row per image file of ``base/folder`` with its subset and query/gallery role."""
    subset, query, gallery = FOLDERS[folder]
    names = list_files(base / folder)
    return pd.DataFrame({"folder": folder, "file": pd.Series(names, dtype=object), "subset": subset,
                         "query": query, "gallery": gallery})


def _parse_names(files: pd.DataFrame, base: Path) -> pd.DataFrame:
    """Add ``pid``, ``camid`` and ``path`` parsed from the file names; a :class:`UserError` on a stray name."""
    parts = files["file"].astype(str).str.extract(PATTERN)
    pid = pd.to_numeric(parts[0], errors="coerce")
    cam = pd.to_numeric(parts[1], errors="coerce")
    bad = pid.isna() | cam.isna() | (pid < -1) | (cam < 1)
    if bad.any():
        row = files.loc[bad].iloc[0]
        raise UserError(f"{base / row['folder'] / row['file']}: file name does not match <pid>_c<camera> "
                        "(pid >= -1, camera >= 1), e.g. 0002_c1s1_000451_03.jpg")
    out = files[["subset", "query", "gallery"]].copy()
    out["path"] = files["folder"] + "/" + files["file"].astype(str)
    out["pid"] = pid.astype(np.int64)
    out["camid"] = cam.astype(np.int64) - 1
    return out


def read_market1501(root: str | Path) -> pd.DataFrame:
    """Market-1501 (the ``Market-1501-v15.09.15/`` top folder is accepted inside ``root``)."""
    return read_image_folders(root, "Market-1501", "market1501", inners=("Market-1501-v15.09.15",))


def read_dukemtmc_reid(root: str | Path) -> pd.DataFrame:
    """DukeMTMC-reID (the ``DukeMTMC-reID/`` top folder is accepted inside ``root``)."""
    return read_image_folders(root, "DukeMTMC-reID", "dukemtmc_reid", inners=("DukeMTMC-reID",))


def read_occluded_duke(root: str | Path) -> pd.DataFrame:
    """Occluded-Duke, trained on its own train split (``Occluded_Duke/`` accepted inside ``root``)."""
    return read_image_folders(root, "Occluded-Duke", "occluded_duke", inners=("Occluded_Duke",))
