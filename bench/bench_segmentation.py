"""SS-HSP co-part segmenter: pre-training throughput (frame pairs/s) and inference throughput (frames/s).

    python bench/bench_segmentation.py [--config cpu|paper] [--device cpu|cuda|all] [--batch 16]
                                       [--steps 10] [--frames 512] [--threads 1]

Frames are random uint8 [n, 64, 32, 3] (the synthetic sets' size; ``--height/--width`` to change), so the
figures are the network's alone, not the frame store's. Each device runs in a fresh worker process:

* pre-training: ``--steps`` optimiser steps of ``pretrain_segmenter`` (forward of both frames, eq. 1-3,
  predictor, L_rec + L_equ + L_geo, backward, Adam) after two warm-up steps -> frame pairs/s;
* inference: ``segment_store``-style batched segmentation (``--infer-batch`` frames per forward) of
  ``--frames`` frames -> frames/s, beside the reference measured in the same run: the naive per-frame
  loop (one forward per frame, as a clip-by-clip caller would do) -> the speed-up of batching.

``--config cpu`` is the CPU-sized segmenter recommended for the synthetic sets (segmentation at 32 x 16,
U-Net 32..128 channels, predictor 32..128 with 2 residual blocks, L1 + SSIM reconstruction), ``paper`` the
paper's widths (64 x 32, U-Net 64..1024 channels, predictor 64..512 with 5 residual blocks, VGG-19 with
random weights); both with the stage's other defaults (affine background motion, ...).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from _common import add_device_option, chosen_devices, emit, run_worker, runtime_line

CONFIGS = {
    # the synth_mars override (CPU-sized; see the stage's defaults in hspreid/segmentation/pretrain.py)
    "cpu": {"num_parts": 6, "seg_size": [32, 16], "unet_channels": 16, "unet_max_channels": 128,
            "predictor_channels": 32, "predictor_max_channels": 128, "num_res_blocks": 2},
    # the paper's widths at H' x W' = 64 x 32, VGG-19 (random weights) reconstruction
    "paper": {"num_parts": 6, "seg_size": [64, 32], "unet_channels": 32, "unet_max_channels": 1024,
              "head_kernel": 7, "predictor_channels": 64, "predictor_max_channels": 512, "num_res_blocks": 5,
              "reconstruction": "vgg_random"},
}


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from hspreid.segmentation import CoPartSegmenter, frames_to_tensor, pretrain_segmenter
    from hspreid.segmentation.pretrain import split_params

    device = torch.device(args.device)
    config, _ = split_params(CONFIGS[args.config])                  # with the stage's defaults
    if config["seg_size"][0] > args.height:
        config["seg_size"] = [args.height, args.width]
    torch.manual_seed(0)
    model = CoPartSegmenter(**config)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (max(args.frames, 2 * args.batch), args.height, args.width, 3), dtype=np.uint8)

    def pairs():
        while True:
            rows = rng.integers(0, len(frames), (args.batch, 2))
            x = frames_to_tensor(frames[rows.reshape(-1)]).view(args.batch, 2, 3, args.height, args.width)
            yield x[:, 0], x[:, 1]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    out: dict = {"device": str(device), "config": args.config, "batch": args.batch}
    if args.steps:
        pretrain_segmenter(model, pairs(), steps=2, device=device, log_every=10 ** 9)       # warm-up
        sync()
        t0 = time.perf_counter()
        pretrain_segmenter(model, pairs(), steps=args.steps, device=device, log_every=10 ** 9)
        sync()
        out["train_seconds"] = time.perf_counter() - t0
        out["train_pairs_per_s"] = args.steps * args.batch / out["train_seconds"]
    model.to(device).eval()
    x = frames_to_tensor(frames[:args.frames])

    def batched() -> np.ndarray:
        labels = []
        with torch.inference_mode():
            for i in range(0, len(x), args.infer_batch):
                m = model.segment_raw(x[i:i + args.infer_batch].to(device))["masks"]
                labels.append(m.argmax(1).to(torch.uint8).cpu().numpy())
        return np.concatenate(labels)

    def per_frame() -> np.ndarray:
        labels = []
        with torch.inference_mode():
            for i in range(len(x)):
                m = model.segment_raw(x[i:i + 1].to(device))["masks"]
                labels.append(m.argmax(1).to(torch.uint8).cpu().numpy())
        return np.concatenate(labels)

    for name, fn in (("batched", batched), ("per_frame", per_frame)):
        fn() if device.type == "cuda" else None                                          # CUDA warm-up
        sync()
        t0 = time.perf_counter()
        labels = fn()
        sync()
        out[f"{name}_seconds"] = time.perf_counter() - t0
        out[f"{name}_frames_per_s"] = len(x) / out[f"{name}_seconds"]
        out[f"{name}_checksum"] = int(labels.astype(np.int64).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="cpu", choices=["cpu", "paper"])
    add_device_option(ap)
    ap.add_argument("--batch", type=int, default=16, help="frame pairs per training step")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps (0: inference only)")
    ap.add_argument("--frames", type=int, default=512, help="frames segmented (inference)")
    ap.add_argument("--infer-batch", type=int, default=256)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-vCPU machine)")
    ap.add_argument("--worker", action="store_true")
    args = ap.parse_args()
    if args.worker:
        emit(worker(args))
        return
    devices = chosen_devices(args.device)
    print(f"SS-HSP segmenter ({args.config} config), frames {args.height} x {args.width}, {args.batch} pairs per "
          f"step, {args.steps} timed steps, {args.frames} frames segmented ({args.infer_batch} per batch)")
    print(runtime_line(", ".join(devices), args.threads))
    print(f"{'device':<8}{'train pairs/s':>15}{'infer frames/s':>16}{'per-frame loop frames/s':>25}{'batching x':>12}")
    for dev in devices:
        wargs = ["--worker", "--config", args.config, "--device", dev, "--batch", str(args.batch),
                 "--steps", str(args.steps), "--frames", str(args.frames), "--infer-batch", str(args.infer_batch),
                 "--height", str(args.height), "--width", str(args.width), "--threads", str(args.threads)]
        r = run_worker(__file__, dev, *wargs)
        same = "" if r["batched_checksum"] == r["per_frame_checksum"] else "  (labels differ!)"
        train = f"{r['train_pairs_per_s']:>15.1f}" if "train_pairs_per_s" in r else f"{'-':>15}"
        print(f"{dev:<8}{train}{r['batched_frames_per_s']:>16.1f}{r['per_frame_frames_per_s']:>25.1f}"
              f"{r['batched_frames_per_s'] / r['per_frame_frames_per_s']:>12.1f}{same}")


if __name__ == "__main__":
    main()
