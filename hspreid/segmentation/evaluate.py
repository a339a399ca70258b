"""Scoring learned part maps against ground-truth part masks, beside a horizontal-stripe baseline.

The co-part segmenter's K parts carry no names, so they are matched one-to-one to the ground-truth parts by
the Hungarian method (:func:`hspreid.parsing.metrics.part_iou`, background 0 never permuted). The baseline
every part model must beat is the fixed partition of re-ID's part models (PCB-style): K horizontal stripes
of the whole image (no background), or, as an oracle reference, K stripes spanning each frame's
ground-truth foreground rows and masked by it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hspreid.errors import UserError
from hspreid.parsing.metrics import part_iou


def stripe_labels(shape: tuple[int, int, int], num_parts: int, foreground: np.ndarray | None = None) -> np.ndarray:
    """uint8 [n, h, w] label maps of ``num_parts`` equal horizontal stripes, 1 at the top to K at the bottom.

    Without ``foreground`` the stripes tile the whole image (no background). With a boolean ``foreground``
    [n, h, w] each frame's stripes split the rows from its top-most to its bottom-most foreground pixel, and
    pixels off the foreground are background 0 (a frame without foreground is all background).
    """
    n, h, w = (int(s) for s in shape)
    if num_parts < 1 or num_parts > 255:
        raise UserError(f"stripe_labels: num_parts must be in [1, 255], got {num_parts}")
    rows = np.arange(h)
    if foreground is None:
        band = (rows * num_parts // h + 1).astype(np.uint8)
        return np.broadcast_to(band[None, :, None], (n, h, w)).copy()
    fg = np.asarray(foreground, dtype=bool)
    if fg.shape != (n, h, w):
        raise UserError(f"stripe_labels: foreground shape {fg.shape} != {(n, h, w)}")
    any_row = fg.any(axis=2)                                               # [n, h]
    has = any_row.any(axis=1)
    top = np.where(has, any_row.argmax(axis=1), 0)
    bottom = np.where(has, h - 1 - any_row[:, ::-1].argmax(axis=1), 0)
    span = (bottom - top + 1).clip(min=1)
    rel = (rows[None, :] - top[:, None]).clip(0, None)                    # [n, h]
    band = (rel * num_parts // span[:, None]).clip(0, num_parts - 1) + 1
    return np.where(fg, band[:, :, None], 0).astype(np.uint8)


def partition_scores(labels: np.ndarray, truth: np.ndarray, num_parts: int) -> dict[str, Any]:
    """Hungarian-matched IoU of part label maps (0 background, 1..num_parts) against ground-truth maps
    (0 background, 1..G), counts summed over all pixels of all maps; JSON-ready, rounded to 4 places.

    ``part_iou`` lists the ground-truth parts 1..G present in ``truth`` (the predicted part matched to each;
    surplus predicted parts match nothing and count only against the foreground), ``mean_part_iou`` is their
    mean, ``foreground_iou`` the IoU of "any part" against "any ground-truth part".
    """
    labels, truth = np.asarray(labels), np.asarray(truth)
    if labels.shape != truth.shape:
        raise UserError(f"partition_scores: labels {labels.shape} and ground truth {truth.shape} differ in shape")
    g_max = int(truth.max(initial=0))
    if int(labels.max(initial=0)) > num_parts:
        raise UserError(f"partition_scores: labels go up to {int(labels.max())} > num_parts {num_parts}")
    res = part_iou(labels, truth, num_classes=max(num_parts, g_max) + 1, match="hungarian")
    counts = np.bincount(truth.reshape(-1).astype(np.int64), minlength=g_max + 1)
    present = [g for g in range(1, g_max + 1) if counts[g] > 0]
    rnd = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 4)  # noqa: E731
    per_part = {str(g): rnd(res["iou"][g]) for g in present}
    inverse = {gt: p for p, gt in res["mapping"].items() if p > 0}
    return {"mean_part_iou": rnd(float(np.mean([res["iou"][g] for g in present])) if present else float("nan")),
            "part_iou": per_part, "foreground_iou": rnd(res["foreground_iou"]),
            "background_iou": rnd(res["background_iou"]),
            "matched_part": {str(g): int(inverse[g]) for g in present if g in inverse}}


def _resize_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if maps.shape[1:] == (h, w):
        return maps
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in maps]) if len(maps) else \
        np.zeros((0, h, w), maps.dtype)


def segmentation_quality(labels: np.ndarray, masks: np.ndarray, num_parts: int) -> dict[str, Any]:
    """Part maps [n, h, w] against ground-truth masks [n, H, W] (nearest-resized to h x w), beside the baselines:
    {"frames", "grid", "model", "stripes" (K stripes of the whole image), "stripes_gt_foreground" (oracle: K
    stripes of the ground-truth foreground), "stripes_model_foreground" (K stripes of the model's own foreground:
    do the learned parts beat slicing their union by height?)}, each a :func:`partition_scores` dict."""
    labels = np.asarray(labels)
    truth = _resize_nearest(np.asarray(masks), labels.shape[1:])
    fg_truth, fg_model = truth > 0, labels > 0
    return {
        "frames": int(len(labels)), "grid": list(labels.shape[1:]),
        "model": partition_scores(labels, truth, num_parts),
        "stripes": partition_scores(stripe_labels(labels.shape, num_parts), truth, num_parts),
        "stripes_gt_foreground": partition_scores(stripe_labels(labels.shape, num_parts, fg_truth), truth, num_parts),
        "stripes_model_foreground": partition_scores(stripe_labels(labels.shape, num_parts, fg_model), truth,
                                                     num_parts),
    }
