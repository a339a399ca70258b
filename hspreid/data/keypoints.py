"""Key points of a few labelled frames per training tracklet (SSN3D's semi-supervised training).

The source is a CSV in the format of the synthetic ground truth (``ground_truth/keypoints.csv``: a
``path`` column, then ``<joint>_x, <joint>_y, <joint>_v`` per joint, in pixels of the image file,
v > 0 visible; see :func:`load_keypoints`); a user's own file may list only the
frames they labelled. Of every training tracklet, ``labelled_per_tracklet`` frames keep their key
points (SSN3D: "we select two images with high-quality labels from each video tracklet"): the frames
with the most visible chosen joints, spread evenly over the tracklet among equals. Coordinates become
fractions of the image width and height, so they hold at any frame size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hspreid.data.loading import video_rows
from hspreid.errors import UserError

log = logging.getLogger("hspreid.data")

DEFAULT_JOINTS = ("head", "l_shoulder", "r_shoulder", "l_wrist", "r_wrist", "l_knee", "r_knee", "l_ankle", "r_ankle")
"""SSN3D's N = 9 parts: head, hands, knees and feet (the paper's labelled key points) plus the shoulders."""
SIDES = (("l_", "r_"), ("left_", "right_"))


KEYPOINTS_FILE = "ground_truth/keypoints.csv"
"""Where a synthetic data set (or a user in the same format) keeps its key points, below the root."""


@dataclass(frozen=True)
class KeypointConfig:
    """The ``keypoints`` block of a method config (SSN3D semi-supervised)."""

    file: str | None = None                 # CSV; None = <data set root>/ground_truth/keypoints.csv
    joints: list[str] = field(default_factory=lambda: list(DEFAULT_JOINTS))   # part i = joint i
    labelled_per_tracklet: int = 2

    def __post_init__(self) -> None:
        if self.labelled_per_tracklet < 0:
            raise UserError(f"keypoints.labelled_per_tracklet: expected an integer >= 0, "
                            f"got {self.labelled_per_tracklet!r}")


class Keypoints:
    """Key points [J, 3] (x, y fractions, visibility) of the labelled frames, looked up by frame-store row."""

    def __init__(self, rows: np.ndarray, values: np.ndarray, joints: list[str]):
        order = np.argsort(rows, kind="stable")
        self.rows, self.values, self.joints = rows[order], values[order].astype(np.float32), list(joints)
        self.flip_order = flip_order(self.joints)

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, frame_rows: np.ndarray) -> np.ndarray:
        """[n, J, 3] float32 for ``frame_rows``; NaN for frames that are not labelled."""
        out = np.full((len(frame_rows), len(self.joints), 3), np.nan, np.float32)
        if len(self.rows):
            pos = np.minimum(np.searchsorted(self.rows, frame_rows), len(self.rows) - 1)
            hit = self.rows[pos] == frame_rows
            out[hit] = self.values[pos[hit]]
        return out


def flip_order(joints: list[str]) -> np.ndarray:
    """Joint permutation of a mirrored image: ``l_x`` <-> ``r_x`` (and ``left_`` <-> ``right_``) where both exist."""
    where = {name: i for i, name in enumerate(joints)}
    order = np.arange(len(joints))
    for i, name in enumerate(joints):
        for left, right in SIDES:
            for a, b in ((left, right), (right, left)):
                if name.startswith(a) and b + name[len(a):] in where:
                    order[i] = where[b + name[len(a):]]
    return order


def choose_labelled(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` best frames of a tracklet: most visible joints first (none: never), evenly
    spread over the tracklet among frames of equal score; sorted."""
    chosen: list[int] = []
    for score in sorted(set(scores[scores > 0].tolist()), reverse=True):
        if len(chosen) >= n:
            break
        pos = np.flatnonzero(scores == score)
        take = min(n - len(chosen), len(pos))
        chosen.extend(pos[np.unique(np.linspace(0, len(pos) - 1, take).round().astype(int))].tolist())
    return np.sort(np.array(chosen, dtype=np.int64))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the image's size for its key points ({exc})") from None


