"""Label maps on a grid: nearest-neighbour resizing, horizontal-stripe partitions and the image border."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from hspreid.errors import UserError


def resize_nearest(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Label maps [n, h', w'] (or one map [h', w']) resized to ``size`` = (h, w) by nearest neighbour;
    returned as they are when already that size."""
    h, w = (int(s) for s in size)
    maps = np.asarray(maps)
    if maps.shape[-2:] == (h, w):
        return maps
    if maps.ndim == 2:
        return cv2.resize(maps, (w, h), interpolation=cv2.INTER_NEAREST)
    if len(maps) == 0:
        return np.zeros((0, h, w), maps.dtype)
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in maps])


def border_ring(height: int, width: int) -> np.ndarray:
    """bool [height, width]: the outer ring of an image, its border pixels (a centre prior's background)."""
    ring = np.zeros((int(height), int(width)), dtype=bool)
    ring[0], ring[-1], ring[:, 0], ring[:, -1] = True, True, True, True
    return ring


def stripe_rows(height: int, num_parts: int | None = None, bounds: Sequence[float] | None = None) -> np.ndarray:
    """The stripe (1..K, top to bottom) of each of ``height`` rows, int64 [height].

    ``num_parts`` equal stripes (row r in stripe r * K // height + 1, PCB's partition), or, with ``bounds``
    (increasing row fractions), K = len(bounds) + 1 stripes cut where a row's centre (r + 0.5) / height
    reaches a bound."""
    rows = np.arange(int(height))
    if bounds is not None:
        centres = (rows.astype(np.float32) + np.float32(0.5)) / np.float32(height)   # float32, as on a torch grid
        return (centres[:, None] >= np.asarray(bounds, np.float32)[None, :]).sum(1) + 1
    if num_parts is None or num_parts < 1 or num_parts > 255:
        raise UserError(f"stripes: num_parts must be in [1, 255], got {num_parts}")
    return rows * num_parts // height + 1


def stripe_labels(shape: Sequence[int], num_parts: int, foreground: np.ndarray | None = None) -> np.ndarray:
    """uint8 [n, h, w] label maps of ``num_parts`` equal horizontal stripes, 1 at the top to K at the bottom.

    Without ``foreground`` the stripes tile the whole image (no background). With a boolean ``foreground``
    [n, h, w] each frame's stripes split the rows from its top-most to its bottom-most foreground pixel, and
    pixels off the foreground are background 0 (a frame without foreground is all background).
    """
    n, h, w = (int(s) for s in shape)
    if foreground is None:
        band = stripe_rows(h, num_parts).astype(np.uint8)
        return np.broadcast_to(band[None, :, None], (n, h, w)).copy()
    if num_parts < 1 or num_parts > 255:
        raise UserError(f"stripes: num_parts must be in [1, 255], got {num_parts}")
    fg = np.asarray(foreground, dtype=bool)
    if fg.shape != (n, h, w):
        raise UserError(f"stripe_labels: foreground shape {fg.shape} != {(n, h, w)}")
    any_row = fg.any(axis=2)                                               # [n, h]
    has = any_row.any(axis=1)
    top = np.where(has, any_row.argmax(axis=1), 0)
    bottom = np.where(has, h - 1 - any_row[:, ::-1].argmax(axis=1), 0)
    span = (bottom - top + 1).clip(min=1)
    rel = (np.arange(h)[None, :] - top[:, None]).clip(0, None)             # [n, h]
    band = (rel * num_parts // span[:, None]).clip(0, num_parts - 1) + 1
    return np.where(fg, band[:, :, None], 0).astype(np.uint8)
