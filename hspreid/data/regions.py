"""Parsing stores: five-region label maps of every frame, SPReID's parsing input.

A parsing store (``results/<dataset>/parsing/<source>.zarr``, zarr v3 group) holds

rows      int64 [n]         frame-store rows, sorted (every frame of the data set, train and test)
labels    uint8 [n, h, w]   0 background, 1 head, 2 upper body, 3 lower body, 4 shoes, 255 nowhere

with attrs ``source``, ``regions`` (the names of codes 0-4), ``ignore`` (255), the source's options and,
where the data set has ground-truth masks, the maps' per-region IoU against them. Sources:

* ``oracle``: the synthetic ground-truth masks (0 bg, 1 head, 2 upper, 3 lower, 4 shoes, 5 belongings);
  belongings go to ``belongings`` (default 255: in no region -- a LIP-trained parser has no bag class,
  so bags are not body; set 2 to pool them with the upper body);
* ``isp`` / ``hcga``: a trained part parser's argmax (K parts top to bottom), folded to the regions by
  height in every map (:func:`hspreid.models.spreid.fold_parts_by_height`);
* ``external``: label maps from any human parser, one PNG per frame mirroring the index ``path`` under a
  directory (``<dir>/<path with extension .png>``, single-channel or palette), or a zarr group with
  ``labels`` [n, h, w] and ``rows`` (frame-store rows) or ``paths`` (index paths); folded with ``table``
  (``lip``: LIP's 20 classes as SPReID groups them, or a list / mapping source label -> region code).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from hspreid.data.frames import FrameStore
from hspreid.errors import UserError
from hspreid.models.spreid import HEIGHT_BANDS, IGNORE, LIP_TO_REGIONS, fold_parts_by_height, fold_to_regions

log = logging.getLogger("hspreid.regions")

REGION_NAMES = ("background", "head", "upper", "lower", "shoes")
TABLES: dict[str, Sequence[int]] = {"lip": LIP_TO_REGIONS}
Block = tuple[np.ndarray, np.ndarray]  # (frame-store rows, region maps uint8 [n, h, w])


# ----------------------------------------------------------------------------- tables
def region_code(value: Any, where: str) -> int:
    """A region code (0-4, or 255 = nowhere), or a UserError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in (*range(len(REGION_NAMES)), IGNORE):
        raise UserError(f"{where}: expected a region code 0-4 (background, head, upper, lower, shoes) or "
                        f"{IGNORE} (nowhere), got {value!r}")
    return value


def resolve_table(table: str | Sequence[int] | Mapping[Any, int], where: str = "table") -> Sequence[int] | dict:
    """``lip`` (or another name in TABLES), a list (source label i -> region) or a mapping label -> region."""
    if isinstance(table, str):
        if table not in TABLES:
            raise UserError(f"{where}: unknown table {table!r}; expected one of {sorted(TABLES)}, a list or a mapping")
        return TABLES[table]
    if isinstance(table, Mapping):
        out = {}
        for k, v in table.items():
            try:
                label = int(k)
            except (TypeError, ValueError):
                label = -1
            if not 0 <= label < 256:
                raise UserError(f"{where}: source label {k!r} is not an integer 0-255")
            out[label] = region_code(v, f"{where}[{k}]")
        return out
    if isinstance(table, (list, tuple)) and table:
        return [region_code(v, f"{where}[{i}]") for i, v in enumerate(table)]
    raise UserError(f"{where}: expected a table name, a non-empty list or a mapping, got {table!r}")


def ground_truth_table(belongings: int = IGNORE) -> list[int]:
    """Synthetic ground-truth codes (0-4 as the regions, 5 belongings) -> region code."""
    return [0, 1, 2, 3, 4, region_code(belongings, "oracle.belongings")]


# ----------------------------------------------------------------------------- sources
def oracle_blocks(store: FrameStore, rows: np.ndarray, belongings: int = IGNORE,
                  block: int = 1024) -> Iterator[Block]:
    """Ground-truth masks of the frame store folded to the regions (see module doc)."""
    if store.masks is None:
        raise UserError(f"{store.path}: parsing source 'oracle' needs ground-truth masks; this data set has none "
                        "(only the synthetic data sets ship them)")
    table = ground_truth_table(belongings)
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        yield r, fold_to_regions(store.read(r, "masks"), table)


