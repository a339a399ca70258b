"""Stage train: train a method's model on the training split of frames.zarr.

    python -m stages.train --frames results/mars/frames.zarr --index results/mars/index.parquet \
        --output results/mars/baseline/model.pt --checkpoint work/ckpt/mars/baseline.pt \
        --params '{"model": {...}, "train": {...}, "losses": {...}, "augment": {...}}'
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import torch

from hspreid.config import config_hash
from hspreid.data.datasets import AugmentConfig, PartLabels, TrainClips
from hspreid.data.frames import FrameStore
from hspreid.engine.trainer import TrainConfig, pick_device, seed_everything, train
from hspreid.io import atomic_file, log
from hspreid.losses import Criterion
from hspreid.models import build_model, load_model
from hspreid.stage import check_keys, parse_params, run_stage, stage_parser, typed_config


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--frames", required=True, type=Path, help="frames.zarr from extract_frames")
    p.add_argument("--index", required=True, type=Path, help="index.parquet from extract_frames")
    p.add_argument("--output", required=True, type=Path, help="trained model (.pt)")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="per-epoch checkpoint, kept outside the outputs so an interrupted run resumes")
    p.add_argument("--part-labels", type=Path, default=None,
                   help="pseudo_labels.zarr: part-label maps of the training frames (ISP, HCGA)")
    p.add_argument("--init", type=Path, default=None, help="model.pt to start from (the previous round's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args(argv)

    def body() -> None:
        t0 = time.monotonic()
        params = parse_params(args.params)
        check_keys(params, {"model", "train", "losses", "augment"}, "method")
        seed_everything(args.seed)
        device = pick_device(args.device)
        tcfg = typed_config(TrainConfig, params.get("train", {}), "train")
        index = pd.read_parquet(args.index)
        dataset = TrainClips(args.frames, index, tcfg.num_frames,
                             typed_config(AugmentConfig, params.get("augment", {}), "augment"),
                             part_labels=args.part_labels)
        model = build_model(params["model"], dataset.num_classes)
        rounds = []  # pseudo-label quality of every round so far, carried to metrics.json
        if args.init:
            start, start_ckpt = load_model(args.init)
            rounds = list(start_ckpt.get("rounds", []))
            own = model.state_dict()
            shared = {k: v for k, v in start.state_dict().items() if k in own and own[k].shape == v.shape}
            model.load_state_dict(shared, strict=False)
            log.info("starting from %s (%d of %d tensors)", args.init, len(shared), len(own))
        criterion = Criterion(params.get("losses", {"id": {}, "triplet": {}}))
        log.info("training %s on %s: %d tracklets, %d identities, device %s", params["model"].get("name"),
                 args.frames, len(dataset), dataset.num_classes, device)
        run_hash = config_hash({"params": params, "seed": args.seed, "init": str(args.init),
                                "labels": str(args.part_labels)})
        history = train(model, dataset, criterion, tcfg, device=device, seed=args.seed,
                        checkpoint=args.checkpoint, resume_key=run_hash)
        if args.part_labels:
            label_attrs = PartLabels(args.part_labels).attrs
            rounds.append({"round": label_attrs.get("round"), "pseudo_label_iou": label_attrs.get("iou")})
        upstream = FrameStore(args.frames).attrs.get("summary", {})
        with atomic_file(args.output) as tmp:
            torch.save({"model_cfg": params["model"], "num_classes": dataset.num_classes,
                        "state_dict": model.cpu().state_dict(), "history": history, "config_hash": run_hash,
                        "rounds": rounds,
                        "stage_seconds": {"extract_frames": upstream.get("wall_time_s"),
                                          "train": round(time.monotonic() - t0, 2)}}, tmp)
        args.checkpoint.unlink(missing_ok=True)

    return run_stage("train", args, body)


if __name__ == "__main__":
    sys.exit(main())
