"""A trained model as a parser: its part maps (the argmax of ``part_logits``), folded to the five regions
for SPReID or scored against ground-truth masks."""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from hspreid.data.frames import FrameStore
from hspreid.data.label_maps import LabelMaps
from hspreid.errors import UserError
from hspreid.models.base import ReIDModel
from hspreid.partmaps import HEIGHT_BANDS, check_height_bands, fold_parts_by_height, label_fit

log = logging.getLogger("hspreid.parsing")


@torch.no_grad()
def predict_parsing(model: ReIDModel, frames_path: str | Path, rows: np.ndarray, *, device: torch.device,
                    frames_per_batch: int = 256) -> np.ndarray:
    """The model's part map (argmax of its ``part_logits``) of each frame-store row: uint8 [n, h, w]."""
    if not model.predicts_parsing:
        raise UserError(f"model {type(model).__name__}: no part classifier to parse with")
    store = FrameStore(frames_path)
    model.eval().to(device)
    maps = []
    for s in range(0, len(rows), frames_per_batch):
        frames = torch.from_numpy(store.read(rows[s:s + frames_per_batch])).permute(0, 3, 1, 2)
        out = model(frames[:, None].to(device))
        maps.append(out["part_logits"].argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(maps)


def spread_rows(rows: np.ndarray, max_frames: int) -> np.ndarray:
    """Up to ``max_frames`` of ``rows``, evenly spread, sorted, without repeats."""
    if len(rows) == 0 or max_frames <= 0:
        return np.asarray(rows)[:0]
    return np.unique(rows[np.linspace(0, len(rows) - 1, min(len(rows), max_frames)).round().astype(int)])


def predicted_parsing_quality(model: ReIDModel, frames_path: str | Path, rows: np.ndarray, *, device: torch.device,
                              max_frames: int = 2000, frames_per_batch: int = 256, labels: LabelMaps | None = None,
                              layout_rows: np.ndarray | None = None) -> dict | None:
    """Parsing scores (:func:`hspreid.partmaps.label_quality`) of the model's predicted part maps against the
    ground truth of up to ``max_frames`` of ``rows`` (evenly spread; the key-point regression fitted on the
    identities of even pid, measured on the others), beside the mean layout of up to ``max_frames`` of
    ``layout_rows`` (the training frames; default: the frames scored); None where the data set has no masks or
    the model no part classifier. With ``labels`` (the part labels the model was trained on), also
    ``label_fit``: how far the part classifier learned them (:func:`hspreid.partmaps.label_fit`, the same ids)."""
    store = FrameStore(frames_path)
    if store.masks is None or max_frames <= 0 or len(rows) == 0 or not model.predicts_parsing:
        return None
    rows = spread_rows(rows, max_frames)
    pred = predict_parsing(model, frames_path, rows, device=device, frames_per_batch=frames_per_batch)
    layout = None if layout_rows is None else spread_rows(layout_rows, max_frames)
    quality = store.label_quality(pred, rows, model.num_parts, layout_rows=layout)
    log.info("predicted parsing on %d frames: mean part IoU %s, foreground IoU %s", len(rows),
             quality["mean_part_iou"], quality["foreground_iou"])
    fit = {} if labels is None else {"label_fit": label_fit(pred, labels.read(rows), model.num_parts)}
    return {"frames": len(rows), **quality, **fit}


def parser_blocks(model: ReIDModel, frames_path: Path, rows: np.ndarray, *, device: torch.device,
                  bands: Sequence[float] = HEIGHT_BANDS, block: int = 1024,
                  frames_per_batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, region maps) blocks: a trained part parser's maps (K parts top to bottom) folded by height."""
    if not model.predicts_parsing:
        raise UserError(f"parser model {type(model).__name__}: no part classifier (num_parts) to parse with")
    check_height_bands(bands)
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        parts = predict_parsing(model, frames_path, r, device=device, frames_per_batch=frames_per_batch)
        yield r, fold_parts_by_height(parts, model.num_parts, bounds=bands)
