"""Stage pseudo_labels: per-identity part labels of every training frame -- ISP's cascaded k-means
(``mode: kmeans``) or HCGA's co-parsing (``mode: coparse``).

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
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hspreid.config import block_values, config_hash
from hspreid.data.frames import FrameStore
from hspreid.data.label_maps import write_label_maps
from hspreid.io import Progress, log
from hspreid.models import load_model
from hspreid.parsing import PseudoLabelConfig, coparse_identities, label_identities, pseudo_label_config
from hspreid.runtime import pick_device, seed_everything
from hspreid.stage import parse_params, run_stage, stage_parser


def labeller(chunks, common: PseudoLabelConfig, options, seed: int, device: torch.device, on_stats):
    """(rows, labels) batches from the chosen mode's streaming labeller."""
    if common.mode == "kmeans":
        return label_identities(((m, p, r) for m, p, r, _ in chunks), common.num_parts, options, seed=seed,
                                device=device, on_stats=on_stats)
    return coparse_identities(chunks, common.num_parts, options, seed=seed, device=device, on_stats=on_stats)


@torch.no_grad()
def feature_chunks(model, store: FrameStore, rows: np.ndarray, pids: np.ndarray, camids: np.ndarray,
                   device: torch.device, batch: int, progress: Progress):
    """(feature maps [n, C, h, w], pids [n], rows [n], camids [n]) of the given frame rows, in that order."""
    model.eval().to(device)
    for s in range(0, len(rows), batch):
        r = rows[s:s + batch]
        frames = torch.from_numpy(store.read(r)).permute(0, 3, 1, 2).to(device)
        maps = model.frame_maps(frames).float()
        progress.update(len(r))
        yield maps, pids[s:s + batch], r, camids[s:s + batch]


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__, torch_threads=True)
    p.add_argument("--model", required=True, type=Path, help="model.pt whose backbone gives the feature maps")
    p.add_argument("--frames", required=True, type=Path)
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path, help="pseudo_labels.zarr to write")
    p.add_argument("--round", type=int, required=True, help="round number recorded in the store")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    def body() -> None:
        t0 = time.monotonic()
        common, options = pseudo_label_config(parse_params(args.params))
        params = {**block_values(common), **block_values(options)}   # recorded: every option, defaults filled in
        seed_everything(args.seed)
        device = pick_device(args.device)
        index = pd.read_parquet(args.index)
        train = index[index["subset"] == "train"]
        order = np.lexsort((train.index.to_numpy(), train["pid"].to_numpy()))  # grouped by identity
        rows, pids = train.index.to_numpy()[order].astype(np.int64), train["pid"].to_numpy()[order]
        camids = train["camid"].to_numpy()[order]
        all_rows = np.sort(rows)
        model, ckpt = load_model(args.model)
        store = FrameStore(args.frames)
        progress = Progress(len(rows), "frames clustered")
        chunks = feature_chunks(model, store, rows, pids, camids, device, common.frames_per_batch, progress)
        fallbacks: Counter = Counter()
        below: list[bool] = []               # identities whose foreground is the lower activation cluster

        def on_stats(st: dict) -> None:
            fallbacks.update(st.get("fallbacks") or [])
            below.append(bool(st.get("fg_below_threshold", False)))

        labels = None
        for got_rows, got in labeller(chunks, common, options, args.seed, device, on_stats):
            if labels is None:
                labels = np.zeros((len(all_rows), *got.shape[1:]), np.uint8)
            labels[np.searchsorted(all_rows, got_rows)] = got
        quality = store.label_quality(labels, all_rows, common.num_parts)
        write_label_maps(args.output, [(all_rows, labels)], len(all_rows), {
            "K": common.num_parts, "round": args.round, "source_model": str(args.model), "frames": str(args.frames),
            "config_hash": config_hash({"params": params, "model": ckpt.get("config_hash")}),
            "label_names": ["background"] + [f"part {k}" for k in range(1, common.num_parts)],
            "iou": quality, "mode": common.mode, "fallbacks": dict(fallbacks),
            "identities": len(below), "foreground_below_threshold": sum(below),
            "seconds": round(time.monotonic() - t0, 2)})
        if fallbacks:
            log.warning("identities with a fallback (counted per kind): %s", dict(fallbacks))
        log.info("round %d labels of %d frames (%s): IoU %s", args.round, len(all_rows), "x".join(map(str, labels.shape[1:])),
                 None if quality is None else {k: quality[k] for k in quality if "mean" in k or "fore" in k})

    return run_stage("pseudo_labels", args, body)


if __name__ == "__main__":
    sys.exit(main())
