"""The frame store ``frames.zarr``: every frame of a data set, resized, with its per-frame labels.

Layout (zarr v3 group):

images    uint8 [N, H, W, 3]  RGB, ``chunk_frames`` frames per chunk file, uncompressed by default
pid, label, camid, tracklet, frame   int64 [N]      as in the frame index (hspreid/data/index.py)
subset    int8 [N]   0 train, 1 test
query, gallery  bool [N]
masks     uint8 [N, H, W]      ground-truth part masks, where the data set has them (nearest resize)

Rows follow ``index.parquet`` exactly (frames of a tracklet are contiguous and in order).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import zarr

from hspreid.io import Progress, atomic_dir

log = logging.getLogger("hspreid.frames")

LABEL_ARRAYS = ("pid", "label", "camid", "tracklet", "frame")


def _compressors(name: str) -> Any:
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "none":
        return None
    if name == "zstd":
        return ZstdCodec(level=1)
    if name == "blosc_lz4":
        return BloscCodec(cname="lz4", clevel=3, shuffle="bitshuffle")
    from hspreid.errors import UserError

    raise UserError(f"frames.compressor: expected none, zstd or blosc_lz4, got {name!r}")


def resize_frame(image_bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """BGR image of any size -> RGB [height, width, 3] (area filter when shrinking)."""
    h, w = image_bgr.shape[:2]
    interp = cv2.INTER_AREA if (h > height or w > width) else cv2.INTER_LINEAR
    return cv2.cvtColor(cv2.resize(image_bgr, (width, height), interpolation=interp), cv2.COLOR_BGR2RGB)


def _read_mask(path: Path, height: int, width: int) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        from hspreid.errors import UserError

        raise UserError(f"{path}: unreadable ground-truth mask (expected a single-channel PNG)")
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def write_frame_store(index: pd.DataFrame, root: Path, out: Path, *, height: int, width: int,
                      chunk_frames: int = 32, compressor: str = "none", on_error: str = "raise",
                      threads: int = 1, attrs: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Decode every frame of ``index`` (paths relative to ``root``), resize and write ``out`` atomically.

    Returns the index of the frames actually written (rows that were skipped under
    ``on_error="skip"`` are dropped, tracklets left empty disappear, numbering is redone) and a
    summary dict (counts, skipped, seconds).
    """
    from hspreid.data.loading import iter_frame_images

    t0 = time.monotonic()
    n = len(index)
    has_masks = "mask_path" in index.columns
    counter: dict[str, int] = {"skipped": 0}
    kept: list[int] = []
    with atomic_dir(out) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        images = group.create_array("images", shape=(n, height, width, 3), dtype="uint8",
                                    chunks=(chunk_frames, height, width, 3),
                                    compressors=_compressors(compressor),
                                    dimension_names=("frame", "y", "x", "rgb"))
        masks = (group.create_array("masks", shape=(n, height, width), dtype="uint8",
                                    chunks=(chunk_frames, height, width),
                                    dimension_names=("frame", "y", "x")) if has_masks else None)
        buf = np.zeros((chunk_frames, height, width, 3), np.uint8)
        mbuf = np.zeros((chunk_frames, height, width), np.uint8)
        fill = 0
        progress = Progress(n, "frames decoded")

        def flush() -> None:
            start = len(kept) - fill
            images[start:start + fill] = buf[:fill]
            if masks is not None:
                masks[start:start + fill] = mbuf[:fill]

        frames = iter_frame_images(root, index, on_error=on_error, counter=counter, threads=threads,
                                   transform=lambda image: resize_frame(image, height, width))
        for row, image in frames:
            buf[fill] = image
            if masks is not None:
                mbuf[fill] = _read_mask(root / index["mask_path"].iat[row], height, width)
            kept.append(row)
            fill += 1
            progress.update()
            if fill == chunk_frames:
                flush()
                fill = 0
        if fill:
            flush()
        if not kept:
            from hspreid.errors import UserError

            raise UserError(f"{root}: no readable frame in the data set")
        if len(kept) < n:
            images.resize((len(kept), height, width, 3))
            if masks is not None:
                masks.resize((len(kept), height, width))
            index = _reindex_after_skips(index, kept)
        for name in LABEL_ARRAYS:
            group.create_array(name, data=index[name].to_numpy(np.int64), chunks=(1 << 20,))
        group.create_array("subset", data=(index["subset"] == "test").to_numpy(np.int8), chunks=(1 << 20,))
        for name in ("query", "gallery"):
            group.create_array(name, data=index[name].to_numpy(bool), chunks=(1 << 20,))
        summary = {
            "frames": int(len(index)), "tracklets": int(index["tracklet"].nunique()),
            "train_ids": int(index.loc[index["subset"] == "train", "pid"].nunique()),
            "test_ids": int(index.loc[index["subset"] == "test", "pid"].nunique()),
            "skipped_frames": int(counter.get("skipped", 0)), "height": height, "width": width,
            "chunk_frames": chunk_frames, "compressor": compressor, "has_masks": has_masks,
            "wall_time_s": round(time.monotonic() - t0, 2),
        }
        group.attrs.update({"summary": summary, **(attrs or {})})
    log.info("wrote %s: %d frames, %d tracklets, %d skipped", out, summary["frames"],
             summary["tracklets"], summary["skipped_frames"])
    return index, summary


