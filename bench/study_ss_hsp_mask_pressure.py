"""SS-HSP stage 1: what does each loss term ask of the segmentation maps, on the person and on the background?

    python bench/study_ss_hsp_mask_pressure.py [--params '{"part_motion": "masks"}'] [--seed 0] [--steps 300]
        [--every 25] [--frames results/synth_mars/frames.zarr] [--index results/synth_mars/index.parquet]
        [--threads 2]

Trains the ss_hsp segmenter as the stage does for synth_mars (its ``segmentation`` block with ``--params`` over
it; Adam, the block's lr and weight decay, batches of training pairs (t, t + gap)) and, every ``--every`` steps,
reads on that step's batch, for eq. 6 (``rec``), eq. 7 (``equ``) and eq. 8 (``geo``) each with its weight, the
pressure towards the background of every pixel of both frames' maps M = (M^bg, M^1..M^K):

    pressure(z) = mean_k dL/dM^k(z) - dL/dM^bg(z)      (> 0: moving mass from the parts to the background lowers L)

summed over the pixels of the true person (``*_person``) and of the true background (``*_bg``), per 10^4 pixels
of the batch (the ground truth resized to the maps' grid). Beside them: the maps' mean background mass on the
person and on the background, and the foreground IoU of their argmax on the batch. A term that finds the person
pushes the background's mass down on the person and up elsewhere; one that pushes both the same way does not
tell them apart. Prints one JSON line per reading, then a table.
"""
from __future__ import annotations

import argparse
import json

from _common import REPO, runtime_line


def readings(args) -> list[dict]:
    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F
    from study_ss_hsp_pretext import segmentation_block

    from hspreid.data.frames import FrameStore
    from hspreid.segmentation.model import CoPartSegmenter
    from hspreid.segmentation.pretrain import FramePairSampler, split_batch, split_params

    torch.set_num_threads(args.threads)
    model_params, train = split_params(segmentation_block(args.params))
    store, index = FrameStore(args.frames), pd.read_parquet(args.index)
    torch.manual_seed(args.seed)
    model = CoPartSegmenter(**model_params).train()

    def truth(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:       # the labels, as they are
        return torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))

    sampler = FramePairSampler.from_index(store, index, subset="train", gap=train["gap"],
                                          batch_size=train["batch_size"], seed=args.seed, masks=truth)
    opt = torch.optim.Adam(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    generator = torch.Generator().manual_seed(args.seed)
    weights = {"rec": model.config["lambda_rec"], "equ": model.config["lambda_equ"], "geo": model.config["lambda_geo"]}
    out_rows, batches = [], iter(sampler)
    for step in range(1, args.steps + 1):
        source, driving, (truth_s, truth_d) = split_batch(next(batches))
        out = model(source, driving)
        terms = model.loss(out, source, driving, generator)
        if step == 1 or step % args.every == 0:
            maps = (out["masks_source"], out["masks_driving"])
            person = F.interpolate(torch.cat([truth_s, truth_d])[:, None].float(), size=model.seg_size,
                                   mode="nearest")[:, 0] > 0
            masks = torch.cat(maps).detach()
            pixels = person.numel() / 1e4
            row = {"step": step, "rec": round(float(terms["rec"].detach()), 4),
                   "bg_mass_person": round(float(masks[:, 0][person].mean()), 3),
                   "bg_mass_bg": round(float(masks[:, 0][~person].mean()), 3)}
            found = masks.argmax(1) > 0
            row["fg_iou"] = round(float((found & person).sum() / (found | person).sum().clamp_min(1)), 3)
            for key, weight in weights.items():
                if weight <= 0:
                    continue
                grads = torch.autograd.grad(weight * terms[key], maps, retain_graph=True, allow_unused=True)
                g = torch.cat([torch.zeros_like(m) if d is None else d for m, d in zip(maps, grads)])
                pressure = g[:, 1:].mean(1) - g[:, 0]
                row[f"{key}_person"] = float(f"{float(pressure[person].sum()) / pixels:.3g}")
                row[f"{key}_bg"] = float(f"{float(pressure[~person].sum()) / pixels:.3g}")
            print(json.dumps(row), flush=True)
            out_rows.append(row)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
    return out_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", default=str(REPO / "results/synth_mars/frames.zarr"))
    ap.add_argument("--index", default=str(REPO / "results/synth_mars/index.parquet"))
    ap.add_argument("--params", default="{}", help="JSON over the ss_hsp segmentation block (synth_mars)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(runtime_line("cpu", args.threads))
    print(f"segmentation block: ss_hsp for synth_mars with {args.params}; seed {args.seed}")
    rows = readings(args)
    keys = [k for k in rows[0] if k != "step"]
    print("\n| step | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for row in rows:
        print(f"| {row['step']} | " + " | ".join(str(row.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
