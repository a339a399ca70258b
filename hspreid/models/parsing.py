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
from hspreid.partmaps import HEIGHT_BANDS, IGNORE, check_height_bands, fold_parts_by_height, part_iou, resize_nearest

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


def predicted_parsing_quality(model: ReIDModel, frames_path: str | Path, rows: np.ndarray, *, device: torch.device,
                              max_frames: int = 2000, frames_per_batch: int = 256,
                              labels: LabelMaps | None = None) -> dict | None:
    """Parsing scores (:func:`hspreid.partmaps.label_quality`) of the model's predicted part maps against the
    ground truth of up to ``max_frames`` of ``rows`` (evenly spread; the key-point regression fitted on the
    identities of even pid, measured on the others); None where the data set has no masks or the model no
    part classifier. With ``labels`` (the part labels the model was trained on), also ``label_fit``: how far
    the part classifier learned them, :func:`label_fit` on the same frames."""
    store = FrameStore(frames_path)
    if store.masks is None or max_frames <= 0 or len(rows) == 0 or not model.predicts_parsing:
        return None
    rows = np.unique(rows[np.linspace(0, len(rows) - 1, min(len(rows), max_frames)).round().astype(int)])
    pred = predict_parsing(model, frames_path, rows, device=device, frames_per_batch=frames_per_batch)
    quality = store.label_quality(pred, rows, model.num_parts)
    log.info("predicted parsing on %d frames: mean part IoU %s, foreground IoU %s", len(rows),
             quality["mean_part_iou"], quality["foreground_iou"])
    fit = {} if labels is None else {"label_fit": label_fit(pred, labels.read(rows), model.num_parts)}
    return {"frames": len(rows), **quality, **fit}


def label_fit(pred: np.ndarray, labels: np.ndarray, num_parts: int) -> dict:
    """How far a part classifier's maps ``pred`` [n, h, w] agree with the part labels it was trained on
    [n, h', w'] (nearest-resized to h x w; the same label ids, no matching): pixel accuracy, per-label IoU
    (background first), their mean over the parts, and the foreground IoU, pixels labelled ``IGNORE`` left out;
    rounded to 4 places. Does the parsing loss move the classifier to its labels?"""
    res = part_iou(pred, resize_nearest(labels, pred.shape[1:]), num_classes=num_parts, match="fixed",
                   ignore_index=IGNORE)
    return {"pixel_accuracy": round(res["pixel_accuracy"], 4), "mean_part_iou": round(res["mean_part_iou"], 4),
            "foreground_iou": round(res["foreground_iou"], 4),
            "iou": [None if np.isnan(v) else round(float(v), 4) for v in res["iou"]]}


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
