"""Tables of results across methods (ablation studies)."""
from __future__ import annotations

import pandas as pd

from hspreid.errors import UserError

RETRIEVAL = ("rank1", "rank5", "rank10", "mAP", "mINP")


def _iou(quality: dict | None, key: str) -> float | None:
    value = None if quality is None else quality.get(key)
    return None if value is None else 100.0 * value


def metrics_table(metrics: list[dict], rows: dict[str, str]) -> pd.DataFrame:
    """One row per metrics.json dict (ordered as ``metrics``), labelled by ``rows[method]``:
    retrieval metrics in %, and the pseudo labels' and predicted parsing's mean part / foreground /
    many-to-one IoU in % (last round; empty for methods without part labels). Methods with a pretrained segmenter
    (SS-HSP) add its parts' mean and many-to-one IoU and key-point error (in % of the frame height) beside
    those of K horizontal stripes on the same test frames; columns empty in every row are left out."""
    out = []
    for m in metrics:
        method = m.get("method")
        if method not in rows:
            raise UserError(f"collect_metrics: metrics of {method!r} given but no row label for it")
        last = (m.get("rounds") or [{}])[-1]
        out.append({"row": rows[method], "method": method, **{k: 100.0 * m[k] for k in RETRIEVAL},
                    "label part IoU": _iou(last.get("pseudo_label_iou"), "mean_part_iou"),
                    "label fg IoU": _iou(last.get("pseudo_label_iou"), "foreground_iou"),
                    "label many-to-one IoU": _iou(last.get("pseudo_label_iou"), "many_to_one_iou"),
                    "parsing part IoU": _iou(m.get("parsing_iou"), "mean_part_iou"),
                    "parsing fg IoU": _iou(m.get("parsing_iou"), "foreground_iou"),
                    "parsing many-to-one IoU": _iou(m.get("parsing_iou"), "many_to_one_iou"),
                    "segmenter part IoU": _iou(m.get("segmentation"), "mean_part_iou"),
                    "stripes part IoU": _iou(m.get("segmentation"), "stripes_mean_part_iou"),
                    "segmenter many-to-one IoU": _iou(m.get("segmentation"), "many_to_one_iou"),
                    "stripes many-to-one IoU": _iou(m.get("segmentation"), "stripes_many_to_one_iou"),
                    "segmenter keypoint error": _iou(m.get("segmentation"), "keypoint_error"),
                    "stripes keypoint error": _iou(m.get("segmentation"), "stripes_keypoint_error")})
    table = pd.DataFrame(out)
    return table[[c for c in table.columns if c in ("row", "method", *RETRIEVAL) or table[c].notna().any()]]