def parser_blocks(model: nn.Module, frames_path: Path, rows: np.ndarray, *, device: torch.device,
                  bands: Sequence[float] = HEIGHT_BANDS, block: int = 1024,
                  frames_per_batch: int = 256) -> Iterator[Block]:
    """A trained part parser's maps (argmax of ``part_logits``, K parts top to bottom) folded by height."""
    from hspreid.features import predict_parsing

    num_parts = getattr(model, "num_parts", None)
    if num_parts is None:
        raise UserError(f"parser model {type(model).__name__}: no part classifier (num_parts) to parse with")
    if len(bands) != 3 or list(bands) != sorted(bands) or not all(0 < b < 1 for b in bands):
        raise UserError(f"bands: expected three increasing row fractions in (0, 1), got {list(bands)}")
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        parts = predict_parsing(model, frames_path, r, device=device, frames_per_batch=frames_per_batch)
        if parts is None:
            raise UserError(f"parser model {type(model).__name__}: outputs no part_logits")
        yield r, fold_parts_by_height(parts, num_parts, bounds=bands)


def external_blocks(path: Path, index: pd.DataFrame, rows: np.ndarray, table: Sequence[int] | dict,
                    size: tuple[int, int], block: int = 1024) -> Iterator[Block]:
    """Label maps from any parser (PNG directory or zarr store), folded with ``table``, resized to ``size``."""
    path = Path(path)
    if (path / "zarr.json").is_file():
        source = _ZarrMaps(path, index)
    elif path.is_dir():
        if "video_frame" in index.columns and index["video_frame"].notna().any():
            raise UserError(f"{path}: PNG label maps need image frames; this data set is cut from videos (use a "
                            "zarr store with rows)")
        source = lambda r: _png_maps(path, index["path"].to_numpy()[r])  # noqa: E731
    else:
        raise UserError(f"{path}: external parsing maps not found; expected a directory of PNG label maps "
                        "mirroring the frame paths, or a zarr store")
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        yield r, np.stack([_resize_nearest(fold_to_regions(m, table), size) for m in source(r)])


def _png_maps(folder: Path, paths: Iterable[str]) -> list[np.ndarray]:
    """The label PNG of each frame path: <folder>/<path with extension .png> (single-channel or palette)."""
    from PIL import Image

    maps = []
    for rel in paths:
        png = folder / Path(rel).with_suffix(".png")
        try:
            with Image.open(png) as image:
                labels = np.array(image)
        except FileNotFoundError:
            raise UserError(f"{png}: missing external parsing map; {folder} must hold one <frame path>.png per "
                            "frame of the data set") from None
        except OSError as exc:
            raise UserError(f"{png}: unreadable external parsing map ({exc})") from None
        if labels.ndim != 2:
            raise UserError(f"{png}: expected a single-channel or palette PNG of labels, got shape {labels.shape}")
        maps.append(labels)
    return maps


class _ZarrMaps:
    """Maps of a zarr store by frame-store row: ``labels`` [n, h, w] with ``rows`` or ``paths``."""

    def __init__(self, path: Path, index: pd.DataFrame):
        import zarr

        group = zarr.open_group(str(path), mode="r")
        if "labels" not in group or ("rows" not in group and "paths" not in group):
            raise UserError(f"{path}: an external parsing store needs 'labels' [n, h, w] and 'rows' or 'paths'")
        self.labels = group["labels"]
        if "rows" in group:
            keys, wanted = group["rows"][...].astype(np.int64), np.arange(len(index))
        else:
            keys, wanted = np.asarray(group["paths"][...]).astype(str), index["path"].to_numpy().astype(str)
        order = np.argsort(keys, kind="stable")
        pos = np.minimum(np.searchsorted(keys[order], wanted), len(keys) - 1)
        found = keys[order][pos] == wanted
        if not found.all():
            first = wanted[~found][0]
            raise UserError(f"{path}: no label map for frame {first} ({int((~found).sum())} of {len(index)} missing)")
        self.position = order[pos]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.labels.oindex[(self.position[rows],)]


def _resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 label map [h', w'] resized to ``size`` (h, w) by nearest neighbour."""
    h, w = size
    labels = np.asarray(labels, dtype=np.uint8)
    return labels if labels.shape == (h, w) else cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)


# ----------------------------------------------------------------------------- quality
class RegionIoU:
    """Running per-region IoU of region maps against reference maps of the same code (255 in the
    reference is left out), at the reference's size; a region absent from both counts as None."""

    KEYS = (*REGION_NAMES, "foreground")

    def __init__(self) -> None:
        self.inter, self.union, self.frames = np.zeros(len(self.KEYS)), np.zeros(len(self.KEYS)), 0

    def update(self, pred: np.ndarray, truth: np.ndarray) -> "RegionIoU":
        if pred.shape != truth.shape:
            pred = np.stack([_resize_nearest(m, truth.shape[1:]) for m in pred])
        care = truth != IGNORE
        for k, name in enumerate(self.KEYS):
            is_p = ((pred >= 1) & (pred <= 4)) if name == "foreground" else pred == k
            is_t = ((truth >= 1) & (truth <= 4)) if name == "foreground" else truth == k
            self.inter[k] += np.count_nonzero(is_p & is_t & care)
            self.union[k] += np.count_nonzero((is_p | is_t) & care)
        self.frames += len(truth)
        return self

    def result(self) -> dict:
        iou = {name: None if u == 0 else round(float(i / u), 4)
               for name, i, u in zip(self.KEYS, self.inter, self.union)}
        parts = [iou[n] for n in REGION_NAMES[1:] if iou[n] is not None]
        return {"frames": self.frames, **iou, "mean_part_iou": round(float(np.mean(parts)), 4) if parts else None}


