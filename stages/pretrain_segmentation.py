"""Stage pretrain_segmentation: the first training stage of SS-HSP (section 3.4), then part maps of every frame.

    python -m stages.pretrain_segmentation --frames results/D/frames.zarr --index results/D/index.parquet \
        --params '<the method's segmentation block as JSON>' --model-out results/D/M/segmenter.pt \
        --parsing-out results/D/M/parsing.zarr --summary results/D/M/segmentation.json --device auto --seed 0

The co-part segmenter (hspreid/segmentation) learns, without labels, to predict frame t + gap from frame t
of the training tracklets. Then every frame of the store (train and test) is segmented into
``parsing.zarr``: uint8 [n, h, w] at ``seg_size``, 0 background, 1..K the learned parts, with ``rows``.

``--params`` holds the ``CoPartSegmenter`` options (num_parts, seg_size, widths, temperature,
reconstruction, loss weights, background_motion, ...; the stage's defaults are ``STAGE_MODEL_DEFAULTS``
over the class's paper-literal ones) and the training options of ``TRAIN_DEFAULTS`` (steps or epochs,
batch_size, gap, lr, lr_step, ..., labels; hspreid/segmentation/pretrain.py); an unknown key is an error. The summary JSON: steps, seconds, train throughput (frame pairs/s), inference throughput
(frames/s), the final loss terms and, where the store holds ground-truth part masks, the Hungarian-matched
part IoU of the maps beside K horizontal stripes (per subset), and with ``quality_every`` the test frames' scores
every that many steps of training (``curve``: the model's part quality against steps).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hspreid.data.frames import FrameStore
from hspreid.distributed import join, leave
from hspreid.errors import UserError
from hspreid.io import log, write_json
from hspreid.segmentation.model import CoPartSegmenter
from hspreid.segmentation.pretrain import pretrain_from_store, split_params
from hspreid.segmentation.store import segment_store, write_part_store
from hspreid.stage import parse_params, run_stage, stage_parser


SUMMARY_SCORES = ("mean_part_iou", "many_to_one_iou", "many_to_one_iou_limbs", "keypoint_error", "foreground_iou",
                  "foreground_iou_off_layout")
"""The test frames' scores copied to the summary's top level (the model's, the stripes' and the training frames'
mean layout's with a prefix)."""


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__, torch_threads=True)
    p.add_argument("--frames", required=True, type=Path, help="frames.zarr")
    p.add_argument("--index", required=True, type=Path, help="index.parquet")
    p.add_argument("--model-out", required=True, type=Path, help="segmenter checkpoint (.pt) to write")
    p.add_argument("--parsing-out", required=True, type=Path, help="part-map store (.zarr) to write")
    p.add_argument("--summary", required=True, type=Path, help="summary JSON to write")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args(argv)

    def body() -> None:
        model_params, train = split_params(parse_params(args.params))
        store, index = FrameStore(args.frames), pd.read_parquet(args.index)
        if len(index) != len(store):
            raise UserError(f"{args.index}: {len(index)} rows but {args.frames} holds {len(store)} frames")
        subset = index["subset"].to_numpy()
        every = max(1, len(store) // train["quality_frames"]) if train["quality_frames"] else 0
        scored = np.arange(0, len(store), every) if store.masks is not None and every else None

        def test_scores(segmenter: CoPartSegmenter) -> dict:
            """The test frames' scores of the maps of the scored rows (a point of the training curve)."""
            labels = np.concatenate([block for _, block in segment_store(
                segmenter, store, scored, batch_size=train["infer_batch_size"], rule=train["labels"])])
            q = store.segmentation_quality(labels, scored, segmenter.num_parts, subset[scored], only=("model",))
            model_scores = q.get("test", {}).get("model", {}) if q else {}
            return {key: model_scores.get(key) for key in SUMMARY_SCORES}

        world, device = join(args.device)
        model, result = pretrain_from_store(store, index, model_params, train, device=device, seed=args.seed,
                                            checkpoint=args.model_out, world=world,
                                            evaluate=test_scores if scored is not None else None)
        leave(world)
        if not world.main:                # rank 0 segments the store and writes the outputs
            return
        log.info("%s: segmenter trained, %d steps in %.0f s (%.1f frame pairs/s)", args.model_out, result["steps"],
                 result["seconds"], result["pairs_per_s"])

        timing: dict[str, float] = {}
        kept: dict[str, list[np.ndarray]] = {"labels": [], "rows": []}

        def blocks():
            for rows, labels in segment_store(model, store, batch_size=train["infer_batch_size"], device=device,
                                              timing=timing, rule=train["labels"]):
                if scored is not None:
                    pick = rows % every == 0
                    kept["labels"].append(labels[pick])
                    kept["rows"].append(rows[pick])
                yield rows, labels

        t0 = time.monotonic()
        quality: dict | None = None

        def attrs() -> dict:
            nonlocal quality
            if kept["rows"]:
                labels, rows = np.concatenate(kept["labels"]), np.concatenate(kept["rows"])
                quality = store.segmentation_quality(labels, rows, model.num_parts, subset[rows])
            return {"num_parts": model.num_parts, "seg_size": list(model.seg_size), "model": str(args.model_out),
                    "labels": train["labels"],
                    "frames": str(args.frames), "config": model.config, "steps": result["steps"],
                    "quality": quality}

        size = write_part_store(args.parsing_out, blocks(), len(store), attrs)
        infer_wall = time.monotonic() - t0
        summary = {
            "model": str(args.model_out), "parsing": str(args.parsing_out), "frames": len(store),
            "device": str(device), "seed": args.seed, "num_parts": model.num_parts, "seg_size": list(size),
            "params": {**model_params, **train},
            "steps": result["steps"], "epochs": result.get("epochs"), "seconds": result["seconds"],
            "train_pairs": result["pairs"], "train_pairs_per_s": round(result["pairs_per_s"], 2),
            "inference_seconds": round(timing.get("seconds", 0.0), 2),
            "inference_frames_per_s": round(timing.get("frames", 0) / max(timing.get("seconds", 0.0), 1e-9), 1),
            "inference_wall_seconds": round(infer_wall, 2),
            "final_loss": {k: round(float(v), 5) for k, v in result["final"].items() if k not in ("step", "lr")},
            "history": result["history"], "quality": quality,
            "curve": result["curve"], "curve_seconds": result["curve_seconds"],
        }
        if quality and "test" in quality:
            q = quality["test"]
            for prefix, partition in (("", "model"), ("stripes_", "stripes"), ("layout_", "mean_layout")):
                if partition in q:
                    summary.update({f"{prefix}{key}": q[partition].get(key) for key in SUMMARY_SCORES})
            log.info("test frames: mean part IoU %.4f (stripes %.4f, stripes of the true foreground %.4f), "
                     "foreground IoU %.4f (the training frames' mean layout %s)", q["model"]["mean_part_iou"],
                     q["stripes"]["mean_part_iou"], q["stripes_gt_foreground"]["mean_part_iou"],
                     q["model"]["foreground_iou"], q.get("mean_layout", {}).get("foreground_iou"))
        write_json(args.summary, summary)
        log.info("%s: %d part maps of %s (%.0f frames/s); summary %s", args.parsing_out, len(store),
                 "x".join(map(str, size)), summary["inference_frames_per_s"], args.summary)

    return run_stage("pretrain_segmentation", args, body)


if __name__ == "__main__":
    sys.exit(main())
