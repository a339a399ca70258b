"""Scoring part label maps against ground-truth maps.

Learned parts carry no names, so :func:`part_iou` matches them one-to-one to the ground-truth parts by the
Hungarian method (background 0 never permuted); counts are summed over all pixels of all maps (data-set level
IoU, as usual for parsing mIoU). :func:`segmentation_quality` puts a partition beside the baseline every part
model must beat: K horizontal stripes (PCB). :class:`RegionIoU` scores five-region maps (fixed codes).
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from hspreid.errors import UserError
from hspreid.partmaps.grid import resize_nearest, stripe_labels
from hspreid.partmaps.regions import IGNORE, REGION_NAMES


def _rounded(value: float | None) -> float | None:
    """A JSON-ready score: rounded to 4 places, None for a missing or undefined value."""
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


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


def label_quality(labels: np.ndarray, masks: np.ndarray, num_parts: int, *, limbs: np.ndarray | None = None,
                  keypoints: np.ndarray | None = None, fit: np.ndarray | None = None,
                  layout: np.ndarray | None = None) -> dict:
    """Parsing scores of label maps [N, h, w] (0 background, 1..num_parts-1 parts, as ISP's and HCGA's labels
    and part classifiers give them) against the ground truth of their frames, at the frames' resolution (the
    labels nearest-upsampled to the masks' H x W, so that grids of any size are scored alike); JSON-ready,
    rounded to 4 places.

    Keys: :func:`part_iou`'s Hungarian summary against the masks (``mean_part_iou``, ``foreground_iou``,
    ``background_iou``, ``part_iou``, ``mapping``), ``many_to_one_iou`` (against the masks) and, given the
    ground truth, ``many_to_one_iou_limbs`` (``limbs`` [N, H, W]) and ``keypoint_error`` (``keypoints``
    [N, J, 3], fitted on the maps where ``fit``, measured on the others); ``stripes_own_foreground``: the same
    scores for num_parts-1 stripes of the labels' own foreground, the baseline parts must beat; ``mean_layout``:
    the same scores for ``layout`` [H, W] (:func:`mean_layout` of the training frames' ground truth; default:
    of these maps' own, e.g. when they are the training frames' pseudo labels), one map for every frame
    (labels that find each frame's person beat it on ``foreground_iou``)."""
    h, w = labels.shape[1:]
    masks = np.asarray(masks)
    up = resize_nearest(labels, masks.shape[1:])

    def scores(maps: np.ndarray) -> dict:
        res = part_iou(maps, masks, num_classes=max(int(num_parts), int(masks.max(initial=0)) + 1),
                       match="hungarian")
        out = {"mean_part_iou": _rounded(res["mean_part_iou"]), "foreground_iou": _rounded(res["foreground_iou"]),
               "background_iou": _rounded(res["background_iou"]), "part_iou": [_rounded(v) for v in res["part_iou"]],
               "mapping": {str(k): int(v) for k, v in res["mapping"].items()},
               "many_to_one_iou": many_to_one_iou(maps, masks)["mean"]}
        if limbs is not None:
            out["many_to_one_iou_limbs"] = many_to_one_iou(maps, limbs)["mean"]
        if keypoints is not None and fit is not None:
            out["keypoint_error"] = keypoint_error(maps, keypoints, fit, num_parts - 1)
        return out

    stripes = stripe_labels(up.shape, num_parts - 1, up > 0)
    return {**scores(up), "grid": [h, w], "scored_at": list(masks.shape[1:]),
            "stripes_own_foreground": scores(stripes),
            "mean_layout": scores(layout_maps(mean_layout(masks) if layout is None else layout, len(masks)))}


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
    per_part = {str(g): _rounded(res["iou"][g]) for g in present}
    inverse = {gt: p for p, gt in res["mapping"].items() if p > 0}
    return {"mean_part_iou": _rounded(float(np.mean([res["iou"][g] for g in present])) if present else float("nan")),
            "part_iou": per_part, "foreground_iou": _rounded(res["foreground_iou"]),
            "background_iou": _rounded(res["background_iou"]),
            "matched_part": {str(g): int(inverse[g]) for g in present if g in inverse}}


def _confusion(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pixel counts conf[p, g] of predicted label p against ground-truth label g over all maps."""
    p, g = np.asarray(labels).reshape(-1).astype(np.int64), np.asarray(truth).reshape(-1).astype(np.int64)
    n_p, n_g = int(p.max(initial=0)) + 1, int(g.max(initial=0)) + 1
    return np.bincount(p * n_g + g, minlength=n_p * n_g).reshape(n_p, n_g)


def many_to_one_iou(labels: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Many-to-one IoU of unsupervised parts (the co-part segmentation literature's score, e.g. SCOPS, Hung et
    al. 2019): each predicted part (label >= 1) goes to the ground-truth label it overlaps most over all maps
    (background 0 included: a part lying mostly on the background scores nowhere), and each ground-truth part
    is scored by the IoU of the union of the parts it received. Several parts may serve one ground-truth part,
    and a ground-truth part that receives none scores 0.

    Returns {"mean": mean over the ground-truth parts present, "per_part": {label: IoU}, "assigned": {predicted
    part: ground-truth label}}; JSON-ready, rounded to 4 places."""
    conf = _confusion(labels, truth)
    n_p, n_g = conf.shape
    assigned = {p: int(np.argmax(conf[p])) for p in range(1, n_p) if conf[p].sum() > 0}
    present = [g for g in range(1, n_g) if conf[:, g].sum() > 0]
    per_part = {}
    for g in present:
        parts = [p for p, a in assigned.items() if a == g]
        inter = conf[parts, g].sum() if parts else 0
        union = (conf[parts].sum() if parts else 0) + conf[:, g].sum() - inter
        per_part[str(g)] = _rounded(inter / union)
    mean = float(np.mean([per_part[str(g)] for g in present])) if present else float("nan")
    return {"mean": _rounded(mean), "per_part": per_part, "assigned": {str(p): g for p, g in assigned.items()}}


def part_centroids(labels: np.ndarray, num_parts: int) -> np.ndarray:
    """Centroid (x, y), as fractions of the map's width and height (pixel centres), of parts 1..num_parts in
    every map: float [n, num_parts, 2], NaN where a map has no pixel of the part."""
    labels = np.asarray(labels)
    n, h, w = labels.shape
    ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    onehot = labels[:, None] == np.arange(1, num_parts + 1)[None, :, None, None]          # [n, K, h, w]
    mass = onehot.sum((2, 3)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (onehot.sum(2) * xs).sum(2) / mass
        cy = (onehot.sum(3) * ys).sum(2) / mass
    return np.stack([cx, cy], axis=-1)


def keypoint_error(labels: np.ndarray, keypoints: np.ndarray, fit: np.ndarray, num_parts: int,
                   ridge: float = 1e-6) -> float | None:
    """How well the parts locate the body: a linear regression from the part centroids to the key points, fitted
    on the maps where ``fit`` is true and measured on the others (the landmark-regression protocol of the
    co-part segmentation literature, Thewlis et al. 2017, SCOPS, Siarohin et al. 2020).

    labels [n, h, w] (0 background, 1..num_parts); keypoints [n, J, 3]: x, y as fractions of the frame and a
    visibility (> 0 visible); fit bool [n]. The regressor's inputs are the 2 x num_parts centroid coordinates
    (a part missing from a map takes its mean over the fitting maps) and a constant; each joint has its own
    least-squares fit (ridge ``ridge``) on the fitting maps where it is visible. The error is the mean
    Euclidean distance between predicted and true visible key points of the measured maps, in pixels
    divided by the frame height. None when a side has no visible key point."""
    labels, keypoints, fit = np.asarray(labels), np.asarray(keypoints, np.float64), np.asarray(fit, bool)
    if keypoints.ndim != 3 or keypoints.shape[0] != len(labels) or keypoints.shape[2] < 3:
        raise UserError(f"keypoint_error: expected key points [n, J, 3] for {len(labels)} maps, "
                        f"got {keypoints.shape}")
    h, w = labels.shape[1:]
    cent = part_centroids(labels, num_parts)                                            # [n, K, 2]
    fill = np.nanmean(np.where(fit[:, None, None], cent, np.nan), axis=0) if fit.any() else np.zeros((num_parts, 2))
    cent = np.where(np.isnan(cent), np.nan_to_num(fill, nan=0.5)[None], cent)
    X = np.concatenate([cent.reshape(len(labels), -1), np.ones((len(labels), 1))], axis=1)
    aspect = np.array([w / h, 1.0])                                                     # fractions -> heights
    errors = []
    for j in range(keypoints.shape[1]):
        seen = np.isfinite(keypoints[:, j, :2]).all(1) & (keypoints[:, j, 2] > 0)
        train, test = seen & fit, seen & ~fit
        if not train.any() or not test.any():
            continue
        A = X[train]
        coef = np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ keypoints[train, j, :2])
        diff = (X[test] @ coef - keypoints[test, j, :2]) * aspect
        errors.append(np.sqrt((diff ** 2).sum(1)))
    return _rounded(float(np.concatenate(errors).mean())) if errors else None


def partitions(labels: np.ndarray, truth: np.ndarray, num_parts: int,
               limbs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The part maps [n, h, w] scored beside a model's ``labels``: K horizontal stripes of the whole image
    (``stripes``, PCB's partition), K stripes of the ground-truth foreground (``stripes_gt_foreground``, an
    oracle of position alone), K stripes of the model's own foreground (``stripes_model_foreground``: do the
    parts beat slicing their union by height?) and, given the ground-truth pieces that move rigidly,
    ``limbs`` themselves (the upper bound of a motion-supervised co-part segmenter)."""
    shape = labels.shape
    out = {"model": labels, "stripes": stripe_labels(shape, num_parts),
           "stripes_gt_foreground": stripe_labels(shape, num_parts, truth > 0),
           "stripes_model_foreground": stripe_labels(shape, num_parts, labels > 0)}
    if limbs is not None:
        out["limbs"] = limbs
    return out


def mean_layout(truth: np.ndarray) -> np.ndarray:
    """The ground-truth label each pixel holds most often over maps [n, H, W] -> [H, W] (``IGNORE`` not counted):
    where people's parts usually are, one fixed map for every frame. A partition scored with it knows the data
    set's framing and nothing of the frame; a parsing that finds the person in each frame beats it on
    ``foreground_iou``."""
    truth = np.asarray(truth)
    values = np.array([v for v in np.unique(truth) if v != IGNORE] or [0], dtype=truth.dtype)
    counts = np.stack([(truth == v).sum(0) for v in values])
    return values[counts.argmax(0)]


def _foreground_overlap(labels: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per map [n, H, W]: the intersection and the union of "any part" (label > 0) and the true person
    (truth > 0), ``IGNORE`` left out -> two int arrays [n]."""
    care = truth != IGNORE
    found, person = (labels > 0) & care, (truth > 0) & care
    return (found & person).sum((1, 2)), (found | person).sum((1, 2))


def off_layout_frames(layout: np.ndarray, truth: np.ndarray, share: float = 0.25) -> np.ndarray:
    """The ``share`` of maps [n, H, W] where the mean layout's maps (``layout`` [n, H, W]) find the true person
    worst (per-map foreground IoU, lowest first; ties kept): where people stand off their usual place. A
    partition's foreground IoU there (``foreground_iou_off_layout``) tells maps that follow each frame's person
    from maps that learned the layout."""
    inter, union = _foreground_overlap(layout, truth)
    per_map = inter / np.maximum(union, 1)
    return per_map <= np.quantile(per_map, share) if len(per_map) else np.zeros(0, bool)


def layout_maps(layout: np.ndarray, n: int) -> np.ndarray:
    """One layout [H, W] as the map of each of ``n`` frames: [n, H, W] (a read-only view, no copy)."""
    return np.broadcast_to(layout, (n, *np.shape(layout)))


def label_fit(pred: np.ndarray, labels: np.ndarray, num_parts: int, match: str = "fixed") -> dict[str, Any]:
    """How far part maps ``pred`` [n, h, w] agree with reference labels [n, h', w'] (nearest-resized to h x w),
    e.g. a part classifier's maps with the pseudo labels it was trained on (``match="fixed"``: the same ids) or
    with labels clustered afresh (``"hungarian"``): pixel accuracy, per-label IoU (background first), their
    mean over the parts and the foreground IoU, pixels labelled ``IGNORE`` left out; JSON-ready (None where
    undefined)."""
    res = part_iou(pred, resize_nearest(labels, pred.shape[1:]), num_classes=num_parts, match=match,
                   ignore_index=IGNORE)
    return {key: _rounded(res[key]) for key in ("pixel_accuracy", "mean_part_iou", "foreground_iou")} \
        | {"iou": [_rounded(v) for v in res["iou"]]}


def segmentation_quality(labels: np.ndarray, masks: np.ndarray, num_parts: int, *, limbs: np.ndarray | None = None,
                         keypoints: np.ndarray | None = None, split: np.ndarray | None = None,
                         only: Collection[str] | None = None) -> dict[str, Any]:
    """Part maps [n, h, w] (0 background, 1..num_parts) against the ground truth of their frames (masks
    [n, H, W] in the five-region code with belongings, and ``limbs`` [n, H, W], the pieces that move rigidly),
    beside the baselines of :func:`partitions`, at the frames' resolution (the maps nearest-upsampled to
    H x W, so that grids of any size are scored alike).

    Every partition gets :func:`partition_scores` (Hungarian one-to-one against the regions, foreground IoU),
    ``many_to_one_iou`` against the regions and, with ``limbs``, ``many_to_one_iou_limbs``. Without ``split``
    the result is {"frames", "grid", <partition>: scores}. With ``split`` (a name per map, e.g. "train" /
    "test") it is {name: that dict for the maps of that name}, and with ``keypoints`` [n, J, 3] (x, y
    fractions, visibility) every split but "train" also gets ``keypoint_error``: the landmark regression of
    :func:`keypoint_error` fitted on the "train" maps. With "train" maps, the partitions include
    ``mean_layout``: :func:`mean_layout` of their ground truth, the same map for every frame, and every
    partition gets ``foreground_iou_off_layout``: its foreground IoU on :func:`off_layout_frames`. ``only``: score
    just these partitions (e.g. ``("model",)`` while training; the others' scores do not change with the model)."""
    truth = np.asarray(masks)
    grid = list(np.asarray(labels).shape[1:])
    labels = resize_nearest(labels, truth.shape[1:])                    # scored at the frames' resolution
    limbs = None if limbs is None else np.asarray(limbs)
    maps = partitions(labels, truth, num_parts, limbs)
    classes = {name: num_parts for name in maps}
    split = None if split is None else np.asarray(split)
    if split is not None and (split == "train").any():
        layout = mean_layout(truth[split == "train"])
        maps["mean_layout"] = layout_maps(layout, len(truth))
        classes["mean_layout"] = max(num_parts, int(layout.max(initial=0)))
    if limbs is not None:
        classes["limbs"] = max(num_parts, int(limbs.max(initial=0)))
    scored = [name for name in maps if only is None or name in only]

    def scores(pick: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": int(pick.sum()), "grid": grid, "scored_at": list(truth.shape[1:])}
        off = off_layout_frames(maps["mean_layout"][pick], truth[pick]) if "mean_layout" in maps else None
        for name in scored:
            parts = maps[name]
            entry = partition_scores(parts[pick], truth[pick], classes[name])
            entry["many_to_one_iou"] = many_to_one_iou(parts[pick], truth[pick])["mean"]
            if limbs is not None:
                entry["many_to_one_iou_limbs"] = many_to_one_iou(parts[pick], limbs[pick])["mean"]
            if off is not None and off.any():
                inter, union = _foreground_overlap(parts[pick][off], truth[pick][off])
                entry["foreground_iou_off_layout"] = _rounded(inter.sum() / max(int(union.sum()), 1))
            out[name] = entry
        return out

    if split is None:
        return scores(np.ones(len(labels), bool))
    result = {str(name): scores(split == name) for name in np.unique(split)}
    if keypoints is not None:
        fit = split == "train"
        for name in result:
            if name == "train":
                continue
            use = fit | (split == name)
            for part_name in scored:
                result[name][part_name]["keypoint_error"] = keypoint_error(
                    maps[part_name][use], keypoints[use], fit[use], classes[part_name])
    return result


class RegionIoU:
    """Running per-region IoU of region maps against reference maps of the same code (255 in the
    reference is left out), at the reference's size; a region absent from both counts as None."""

    KEYS = (*REGION_NAMES, "foreground")

    def __init__(self) -> None:
        self.inter, self.union, self.frames = np.zeros(len(self.KEYS)), np.zeros(len(self.KEYS)), 0

    def update(self, pred: np.ndarray, truth: np.ndarray) -> "RegionIoU":
        if pred.shape != truth.shape:
            pred = resize_nearest(pred, truth.shape[1:])
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