def labelled_keypoints(root: str | Path, index: pd.DataFrame, cfg: KeypointConfig) -> Keypoints:
    """The key points of ``cfg.labelled_per_tracklet`` frames of every training tracklet of ``index``."""
    root = Path(root)
    path = Path(cfg.file) if cfg.file else root / KEYPOINTS_FILE
    if video_rows(index).any():
        raise UserError(f"{path}: key points are supported for image frames only, not for videos + MOT boxes")
    table, names = read_keypoint_table(path)
    missing = [j for j in cfg.joints if j not in names]
    if missing or not cfg.joints:
        raise UserError(f"keypoints.joints: {missing or 'none given'} not among the joints of {path} ({names})")
    cols = [f"{j}_{c}" for j in cfg.joints for c in "xyv"]
    train = index[index["subset"] == "train"]
    have = train["path"].isin(table.index).to_numpy()
    values = np.full((len(train), len(cfg.joints), 3), np.nan, np.float32)
    values[have] = table.loc[train["path"][have], cols].to_numpy(np.float32).reshape(-1, len(cfg.joints), 3)
    seen = np.isfinite(values[..., :2]).all(-1) & (np.nan_to_num(values[..., 2]) > 0)
    scores = seen.sum(-1)
    chosen = np.sort(np.concatenate([pos[choose_labelled(scores[pos], cfg.labelled_per_tracklet)]
                                     for pos in train.groupby("tracklet").indices.values()] or [np.zeros(0, int)]))
    points = values[chosen]
    sizes = np.array([image_size(root / p) for p in train["path"].iloc[chosen]], dtype=np.float32).reshape(-1, 2)
    points[..., 0] /= sizes[:, None, 0]
    points[..., 1] /= sizes[:, None, 1]
    log.info("key points: %d labelled frames (%d per tracklet asked) of %d training frames, joints %s, from %s",
             len(chosen), cfg.labelled_per_tracklet, len(train), ",".join(cfg.joints), path)
    return Keypoints(train.index.to_numpy(np.int64)[chosen], points, list(cfg.joints))


def load_keypoints(root: Path, index: pd.DataFrame, partial: bool = False) -> tuple[np.ndarray, list[str]]:
    """Ground-truth keypoints ``[N, J, 3]`` float32 (x, y, v) aligned to the index rows, and the joint names.

    ``root/ground_truth/keypoints.csv`` (as the synthetic generator writes it) has a header ``path`` then
    ``<joint>_x, <joint>_y, <joint>_v`` per joint, one line per image: x/y in pixels of the image, v = 1 visible,
    0 hidden. Lines for images not in the index (junk) are ignored; every index row needs a complete line, or,
    with ``partial`` (a user's file of the frames they labelled), rows without one are NaN.
    """
    path = Path(root) / KEYPOINTS_FILE
    if video_rows(index).any():
        raise UserError(f"{path}: ground-truth keypoints are supported for image frames only, not for "
                        "videos + MOT boxes")
    table, joints = read_keypoint_table(path)
    have = index["path"].isin(table.index).to_numpy()
    if not (have.all() or partial):
        raise UserError(f"{path}: no keypoints for frame {index['path'][~have].iloc[0]} "
                        f"({int((~have).sum())} of {len(index)} frames lack them)")
    out = np.full((len(index), len(joints), 3), np.nan, np.float32)
    out[have] = table.loc[index["path"][have]].to_numpy(np.float32).reshape(-1, len(joints), 3)
    if np.isnan(out[have]).any():
        bad = int(np.flatnonzero(have & np.isnan(out).any(axis=(1, 2)))[0])
        raise UserError(f"{path}: frame {index['path'].iloc[bad]} has an empty or non-numeric keypoint value")
    return out, joints


def read_keypoint_table(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The keypoint table indexed by path (numeric columns ``<joint>_x, _y, _v`` in order) and the joint names."""
    if not path.is_file():
        raise UserError(f"{path}: missing; expected a CSV with columns path, <joint>_x, <joint>_y, <joint>_v, ...")
    try:
        table = pd.read_csv(path, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: not a CSV file ({exc})") from exc
    cols = [c for c in table.columns if c != "path"]
    joints = [c[:-2] for c in cols[::3]]
    if "path" not in table.columns or not cols or cols != [f"{j}_{k}" for j in joints for k in "xyv"]:
        raise UserError(f"{path}: columns {list(table.columns)[:7]}...; expected path, then <joint>_x, <joint>_y, "
                        "<joint>_v for each joint")
    if table["path"].duplicated().any():
        raise UserError(f"{path}: frame {table['path'][table['path'].duplicated()].iloc[0]} appears twice")
    values = table[cols].apply(pd.to_numeric, errors="coerce")
    values.index = table["path"].astype(str)
    return values, joints
