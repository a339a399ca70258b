"""Reading what the index points at: frame images (image files or crops of videos) and ground truth.

:func:`iter_frame_images` decodes every row of an index in order. :func:`attach_ground_truth` adds the
ground-truth part masks and limb maps a data set may ship under ``ground_truth/masks/`` and ``ground_truth/limbs/``;
:func:`hspreid.data.keypoints.load_keypoints` reads ``ground_truth/keypoints.csv``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import pandas as pd

from hspreid.errors import UserError

log = logging.getLogger("hspreid.data")

ON_ERROR = ("raise", "skip")
BOX_COLUMNS = ("video_frame", "box_x", "box_y", "box_w", "box_h")
MASK_DIR = "ground_truth/masks"
GROUND_TRUTH_MAPS = {"mask_path": MASK_DIR, "limb_path": "ground_truth/limbs"}
"""Index column -> folder of per-frame label maps (``<folder>/<frame path with extension .png>``)."""


@dataclass
class _Unreadable:
    """A row that could not be decoded, with the one-line reason."""
    message: str


# --------------------------------------------------------------------------- frame images

def iter_frame_images(root: Path, index: pd.DataFrame, on_error: str = "raise", counter: dict | None = None,
                      threads: int = 1, transform: Callable[[np.ndarray, np.ndarray | None], Any] | None = None,
                      ) -> Iterator[tuple[int, Any]]:
    """Yield ``(row position in index, BGR uint8 image)`` for every row, in index order.

    Image rows are read as bytes and decoded with ``cv2.imdecode``, ``threads`` at a time (OpenCV
    decodes without the GIL), with a bounded read-ahead; a JPEG cut short is unreadable (see
    :func:`jpeg_is_complete`). ``transform(image, data)`` (e.g. a resize), with ``data`` the file's
    bytes (None for a crop of a video), is applied in the same worker and its result yielded
    instead of the image. Rows with box columns (videos + MOT boxes) are crops of their video, decoded
    sequentially once per subset (train rows, then test rows: the index lists each subset's
    tracklets by camera and start frame, so crops decoded ahead of their turn, which wait in
    memory, are only those of tracklets overlapping in time).
    An unreadable row raises a :class:`UserError` naming the file (``on_error="raise"``) or is logged, counted in
    ``counter["skipped"]`` and not yielded (``on_error="skip"``; the caller drops the row).
    """
    if on_error not in ON_ERROR:
        raise UserError(f"on_error={on_error!r} is not one of 'raise' and 'skip'")
    root = Path(root)
    counter = {} if counter is None else counter
    counter.setdefault("skipped", 0)
    paths = index["path"].to_numpy()
    decoder_of_row, decoders = _video_decoders(root, index)

    def load(pos: int) -> Any:
        d = decoder_of_row[pos]
        image, data = (decoders[d].take(pos), None) if d >= 0 else _read_image(root, paths[pos])
        return image if transform is None or isinstance(image, _Unreadable) else transform(image, data)

    warned: set[str] = set()
    for pos, image in _ordered_map(load, len(index), threads if not decoders else 1):
        if not isinstance(image, _Unreadable):
            yield pos, image
        elif on_error == "raise":
            raise UserError(image.message)
        else:
            counter["skipped"] += 1
            if image.message not in warned:   # a missing video is one warning, not one per frame
                warned.add(image.message)
                log.warning("skipped: %s", image.message)


def _ordered_map(fn: Callable[[int], object], n: int, threads: int) -> Iterator[tuple[int, object]]:
    """``(i, fn(i))`` for i in 0..n-1, in order, computed by ``threads`` threads with a bounded read-ahead."""
    if threads <= 1:
        yield from ((i, fn(i)) for i in range(n))
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        ahead = 8 * threads
        for i in range(n):
            pending.append((i, pool.submit(fn, i)))
            if len(pending) >= ahead:
                j, fut = pending.popleft()
                yield j, fut.result()
        while pending:
            j, fut = pending.popleft()
            yield j, fut.result()


def video_rows(index: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows that are crops of a video."""
    if not all(c in index.columns for c in BOX_COLUMNS):
        return np.zeros(len(index), dtype=bool)
    return index["video_frame"].notna().to_numpy()


def _video_decoders(root: Path, index: pd.DataFrame) -> tuple[np.ndarray, list[_VideoCrops]]:
    """One sequential decoder per (video, subset) and, per row, the number of its decoder (-1: image file)."""
    pos = np.flatnonzero(video_rows(index))
    keys = index.iloc[pos][["path"] + (["subset"] if "subset" in index.columns else [])]
    codes = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    decoder_of_row = np.full(len(index), -1, dtype=np.int64)
    decoder_of_row[pos] = codes
    decoders = [_VideoCrops(root, index["path"].iat[pos[codes == c][0]], index, pos[codes == c])
                for c in range(codes.max() + 1 if len(codes) else 0)]
    return decoder_of_row, decoders


def _read_image(root: Path, rel: str) -> tuple[np.ndarray | _Unreadable, np.ndarray | None]:
    """The BGR uint8 image at ``root/rel`` (any depth or channel count is converted; the same pixels as
    ``cv2.imread``) and the file's bytes, or why it is unreadable."""
    path = root / rel
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        why = "missing" if not path.exists() else f"cannot be read ({exc.strerror})"
        return _Unreadable(f"{path}: {why}; expected an image file OpenCV can read"), None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if len(data) else None
    if image is None:
        return _Unreadable(f"{path}: unreadable or corrupt; expected an image file OpenCV can read"), None
    if is_jpeg(data) and not jpeg_is_complete(data):
        return _Unreadable(f"{path}: truncated JPEG (no end-of-image marker after its last scan); "
                           "expected a complete image file"), None
    return image, data


