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
import zarr

from hspreid.config import check_keys, config_hash
from hspreid.data.frames import FrameStore
from hspreid.errors import UserError
from hspreid.io import Progress, atomic_dir, log
from hspreid.models import load_model
from hspreid.parsing import label_identities
from hspreid.parsing.coparse import coparse_identities
from hspreid.partmaps import label_quality
from hspreid.runtime import pick_device, seed_everything
from hspreid.stage import parse_params, run_stage, stage_parser

COMMON = {"mode": "kmeans", "num_parts": 7, "ids_per_batch": None, "frames_per_batch": 128}
MODES = {
    "kmeans": {"sharpen": True, "iters": 20, "init": "kmeans++"},                   # ISP §3.2
    "coparse": {"min_labels": 18, "max_steps": 32, "lambda_local": 2.0, "lambda_back": 1.0, "lr": 0.1,
                "momentum": 0.9, "rule": "reference", "split": None},              # HCGA §III.B
}
IDS_PER_BATCH = {"kmeans": 64, "coparse": 16}


def resolve_params(given: dict) -> dict:
    """The stage's parameters: common keys plus those of the chosen mode; unknown keys are named."""
    mode = given.get("mode", COMMON["mode"])
    if mode not in MODES:
        raise UserError(f"pseudo_labels.mode: expected one of {sorted(MODES)}, got {mode!r}")
    params = {**COMMON, **MODES[mode], **given}
    check_keys(params, {**COMMON, **MODES[mode]}, f"pseudo_labels (mode {mode})")
    if params["ids_per_batch"] is None:
        params["ids_per_batch"] = IDS_PER_BATCH[mode]
    return params


def labeller(chunks, params: dict, seed: int, device: torch.device, on_stats):
    """(rows, labels) batches from the chosen mode's streaming labeller."""
    opts = {k: params[k] for k in MODES[params["mode"]]}
    if params["mode"] == "kmeans":
        return label_identities(((m, p, r) for m, p, r, _ in chunks), params["num_parts"],
                                ids_per_batch=params["ids_per_batch"], seed=seed, device=device,
                                on_stats=on_stats, **opts)
    return coparse_identities(chunks, params["num_parts"], ids_per_batch=params["ids_per_batch"], seed=seed,
                              device=device, on_stats=on_stats, **opts)


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
        params = resolve_params(parse_params(args.params))
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
        chunks = feature_chunks(model, store, rows, pids, camids, device, params["frames_per_batch"], progress)
        fallbacks: Counter = Counter()
        on_stats = lambda st: fallbacks.update(st.get("fallbacks") or [])  # noqa: E731
        with atomic_dir(args.output) as tmp:
            group = zarr.open_group(str(tmp), mode="w")
            labels = None
            for got_rows, got in labeller(chunks, params, args.seed, device, on_stats):
                if labels is None:
                    labels = np.zeros((len(all_rows), *got.shape[1:]), np.uint8)
                labels[np.searchsorted(all_rows, got_rows)] = got
            group.create_array("rows", data=all_rows, chunks=(1 << 20,))
            group.create_array("labels", data=labels, chunks=(min(4096, len(labels)), *labels.shape[1:]))
            quality = None if store.masks is None else \
                label_quality(labels, store.read(all_rows, "masks"), params["num_parts"])
            group.attrs.update({"K": params["num_parts"], "round": args.round, "source_model": str(args.model),
                                "frames": str(args.frames),
                                "config_hash": config_hash({"params": params, "model": ckpt.get("config_hash")}),
                                "label_names": ["background"] + [f"part {k}" for k in range(1, params["num_parts"])],
                                "iou": quality, "mode": params["mode"], "fallbacks": dict(fallbacks),
                                "seconds": round(time.monotonic() - t0, 2)})
        if fallbacks:
            log.warning("identities with a fallback (counted per kind): %s", dict(fallbacks))
        log.info("round %d labels of %d frames (%s): IoU %s", args.round, len(all_rows), "x".join(map(str, labels.shape[1:])),
                 None if quality is None else {k: quality[k] for k in quality if "mean" in k or "fore" in k})

    return run_stage("pseudo_labels", args, body)


if __name__ == "__main__":
    sys.exit(main())
