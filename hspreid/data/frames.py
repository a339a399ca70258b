"""The frame store ``frames.zarr``: every frame of a data set, at one size, with its per-frame labels.

Layout (zarr v3 group; ``attrs["format"] = {"version": 2, "encoding": "encoded" | "raw"}``):

encoded          uint8 [B]      ``encoding: encoded`` (real data sets' default): every frame as an image file's
                                bytes (JPEG or PNG), end to end in row order, in 256 KiB chunk files, no codec
encoded_offsets  int64 [N + 1]  frame i is ``encoded[encoded_offsets[i]:encoded_offsets[i + 1]]``
images           uint8 [N, H, W, 3]  ``encoding: raw`` (the synthetic demo): RGB, ``chunk_frames`` frames per
                                chunk file, uncompressed unless ``compressor``
pid, label, camid, tracklet, frame   int64 [N]      as in the frame index (hspreid/data/index.py)
subset    int8 [N]   0 train, 1 test
query, gallery  bool [N]
masks     uint8 [N, H, W]      ground-truth part masks, where the data set has them (nearest resize;
                               attrs ``labels``: the code names)
limbs     uint8 [N, H, W]      ground-truth limb maps, where the data set has them (nearest resize; attrs
                               ``labels``: LIMB_NAMES, ``fold``: limb code -> mask code, LIMB_TO_GROUND_TRUTH)
keypoints float32 [N, J, 3]    ground-truth key points, where the data set has them: x, y as fractions of the
                               frame's width and height (the source image's, which the frame is resized from;
                               outside [0, 1] where the joint lies outside the crop), then v (1 visible, 0 not);
                               NaN for frames the key-point file does not list; attrs ``joints``: the J names
attrs     format, frame_shape [H, W, 3], summary (written last), kind, root, dropped

Rows follow ``index.parquet`` exactly (frames of a tracklet are contiguous and in order). An ``encoded`` frame
whose source is a JPEG or PNG file no larger than H x W keeps the file's own bytes: lossless with respect to
the data set (MARS JPEGs at 256 x 128, Market-1501 JPEGs and iLIDS-VID/PRID-2011 PNGs at 128 x 64). A smaller
one is resized when read, with the filter ``raw`` uses at extraction, so it reads back the very pixels a raw
store holds. Any other frame (larger than H x W, another format, a crop of a video) is shrunk to H x W where
larger and encoded as JPEG at ``jpeg_quality``. The idea is FFCV's and WebDataset's: encoded samples end to end
in a few large files plus an offset table, so a frame is one ``pread`` and one libjpeg-turbo (or libpng)
decode by ``cv2.imdecode``. Without hspreid::

    g = zarr.open_group("frames.zarr", mode="r"); off = g["encoded_offsets"][:]
    rgb = cv2.imdecode(g["encoded"][off[i]:off[i + 1]], cv2.IMREAD_COLOR)[..., ::-1]   # resize to frame_shape

Stores of format 1 (before ``encoding``: raw ``images``, no ``format`` attr) read as ``raw``.
"""
from __future__ import annotations

import logging
import os
import time
from array import array as int_array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Literal

import cv2
import numpy as np
import pandas as pd
import zarr

from hspreid.errors import UserError
from hspreid.io import Progress, atomic_dir
from hspreid.partmaps.regions import GROUND_TRUTH_NAMES, LIMB_NAMES, LIMB_TO_GROUND_TRUTH
from hspreid.partmaps.scores import label_quality, mean_layout, segmentation_quality

log = logging.getLogger("hspreid.frames")

LABEL_ARRAYS = ("pid", "label", "camid", "tracklet", "frame")
FORMAT_VERSION = 2
ENCODINGS = ("encoded", "raw")
ENCODED_CHUNK_BYTES = 1 << 18
KEPT_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")   # JPEG, PNG: source bytes stored as they are
REBUILD = "delete it and run extract_frames again (snakemake --forcerun extract_frames <target>)"
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)   # OpenCV >= 4.11: libjpeg-turbo decodes straight to RGB
LABEL_MAPS = {"masks": ("mask_path", {"labels": list(GROUND_TRUTH_NAMES)}),
              "limbs": ("limb_path", {"labels": list(LIMB_NAMES), "fold": list(LIMB_TO_GROUND_TRUTH)})}