def _reindex_after_skips(index: pd.DataFrame, kept: list[int]) -> pd.DataFrame:
    """Drop skipped rows; renumber tracklets and frames (train labels keep their meaning)."""
    sub = index.iloc[kept].reset_index(drop=True)
    sub["tracklet"] = pd.factorize(sub["tracklet"])[0]
    sub["frame"] = sub.groupby("tracklet").cumcount()
    return sub


class FrameStore:
    """Read access to ``frames.zarr``. Open one per DataLoader worker.

    Uncompressed stores (the default) are read by a fast path: with only the ``bytes`` codec, the
    zarr v3 spec makes each chunk file the chunk's raw C-order bytes, so a frame is one
    ``np.fromfile`` at an offset. zarr-python 3.1's per-call overhead (~0.5 ms, zarr issue #3524,
    fixed only for Python >= 3.12) would otherwise make the store slower than decoding JPEGs
    (see bench/bench_frames.py). Compressed stores are read through zarr.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            from hspreid.errors import UserError

            raise UserError(f"{self.path}: not a frame store (run the extract_frames stage first)")
        self.group = zarr.open_group(str(self.path), mode="r")
        self.images = self.group["images"]
        self.masks = self.group["masks"] if "masks" in self.group else None
        self.chunk = int(self.images.chunks[0])
        self._raw = {name: _raw_chunk_layout(self.path / name) for name in ("images", "masks")}

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    def read(self, rows: np.ndarray, array: str = "images") -> np.ndarray:
        """Frames at the row numbers ``rows`` (any order, repeats allowed)."""
        arr = self.images if array == "images" else self.group[array]
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, *arr.shape[1:]), arr.dtype)
        if self._raw.get(array):
            return _read_raw_rows(self.path / array, arr, rows)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if hi - lo <= 4 * max(len(rows), self.chunk):
            return arr[lo:hi][rows - lo]
        return np.stack([arr[int(r)] for r in rows])


def _raw_chunk_layout(array_dir: Path) -> bool:
    """True when the array's chunks are raw bytes in "c/<i>/0/..." files (bytes codec only, no compression)."""
    import json

    meta_path = array_dir / "zarr.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    codecs = [c["name"] for c in meta.get("codecs", [])]
    key = meta.get("chunk_key_encoding", {})
    return (codecs == ["bytes"] and meta.get("data_type") == "uint8" and key.get("name") == "default"
            and key.get("configuration", {}).get("separator", "/") == "/")


def _read_raw_rows(array_dir: Path, arr: Any, rows: np.ndarray) -> np.ndarray:
    """Read whole frames straight from raw chunk files: one open per touched chunk, one pread per frame
    (a missing chunk file is the fill value 0)."""
    chunk = int(arr.chunks[0])
    frame_shape = tuple(arr.shape[1:])
    frame_bytes = int(np.prod(frame_shape))
    suffix = "/" + "/".join("0" for _ in frame_shape)
    prefix = f"{array_dir}/c/"
    out = np.zeros((len(rows), *frame_shape), np.uint8)
    flat = out.reshape(len(rows), frame_bytes)
    chunks = rows // chunk
    for c in np.unique(chunks):
        try:
            fd = os.open(f"{prefix}{int(c)}{suffix}", os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            for i in np.flatnonzero(chunks == c):
                flat[i] = np.frombuffer(os.pread(fd, frame_bytes, int(rows[i] % chunk) * frame_bytes), np.uint8)
        finally:
            os.close(fd)
    return out
