"""How far do the synthetic person's rigid pieces move against the torso between frames t and t + gap?

    python bench/study_limb_motion.py [--frames results/synth_mars/frames.zarr]
        [--index results/synth_mars/index.parquet] [--root data/synth_mars] [--gap 3] [--min-pixels 4]

Reads the frame store's ground-truth limb maps and masks (``limbs``, ``masks``: at the store's frame size) and
the generator's ``ground_truth/images.csv`` (each frame's view, crop and occluder). For every pair of frames
(t, t + gap) of one tracklet, both whole-person crops without an occluder, and every piece with at least
``--min-pixels`` pixels in both frames, the displacement of the piece's centroid relative to the torso's
centroid: ``|(c_piece - c_torso)(t + gap) - (c_piece - c_torso)(t)|`` in store pixels. The torso's row is its
own centroid's displacement in the frame (what the detector crop's jitter and the gait's bob leave). The five
regions, for comparison, are measured against the upper body. Prints the median per piece, over all pairs and
per view (front/back against side views), and the share of frames per view.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from _common import REPO


def centroids(maps: np.ndarray, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and label: pixel count [N, L] and centroid (x, y) [N, L, 2] (NaN where the label is absent)."""
    n, h, w = maps.shape
    key = (np.arange(n)[:, None, None] * num_labels + maps).ravel()
    ys, xs = np.broadcast_to(np.arange(h)[None, :, None] + 0.5, maps.shape), \
        np.broadcast_to(np.arange(w)[None, None, :] + 0.5, maps.shape)
    count = np.bincount(key, minlength=n * num_labels).reshape(n, num_labels)
    sums = [np.bincount(key, weights=c.ravel(), minlength=n * num_labels).reshape(n, num_labels) for c in (xs, ys)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, np.stack(sums, -1) / count[..., None]


def displacements(count: np.ndarray, centre: np.ndarray, pairs: np.ndarray, anchor: int, min_pixels: int
                  ) -> np.ndarray:
    """[P, L] displacement of each label's centroid relative to label ``anchor``'s (the anchor: its own, in the
    frame) between the frames of each pair; NaN where a label or the anchor has < ``min_pixels`` in either."""
    a, b = pairs[:, 0], pairs[:, 1]
    rel = centre - np.where(np.arange(centre.shape[1])[None, :, None] == anchor, 0, centre[:, anchor:anchor + 1])
    d = np.linalg.norm(rel[b] - rel[a], axis=-1)
    ok = (count[a] >= min_pixels) & (count[b] >= min_pixels)
    ok &= ok[:, anchor:anchor + 1]
    return np.where(ok, d, np.nan)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=Path, default=REPO / "results/synth_mars/frames.zarr")
    p.add_argument("--index", type=Path, default=REPO / "results/synth_mars/index.parquet")
    p.add_argument("--root", type=Path, default=REPO / "data/synth_mars", help="the data set (ground_truth/images.csv)")
    p.add_argument("--gap", type=int, default=3)
    p.add_argument("--min-pixels", type=int, default=4)
    args = p.parse_args()

    from hspreid.data.frames import FrameStore
    from hspreid.partmaps import GROUND_TRUTH_NAMES, LIMB_NAMES

    store = FrameStore(args.frames)
    if store.limbs is None:
        raise SystemExit(f"{args.frames}: no limb maps (a synthetic set generated and extracted with them)")
    index = pd.read_parquet(args.index)
    meta = pd.read_csv(args.root / "ground_truth" / "images.csv").set_index("path").loc[index["path"]]
    rows = np.arange(len(store))
    limb_count, limb_centre = centroids(store.read(rows, "limbs"), len(LIMB_NAMES))
    mask_count, mask_centre = centroids(store.read(rows, "masks"), len(GROUND_TRUTH_NAMES))

    clean = ((meta["crop"] == "person") & (meta["occluder"] == "none")).to_numpy()
    track, frame = index["tracklet"].to_numpy(), index["frame"].to_numpy()
    a = np.arange(len(index) - args.gap)
    b = a + args.gap
    keep = (track[a] == track[b]) & (frame[b] == frame[a] + args.gap) & clean[a] & clean[b]
    pairs = np.stack([a[keep], b[keep]], 1)
    side = meta["view"].isin(["left", "right"]).to_numpy()[pairs[:, 0]]

    table = []
    for names, count, centre, anchor in ((LIMB_NAMES, limb_count, limb_centre, LIMB_NAMES.index("torso")),
                                         (GROUND_TRUTH_NAMES, mask_count, mask_centre, GROUND_TRUTH_NAMES.index("upper"))):
        d = displacements(count, centre, pairs, anchor, args.min_pixels)
        for k, name in enumerate(names[1:], start=1):
            col = d[:, k]
            table.append({"piece": name if names is LIMB_NAMES else f"[{name}]",
                          "pairs": int(np.isfinite(col).sum()),
                          "median_px": round(float(np.nanmedian(col)), 2) if np.isfinite(col).any() else None,
                          "median_px_front_back": round(float(np.nanmedian(col[~side])), 2)
                          if np.isfinite(col[~side]).any() else None,
                          "median_px_side": round(float(np.nanmedian(col[side])), 2)
                          if np.isfinite(col[side]).any() else None,
                          "mean_area_px": round(float(count[pairs[:, 0], k].mean()), 1)})
    views = meta["view"].value_counts(normalize=True).round(4).to_dict()
    print(f"{args.frames}: {len(store)} frames at {store.frame_size[0]} x {store.frame_size[1]}, gap {args.gap}, "
          f"{len(pairs)} clean pairs ({int(side.sum())} side views)")
    print(pd.DataFrame(table).to_string(index=False))
    print("share of frames per view:", json.dumps(views))


if __name__ == "__main__":
    main()
