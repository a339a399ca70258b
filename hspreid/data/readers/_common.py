"""Helpers shared by the data-set readers: layout checks, directory listings, option checks, .mat files.

Readers never open or stat individual frames: they read metadata files and list directories.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import scipy.io

from hspreid.errors import UserError

log = logging.getLogger("hspreid.data")

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png"})


def join_words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def require_layout(root: Path, name: str, expected: Sequence[str], note: str = "") -> None:
    """Raise one clear :class:`UserError` line unless every ``root/<expected>`` path exists."""
    missing = [e for e in expected if not (root / e).exists()]
    if not missing:
        return
    what = "not found" if not root.is_dir() else f"layout incomplete ({root / missing[0]} is missing)"
    where = join_words([str(root / e) for e in expected])
    raise UserError(f"{root}: {name} {what}; unpack it so that {where} exist{note} (see README)")


def resolve_inner(root: Path, inners: Sequence[str], marker: str) -> Path:
    """``root/inner`` when the archive's top folder sits inside ``root`` and holds ``marker``; else ``root``."""
    if (root / marker).exists():
        return root
    for inner in inners:
        if (root / inner / marker).exists():
            return root / inner
    return root


def rel_prefix(base: Path, root: Path) -> str:
    """POSIX prefix (``""`` or ``"inner/"``) that makes paths under ``base`` relative to ``root``."""
    rel = base.relative_to(root).as_posix()
    return "" if rel == "." else rel + "/"


def list_files(path: Path, exts: frozenset[str] = IMAGE_EXTS) -> list[str]:
    """Sorted names of the files in ``path`` with one of ``exts`` (lower-cased); hidden files skipped."""
    suffixes = tuple(exts)
    return sorted(n for n in os.listdir(path) if n.lower().endswith(suffixes) and not n.startswith("."))


def list_subdirs(path: Path) -> list[str]:
    """Sorted names of the sub-directories of ``path`` (hidden ones skipped)."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def load_mat(path: Path, key: str, what: str) -> np.ndarray:
    """Variable ``key`` (described by ``what``) of a MATLAB v5 file.

    Any failure to read the file -- scipy raises ``MatReadError``, ``IndexError``, ``ValueError``, ``zlib.error``,
    ... on truncated or foreign files -- and a missing variable are one :class:`UserError` line naming the file.
    """
    expected = f"expected variable {key!r} ({what}) as in the data set's original release; re-download or re-unpack it"
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # whatever scipy raises, the file is unreadable: say which and why
        size = f"{path.stat().st_size} bytes" if path.is_file() else "not a file"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise UserError(f"{path}: not a readable MATLAB .mat file ({size}; {reason}); {expected}") from exc
    if key not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        found = f"it holds {join_words(names)}" if names else "it holds no variable: truncated?"
        raise UserError(f"{path}: no variable {key!r} ({found}); {expected}")
    return np.asarray(mat[key])


def as_int_matrix(arr: np.ndarray, path: Path, key: str, ncols: int | None = None) -> np.ndarray:
    """``arr`` as a 2-D int64 matrix; a :class:`UserError` if it is not integral or has the wrong width."""
    arr = np.atleast_2d(arr)
    if arr.ndim != 2 or (ncols is not None and arr.shape[1] != ncols) or arr.dtype.kind not in "iuf":
        want = f"[n, {ncols}]" if ncols else "a 2-D"
        raise UserError(f"{path}: {key} has shape {arr.shape} and dtype {arr.dtype}; expected {want} numeric matrix")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise UserError(f"{path}: {key} holds non-integer values; expected integer indices")
    return arr.astype(np.int64)  # uint16 (query_IDX) and doubles become safe for arithmetic


# --------------------------------------------------------------------------- options

def int_option(kind: str, name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``, or a :class:`UserError` naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"{kind}: option {name}={value!r} must be an integer >= {minimum}")
    return int(value)


def fraction_option(kind: str, name: str, value: Any) -> float:
    """``value`` as a float in [0, 1], or a :class:`UserError` naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise UserError(f"{kind}: option {name}={value!r} must be a number between 0 and 1")
    return float(value)


def bool_option(kind: str, name: str, value: Any) -> bool:
    """``value`` if it is a bool, else a :class:`UserError` naming the option."""
    if not isinstance(value, (bool, np.bool_)):
        raise UserError(f"{kind}: option {name}={value!r} must be true or false")
    return bool(value)


def int_list_option(kind: str, name: str, value: Any) -> list[int]:
    """``value`` as a non-empty list of ints, or a :class:`UserError` naming the option."""
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return [int(v) for v in value]
    raise UserError(f"{kind}: option {name}={value!r} must be a non-empty list of integers (or null: any)")


def choice_option(kind: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a :class:`UserError` listing them."""
    if value not in choices:
        raise UserError(f"{kind}: option {name}={value!r} is not one of {join_words([repr(c) for c in choices])}")
    return value


def split_row(kind: str, path: Path, split_id: int, n_items: int, item_name: str) -> tuple[np.ndarray, np.ndarray]:
    """0-based (test, train) item indices from row ``split_id`` of ``ls_set``: first half test, second train."""
    ls_set = load_mat(path, "ls_set", "one row of 1-based person indices per train/test split")
    ls_set = as_int_matrix(ls_set, path, "ls_set")
    if split_id >= ls_set.shape[0]:
        raise UserError(f"{kind}: option split_id={split_id} is out of range; {path} has {ls_set.shape[0]} splits "
                        f"(0..{ls_set.shape[0] - 1})")
    row = ls_set[split_id] - 1
    if row.min() < 0 or row.max() >= n_items or len(np.unique(row)) != len(row):
        raise UserError(f"{path}: ls_set row {split_id} must hold distinct 1-based indices into the {n_items} "
                        f"sorted {item_name}; found values {row.min() + 1}..{row.max() + 1}")
    half = len(row) // 2
    return row[:half], row[half:]


# --------------------------------------------------------------------------- tracklet folders

@dataclass
class Tracklet:
    """One tracklet stored as a folder of frames (video data sets)."""
    rel_dir: str        # folder relative to the data-set root, POSIX, no trailing slash
    files: list[str]    # frame file names (sorted by name)
    pid: int
    camid: int
    subset: str         # "train" | "test"
    query: bool = False
    gallery: bool = False


def tracklets_to_records(tracklets: Sequence[Tracklet]) -> tuple[pd.DataFrame, int]:
    """Per-frame records (``finalize_index`` input) and the number of empty tracklets left out.

    ``track_key`` is the tracklet's position in ``tracklets`` (callers build it in a deterministic order);
    ``order`` is the frame's position in ``files``.
    """
    kept = [t for t in tracklets if t.files]
    for t in tracklets:
        if not t.files:
            log.warning("%s: no frames in this tracklet folder; left out", t.rel_dir)
    lengths = np.array([len(t.files) for t in kept], dtype=np.int64)
    rep = np.repeat(np.arange(len(kept)), lengths)

    def col(attr: str) -> np.ndarray:
        return np.array([getattr(t, attr) for t in kept])[rep]

    records = pd.DataFrame({
        "path": [f"{t.rel_dir}/{f}" for t in kept for f in t.files],
        "pid": col("pid"), "camid": col("camid"), "subset": col("subset"),
        "query": col("query"), "gallery": col("gallery"),
        "track_key": rep,
        "order": np.arange(len(rep)) - np.repeat(np.cumsum(lengths) - lengths, lengths),
    })
    return records, len(tracklets) - len(kept)
