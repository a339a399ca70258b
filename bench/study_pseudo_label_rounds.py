"""ISP's and HCGA's rounds: does each round's model learn its labels, and do the next labels keep what it learned?

    python bench/study_pseudo_label_rounds.py --run results/synth_market/isp [--frames results/synth_market/frames.zarr]
        [--index results/synth_market/index.parquet] [--max-frames 2000] [--threads 2]

For every ``round<r>/`` of a run (``model.pt``, trained on ``pseudo_labels.zarr``, the labels of round r), on up
to ``--max-frames`` training frames (evenly spread, as the train stage scores them), from one prediction each:

* ``labels r``: the labels against the ground truth (fg / part IoU, :func:`hspreid.partmaps.label_quality`);
* ``model r``: the part classifier's maps (argmax of ``part_logits``) against the ground truth;
* ``fit``: the classifier's maps against the labels it was trained on, at the classifier's grid, the same label
  ids (:func:`hspreid.partmaps.label_fit`: pixel accuracy, fg IoU, mean part IoU): does the parsing loss
  move the classifier to its labels?
* ``next``: the labels of round r + 1, made from model r's maps by clustering, against that classifier's maps
  (Hungarian-matched mean part IoU, fg IoU): do the rounds converge on what the classifier learned?

The train stage records ``fit`` for new runs (``rounds[r].parsing_iou.label_fit`` in ``metrics.json``); this
script reads it off the models and labels a run already holds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import REPO, emit, runtime_line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="results/<dataset>/<method> with round<r>/ folders")
    ap.add_argument("--frames", type=Path, default=None, help="default: the run's data set's frames.zarr")
    ap.add_argument("--index", type=Path, default=None, help="default: the run's data set's index.parquet")
    ap.add_argument("--max-frames", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from hspreid.data.frames import FrameStore
    from hspreid.data.label_maps import LabelMaps
    from hspreid.models import load_model
    from hspreid.models.parsing import predict_parsing, spread_rows
    from hspreid.partmaps import label_fit

    torch.set_num_threads(args.threads)
    print(runtime_line("cpu", args.threads))
    run = args.run if args.run.is_absolute() else REPO / args.run
    frames = args.frames or run.parent / "frames.zarr"
    index = pd.read_parquet(args.index or run.parent / "index.parquet")
    rows = spread_rows(index.index[index["subset"] == "train"].to_numpy(), args.max_frames)
    store = FrameStore(frames)
    if store.masks is None:
        raise SystemExit(f"{frames}: no ground-truth masks to score against")
    rounds = sorted(int(p.name[5:]) for p in run.glob("round*") if p.name[5:].isdigit())
    if not rounds:
        raise SystemExit(f"{run}: no round<r>/ folders")
    results = []
    for r in rounds:
        model, _ = load_model(run / f"round{r}/model.pt")
        labels = LabelMaps(run / f"round{r}/pseudo_labels.zarr")
        pred = predict_parsing(model, frames, rows, device=torch.device("cpu"))
        q = store.label_quality(pred, rows, model.num_parts)
        row = {"round": r, "labels": {k: labels.attrs["iou"][k] for k in ("foreground_iou", "mean_part_iou")},
               "model": {k: q[k] for k in ("foreground_iou", "mean_part_iou")},
               "fit": label_fit(pred, labels.read(rows), model.num_parts)}
        nxt = run / f"round{r + 1}/pseudo_labels.zarr"
        if nxt.is_dir():
            row["next"] = label_fit(pred, LabelMaps(nxt).read(rows), model.num_parts, match="hungarian")
        results.append(row)
        print(json.dumps(row), flush=True)
    print("\n| round | labels fg / part | model fg / part | fit: pixel acc. / fg / part | next labels vs model: "
          "fg / part |\n|---|---|---|---|---|")
    for row in results:
        lab, mod, fit, nxt = row["labels"], row["model"], row["fit"], row.get("next")
        print(f"| {row['round']} | {lab['foreground_iou']:.3f} / {lab['mean_part_iou']:.3f} | "
              f"{mod['foreground_iou']:.3f} / {mod['mean_part_iou']:.3f} | {fit['pixel_accuracy']:.3f} / "
              f"{fit['foreground_iou']:.3f} / {fit['mean_part_iou']:.3f} | "
              + (f"{nxt['foreground_iou']:.3f} / {nxt['mean_part_iou']:.3f} |" if nxt else "- |"))
    emit({"run": str(run), "rounds": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