def scored(blocks: Iterable[Block], store: FrameStore, scorer: RegionIoU, step: int) -> Iterator[Block]:
    """Pass ``blocks`` through, scoring the frames whose row is a multiple of ``step`` against the store's
    ground-truth masks (folded with belongings nowhere)."""
    for rows, maps in blocks:
        pick = np.flatnonzero(rows % step == 0)
        if len(pick):
            scorer.update(maps[pick], fold_to_regions(store.read(rows[pick], "masks"), ground_truth_table()))
        yield rows, maps


# ----------------------------------------------------------------------------- the store
def write_parsing_store(out: Path, blocks: Iterable[Block], count: int,
                        attrs: dict | Callable[[], dict]) -> tuple[int, int]:
    """A five-region parsing store: :func:`write_label_maps` with the region names in the attrs."""
    def all_attrs() -> dict:
        return {"regions": list(REGION_NAMES), "ignore": IGNORE, **(attrs() if callable(attrs) else attrs)}

    return write_label_maps(out, blocks, count, all_attrs, "frames parsed")


def write_label_maps(out: str | Path, blocks: Iterable[Block], count: int, attrs: dict | Callable[[], dict],
                     progress_label: str = "label maps written") -> tuple[int, int]:
    """Write uint8 label maps from ``blocks`` of (rows ascending, maps [b, h, w]), ``count`` rows in all, to
    the zarr group ``out`` atomically (``labels`` and ``rows``); returns the map size (h, w). ``attrs`` may
    be a function, called once every block is written (e.g. for a quality score)."""
    import zarr
    from zarr.codecs import ZstdCodec

    from hspreid.io import Progress, atomic_dir

    progress = Progress(count, progress_label)
    with atomic_dir(Path(out)) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        labels, all_rows, done = None, np.zeros(count, np.int64), 0
        for rows, maps in blocks:
            if labels is None:
                h, w = maps.shape[1:]
                chunk = max(1, min(count, (1 << 20) // (h * w)))
                labels = group.create_array("labels", shape=(count, h, w), dtype="uint8", chunks=(chunk, h, w),
                                            compressors=ZstdCodec(level=3), dimension_names=("frame", "y", "x"))
            if done + len(rows) > count:
                raise UserError(f"{out}: more than the {count} expected label maps")
            labels[done:done + len(rows)] = maps.astype(np.uint8)
            all_rows[done:done + len(rows)] = rows
            done += len(rows)
            progress.update(len(rows))
        if labels is None or done != count or np.any(np.diff(all_rows) <= 0):
            raise UserError(f"{out}: got {done} label maps for {count} frames (rows must ascend)")
        group.create_array("rows", data=all_rows, chunks=(1 << 20,))
        group.attrs.update(attrs() if callable(attrs) else attrs)
    return tuple(int(s) for s in labels.shape[1:])


class ParsingStore:
    """Read access to a parsing store: region maps by frame-store row (opened lazily, once per worker)."""

    def __init__(self, path: str | Path):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise UserError(f"{self.path}: not a parsing store (run the parse_frames stage first)")
        group = zarr.open_group(str(self.path), mode="r")
        if "labels" not in group or "rows" not in group:
            raise UserError(f"{self.path}: a parsing store needs 'rows' and 'labels'")
        self.rows, self.labels, self.attrs = group["rows"][...], group["labels"], dict(group.attrs)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.labels.shape[1:])

    def read(self, frame_rows: np.ndarray) -> np.ndarray:
        """Region maps uint8 [n, h, w] of ``frame_rows`` (any order, repeats allowed)."""
        frame_rows = np.asarray(frame_rows, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.rows, frame_rows), max(len(self.rows) - 1, 0))
        if len(frame_rows) and (not len(self.rows) or np.any(self.rows[pos] != frame_rows)):
            raise UserError(f"{self.path}: no region maps for some frames (was it made from another frame store?)")
        if len(pos) == 0:
            return np.zeros((0, *self.size), np.uint8)
        lo, hi = int(pos.min()), int(pos.max()) + 1
        return self.labels[lo:hi][pos - lo] if hi - lo <= 4 * len(pos) + 64 else self.labels.oindex[(pos,)]