"""Per-frame label-map arrays: name -> (index column of the map files, the array's attrs)."""


@dataclass(frozen=True)
class FramesConfig:
    """A data set's ``frames`` block: how ``extract_frames`` stores its frames (module doc)."""

    height: int = 256
    width: int = 128
    encoding: Literal["encoded", "raw"] = "encoded"   # image file bytes, or uint8 pixels (the synthetic demo)
    jpeg_quality: int = 95             # encoded: frames that cannot keep their source bytes
    chunk_frames: int = 32             # raw images and masks: frames per chunk file
    compressor: Literal["none", "zstd", "blosc_lz4"] = "none"   # raw images and masks
    on_error: Literal["raise", "skip"] = "raise"     # a corrupt or missing frame stops, or is skipped and counted

    def __post_init__(self) -> None:
        if min(self.height, self.width) < 8:
            raise UserError(f"frames: height and width must be >= 8, got {self.height} x {self.width}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UserError(f"frames.jpeg_quality: expected 1-100, got {self.jpeg_quality}")
        if self.chunk_frames < 1:
            raise UserError(f"frames.chunk_frames: expected >= 1, got {self.chunk_frames}")


def _compressors(name: str) -> Any:
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "none":
        return None
    if name == "zstd":
        return ZstdCodec(level=1)
    if name == "blosc_lz4":
        return BloscCodec(cname="lz4", clevel=3, shuffle="bitshuffle")
    raise UserError(f"frames.compressor: expected none, zstd or blosc_lz4, got {name!r}")


def fit_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An image of any size at [height, width] (area filter when shrinking, bilinear otherwise), channels
    untouched (the filters work channel by channel: BGR in, BGR out; RGB in, RGB out)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    interp = cv2.INTER_AREA if (h > height or w > width) else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def resize_frame(image_bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """BGR image of any size -> RGB [height, width, 3] (what a raw store holds)."""
    return cv2.cvtColor(fit_frame(image_bgr, height, width), cv2.COLOR_BGR2RGB)


def decode_frame(data: np.ndarray, height: int, width: int) -> np.ndarray:
    """Image file bytes -> RGB uint8 [height, width, 3]: the pixels :func:`resize_frame` gives for the decoded
    image (OpenCV >= 4.11 decodes straight to RGB; older ones decode BGR and swap, the same values)."""
    if _IMREAD_RGB is not None:
        image = cv2.imdecode(data, _IMREAD_RGB)
    else:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        image = None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image is None:
        raise _undecodable("frame store", data)
    return fit_frame(image, height, width)


def _undecodable(where: str, data: np.ndarray) -> UserError:
    return UserError(f"{where}: a stored frame ({len(data)} bytes) cannot be decoded; the store is damaged: {REBUILD}")


def frame_encoder(encoding: str, height: int, width: int, jpeg_quality: int = 95
                  ) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    """``(BGR image, its file's bytes or None) -> what the store keeps``: the RGB frame at height x width
    (``raw``), or image file bytes (``encoded``): the file's own bytes when it is a JPEG or PNG no larger than
    height x width, else the image (shrunk to height x width where larger) encoded as JPEG at ``jpeg_quality``."""
    if encoding not in ENCODINGS:
        raise UserError(f"frames.encoding: expected one of {list(ENCODINGS)}, got {encoding!r}")
    if not 1 <= jpeg_quality <= 100:
        raise UserError(f"frames.jpeg_quality: expected 1..100, got {jpeg_quality}")
    if encoding == "raw":
        return lambda image, data: resize_frame(image, height, width)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]

    def encode(image: np.ndarray, data: np.ndarray | None) -> np.ndarray:
        fits = image.shape[0] <= height and image.shape[1] <= width
        if fits and data is not None and bytes(data[:8]).startswith(KEPT_SIGNATURES):
            return data
        ok, buf = cv2.imencode(".jpg", image if fits else fit_frame(image, height, width), params)
        if not ok:
            raise UserError(f"frames: OpenCV could not encode a {image.shape} frame as JPEG")
        return buf.reshape(-1)

    return encode


def _read_mask(path: Path, height: int, width: int) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UserError(f"{path}: unreadable ground-truth mask (expected a single-channel PNG)")
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


class _RowWriter:
    """Appends fixed-shape rows to a zarr array created at its largest length, a whole chunk at a time."""

    def __init__(self, arr: Any) -> None:
        self.arr, self.chunk = arr, int(arr.chunks[0])
        self.buf = np.zeros((self.chunk, *arr.shape[1:]), arr.dtype)
        self.fill = self.written = 0

    def append(self, row: np.ndarray) -> None:
        self.buf[self.fill] = row
        self.fill += 1
        if self.fill == self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.fill:
            self.arr[self.written:self.written + self.fill] = self.buf[:self.fill]
            self.written, self.fill = self.written + self.fill, 0

    def close(self) -> None:
        self.flush()
        if self.written < self.arr.shape[0]:
            self.arr.resize((self.written, *self.arr.shape[1:]))


class _ByteWriter:
    """Appends byte strings end to end to the 1-D uint8 zarr array ``name`` (no codec, whole chunks at a time)
    and records where each starts: ``offsets`` has one more entry than strings appended. zarr pads the last
    chunk file to the full chunk size; a store smaller than one chunk gets one chunk of its exact size."""

    def __init__(self, group: Any, name: str, chunk: int) -> None:
        self.group, self.name, self.chunk = group, name, chunk
        self.arr: Any = None
        self.pending = bytearray()
        self.written = 0
        self.offsets = int_array("q", [0])

    def append(self, data: np.ndarray) -> None:
        self.pending += memoryview(np.ascontiguousarray(data, np.uint8))
        self.offsets.append(self.offsets[-1] + len(data))
        if len(self.pending) >= self.chunk:
            self.flush(len(self.pending) // self.chunk * self.chunk)

    def flush(self, count: int) -> None:
        if self.arr is None:
            self.arr = self.group.create_array(self.name, shape=(0,), dtype="uint8", compressors=None,
                                               chunks=(min(self.chunk, max(count, 1)),), dimension_names=("byte",))
        if count:
            self.arr.resize((self.written + count,))
            self.arr[self.written:self.written + count] = np.frombuffer(bytes(self.pending[:count]), np.uint8)
            self.written += count
            del self.pending[:count]

    def close(self) -> np.ndarray:
        self.flush(len(self.pending))
        return np.frombuffer(self.offsets, np.int64)


def write_frame_store(index: pd.DataFrame, root: Path, out: Path, cfg: FramesConfig = FramesConfig(), *,
                      threads: int = 1, attrs: dict | None = None, chunk_bytes: int = ENCODED_CHUNK_BYTES,
                      keypoints: tuple[np.ndarray, list[str]] | None = None) -> tuple[pd.DataFrame, dict]:
    """Decode every frame of ``index`` (paths relative to ``root``), check it, store it as ``cfg.encoding``
    (module docstring) and write ``out`` atomically (a killed run leaves ``<out>.tmp``, never ``out``).

    The index's ``mask_path`` and ``limb_path`` columns, where present, give the ``masks`` and ``limbs``;
    ``keypoints`` (``[len(index), J, 3]`` x, y in pixels of each source image, v; and the J joint names, as
    :func:`hspreid.data.keypoints.load_keypoints` returns them) the ``keypoints``, made fractions of each decoded
    image's size. ``cfg.chunk_frames`` is the chunking of the ``raw`` images and of the label maps,
    ``cfg.compressor`` the codec of the ``raw`` images (label maps get zarr's default, zstd); ``chunk_bytes`` the
    chunk of the ``encoded`` bytes. Returns the index of the frames actually written (rows skipped under
    ``on_error="skip"`` are dropped, tracklets left empty disappear, numbering is redone) and a summary dict
    (counts, skipped, bytes, seconds).
    """
    from hspreid.data.loading import iter_frame_images

    height, width, encoding, chunk_frames, compressor, on_error = (
        cfg.height, cfg.width, cfg.encoding, cfg.chunk_frames, cfg.compressor, cfg.on_error)

    t0 = time.monotonic()
    n = len(index)
    encode = frame_encoder(encoding, height, width, cfg.jpeg_quality)

    def encode_sized(image: np.ndarray, data: np.ndarray | None) -> tuple[np.ndarray, tuple[int, int]]:
        return encode(image, data), image.shape[:2]

    maps = {name: column for name, (column, _) in LABEL_MAPS.items() if column in index.columns}
    if keypoints is not None and np.shape(keypoints[0]) != (n, len(keypoints[1]), 3):
        raise UserError(f"{root}: key points of shape {np.shape(keypoints[0])} for {n} frames and "
                        f"{len(keypoints[1])} joints; expected [{n}, {len(keypoints[1])}, 3]")
    counter: dict[str, int] = {"skipped": 0}
    kept: list[int] = []
    source_hw: list[tuple[int, int]] = []      # each kept frame's decoded size, for the key points
    with atomic_dir(out) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        if encoding == "raw":
            frames_out: Any = _RowWriter(group.create_array(
                "images", shape=(n, height, width, 3), dtype="uint8", chunks=(chunk_frames, height, width, 3),
                compressors=_compressors(compressor), dimension_names=("frame", "y", "x", "rgb")))
        else:
            frames_out = _ByteWriter(group, "encoded", chunk_bytes)
        map_out = {name: _RowWriter(group.create_array(
            name, shape=(n, height, width), dtype="uint8", chunks=(chunk_frames, height, width),
            dimension_names=("frame", "y", "x"), attributes=LABEL_MAPS[name][1])) for name in maps}
        progress = Progress(n, "frames decoded")
        for row, (frame, hw) in iter_frame_images(root, index, on_error=on_error, counter=counter, threads=threads,
                                                  transform=encode_sized):
            frames_out.append(frame)
            for name, column in maps.items():
                map_out[name].append(_read_mask(root / index[column].iat[row], height, width))
            kept.append(row)
            source_hw.append(hw)
            progress.update()
        if not kept:
            raise UserError(f"{root}: no readable frame in the data set")
        offsets = frames_out.close()
        for writer in map_out.values():
            writer.close()
        if keypoints is not None:
            _write_keypoints(group, keypoints[0], keypoints[1], np.asarray(kept), np.asarray(source_hw))
        if encoding == "encoded":
            group.create_array("encoded_offsets", data=offsets, chunks=(1 << 20,))
        if len(kept) < n:
            index = _reindex_after_skips(index, kept)
        for name in LABEL_ARRAYS:
            group.create_array(name, data=index[name].to_numpy(np.int64), chunks=(1 << 20,))
        group.create_array("subset", data=(index["subset"] == "test").to_numpy(np.int8), chunks=(1 << 20,))
        for name in ("query", "gallery"):
            group.create_array(name, data=index[name].to_numpy(bool), chunks=(1 << 20,))
        frame_bytes = int(offsets[-1]) if encoding == "encoded" else len(kept) * height * width * 3
        summary = {
            "frames": int(len(index)), "tracklets": int(index["tracklet"].nunique()),
            "train_ids": int(index.loc[index["subset"] == "train", "pid"].nunique()),
            "test_ids": int(index.loc[index["subset"] == "test", "pid"].nunique()),
            "skipped_frames": int(counter.get("skipped", 0)), "height": height, "width": width,
            "encoding": encoding, "frame_bytes": frame_bytes, "chunk_frames": chunk_frames,
            "has_masks": "masks" in maps, "has_limbs": "limbs" in maps, "has_keypoints": keypoints is not None,
            "wall_time_s": round(time.monotonic() - t0, 2),
            **({"compressor": compressor} if encoding == "raw" else {"jpeg_quality": cfg.jpeg_quality}),
        }
        group.attrs.update({"format": {"version": FORMAT_VERSION, "encoding": encoding},
                            "frame_shape": [height, width, 3], **(attrs or {})})
        group.attrs["summary"] = summary   # last: a store without it is incomplete
    log.info("wrote %s: %d frames, %d tracklets, %d skipped, %.1f MB of %s frames", out, summary["frames"],
             summary["tracklets"], summary["skipped_frames"], frame_bytes / 1e6, encoding)
    return index, summary


def _write_keypoints(group: Any, points: np.ndarray, joints: list[str], kept: np.ndarray, source_hw: np.ndarray
                     ) -> None:
    """The ``keypoints`` array: rows ``kept`` of ``points`` (pixels of their source images, whose (height, width)
    are ``source_hw``), x and y made fractions of the image's width and height."""
    values = np.array(points, np.float32)[kept]
    values[..., 0] /= source_hw[:, None, 1]
    values[..., 1] /= source_hw[:, None, 0]
    group.create_array("keypoints", data=values, chunks=(min(len(values), 1 << 14), len(joints), 3),
                       dimension_names=("frame", "joint", "xyv"), attributes={"joints": list(joints)})


def _reindex_after_skips(index: pd.DataFrame, kept: list[int]) -> pd.DataFrame:
    """Drop skipped rows; renumber tracklets and frames (train labels keep their meaning)."""
    sub = index.iloc[kept].reset_index(drop=True)
    sub["tracklet"] = pd.factorize(sub["tracklet"])[0]
    sub["frame"] = sub.groupby("tracklet").cumcount()
    return sub


class FrameStore:
    """Read access to ``frames.zarr`` (either encoding, and format 1 stores). Open one per DataLoader worker.

    ``read`` bypasses zarr-python where the spec makes a chunk file its raw bytes (arrays with only the
    ``bytes`` codec): a frame is one ``pread`` at an offset, then, for ``encoded``, one ``cv2.imdecode``.
    zarr-python 3.1's per-call overhead (~0.5 ms, zarr issue #3524, fixed only for Python >= 3.12) would
    otherwise cost more than the decode (see bench/bench_frames.py). Compressed arrays are read through zarr.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise UserError(f"{self.path}: not a frame store (run the extract_frames stage first)")
        self.group = zarr.open_group(str(self.path), mode="r")
        attrs = self.group.attrs
        fmt = attrs.get("format", {"version": 1, "encoding": "raw"})
        if "summary" not in attrs:
            raise UserError(f"{self.path}: incomplete frame store (no summary attribute): {REBUILD}")
        if not isinstance(fmt, dict) or fmt.get("version", 0) > FORMAT_VERSION or fmt.get("encoding") not in ENCODINGS:
            raise UserError(f"{self.path}: frame store format {fmt} is not one this hspreid reads (version <= "
                            f"{FORMAT_VERSION}, encoding {' or '.join(ENCODINGS)}): {REBUILD}")
        self.encoding: str = fmt["encoding"]
        try:
            if self.encoding == "raw":
                self._images = self.group["images"]
                self.frame_shape = tuple(int(s) for s in self._images.shape[1:])
                self._count = int(self._images.shape[0])
            else:
                self._encoded = self.group["encoded"]
                self._offsets = np.asarray(self.group["encoded_offsets"][...], np.int64)
                self.frame_shape = tuple(int(s) for s in attrs["frame_shape"])
                self._count = len(self._offsets) - 1
        except KeyError as exc:
            raise UserError(f"{self.path}: {self.encoding} frame store without {exc}: {REBUILD}") from None
        self.masks, self.limbs, self.keypoints = (self.group[name] if name in self.group else None
                                                  for name in ("masks", "limbs", "keypoints"))
        self._raw = {name: _raw_chunk_layout(self.path / name) for name in ("images", "encoded", *LABEL_MAPS)}

    def __len__(self) -> int:
        return self._count

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of every frame ``read`` returns."""
        return self.frame_shape[0], self.frame_shape[1]

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def limb_names(self) -> list[str] | None:
        """Names of the limb codes (``attrs["labels"]`` of ``limbs``), or None without limb maps."""
        return None if self.limbs is None else list(self.limbs.attrs["labels"])

    @property
    def joints(self) -> list[str] | None:
        """Names of the key points' joints, or None without key points."""
        return None if self.keypoints is None else list(self.keypoints.attrs["joints"])

    def read(self, rows: np.ndarray, array: str = "images") -> np.ndarray:
        """RGB frames uint8 [n, H, W, 3] (``array="images"``) or another per-frame array at the row numbers
        ``rows`` (any order, repeats allowed): ``"masks"`` or ``"limbs"`` uint8 [n, H, W], ``"keypoints"``
        float32 [n, J, 3] (module docstring)."""
        rows = np.asarray(rows, dtype=np.int64)
        if array == "images" and self.encoding == "encoded":
            height, width = self.frame_size
            out = np.empty((len(rows), *self.frame_shape), np.uint8)
            for i, data in enumerate(self.read_encoded(rows)):
                try:
                    out[i] = decode_frame(data, height, width)
                except UserError:
                    raise _undecodable(f"{self.path}: row {rows[i]}", data) from None
            return out
        arr = self._images if array == "images" else self.group[array]
        if len(rows) == 0:
            return np.zeros((0, *arr.shape[1:]), arr.dtype)
        if self._raw.get(array):
            return _read_raw_rows(self.path / array, arr, rows)
        chunk = int(arr.chunks[0])
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if hi - lo <= 4 * max(len(rows), chunk):
            return arr[lo:hi][rows - lo]
        return np.stack([arr[int(r)] for r in rows])

    def ground_truth(self, rows: np.ndarray) -> dict[str, np.ndarray | None]:
        """What the parsing scores compare with, for ``rows``: ``masks``, ``limbs`` and ``keypoints`` (None for
        what the data set does not have)."""
        return {name: None if getattr(self, name) is None else self.read(rows, name)
                for name in ("masks", "limbs", "keypoints")}

    def segmentation_quality(self, labels: np.ndarray, rows: np.ndarray, num_parts: int,
                             split: np.ndarray | None = None, only: Collection[str] | None = None) -> dict | None:
        """:func:`~hspreid.partmaps.segmentation_quality` of part label maps [n, h, w] of ``rows`` against this
        store's ground truth (``split``: a name per map, e.g. the rows' subsets; ``only``: the partitions scored);
        None where the data set has no masks."""
        if self.masks is None:
            return None
        return segmentation_quality(labels, num_parts=num_parts, split=split, only=only, **self.ground_truth(rows))

    def label_quality(self, labels: np.ndarray, rows: np.ndarray, num_parts: int,
                      layout_rows: np.ndarray | None = None) -> dict | None:
        """:func:`~hspreid.partmaps.label_quality` of part label maps [n, h, w] of ``rows`` against this store's
        ground truth (key points fitted on the identities of even pid, measured on the others), the mean layout
        fitted on the masks of ``layout_rows`` (e.g. training frames; default: ``rows``); None where the data
        set has no masks."""
        if self.masks is None:
            return None
        layout = None if layout_rows is None else mean_layout(self.read(layout_rows, "masks"))
        return label_quality(labels, num_parts=num_parts, fit=self.read(rows, "pid") % 2 == 0, layout=layout,
                             **self.ground_truth(rows))

    def read_encoded(self, rows: np.ndarray) -> list[np.ndarray]:
        """The stored image file bytes (uint8 [b], JPEG or PNG) of each row of an ``encoded`` store, e.g. for a
        batched GPU decode of the JPEGs (``torchvision.io.decode_jpeg(..., device="cuda")``); frames that
        differ from ``frame_size`` must be resized after decoding."""
        if self.encoding != "encoded":
            raise UserError(f"{self.path}: a {self.encoding} store holds no encoded frames")
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self._offsets[rows], self._offsets[rows + 1]
        if self._raw["encoded"]:
            return _read_byte_ranges(self.path / "encoded", int(self._encoded.chunks[0]), starts, ends)
        return [np.asarray(self._encoded[int(a):int(b)]) for a, b in zip(starts, ends)]


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


def _read_byte_ranges(array_dir: Path, chunk: int, starts: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """Byte ranges ``[start, end)`` of a raw 1-D uint8 array straight from its chunk files "c/<k>": one
    ``pread`` per range (two where it crosses a chunk boundary), each touched file opened once per call."""
    fds: dict[int, int] = {}

    def piece(c: int, lo: int, hi: int) -> bytes:
        if c not in fds:
            try:
                fds[c] = os.open(f"{array_dir}/c/{c}", os.O_RDONLY)
            except FileNotFoundError:
                raise UserError(f"{array_dir}/c/{c}: missing chunk file; the frame store is damaged: {REBUILD}") \
                    from None
        return os.pread(fds[c], hi - lo, lo - c * chunk)

    try:
        out = []
        for a, b in zip(starts.tolist(), ends.tolist()):
            first, last = a // chunk, (b - 1) // chunk
            data = piece(first, a, b) if first == last else b"".join(
                piece(c, max(a, c * chunk), min(b, (c + 1) * chunk)) for c in range(first, last + 1))
            out.append(np.frombuffer(data, np.uint8))
        return out
    finally:
        for fd in fds.values():
            os.close(fd)
