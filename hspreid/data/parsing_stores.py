"""Parsing stores: five-region label maps of every frame, SPReID's parsing input.

A parsing store (``results/<dataset>/parsing/<source>.zarr``) is a label-map store
(:mod:`hspreid.data.label_maps`) of every frame of the data set, train and test, whose labels are
0 background, 1 head, 2 upper body, 3 lower body, 4 shoes, 255 nowhere,

with attrs ``source``, ``regions`` (the names of codes 0-4), ``ignore`` (255), the source's options and,
where the data set has ground-truth masks, the maps' per-region IoU against them. Sources:

* ``oracle``: the synthetic ground-truth masks (0 bg, 1 head, 2 upper, 3 lower, 4 shoes, 5 belongings);
  belongings go to ``belongings`` (default 255: in no region -- a LIP-trained parser has no bag class,
  so bags are not body; set 2 to pool them with the upper body);
* ``isp`` / ``hcga``: a trained part parser's argmax (K parts top to bottom), folded to the regions by
  height in every map (:func:`hspreid.partmaps.fold_parts_by_height`; :func:`hspreid.models.parsing.parser_blocks`);
* ``external``: label maps from any human parser, one PNG per frame mirroring the index ``path`` under a
  directory (``<dir>/<path with extension .png>``, single-channel or palette), or a zarr group with
  ``labels`` [n, h, w] and ``rows`` (frame-store rows) or ``paths`` (index paths); folded with ``table``
  (``lip``: LIP's 20 classes as SPReID groups them, or a list / mapping source label -> region code).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hspreid.data.frames import FrameStore
from hspreid.data.label_maps import Block, write_label_maps
from hspreid.errors import UserError
from hspreid.partmaps import (HEIGHT_BANDS, IGNORE, REGION_NAMES, RegionIoU, fold_to_regions, ground_truth_table,
                              resize_nearest)

# ----------------------------------------------------------------------------- source options
@dataclass(frozen=True)
class OracleSource:
    """``parsing.oracle``: where the ground truth's belongings go (255: nowhere, 2: the upper body)."""

    belongings: int = IGNORE


@dataclass(frozen=True)
class ParserSource:
    """``parsing.isp`` / ``hcga`` / ``ss_hsp``: a trained parser's parts folded by height at ``bands``."""

    bands: list[float] = field(default_factory=lambda: list(HEIGHT_BANDS))
    frames_per_batch: int = 256


@dataclass(frozen=True)
class ExternalSource:
    """``parsing.external``: any parser's label maps at ``path`` folded with ``table``."""

    path: str | None = None
    table: str | list[int] | dict[Any, int] = "lip"


SOURCES: dict[str, type] = {"oracle": OracleSource, "isp": ParserSource, "hcga": ParserSource,
                            "ss_hsp": ParserSource, "external": ExternalSource}
"""Parsing sources and their option blocks."""


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
        yield r, np.stack([resize_nearest(fold_to_regions(m, table), size) for m in source(r)])


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


# ----------------------------------------------------------------------------- quality
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
