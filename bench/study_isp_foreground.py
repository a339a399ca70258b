"""ISP's foreground split (§3.2, eq. 3): how well does 2-means on the activation find the person, and why not?

    python bench/study_isp_foreground.py --models results/synth_market/baseline/model.pt \
        results/synth_market/isp/round0/model.pt results/synth_market/isp/round1/model.pt \
        [--frames results/synth_market/frames.zarr] [--index results/synth_market/index.parquet] [--threads 2]

For each model, the maps ISP clusters (``frame_maps``) of every training frame, and from them the per-pixel
activation ``a = ||M(x, y)|| / max ||M||`` (eq. 3). Each split below labels pixels foreground or background;
every one is scored by its foreground IoU against the ground-truth person at the frames' resolution (maps
nearest-upsampled, as :func:`hspreid.partmaps.label_quality` scores labels), with its foreground share of the
pixels beside the truth's:

* ``identity``: the pipeline's split (:func:`~hspreid.parsing.cascaded_part_labels`' foreground, default
  options), exact 2-means per identity on the sharpened activation (the reference's ``sigmoid(10 a - 2)``);
  ``identity_plain``: the same without sharpening (the paper's eq. 3 alone);
* ``identity_lower``: the same split with the *lower* cluster as the foreground; ``identity_centre``: the
  pipeline's ``foreground: centre`` (the lower cluster for each identity whose activation is higher on the
  image border than inside it); ``identity_centre_plain``: the same without sharpening;
* ``image``: 2-means per image instead of per identity;
* ``identity_up2`` / ``identity_up4``: the activation bilinearly upsampled 2x / 4x before the identity's split;
* ``best_identity_threshold``: for each identity the threshold on its activation with the best IoU (an upper
  bound for any per-identity threshold rule on this activation: what a better split rule could reach);
  ``best_identity_threshold_lower``: the same with the foreground below the threshold;
* ``classifier`` (models with a part classifier): pixels whose arg-max class is not background;
* ``grid_ceiling``: the ground truth itself on the map's grid (the cell is foreground when the person covers
  at least half of it), scored back at frame resolution: what any split on this grid can reach at most.

``auc`` is the area under the ROC of the activation (nearest-upsampled) as a score for the person's pixels:
0.5 means the activation does not rank the person above the background at all, 1 means a perfect ranking.

Reading the table: if ``best_identity_threshold`` is far above ``identity``, the 2-means rule picks the wrong
threshold; if it is close to ``identity`` and far below ``grid_ceiling``, the activation itself does not
single out the person (the network's response, not the split); upsampling rows show what resolution alone buys.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import REPO, emit, runtime_line


def activations(model, store, rows, maps_of: str = "clustered", batch: int = 256):
    """(the maps ISP clusters [n, C, h, w], activation [n, h, w] float32 (eq. 3, unsharpened), classifier
    foreground [n, h, w] bool or None: the arg-max class is a part, and the same by probability, 1 - P_0 > 0.5).
    ``maps_of``: the activation of the maps ISP clusters (``clustered``), of the last stage's maps M_g (``last``)
    or of the maps the part classifier reads (``part``; the last two differ with ``part_stride: 4``)."""
    import numpy as np
    import torch

    from hspreid.models.isp import ISP
    from hspreid.parsing import activation

    acts, fgs, soft, clustered = [], [], [], []
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            frames = torch.from_numpy(store.read(rows[s:s + batch])).permute(0, 3, 1, 2)
            if isinstance(model, ISP):                                   # one backbone pass gives all three
                global_maps, part_maps = model.stage_maps(frames)
                clustered.append(model.clustered_maps(global_maps, part_maps).float())
            else:
                global_maps = part_maps = model.frame_maps(frames)
                clustered.append(global_maps.float())
            chosen = {"clustered": clustered[-1], "last": global_maps, "part": part_maps}[maps_of]
            norm = torch.linalg.vector_norm(chosen.float(), dim=1)
            acts.append(activation(norm.flatten(1), sharpen=False).view(norm.shape).numpy())
            if isinstance(model, ISP):
                logits = model.part_classifier(part_maps)
                fgs.append((logits.argmax(1) > 0).numpy())
                soft.append((logits.softmax(1)[:, 0] < 0.5).numpy())
    maps = torch.cat(clustered)
    if not fgs:
        return maps, np.concatenate(acts), None, None
    return maps, np.concatenate(acts), np.concatenate(fgs), np.concatenate(soft)


def upsample(a, factor: int):
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(a)[:, None]
    return F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)[:, 0].numpy()


def split_per_group(values, groups, sharpen: bool):
    """Exact 2-means of each group's values (eq. 3's split): bool map, True = the upper cluster."""
    import numpy as np
    import torch

    from hspreid.parsing import activation, two_means_1d

    out = np.zeros(values.shape, bool)
    v = activation(torch.from_numpy(values).flatten(1), sharpen).view(values.shape).numpy()
    for g in groups:
        out[g] = two_means_1d(torch.from_numpy(v[g].reshape(-1))).numpy().reshape(v[g].shape)
    return out


def fg_scores(pred, truth) -> dict:
    """Foreground IoU of bool maps [n, h, w] (upsampled to the truth's size) against bool truth [n, H, W]."""
    from hspreid.partmaps.grid import resize_nearest

    up = resize_nearest(pred.astype("uint8"), truth.shape[1:]).astype(bool)
    inter, union = (up & truth).sum(), (up | truth).sum()
    return {"fg_iou": round(float(inter / max(union, 1)), 4), "fg_share": round(float(up.mean()), 4)}


def best_threshold_iou(a, truth, groups, levels: int = 64) -> dict:
    """Foreground IoU when each identity takes the activation threshold with its own best IoU."""
    import numpy as np

    from hspreid.partmaps.grid import resize_nearest

    up = resize_nearest(a, truth.shape[1:])
    qs = np.linspace(0.0, 1.0, levels, endpoint=False)
    pred = np.zeros(truth.shape, bool)
    for g in groups:
        t, u = truth[g], up[g]
        best, best_thr = -1.0, 0.0
        for thr in qs:
            p = u > thr
            iou = (p & t).sum() / max((p | t).sum(), 1)
            if iou > best:
                best, best_thr = iou, thr
        pred[g] = u > best_thr
    inter, union = (pred & truth).sum(), (pred | truth).sum()
    return {"fg_iou": round(float(inter / max(union, 1)), 4), "fg_share": round(float(pred.mean()), 4)}


def auc(a, truth) -> float:
    """ROC AUC of the activation (nearest-upsampled) as a score for the person's pixels (ties count half)."""
    from scipy.stats import rankdata

    from hspreid.partmaps.grid import resize_nearest

    s = resize_nearest(a, truth.shape[1:]).reshape(-1)
    y = truth.reshape(-1)
    r = rankdata(s)
    pos = int(y.sum())
    neg = y.size - pos
    return round(float((r[y].sum() - pos * (pos + 1) / 2) / max(pos * neg, 1)), 4)


def grid_ceiling(truth, grid) -> dict:
    """The truth on the grid (a cell is foreground when the person covers >= half of it), scored back."""
    import torch
    import torch.nn.functional as F

    cover = F.adaptive_avg_pool2d(torch.from_numpy(truth).float()[:, None], grid)[:, 0].numpy()
    return fg_scores(cover >= 0.5, truth)


def study(model_path: Path, store, rows, pids, maps_of: str = "clustered") -> dict:
    import numpy as np
    import torch

    from hspreid.models import load_model
    from hspreid.parsing import KMeansOptions, cascaded_part_labels
    from hspreid.parsing.options import FOREGROUND_RULES

    model, _ = load_model(model_path)
    model.eval()
    truth = store.read(rows, "masks") > 0
    maps, a, classifier, soft = activations(model, store, rows, maps_of)
    groups = [np.flatnonzero(pids == p) for p in np.unique(pids)]
    images = [np.array([i]) for i in range(len(rows))]
    upper = split_per_group(a, groups, True)
    # the foreground split does not depend on K; a model without parts (the baseline) is labelled with 6
    pipeline = {(rule, sharpen): (cascaded_part_labels(maps, torch.from_numpy(np.array(pids)), model.num_parts or 6,
                                                       KMeansOptions(foreground=rule, sharpen=sharpen)) > 0).numpy()
                for rule in FOREGROUND_RULES for sharpen in (True, False)}
    res = {"model": str(model_path), "grid": list(a.shape[1:]), "frames": len(rows),
           "truth_share": round(float(truth.mean()), 4), "auc": auc(a, truth),
           "identity": fg_scores(pipeline["activation", True], truth),
           "identity_lower": fg_scores(~upper, truth),
           "identity_centre": fg_scores(pipeline["centre", True], truth),
           "identity_plain": fg_scores(pipeline["activation", False], truth),
           "identity_centre_plain": fg_scores(pipeline["centre", False], truth),
           "image": fg_scores(split_per_group(a, images, True), truth),
           "identity_up2": fg_scores(split_per_group(upsample(a, 2), groups, True), truth),
           "identity_up4": fg_scores(split_per_group(upsample(a, 4), groups, True), truth),
           "best_identity_threshold": best_threshold_iou(a, truth, groups),
           "best_identity_threshold_lower": best_threshold_iou(1.0 - a, truth, groups),
           "grid_ceiling": grid_ceiling(truth, a.shape[1:])}
    if classifier is not None:
        res["classifier"] = fg_scores(classifier, truth)
        res["classifier_soft"] = fg_scores(soft, truth)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", type=Path, required=True)
    ap.add_argument("--frames", type=Path, default=REPO / "results/synth_market/frames.zarr")
    ap.add_argument("--index", type=Path, default=REPO / "results/synth_market/index.parquet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--maps", default="clustered", choices=["clustered", "last", "part"],
                    help="whose activation: the maps ISP clusters, the last stage's M_g, or the part classifier's "
                    "input (the last two differ with ISP's part_stride: 4)")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd
    import torch

    from hspreid.data.frames import FrameStore

    torch.set_num_threads(args.threads)
    index = pd.read_parquet(args.index)
    train = index[index["subset"] == "train"]
    rows = np.sort(train.index.to_numpy()).astype(np.int64)
    pids = index.loc[rows, "pid"].to_numpy()
    store = FrameStore(args.frames)
    if store.masks is None:
        raise SystemExit(f"{args.frames}: no ground-truth masks to score the split against")
    print(runtime_line("cpu", args.threads))
    results = [study(m, store, rows, pids, args.maps) for m in args.models]
    keys = ["identity", "identity_lower", "identity_centre", "identity_plain", "identity_centre_plain", "image",
            "identity_up2", "identity_up4", "best_identity_threshold", "best_identity_threshold_lower", "classifier",
            "classifier_soft", "grid_ceiling"]
    short = [k.replace("identity", "id").replace("best_", "b_").replace("_threshold", "_thr")[:15] for k in keys]
    print(f"{'model':24s} {'grid':5s} {'auc':>6s} " + " ".join(f"{k:>15s}" for k in short))
    for r in results:
        cells = [f"{r[k]['fg_iou']:.3f}/{r[k]['fg_share']:.2f}" if k in r else "-" for k in keys]
        print(f"{Path(r['model']).parent.name + '/' + Path(r['model']).name:24s} "
              f"{'x'.join(map(str, r['grid'])):5s} {r['auc']:6.3f} " + " ".join(f"{c:>15s}" for c in cells))
    print(f"cells: foreground IoU / foreground share of the pixels (the truth's share: {results[0]['truth_share']})")
    emit({"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
