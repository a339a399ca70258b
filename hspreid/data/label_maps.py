"""Label-map stores: uint8 maps of frame-store rows, the one layout of every parsing the pipeline writes.

A store (zarr v3 group, written atomically) holds

rows      int64 [n]         frame-store rows, ascending
labels    uint8 [n, h, w]   the maps (their codes depend on the writer)

plus the writer's attrs. The parsing stores of ``parse_frames`` (five regions), SS-HSP's ``parsing.zarr``
(learned parts) and ``pseudo_labels.zarr`` (ISP's and HCGA's part labels) share it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from hspreid.errors import UserError
from hspreid.io import Progress, atomic_dir

Block = tuple[np.ndarray, np.ndarray]  # (frame-store rows, label maps uint8 [n, h, w])


def write_label_maps(out: str | Path, blocks: Iterable[Block], count: int, attrs: dict | Callable[[], dict],
                     progress_label: str = "label maps written") -> tuple[int, int]:
    """Write uint8 label maps from ``blocks`` of (rows ascending, maps [b, h, w]), ``count`` rows in all, to
    the zarr group ``out`` atomically (``labels`` and ``rows``); returns the map size (h, w). ``attrs`` may
    be a function, called once every block is written (e.g. for a quality score)."""
    import zarr
    from zarr.codecs import ZstdCodec

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


class LabelMaps:
    """Read access to a label-map store by frame-store row. ``in_memory`` reads every map at once (a few MB
    for pseudo labels even on MARS); otherwise maps are read on demand (open once per worker)."""

    def __init__(self, path: str | Path, in_memory: bool = False):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise UserError(f"{self.path}: not a label-map store (expected the output of parse_frames, "
                            "pseudo_labels or pretrain_segmentation)")
        group = zarr.open_group(str(self.path), mode="r")
        if "labels" not in group or "rows" not in group:
            raise UserError(f"{self.path}: a label-map store needs 'rows' and 'labels'")
        self.rows, self.attrs = group["rows"][...], dict(group.attrs)
        self.labels = group["labels"][...] if in_memory else group["labels"]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.labels.shape[1:])

    def read(self, frame_rows: np.ndarray) -> np.ndarray:
        """Label maps uint8 [n, h, w] of ``frame_rows`` (any order, repeats allowed)."""
        frame_rows = np.asarray(frame_rows, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.rows, frame_rows), max(len(self.rows) - 1, 0))
        if len(frame_rows) and (not len(self.rows) or np.any(self.rows[pos] != frame_rows)):
            raise UserError(f"{self.path}: no label maps for some frames (was it made from another frame store?)")
        if len(pos) == 0:
            return np.zeros((0, *self.size), np.uint8)
        if isinstance(self.labels, np.ndarray):
            return self.labels[pos]
        lo, hi = int(pos.min()), int(pos.max()) + 1
        return self.labels[lo:hi][pos - lo] if hi - lo <= 4 * len(pos) + 64 else self.labels.oindex[(pos,)]
