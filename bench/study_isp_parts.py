"""ISP's parts (§3.2, eq. 4): which maps, clustered per identity, give pseudo parts closest to the ground truth?

    python bench/study_isp_parts.py --model results/synth_market/isp/round2/model.pt \
        [--frames results/synth_market/frames.zarr] [--index results/synth_market/index.parquet] [--threads 2]

For one ISP model with ``part_stride: 4``, the next round's pseudo labels of every training frame, made by the
pipeline (:func:`~hspreid.parsing.cascaded_part_labels`, the model's ``pseudo_labels`` options as synth_market
sets them: the centre rule, eq. 3 unsharpened) from different maps. The foreground split always reads M_g's
activation, so the rows differ only in what the foreground pixels are clustered on (the directions, eq. 4):

* ``clustered``: what the pipeline clusters, the fused stride-4 maps (``frame_maps``);
* ``clustered, spherical``: the same with cosine k-means;
* ``layer1``: the first stage alone (local colour and texture);
* ``layer1 + M_g``: both, each L2-normalised, concatenated;
* ``M_g upsampled``: the last stage's maps bilinearly upsampled (directions and norm);
* ``colour``: the frame's RGB averaged over each cell (minus 0.5), the garments' colour alone;
* ``clustered + colour``: the clustered maps' directions and that colour, concatenated.

Each is scored by :func:`hspreid.partmaps.label_quality` (mean part IoU, Hungarian-matched, per part: head,
upper body, lower body, shoes, belongings) beside K - 1 stripes of the labels' own foreground. Each runs twice:
with the foreground of M_g's activation, as the pipeline, and with the true foreground on the grid (a cell is
the person's when the person covers at least half of it) in its place, which separates the parts from the
foreground: with the true foreground, do the clustered parts beat stripes of it?
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import REPO, emit, runtime_line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an ISP model.pt with part_stride: 4")
    ap.add_argument("--frames", type=Path, default=REPO / "results/synth_market/frames.zarr")
    ap.add_argument("--index", type=Path, default=REPO / "results/synth_market/index.parquet")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from hspreid.data.frames import FrameStore
    from hspreid.models import load_model
    from hspreid.parsing import KMeansOptions, cascaded_part_labels
    from hspreid.segmentation.fixed_partitions import partition_masks

    torch.set_num_threads(args.threads)
    print(runtime_line("cpu", args.threads))
    index = pd.read_parquet(args.index)
    rows = np.sort(index.index[index["subset"] == "train"].to_numpy()).astype(np.int64)
    pids = torch.from_numpy(index.loc[rows, "pid"].to_numpy().copy())
    store = FrameStore(args.frames)
    model, _ = load_model(args.model)
    if getattr(model, "high_res", None) is None:
        raise SystemExit(f"{args.model}: not an ISP model with part_stride: 4")
    model.eval()
    parts: dict[str, list] = {"clustered": [], "layer1": [], "last": [], "frames": []}
    with torch.no_grad():
        for s in range(0, len(rows), 256):
            frames = torch.from_numpy(store.read(rows[s:s + 256])).permute(0, 3, 1, 2)
            last, fused = model.stage_maps(frames)
            parts["clustered"].append(model.clustered_maps(last, fused))
            parts["layer1"].append(model.trunk[:5](model.normalize(frames)))   # conv1 .. layer1 (cheap)
            parts["last"].append(last)
            parts["frames"].append(frames.float() / 255)
    maps = {k: torch.cat(v) for k, v in parts.items()}
    activation = maps["clustered"].norm(dim=1, keepdim=True)                # M_g's, upsampled (frame_maps)
    cover = partition_masks(store.read(rows, "masks") > 0, 1, activation.shape[-2:])[:, 1:]   # person's share per cell
    true_fg = (cover >= 0.5).float() + 0.01                                 # the 2-means splits 1 | 0.01
    unit = lambda x: x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    up = F.interpolate(maps["last"], size=activation.shape[-2:], mode="bilinear", align_corners=False)
    colour = F.adaptive_avg_pool2d(maps["frames"], activation.shape[-2:]) - 0.5
    options = KMeansOptions(foreground="centre", sharpen=False)
    variants = {
        "clustered": (maps["clustered"], options),
        "clustered, spherical": (maps["clustered"], KMeansOptions(foreground="centre", sharpen=False, spherical=True)),
        "layer1": (unit(maps["layer1"]) * activation, options),
        "layer1 + M_g": (unit(torch.cat([unit(maps["layer1"]), unit(up)], 1)) * activation, options),
        "M_g upsampled": (up, options),
        "colour": (unit(colour) * activation, options),
        "clustered + colour": (unit(torch.cat([unit(maps["clustered"]), colour], 1)) * activation, options),
    }
    results = {}
    for fg_name, magnitude in (("activation", None), ("true foreground", true_fg)):
        for name, (x, opt) in variants.items():
            if magnitude is not None:
                x = unit(x) * magnitude
            labels = cascaded_part_labels(x.contiguous(), pids, model.num_parts, opt).numpy()
            q = store.label_quality(labels, rows, model.num_parts)
            key = f"{name}, {fg_name}"
            results[key] = {"foreground_iou": q["foreground_iou"], "mean_part_iou": q["mean_part_iou"],
                            "part_iou": q["part_iou"], "stripes": q["stripes_own_foreground"]["mean_part_iou"]}
            print(f"{key:40s} fg {q['foreground_iou']:.3f} part {q['mean_part_iou']:.3f} per part {q['part_iou']} "
                  f"| stripes of its foreground {results[key]['stripes']:.3f}", flush=True)
    emit({"model": str(args.model), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