def is_jpeg(data: np.ndarray) -> bool:
    """Whether the bytes start with a JPEG signature (SOI marker then a marker)."""
    return len(data) >= 3 and bytes(data[:3]) == b"\xff\xd8\xff"


def jpeg_is_complete(data: np.ndarray) -> bool:
    """Whether a JPEG's last scan is followed by its end-of-image marker (FFD9).

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so FFDA
    (start of scan) and FFD9 cannot occur there: a file cut anywhere after its headers has no FFD9
    after its last FFDA. libjpeg only warns about such a file and fills the rest with grey
    (``cv2.imread`` returns it), so it would train on a broken frame. Bytes after the marker
    (padding, appended metadata) are allowed.
    """
    raw = data.tobytes()
    return raw.find(b"\xff\xd9", raw.rfind(b"\xff\xda") + 2) >= 0


class _VideoCrops:
    """The crops of one video, decoded sequentially once; crops needed later are kept until taken."""

    def __init__(self, root: Path, rel: str, index: pd.DataFrame, rows: np.ndarray) -> None:
        self.path = root / rel
        boxes = index.iloc[rows][list(BOX_COLUMNS)].to_numpy(dtype=np.int64)
        by_frame = np.argsort(boxes[:, 0], kind="stable")
        self.rows, self.boxes = rows[by_frame], boxes[by_frame]
        self.next = 0                  # next entry of self.rows to decode
        self.frame_no = 0              # frame number the capture reads next
        self.cap: cv2.VideoCapture | None = None
        self.ready: dict[int, np.ndarray | _Unreadable] = {}

    def take(self, pos: int) -> np.ndarray | _Unreadable:
        """The crop of index row ``pos``, decoding forward as far as needed."""
        while pos not in self.ready:
            if self.next == len(self.rows):
                raise KeyError(f"row {pos} is not a crop of {self.path}")
            self._decode_next_frame()
        return self.ready.pop(pos)

    def _decode_next_frame(self) -> None:
        """Decode up to the frame of the next pending row and crop every row of that frame."""
        if self.cap is None:
            self.cap = cv2.VideoCapture(str(self.path))
            if not self.cap.isOpened():
                self._fail_rest(f"{self.path}: missing or unreadable video; expected a video file OpenCV can decode")
                return
        target = int(self.boxes[self.next, 0])
        while self.frame_no < target and self.cap.grab():
            self.frame_no += 1
        ok, frame = self.cap.read() if self.frame_no == target else (False, None)
        if not ok:
            self._fail_rest(f"{self.path}: frame {target} (0-based) cannot be decoded; the video has "
                            f"{self.frame_no} readable frames but the boxes need frame {target}")
            return
        self.frame_no += 1
        while self.next < len(self.rows) and self.boxes[self.next, 0] == target:
            self.ready[int(self.rows[self.next])] = _crop(frame, self.boxes[self.next], self.path)
            self.next += 1
        if self.next == len(self.rows):
            self.cap.release()

    def _fail_rest(self, message: str) -> None:
        """Mark every row not decoded yet as unreadable (the video ended or cannot be opened)."""
        for pos in self.rows[self.next:]:
            self.ready[int(pos)] = _Unreadable(message)
        self.next = len(self.rows)
        if self.cap is not None:
            self.cap.release()


def _crop(frame: np.ndarray, box: np.ndarray, path: Path) -> np.ndarray | _Unreadable:
    """The box ``(video_frame, x, y, w, h)`` cut out of ``frame``, clipped to it."""
    height, width = frame.shape[:2]
    x0, y0 = max(int(box[1]), 0), max(int(box[2]), 0)
    x1, y1 = min(int(box[1] + box[3]), width), min(int(box[2] + box[4]), height)
    if x1 <= x0 or y1 <= y0:
        return _Unreadable(f"{path}: box x={box[1]} y={box[2]} w={box[3]} h={box[4]} of frame {box[0]} (0-based) "
                           f"lies outside the {width}x{height} frame")
    return np.ascontiguousarray(frame[y0:y1, x0:x1])


# --------------------------------------------------------------------------- ground truth

def attach_ground_truth(index: pd.DataFrame, root: Path) -> pd.DataFrame:
    """``index`` plus, for each folder of :data:`GROUND_TRUTH_MAPS` that ``root`` has, its column:
    ``mask_path`` = ``ground_truth/masks/<path with extension .png>`` (part masks) and ``limb_path`` =
    ``ground_truth/limbs/<...>.png`` (limb maps). A folder that is there needs one map per row."""
    root = Path(root)
    out = index
    for column, folder in GROUND_TRUTH_MAPS.items():
        if not (root / folder).is_dir():
            continue
        if video_rows(index).any():
            raise UserError(f"{root / folder}: ground-truth maps are supported for image frames only, not for "
                            "videos + MOT boxes")
        expected = folder + "/" + index["path"].str.replace(r"\.[^./]*$", "", regex=True) + ".png"
        have = expected.isin(list(_files_below(root, folder)))
        if not have.all():
            missing = expected[~have].iloc[0]
            raise UserError(f"{root / missing}: missing ground-truth map ({int((~have).sum())} of {len(index)} "
                            f"frames have none); {root / folder} must hold one <frame path>.png per frame")
        out = out.copy() if out is index else out
        out[column] = expected.to_numpy()
    return out


def _files_below(root: Path, top: str) -> set[str]:
    """POSIX paths, relative to ``root``, of every file below ``root/top`` (one directory listing per folder)."""
    found = set()
    for dirpath, _, filenames in os.walk(root / top):
        rel = Path(dirpath).relative_to(root).as_posix()
        found.update(f"{rel}/{n}" for n in filenames)
    return found
