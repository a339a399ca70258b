"""Bounds on pseudo part labels: what a label grid can reach, and what parts cut by height alone reach.

    python bench/study_label_bounds.py [--frames results/synth_market/frames.zarr]
        [--index results/synth_market/index.parquet] [--num-parts 6] [--grids 8x4 16x8 32x16]
        [--labels results/synth_market/isp/round2/pseudo_labels.zarr ...]

On the training frames, every row scored as the pipeline scores pseudo labels
(:func:`hspreid.partmaps.label_quality`: maps nearest-upsampled to the frames' resolution, parts Hungarian-matched
to head, upper body, lower body, shoes, belongings; K = ``--num-parts``, the background and K - 1 parts):

* ``truth on <grid>``: the ground truth downsampled to the grid (each cell takes its most frequent label) and
  scored back: the best that labels on that grid can do;
* ``stripes of the true foreground on <grid>``: K - 1 horizontal stripes of that foreground (parts cut by height
  alone, given the person); ``... at the frames' resolution`` the same without a grid;
* for each ``--labels`` store (``pseudo_labels.zarr``): the labels, and K - 1 stripes of their own foreground.

Columns: foreground IoU, mean part IoU over the five parts, many-to-one IoU, and ISP Table 3's parts (head,
legs = our lower body, shoes; the paper reports these three and the foreground).
Reading it: labels whose parts score below the stripes of the true foreground on their grid need a better
foreground *and* parts that follow garments rather than height; a bar above those stripes needs a finer grid
or parts that beat height.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import REPO, emit

TABLE3 = {"head": 0, "legs": 2, "shoes": 3}       # positions in part_iou (head, upper, lower, shoes, belongings)


def truth_on_grid(masks, grid: tuple[int, int]):
    """The ground truth [n, H, W] downsampled to ``grid``: each cell's most frequent label (uint8 [n, h, w])."""
    import numpy as np

    from hspreid.segmentation.fixed_partitions import partition_masks

    return partition_masks(masks, int(masks.max()), grid).argmax(1).numpy().astype(np.uint8)


def row(q: dict) -> dict:
    """The columns of one scored partition."""
    return {"foreground_iou": q["foreground_iou"], "mean_part_iou": q["mean_part_iou"],
            "many_to_one_iou": q["many_to_one_iou"], **{k: q["part_iou"][i] for k, i in TABLE3.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=Path, default=REPO / "results/synth_market/frames.zarr")
    ap.add_argument("--index", type=Path, default=REPO / "results/synth_market/index.parquet")
    ap.add_argument("--num-parts", type=int, default=6, help="K: the background and K - 1 parts")
    ap.add_argument("--grids", nargs="*", default=["8x4", "16x8", "32x16"], help="label grids, HxW")
    ap.add_argument("--labels", nargs="*", type=Path, default=[], help="pseudo_labels.zarr stores to score")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd

    from hspreid.data.frames import FrameStore
    from hspreid.data.label_maps import LabelMaps
    from hspreid.partmaps import label_quality

    index = pd.read_parquet(args.index)
    rows = np.sort(index.index[index["subset"] == "train"].to_numpy()).astype(np.int64)
    masks = FrameStore(args.frames).read(rows, "masks")
    K = args.num_parts
    results: dict[str, dict] = {}

    def add(name: str, labels) -> None:
        q = label_quality(labels, masks, K)
        for key, scored in ((name, q), (f"stripes of {'the true' if name.startswith('truth') else 'its own'} "
                                        f"foreground: {name}", q["stripes_own_foreground"])):
            results[key] = row(scored)
            r = results[key]
            print(f"{key:62s} fg {r['foreground_iou']:.3f} part {r['mean_part_iou']:.3f} m2o "
                  f"{r['many_to_one_iou']:.3f} | head {r['head']:.3f} legs {r['legs']:.3f} shoes {r['shoes']:.3f}",
                  flush=True)

    for grid in args.grids:
        h, w = (int(v) for v in grid.lower().split("x"))
        add(f"truth on {h} x {w}", truth_on_grid(masks, (h, w)))
    add("truth at the frames' resolution", masks)
    for path in args.labels:
        add(str(path), LabelMaps(path, in_memory=True).read(rows))
    emit({"frames": str(args.frames), "num_parts": K, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
