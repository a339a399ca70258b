"""Stage extract_features: embed every test tracklet (or image) with a trained model into features.zarr.

    python -m stages.extract_features --model results/mars/baseline/model.pt \
        --frames results/mars/frames.zarr --index results/mars/index.parquet \
        --output results/mars/baseline/features.zarr --params '{"mode": "all", "clip_len": 32}'

A model that takes parsing maps (SPReID) gets the test frames' region maps from ``--parsing`` (a
parsing store from parse_frames).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from hspreid.config import typed_config
from hspreid.data.feature_store import write_features
from hspreid.data.label_maps import LabelMaps
from hspreid.errors import UserError
from hspreid.features import FeatureConfig, extract_features
from hspreid.models import load_model
from hspreid.models.parsing import predicted_parsing_quality
from hspreid.runtime import pick_device, seed_everything
from hspreid.stage import parse_params, run_stage, stage_parser

def parsing_summary(path: Path | None) -> dict | None:
    """Which parsing store the model read (store, source, its IoU against the ground truth), for metrics.json."""
    if path is None:
        return None
    attrs = LabelMaps(path).attrs
    return {"store": str(path), "source": attrs.get("source"), "iou": attrs.get("iou")}


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__, torch_threads=True)
    p.add_argument("--model", required=True, type=Path, help="model.pt from the train stage")
    p.add_argument("--frames", required=True, type=Path, help="frames.zarr")
    p.add_argument("--index", required=True, type=Path, help="index.parquet")
    p.add_argument("--output", required=True, type=Path, help="features.zarr to write")
    p.add_argument("--parsing", type=Path, nargs="?", default=None,
                   help="parsing store (parse_frames) of the test frames, for SPReID (empty: none)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args(argv)

    def body() -> None:
        t0 = time.monotonic()
        cfg = typed_config(FeatureConfig, parse_params(args.params), "features")
        seed_everything(args.seed)
        model, ckpt = load_model(args.model)
        if args.parsing is None and model.requires_parsing:
            raise UserError(f"{args.model}: the model needs parsing maps (model.fallback 'error'); pass --parsing")
        index, device = pd.read_parquet(args.index), pick_device(args.device)
        feats = extract_features(model, args.frames, index, device=device, mode=cfg.mode, clip_len=cfg.clip_len,
                                 evenly_frames=cfg.evenly_frames, frames_per_batch=cfg.frames_per_batch,
                                 num_workers=cfg.num_workers, parsing=args.parsing)
        seconds = {**ckpt.get("stage_seconds", {}), "extract_features": round(time.monotonic() - t0, 2)}
        write_features(args.output, feats, dtype=cfg.dtype,
                       attrs={"aggregation": {"mode": cfg.mode, "clip_len": cfg.clip_len,
                                              "evenly_frames": cfg.evenly_frames},
                              "model_config_hash": ckpt.get("config_hash"), "stage_seconds": seconds,
                              "rounds": ckpt.get("rounds", []), "parsing": parsing_summary(args.parsing),
                              "segmentation": ckpt.get("segmentation"),
                              "world_size": ckpt.get("world_size", 1),
                              "parsing_iou": predicted_parsing_quality(
                                  model, args.frames, index.index[index["subset"] == "test"].to_numpy(),
                                  device=device, max_frames=cfg.parsing_frames,
                                  frames_per_batch=cfg.frames_per_batch,
                                  layout_rows=index.index[index["subset"] == "train"].to_numpy())})

    return run_stage("extract_features", args, body)


if __name__ == "__main__":
    sys.exit(main())
