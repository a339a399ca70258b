"""Part maps of a whole frame store from a trained co-part segmenter, and the ``parsing.zarr`` store they go to.

Layout of the store (zarr v3 group), written atomically (``<path>.tmp`` renamed when complete):

labels   uint8 [n, h, w]   argmax of the K+1 masks: 0 background, 1..K the learned parts, at ``seg_size``
rows     int64 [n]         the frame-store row of each map (0..n-1: every frame, train and test)
attrs    num_parts, seg_size, model (checkpoint path), frames (frame store path), ... (the caller's)

A label-map store (:mod:`hspreid.data.label_maps`): ``LabelMaps`` reads it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from hspreid.data.frames import FrameStore
from hspreid.data.label_maps import write_label_maps
from hspreid.errors import UserError
from hspreid.segmentation.model import CoPartSegmenter, frames_to_tensor

Block = tuple[np.ndarray, np.ndarray]
LABEL_RULES = ("argmax", "foreground")


def part_labels(masks: torch.Tensor, rule: str = "argmax") -> torch.Tensor:
    """uint8 label maps [n, h, w] from soft masks [n, K+1, h, w] (channel 0 background).

    ``"argmax"``: the most likely of the K+1 channels. ``"foreground"``: SS-HSP's foreground first -- a pixel
    is a body pixel where sum_k M^k > M^bg (the foreground region of section 3.3), labelled with its most
    likely part; with K parts sharing the body, argmax can call a pixel background even where the parts
    together outweigh it.
    """
    if rule == "argmax":
        return masks.argmax(dim=1).to(torch.uint8)
    if rule == "foreground":
        fg = masks[:, 1:].sum(dim=1) > masks[:, 0]
        return torch.where(fg, masks[:, 1:].argmax(dim=1) + 1, 0).to(torch.uint8)
    raise UserError(f"segmentation labels: expected one of {list(LABEL_RULES)}, got {rule!r}")


def segment_store(model: CoPartSegmenter, store: FrameStore, rows: np.ndarray | None = None,
                  batch_size: int = 256, device: str | torch.device | None = None,
                  timing: dict[str, float] | None = None, rule: str = "argmax") -> Iterator[Block]:
    """Yield (rows, uint8 label maps [b, h, w]) for ``rows`` (default: every frame) in blocks of ``batch_size``,
    the model in eval mode on ``device`` (default: where its parameters are). ``timing``, when given, collects
    the model's seconds (``"seconds"``, reading excluded) and ``"frames"``; ``rule``: see :func:`part_labels`."""
    if rule not in LABEL_RULES:
        raise UserError(f"segmentation labels: expected one of {list(LABEL_RULES)}, got {rule!r}")
    if batch_size < 1:
        raise UserError(f"segmentation inference batch size must be >= 1, got {batch_size}")
    rows = np.arange(len(store), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    for i in range(0, len(rows), batch_size):
        block = rows[i:i + batch_size]
        x = frames_to_tensor(store.read(block))
        t0 = time.perf_counter()
        with torch.inference_mode():
            masks = model.segment_raw(x.to(device, non_blocking=True))["masks"]
            labels = part_labels(masks, rule).cpu().numpy()
        if timing is not None:
            timing["seconds"] = timing.get("seconds", 0.0) + time.perf_counter() - t0
            timing["frames"] = timing.get("frames", 0.0) + len(block)
        yield block, labels


def write_part_store(out: str | Path, blocks: Iterable[Block], count: int,
                     attrs: dict[str, Any] | Callable[[], dict[str, Any]]) -> tuple[int, int]:
    """Write ``count`` part maps from ``blocks`` (rows ascending) to ``out`` atomically; returns the map size.
    ``attrs`` may be a function, called once every block is written (e.g. for scores or timings)."""
    return write_label_maps(out, blocks, count, attrs, "frames segmented")
