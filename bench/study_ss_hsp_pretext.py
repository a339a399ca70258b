"""SS-HSP stage 1: does predicting frame t + gap (eq. 6) reward the ground-truth parts on this data?

    python bench/study_ss_hsp_pretext.py [--frames results/synth_mars/frames.zarr]
        [--index results/synth_mars/index.parquet] [--partitions ground_truth limbs foreground stripes
        background learned] [--seeds 0] [--params '{"gap": 6, "steps": 600}'] [--eval-pairs 512] [--threads 1]
        [--jobs 1] [--motion learned] [--root data/synth_mars]
    python bench/study_ss_hsp_pretext.py --evaluate results/synth_mars/ss_hsp/segmenter.pt [...]

The segmenter is the ss_hsp method's, as the workflow resolves it for synth_mars (config/methods/ss_hsp.yaml with
config/datasets/synth_mars.yaml's overrides: 32 x 16, the CPU-sized widths, 300 steps); ``--params`` changes keys
of that ``segmentation`` block. Each (partition, seed) pre-trains a fresh segmenter in a worker process on the
training tracklets' (t, t + gap) pairs. With a fixed partition (hspreid/segmentation/fixed_partitions.py) the
segmentation maps M_t, M_{t+1} are built from the ground-truth masks and only the motion heads (eq. 1's shifts
and affines, the background motion) and the prediction module learn, from eq. 6 alone (eqs. 7 and 8 and the area
prior are off: they act on the maps). ``learned`` is the stage as it runs, all losses on. Then the eq. 6 loss is
measured on ``--eval-pairs`` fixed pairs of the test tracklets, beside copying I_t as the prediction, and, as eq.
6 averages over the whole frame where the person may be a small share, the mean absolute error of the prediction
on the person's pixels of I_{t+gap} alone (``person``), and the same on the pairs seen from the side (``side
views``, the view from the data set's ``ground_truth/images.csv``), where the limbs swing across the frame.
``limbs`` fixes the maps to the pieces the renderer moves rigidly (the store's "limbs", one part each, K = 14):
what one affine motion per part (eqs. 1-2) can explain; ``ground_truth`` to the five regions. ``--motion
centroid`` fixes the parts' motion too: each part translates with its centroid in the fixed maps (A = I), so the
table shows what the partition is worth to eq. 6 on this data, apart from how long the heat maps take to learn to
track its parts (it does not apply to ``learned``).

Reading the table: if ``limbs`` is not clearly below ``foreground``, the pretext task does not pay for
splitting the person into its parts, and a segmenter trained on it has no reason to find them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

from _common import REPO, emit, run_worker, runtime_line

PARTITIONS = ("ground_truth", "limbs", "foreground", "stripes", "background", "learned")


def segmentation_block(params: str) -> dict:
    """The ss_hsp ``segmentation`` block for synth_mars, with ``params`` (JSON) over it."""
    from bench_ss_hsp import method_config

    return {**method_config("ss_hsp", "cpu")["segmentation"], **json.loads(params)}


def worker(args) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from hspreid.data.frames import FrameStore
    from hspreid.segmentation.fixed_partitions import TRUTH, partition_labels, partition_masks
    from hspreid.segmentation.motion import part_centres
    from hspreid.segmentation.pretrain import pretrain_from_store, split_params

    torch.set_num_threads(args.threads)
    model_params, train = split_params(segmentation_block(args.params))
    fixed = args.partition != "learned"
    store, index = FrameStore(args.frames), pd.read_parquet(args.index)
    truth = TRUTH.get(args.partition, "masks")
    if fixed:
        model_params.update(lambda_equ=0.0, lambda_geo=0.0, lambda_area=0.0)
    if args.partition == "limbs":                           # one part per rigid piece
        model_params["num_parts"] = len(store.limb_names) - 1
    k, size = model_params["num_parts"], tuple(model_params["seg_size"])

    def masks(truth_t: np.ndarray, truth_d: np.ndarray):
        maps = tuple(partition_masks(partition_labels(t, k, args.partition), k, size) for t in (truth_t, truth_d))
        return maps + tuple(part_centres(m)[1] for m in maps) if args.motion == "centroid" else maps

    fixed_masks = masks if fixed else None
    model, result = pretrain_from_store(store, index, model_params, train, seed=args.seed, masks=fixed_masks,
                                        truth=truth)
    return {"partition": args.partition, "seed": args.seed, "seconds": result["seconds"],
            **evaluate(model, store, index, train["gap"], args.eval_pairs, args.root, fixed_masks, truth)}


def evaluate(model, store, index, gap: int, eval_pairs: int, root: str, fixed_masks=None, truth: str = "masks"
             ) -> dict:
    """Eq. 6 of ``model`` on ``eval_pairs`` fixed test pairs beside copying I_t, the person's L1 (all pairs and
    side views) and the mean background mass of M_{t+gap} (channel 0 of the maps the model used)."""
    import numpy as np
    import pandas as pd
    import torch

    from hspreid.segmentation.losses import build_reconstruction_loss
    from hspreid.segmentation.pretrain import FramePairSampler, split_batch

    test = FramePairSampler.from_index(store, index, "test", gap, 64, seed=12345, masks=fixed_masks,
                                       truth=truth)
    target_rows = np.random.default_rng(12345)          # the sampler's draw, repeated for the targets' masks
    cfg = model.config
    rec = build_reconstruction_loss(cfg["reconstruction"], cfg["rec_scales"], cfg["vgg_seed"], cfg["rec_distance"])
    model.eval()
    views = pd.read_csv(Path(root) / "ground_truth" / "images.csv").set_index("path")["view"]
    side_row = views.reindex(index["path"]).isin(["left", "right"]).to_numpy()
    ours, copy, person, person_copy, background = [], [], [], [], []
    side = np.zeros(3)                                   # side-view pairs: person error, copy's error, area
    with torch.no_grad():
        for _, batch in zip(range(max(1, eval_pairs // 64)), test):
            pairs = test.pairs[target_rows.integers(0, len(test.pairs), 64)]
            fg = torch.from_numpy(store.read(pairs[:, 1], "masks") > 0)[:, None].float()
            source, driving, maps = split_batch(batch)
            out = model(source, driving, maps)
            ours.append(float(rec(out["prediction"], driving)))
            background.append(float(out["masks_driving"][:, 0].mean()))
            copy.append(float(rec(source, driving)))
            area = fg.sum().clamp_min(1) * 3
            err, err_copy = (((x - driving).abs() * fg).sum(dim=(1, 2, 3)) for x in (out["prediction"], source))
            person.append(float(err.sum() / area))
            person_copy.append(float(err_copy.sum() / area))
            on = torch.from_numpy(side_row[pairs[:, 0]])
            side += [float(err[on].sum()), float(err_copy[on].sum()), float(fg[on].sum() * 3)]
    return {"rec": float(np.mean(ours)), "copy": float(np.mean(copy)), "person": float(np.mean(person)),
            "person_copy": float(np.mean(person_copy)), "person_side": side[0] / max(side[2], 1),
            "person_side_copy": side[1] / max(side[2], 1), "background_mass": float(np.mean(background))}


def evaluate_checkpoints(args) -> None:
    """``--evaluate``: :func:`evaluate` for each trained segmenter, printed as a table."""
    import pandas as pd
    import torch

    from hspreid.data.frames import FrameStore
    from hspreid.segmentation import load_segmenter

    torch.set_num_threads(args.threads)
    store, index = FrameStore(args.frames), pd.read_parquet(args.index)
    gap = segmentation_block(args.params).get("gap", 3)
    print(f"{'segmenter':<60} {'eq.6 test':>9} {'/ copy':>7} {'person L1':>9} {'background mass':>15}")
    for path in args.evaluate:
        model = load_segmenter(path, for_training=True)[0]
        r = evaluate(model, store, index, gap, args.eval_pairs, args.root)
        print(f"{path:<60} {r['rec']:>9.4f} {r['rec'] / r['copy']:>7.3f} {r['person']:>9.4f} "
              f"{r['background_mass']:>15.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default=str(REPO / "results/synth_mars/frames.zarr"))
    ap.add_argument("--index", default=str(REPO / "results/synth_mars/index.parquet"))
    ap.add_argument("--root", default=str(REPO / "data/synth_mars"), help="the data set (ground_truth/images.csv: "
                    "each frame's view)")
    ap.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=PARTITIONS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--params", default="{}", help="JSON keys over the ss_hsp segmentation block")
    ap.add_argument("--eval-pairs", type=int, default=512, help="test pairs the eq. 6 loss is measured on")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--jobs", type=int, default=1, help="workers run at once (one per core at most)")
    ap.add_argument("--motion", default="learned", choices=("learned", "centroid"),
                    help="fixed partitions: the parts' shifts and affines from the U-Net's heads (learned), or "
                         "each part translating with its centroid (centroid)")
    ap.add_argument("--evaluate", nargs="+", default=None, metavar="SEGMENTER_PT",
                    help="instead of training: the same test measures for trained segmenter checkpoints (the "
                         "pretrain_segmentation stage's segmenter.pt), with their own maps")
    ap.add_argument("--worker", default=None, choices=PARTITIONS, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.partition = args.worker
        emit(worker(args))
        return
    if args.evaluate:
        evaluate_checkpoints(args)
        return
    if args.motion == "centroid" and "learned" in args.partitions:
        ap.error("--motion centroid fixes the motion of fixed partitions; leave 'learned' out")
    block = segmentation_block(args.params)
    print(runtime_line("cpu", args.threads))
    print(f"frames {args.frames}; segmenter at {block['seg_size']}, gap {block.get('gap', 3)}, "
          f"{block['steps']} steps; eq. 6 on {args.eval_pairs} test pairs; motion {args.motion}")
    common = ["--frames", args.frames, "--index", args.index, "--root", args.root, "--params", args.params, "--threads",
              str(args.threads), "--eval-pairs", str(args.eval_pairs), "--motion", args.motion]
    runs = [(p, s) for p in args.partitions for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda r: run_worker(__file__, f"{r[0]} seed {r[1]}", "--worker", r[0], "--seed",
                                                  str(r[1]), *common), runs))
    base = {r["seed"]: r for r in rows if r["partition"] == "foreground"}
    print(f"{'partition':<13} {'seed':>4} {'eq.6 test':>9} {'/ copy':>7} {'/ foreground':>12} {'person L1':>9} "
          f"{'/ copy':>7} {'/ foreground':>12} {'side views':>10} {'/ copy':>7} {'/ foreground':>12} {'train s':>8}")
    def ratio(r: dict, key: str) -> str:
        b = base.get(r["seed"])
        return f"{r[key] / b[key]:.3f}" if b else "-"

    for r in rows:
        print(f"{r['partition']:<13} {r['seed']:>4} {r['rec']:>9.4f} {r['rec'] / r['copy']:>7.3f} "
              f"{ratio(r, 'rec'):>12} {r['person']:>9.4f} {r['person'] / r['person_copy']:>7.3f} "
              f"{ratio(r, 'person'):>12} "
              f"{r['person_side']:>10.4f} {r['person_side'] / r['person_side_copy']:>7.3f} "
              f"{ratio(r, 'person_side'):>12} {r['seconds']:>8.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
