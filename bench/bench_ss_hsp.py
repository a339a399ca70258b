"""SS-HSP re-ID model (the second stage): training and inference throughput in frames/s, against the
baseline measured in the same run (Table 3's "Basel.": the same backbone, global feature, TAP).

    python bench/bench_ss_hsp.py [--config cpu|paper] [--device cpu|cuda|all] [--steps 5] [--clips 64]
                                 [--threads 1]

Both models come from the method files (``config/methods/ss_hsp.yaml``, ``baseline.yaml``); ``--config
cpu`` applies ``config/datasets/synth_mars.yaml``'s overrides (ResNet-18, 64 x 32 frames, T = 4, the
CPU-sized segmenter at 32 x 16), ``paper`` keeps the paper's settings (ResNet-50 with last stride 1,
256 x 128, T = 8, the 64 x 32 segmenter). Clips are random uint8, so the figures are the networks'
alone, not the frame store's. Each device runs in a fresh worker process:

* training: ``--steps`` optimiser steps (forward, the method's losses, backward, Adam) on batches of
  P x K clips of T frames (the method's ``num_ids`` x ``num_instances``), after one warm-up step;
* inference: ``--clips`` clips of T frames through the model in eval mode (the test embedding).

The ratio column is the baseline's frames/s over SS-HSP's: what the segmenter, the K + 1 part
features, the motion branch and the temporal relation blocks cost on top of the backbone.
"""
from __future__ import annotations

import argparse
import time

from _common import REPO, add_device_option, chosen_devices, emit, run_worker, runtime_line

METHODS = ("baseline", "ss_hsp")
FRAME_SIZES = {"cpu": (64, 32), "paper": (256, 128)}


def method_config(name: str, config: str) -> dict:
    """A method's configuration as the workflow resolves it (``cpu``: with synth_mars's overrides)."""
    from hspreid.config import load_yaml, resolve_extends, resolve_method
    from hspreid.models.ss_hsp import segmenter_architecture

    entries = {p.stem: load_yaml(p) for p in (REPO / "config/methods").glob("*.yaml")}
    methods, lineage = resolve_extends(entries)
    cfg = methods[name]
    if config == "cpu":
        cfg = resolve_method(cfg, load_yaml(REPO / "config/datasets/synth_mars.yaml"), lineage[name])
    if cfg["model"]["name"] == "ss_hsp":
        cfg["model"]["segmenter"] = segmenter_architecture(cfg.get("segmentation"))
    return cfg


def worker(args) -> dict:
    import torch

    from hspreid.losses import Criterion
    from hspreid.models import build_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = method_config(args.method, args.config)
    num_classes = 100
    torch.manual_seed(0)
    model = build_model(cfg["model"], num_classes).to(device)
    criterion = Criterion(cfg["losses"])
    train = cfg["train"]
    p, k, t = train["num_ids"], train["num_instances"], train["num_frames"]
    h, w = FRAME_SIZES[args.config]
    gen = torch.Generator().manual_seed(0)

    def clips(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, t, 3, h, w), dtype=torch.uint8, generator=gen).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    labels = torch.arange(p, device=device).repeat_interleave(k)
    batch = {"label": labels, "camid": torch.zeros_like(labels)}

    def step(frames: torch.Tensor) -> None:
        loss, _ = criterion(model(frames), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    out: dict = {"method": args.method, "device": str(device), "clip": [t, h, w], "batch_clips": p * k}
    model.train()
    step(clips(p * k))                                                      # warm-up
    sync()
    seconds = 0.0
    for _ in range(args.steps):
        x = clips(p * k)
        sync()
        t0 = time.perf_counter()
        step(x)
        sync()
        seconds += time.perf_counter() - t0
    out["train_frames_per_s"] = args.steps * p * k * t / seconds
    model.eval()
    x = clips(args.clips)
    with torch.inference_mode():
        model(x[:args.infer_batch])                                        # warm-up
        sync()
        t0 = time.perf_counter()
        for i in range(0, len(x), args.infer_batch):
            model(x[i:i + args.infer_batch])["embedding"]["global"].sum().item()
        sync()
    out["infer_frames_per_s"] = len(x) * t / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="cpu", choices=["cpu", "paper"])
    add_device_option(ap)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--clips", type=int, default=64, help="clips embedded (inference)")
    ap.add_argument("--infer-batch", type=int, default=32, help="clips per inference forward")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-vCPU machine)")
    ap.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        emit(worker(args))
        return
    devices = chosen_devices(args.device)
    print(f"SS-HSP re-ID model vs the baseline ({args.config} config): {args.steps} timed training steps, "
          f"{args.clips} clips embedded ({args.infer_batch} per forward)")
    print(runtime_line(", ".join(devices), args.threads))
    print(f"{'device':<8}{'method':<10}{'clip T x H x W':>16}{'batch':>7}{'train frames/s':>16}"
          f"{'infer frames/s':>16}")
    for dev in devices:
        rows = {}
        for method in METHODS:
            r = run_worker(__file__, f"{dev} {method}", "--worker", "--method", method, "--config", args.config,
                           "--device", dev, "--steps", str(args.steps), "--clips", str(args.clips),
                           "--infer-batch", str(args.infer_batch), "--threads", str(args.threads))
            rows[method] = r
            clip = " x ".join(map(str, r["clip"]))
            print(f"{dev:<8}{method:<10}{clip:>16}{r['batch_clips']:>7}{r['train_frames_per_s']:>16.1f}"
                  f"{r['infer_frames_per_s']:>16.1f}")
        base, ours = rows["baseline"], rows["ss_hsp"]
        print(f"{dev:<8}{'cost x':<10}{'':>16}{'':>7}{base['train_frames_per_s'] / ours['train_frames_per_s']:>16.2f}"
              f"{base['infer_frames_per_s'] / ours['infer_frames_per_s']:>16.2f}   (baseline frames/s / SS-HSP's)")


if __name__ == "__main__":
    main()
