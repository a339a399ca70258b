"""Stage pseudo_labels: ISP's per-identity cascaded k-means part labels of every training frame.

    python -m stages.pseudo_labels --model results/market/isp/round0/model.pt \
        --frames results/market/frames.zarr --index results/market/index.parquet \
        --output results/market/isp/round1/pseudo_labels.zarr --round 1 --params '{"num_parts": 7}'

Feature maps of the model's backbone are computed identity by identity and clustered as soon as
an identity is complete (never the whole training set's maps at once). Writes ``labels`` uint8
[n, h, w] (0 background, 1..K-1 parts top to bottom) for the frame-store rows ``rows``, with
attrs: K, round, source model, config hash and, where the data set has ground-truth part masks,
the labels' IoU against them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr

from hspreid.config import config_hash
from hspreid.data.frames import FrameStore
from hspreid.engine.trainer import pick_device, seed_everything
from hspreid.io import Progress, atomic_dir, log
from hspreid.models import load_model
from hspreid.parsing import label_identities, part_iou
from hspreid.stage import check_keys, parse_params, run_stage, stage_parser

DEFAULTS = {"num_parts": 7, "sharpen": True, "iters": 20, "init": "kmeans++", "ids_per_batch": 64,
            "frames_per_batch": 128}


@torch.no_grad()
def feature_chunks(model, store: FrameStore, rows: np.ndarray, pids: np.ndarray, device: torch.device,
                   batch: int, progress: Progress):
    """(feature maps [n, C, h, w], pids [n], rows [n]) of the given frame rows, in that order."""
    model.eval().to(device)
    for s in range(0, len(rows), batch):
        r = rows[s:s + batch]
        frames = torch.from_numpy(store.read(r)).permute(0, 3, 1, 2).to(device)
        maps = model.trunk(model.normalize(frames)).float()
        progress.update(len(r))
        yield maps, pids[s:s + batch], r


def label_quality(labels: np.ndarray, store: FrameStore, rows: np.ndarray, num_parts: int) -> dict | None:
    """IoU of the labels against the ground-truth masks (resized to the label grid), parts matched by Hungarian."""
    if store.masks is None:
        return None
    import cv2

    h, w = labels.shape[1:]
    gt = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in store.read(rows, "masks")])
    res = part_iou(labels, gt, num_classes=max(num_parts, int(gt.max()) + 1), match="hungarian")
    rnd = lambda v: None if v is None or np.isnan(v) else round(float(v), 4)  # noqa: E731
    return {"mean_part_iou": rnd(res["mean_part_iou"]), "foreground_iou": rnd(res["foreground_iou"]),
            "background_iou": rnd(res["background_iou"]), "part_iou": [rnd(v) for v in res["part_iou"]],
            "mapping": {str(k): int(v) for k, v in res["mapping"].items()}, "ground_truth_grid": [h, w]}


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--model", required=True, type=Path, help="model.pt whose backbone gives the feature maps")
    p.add_argument("--frames", required=True, type=Path)
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path, help="pseudo_labels.zarr to write")
    p.add_argument("--round", type=int, required=True, help="round number recorded in the store")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    def body() -> None:
        t0 = time.monotonic()
        params = {**DEFAULTS, **parse_params(args.params)}
        check_keys(params, DEFAULTS, "pseudo_labels")
        seed_everything(args.seed)
        device = pick_device(args.device)
        index = pd.read_parquet(args.index)
        train = index[index["subset"] == "train"]
        order = np.lexsort((train.index.to_numpy(), train["pid"].to_numpy()))  # grouped by identity
        rows, pids = train.index.to_numpy()[order].astype(np.int64), train["pid"].to_numpy()[order]
        all_rows = np.sort(rows)
        model, ckpt = load_model(args.model)
        store = FrameStore(args.frames)
        progress = Progress(len(rows), "frames clustered")
        chunks = feature_chunks(model, store, rows, pids, device, params["frames_per_batch"], progress)
        with atomic_dir(args.output) as tmp:
            group = zarr.open_group(str(tmp), mode="w")
            labels = None
            for got_rows, got in label_identities(chunks, params["num_parts"], ids_per_batch=params["ids_per_batch"],
                                                  sharpen=params["sharpen"], iters=params["iters"],
                                                  init=params["init"], seed=args.seed, device=device):
                if labels is None:
                    labels = np.zeros((len(all_rows), *got.shape[1:]), np.uint8)
                labels[np.searchsorted(all_rows, got_rows)] = got
            group.create_array("rows", data=all_rows, chunks=(1 << 20,))
            group.create_array("labels", data=labels, chunks=(min(4096, len(labels)), *labels.shape[1:]))
            quality = label_quality(labels, store, all_rows, params["num_parts"])
            group.attrs.update({"K": params["num_parts"], "round": args.round, "source_model": str(args.model),
                                "config_hash": config_hash({"params": params, "model": ckpt.get("config_hash")}),
                                "label_names": ["background"] + [f"part {k}" for k in range(1, params["num_parts"])],
                                "iou": quality, "seconds": round(time.monotonic() - t0, 2)})
        log.info("round %d labels of %d frames (%s): IoU %s", args.round, len(all_rows), "x".join(map(str, labels.shape[1:])),
                 None if quality is None else {k: quality[k] for k in quality if "mean" in k or "fore" in k})

    return run_stage("pseudo_labels", args, body)


if __name__ == "__main__":
    sys.exit(main())
