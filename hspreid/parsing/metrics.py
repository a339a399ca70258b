"""Part-segmentation IoU for (pseudo) part label maps."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from hspreid.errors import UserError

MATCHES = ("hungarian", "fixed")


def _iou_matrix(conf: np.ndarray) -> np.ndarray:
    """IoU[p, g] of predicted label p vs ground-truth label g from a confusion matrix conf[p, g]."""
    inter = conf.astype(np.float64)
    union = conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def part_iou(pred: np.ndarray, gt: np.ndarray, num_classes: int, *, match: str = "hungarian",
             ignore_index: int | None = None) -> dict:
    """IoU of N predicted label maps against N ground-truth maps (same shape, e.g. [N, h, w]).

    Labels are ints in [0, num_classes); 0 is background in both and is never permuted. Counts are
    accumulated over all pixels of all maps (dataset-level IoU, as usual for parsing mIoU), so a
    class's IoU is ``sum intersection / sum union`` over the N maps. Ground-truth pixels equal to
    ``ignore_index`` are skipped.

    match:
      * ``"hungarian"`` -- pseudo labels carry no semantic names, so predicted part labels
        1..num_classes-1 are first matched one-to-one to ground-truth part labels maximising the
        total IoU (``scipy.optimize.linear_sum_assignment``); background stays 0 -> 0.
      * ``"fixed"`` -- label values are compared directly.

    Returns a dict:
      * ``iou`` [num_classes]: IoU per ground-truth class after matching, background at index 0
        (NaN for a class absent from both prediction and ground truth);
      * ``background_iou`` = iou[0]; ``part_iou`` = iou[1:];
      * ``mean_part_iou``: mean of iou[1:] (background **excluded**, NaNs skipped);
      * ``mean_iou``: mean of iou over all classes (background **included**, NaNs skipped);
      * ``foreground_iou``: IoU of "any part" (label > 0) vs "any part" in the ground truth;
      * ``pixel_accuracy``: fraction of (non-ignored) pixels with the matched label right;
      * ``mapping``: {predicted label: ground-truth label} used (identity for "fixed");
      * ``confusion`` [num_classes, num_classes]: pixel counts, rows = matched prediction, cols = gt.
    """
    if match not in MATCHES:
        raise UserError(f"part_iou: match must be one of {MATCHES}, got {match!r}")
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise UserError(f"part_iou: prediction shape {pred.shape} != ground truth shape {gt.shape}")
    K = int(num_classes)
    if K < 2:
        raise UserError(f"part_iou: num_classes must be >= 2, got {num_classes}")
    p = pred.reshape(-1).astype(np.int64)
    g = gt.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = g != ignore_index
        p, g = p[keep], g[keep]
    for name, v in (("prediction", p), ("ground truth", g)):
        if v.size and (v.min() < 0 or v.max() >= K):
            raise UserError(f"part_iou: {name} labels must be in [0, {K}), found [{v.min()}, {v.max()}]")
    conf = np.bincount(p * K + g, minlength=K * K).reshape(K, K)

    mapping = {i: i for i in range(K)}
    if match == "hungarian" and K > 2:
        iou_pg = np.nan_to_num(_iou_matrix(conf)[1:, 1:], nan=0.0)
        rows, cols = linear_sum_assignment(-iou_pg)
        mapping.update({int(r) + 1: int(c) + 1 for r, c in zip(rows, cols)})
        perm = np.empty(K, np.int64)
        for src, dst in mapping.items():
            perm[dst] = src
        conf = conf[perm]                                  # row i = the prediction matched to gt i
    iou = np.diag(_iou_matrix(conf)).copy()
    fg_conf = np.array([[conf[0, 0], conf[0, 1:].sum()], [conf[1:, 0].sum(), conf[1:, 1:].sum()]])
    with np.errstate(invalid="ignore"):
        part = iou[1:]
        return {
            "iou": iou,
            "background_iou": float(iou[0]),
            "part_iou": part,
            "mean_part_iou": float(np.nanmean(part)) if np.isfinite(part).any() else float("nan"),
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "foreground_iou": float(_iou_matrix(fg_conf)[1, 1]),
            "pixel_accuracy": float(np.trace(conf) / conf.sum()) if conf.sum() else float("nan"),
            "mapping": mapping,
            "confusion": conf,
        }


def label_quality(labels: np.ndarray, masks: np.ndarray, num_parts: int) -> dict:
    """Summary of :func:`part_iou` (Hungarian matching) of label maps [N, h, w] against ground-truth
    masks [N, H, W], the masks nearest-resized to the label grid; JSON-ready, rounded to 4 places."""
    import cv2

    h, w = labels.shape[1:]
    if masks.shape[1:] != (h, w):
        masks = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks])
    res = part_iou(labels, masks, num_classes=max(int(num_parts), int(masks.max(initial=0)) + 1), match="hungarian")
    rnd = lambda v: None if v is None or np.isnan(v) else round(float(v), 4)  # noqa: E731
    return {"mean_part_iou": rnd(res["mean_part_iou"]), "foreground_iou": rnd(res["foreground_iou"]),
            "background_iou": rnd(res["background_iou"]), "part_iou": [rnd(v) for v in res["part_iou"]],
            "mapping": {str(k): int(v) for k, v in res["mapping"].items()}, "ground_truth_grid": [h, w]}
