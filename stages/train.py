"""Stage train: train a method's model on the training split of frames.zarr.

    python -m stages.train --frames results/mars/frames.zarr --index results/mars/index.parquet \
        --output results/mars/baseline/model.pt --checkpoint work/ckpt/mars/baseline.pt \
        --params '{"model": {...}, "train": {...}, "losses": {...}, "augment": {...}}'

Methods whose model takes extra inputs get them here: SPReID the training frames' region maps
(``--parsing``, a store from parse_frames), SSN3D in semi-supervised mode the key points of a few
labelled frames per tracklet (the ``keypoints`` block; ``--keypoints-root``, the data set's root).
SS-HSP starts from its pretrained segmenter (``segmenter`` in ``--params``: a pretrain_segmentation
``segmenter.pt``), whose architecture is stored in the model's config.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from hspreid.config import check_keys, config_hash, typed_config
from hspreid.data.datasets import AugmentConfig, TrainClips
from hspreid.data.frames import FrameStore
from hspreid.data.keypoints import KeypointConfig, Keypoints, labelled_keypoints
from hspreid.data.label_maps import LabelMaps
from hspreid.distributed import join, leave
from hspreid.engine.trainer import TrainConfig, train
from hspreid.errors import UserError
from hspreid.io import log
from hspreid.losses import Criterion
from hspreid.models import ReIDModel, build_model, load_model, save_model
from hspreid.models.parsing import predicted_parsing_quality
from hspreid.models.ss_hsp import read_pretrained_segmenter
from hspreid.runtime import seed_everything
from hspreid.stage import parse_params, run_stage, stage_parser


def keypoints_for(block: dict | None, root: Path | None, index: pd.DataFrame) -> Keypoints | None:
    """The labelled key points the ``keypoints`` block asks for (None: unsupervised, no key points)."""
    if block is None:
        return None
    cfg = typed_config(KeypointConfig, block, "keypoints")
    if root is None:
        raise UserError("keypoints: a keypoints block needs --keypoints-root (the data set's root)")
    return labelled_keypoints(root, index, cfg)


def check_extra_inputs(model: ReIDModel, parsing: Path | None, keypoints: Keypoints | None) -> None:
    """Parsing maps and key points only go to a model that takes them, in the shape it takes."""
    takes = model.extra_inputs
    if parsing is not None and "parsing" not in takes:
        raise UserError(f"--parsing: model {type(model).__name__} takes no parsing maps")
    if parsing is None and model.requires_parsing:
        raise UserError("parsing: model.fallback is 'error' but no parsing maps were given (name a parsing.source)")
    if keypoints is not None and "keypoints" not in takes:
        raise UserError(f"keypoints: model {type(model).__name__} takes no key points (remove the keypoints block)")
    if keypoints is not None and len(keypoints.joints) != model.num_parts:
        raise UserError(f"keypoints.joints: {len(keypoints.joints)} joints for model.num_parts = {model.num_parts} "
                        "(part i is anchored at joint i)")


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__, torch_threads=True)
    p.add_argument("--frames", required=True, type=Path, help="frames.zarr from extract_frames")
    p.add_argument("--index", required=True, type=Path, help="index.parquet from extract_frames")
    p.add_argument("--output", required=True, type=Path, help="trained model (.pt)")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="per-epoch checkpoint, kept outside the outputs so an interrupted run resumes")
    p.add_argument("--part-labels", type=Path, default=None,
                   help="pseudo_labels.zarr: part-label maps of the training frames (ISP, HCGA)")
    p.add_argument("--init", type=Path, default=None, help="model.pt to start from (the previous round's)")
    p.add_argument("--parsing", type=Path, nargs="?", default=None,
                   help="parsing store (parse_frames) of the training frames, for SPReID (empty: none)")
    p.add_argument("--keypoints-root", type=Path, nargs="?", default=None,
                   help="data set root whose images (and ground_truth/keypoints.csv, unless keypoints.file names "
                        "another CSV) give the key points, for semi-supervised SSN3D (empty: none)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args(argv)

    def body() -> None:
        t0 = time.monotonic()
        params = parse_params(args.params)
        check_keys(params, {"model", "train", "losses", "augment", "keypoints", "segmenter"}, "method")
        seed_everything(args.seed)
        world, device = join(args.device)
        tcfg = typed_config(TrainConfig, params.get("train", {}), "train")
        index = pd.read_parquet(args.index)
        keypoints = keypoints_for(params.get("keypoints"), args.keypoints_root, index)
        dataset = TrainClips(args.frames, index, tcfg.num_frames,
                             typed_config(AugmentConfig, params.get("augment", {}), "augment"),
                             part_labels=args.part_labels, parsing=args.parsing, keypoints=keypoints)
        model_cfg = params["model"]
        segmenter = read_pretrained_segmenter(params["segmenter"]) if params.get("segmenter") else None
        if segmenter is not None:
            model_cfg = {**model_cfg, "segmenter": segmenter["architecture"]}
        model = build_model(model_cfg, dataset.num_classes)
        if segmenter is not None:
            model.load_segmenter(segmenter["state_dict"])
            log.info("segmentation module from %s", params["segmenter"])
        check_extra_inputs(model, args.parsing, keypoints)
        rounds = []  # pseudo-label quality of every round so far, carried to metrics.json
        earlier: list[dict] = []  # the earlier rounds' training history: a round continues the previous one
        if args.init:
            start, start_ckpt = load_model(args.init)
            rounds = list(start_ckpt.get("rounds", []))
            earlier = list(start_ckpt.get("history", [])) if rounds else []
            own = model.state_dict()
            shared = {k: v for k, v in start.state_dict().items() if k in own and own[k].shape == v.shape}
            model.load_state_dict(shared, strict=False)
            log.info("starting from %s (%d of %d tensors)", args.init, len(shared), len(own))
        criterion = Criterion(params.get("losses", {"id": {}, "triplet": {}}))
        log.info("training %s on %s: %d tracklets, %d identities, device %s, %d process(es)",
                 params["model"].get("name"), args.frames, len(dataset), dataset.num_classes, device, world.size)
        extra = {k: str(v) for k, v in (("parsing", args.parsing), ("keypoints_root", args.keypoints_root)) if v}
        run_hash = config_hash({"params": params, "seed": args.seed, "init": str(args.init),
                                "labels": str(args.part_labels), **extra})
        history = train(model, dataset, criterion, tcfg, device=device, seed=args.seed,
                        checkpoint=args.checkpoint, resume_key=run_hash, world=world)
        leave(world)
        if not world.main:
            return
        if args.part_labels:
            label_maps = LabelMaps(args.part_labels)
            label_attrs = label_maps.attrs
            train_rows = index.index[index["subset"] == "train"].to_numpy()
            rounds.append({"round": label_attrs.get("round"), "pseudo_label_iou": label_attrs.get("iou"),
                           "foreground_below_threshold": label_attrs.get("foreground_below_threshold"),
                           "parsing_iou": predicted_parsing_quality(model, args.frames, train_rows, device=device,
                                                                    labels=label_maps)})
        upstream = FrameStore(args.frames).attrs.get("summary", {})
        save_model(args.output, model, model_cfg, dataset.num_classes, history=earlier + history,
                   config_hash=run_hash, rounds=rounds, segmentation=segmenter and segmenter["summary"],
                   world_size=world.size,
                   stage_seconds={"extract_frames": upstream.get("wall_time_s"),
                                  "train": round(time.monotonic() - t0, 2)})
        args.checkpoint.unlink(missing_ok=True)

    return run_stage("train", args, body)


if __name__ == "__main__":
    sys.exit(main())
