"""One round of HCGA co-parsing on a Market-like training set: ours (batched) vs the per-identity loop.

    python bench/bench_coparse.py [--ids 16] [--channels 2048] [--height 16] [--width 8]
                                  [--device cpu|cuda] [--ids-per-batch 16] [--max-steps 32]
                                  [--min-labels 18] [--threads 1] [--skip-split]

Market-1501 train: 12,936 maps from 751 identities (~17 images each, 2..72). ``--ids`` takes the
first identities of a Market-like count list (that of bench_kmeans.py). Default maps are those of
a ResNet-50 at 256 x 128 (2048 x 16 x 8; HCGA's HRNet-W32 gives 256 x 64 x 32: ``--channels 256
--height 64 --width 32``). Maps are generated identity by identity on the fly: per camera a
background vector with a smooth spatial drift, and inside a jittered person box a feature that
blends down the rows between 6 identity-specific part vectors, plus noise -- enough distinct
vectors that the number of predicted labels falls gradually, as on real maps.

Each measurement runs in a fresh subprocess on the same generated stream:

* ours: :func:`hspreid.parsing.coparse.coparse_identities` -- ``--ids-per-batch`` identities
  stepped together (one grouped network on CUDA, per-identity convs on the CPU), per-identity
  stopping, ``layer1="auto"`` (the exact dual "kernel" form of the first conv where it is cheaper:
  the default ResNet maps, not HRNet's);
* ours-conv: the same with the first conv kept as a convolution (``layer1="conv"``) -- what
  batching alone gives;
* loop: the reference approach -- one identity at a time, an ``nn.Sequential`` decoder (the
  reference ``MyNet`` layout without the conv biases, same initial weights), ``torch.optim.SGD``,
  the same loss functions and CPLR, ``unique()`` of the labels every step.

Times (wall) exclude generating the maps. Peak memory: CPU = peak RSS (VmHWM, reset at start)
minus RSS before the run; CUDA = ``torch.cuda.max_memory_allocated``. Agreement: the fraction of
pixels whose final part label is the same as the loop's, and the identities that stopped after
the same number of steps (float32 rounding differs between the forms; the argmax self-labelling
can amplify it -- the tests check exact equality in float64).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import Measurement, emit, run_worker, runtime_line
from bench_kmeans import MARKET_IDS, MARKET_MAPS, image_counts

NUM_CAMS = 6


def identity_maps(pid: int, n: int, C: int, H: int, W: int, device: str, seed: int = 0):
    """[n, C, H, W] float32 maps and camids [n] of one identity (see the module docstring)."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed * 100003 + pid)
    cams_of_id = torch.randperm(NUM_CAMS, generator=g)[: int(torch.randint(2, 5, (1,), generator=g))]
    camids = cams_of_id[torch.randint(len(cams_of_id), (n,), generator=g)].sort().values
    shared = torch.randn(C, generator=g)
    protos = 0.6 * shared + 0.8 * torch.randn(6, C, generator=g)
    bg = 0.7 * torch.randn(NUM_CAMS, C, generator=g)
    drift = 0.5 * torch.randn(NUM_CAMS, 2, C, generator=g)
    rows = torch.linspace(-1, 1, H)
    cols = torch.linspace(-1, 1, W)
    x = bg[camids][:, :, None, None] + drift[camids, 0][:, :, None, None] * rows[:, None] \
        + drift[camids, 1][:, :, None, None] * cols[None, :]
    jit = torch.randint(-1, 2, (n, 4), generator=g).float()
    top, bot = 0.08 * H + jit[:, :1], 0.92 * H + jit[:, 1:2]
    r = torch.arange(H, dtype=torch.float32)[None]
    c = torch.arange(W, dtype=torch.float32)[None]
    inside_r = (r >= top) & (r < bot)
    inside_c = (c >= 0.25 * W + jit[:, 2:3]) & (c < 0.75 * W + jit[:, 3:4])
    pos = ((r - top) / (bot - top) * 6 - 0.5).clamp(0, 5)
    wgt = (1 - (pos[..., None] - torch.arange(6.0)).abs()).clamp(min=0)            # [n, H, 6]
    body = torch.einsum("nhk,kc->nch", wgt, protos)[..., None]                      # [n, C, H, 1]
    fg = (inside_r[:, :, None] & inside_c[:, None, :]).float()[:, None]            # [n, 1, H, W]
    x = x * (1 - fg) + body * fg + 0.5 * torch.randn(n, C, H, W, generator=g)
    return x.to(device), camids.numpy()


def stream(counts: np.ndarray, args, timer: dict):
    """(maps, pids, rows, camids) chunks, one identity per chunk; generation time to timer['gen']."""
    import torch

    row = 0
    for pid, n in enumerate(counts):
        t0 = time.perf_counter()
        f, cams = identity_maps(pid, int(n), args.channels, args.height, args.width, args.device)
        if args.device == "cuda":
            torch.cuda.synchronize()
        timer["gen"] += time.perf_counter() - t0
        yield f, np.full(len(f), pid), np.arange(row, row + len(f)), cams
        row += len(f)


def loop_identity(f, pid: int, cams: np.ndarray, args):
    """The reference approach for one identity: raw decoder training with torch.optim.SGD, then
    CPLR. Returns (uint8 labels [n, h, w], steps)."""
    import torch
    from torch import nn

    from hspreid.parsing.coparse_engine import init_decoder
    from hspreid.parsing.coparse_losses import (background_consistency_loss, local_consistency_loss,
                                                semantic_consistency_loss)
    from hspreid.parsing.cplr import cplr

    p = init_decoder(pid, f.shape[1], hidden=args.hidden, out_channels=args.out_channels)
    convs = [nn.Conv2d(f.shape[1], args.hidden, 3, padding=1, bias=False),
             nn.Conv2d(args.hidden, args.out_channels, 1, bias=False),
             nn.Conv2d(args.out_channels, args.hidden, 3, padding=1, bias=False),
             nn.Conv2d(args.hidden, args.out_channels, 1, bias=False)]
    layers = []
    for i, cv in enumerate(convs, 1):
        cv.weight.data = p[f"w{i}"].clone()
        layers += [cv, nn.BatchNorm2d(cv.out_channels)] + ([nn.ReLU()] if i < 4 else [])
    net = nn.Sequential(*layers).to(f.device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for t in range(1, args.max_steps + 1):
        y = net(f)
        lab = y.argmax(1)
        if lab.unique().numel() < args.min_labels or t == args.max_steps:
            break
        loss = semantic_consistency_loss(y) + 2.0 * local_consistency_loss(y) + background_consistency_loss(y, cams)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return cplr(lab, 4), t


def worker(kind: str, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from hspreid.parsing import CoparseOptions, coparse_identities

    counts = image_counts(MARKET_IDS, MARKET_MAPS)[: args.ids]
    n_maps = int(counts.sum())
    labels = np.zeros((n_maps, args.height, args.width), np.uint8)
    steps = np.zeros(args.ids, np.int64)
    timer = {"gen": 0.0}
    if args.device == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    layer1 = {"ours": "auto", "ours-conv": "conv"}.get(kind)
    meas = Measurement()
    if kind == "loop":
        for f, pids, rows, cams in stream(counts, args, timer):
            lab, steps[int(pids[0])] = loop_identity(f, int(pids[0]), cams, args)
            labels[rows] = lab.cpu().numpy()
    else:
        def keep(st: dict) -> None:
            steps[st["pid"]] = st["steps"]
        options = CoparseOptions(ids_per_batch=args.ids_per_batch, min_labels=args.min_labels,
                                 max_steps=args.max_steps, hidden=args.hidden, out_channels=args.out_channels,
                                 layer1=layer1)
        for rows, lab in coparse_identities(stream(counts, args, timer), 4, options, on_stats=keep):
            labels[rows] = lab
    if args.device == "cuda":
        torch.cuda.synchronize()
    total = meas.seconds()
    out = {"kind": kind, "n_ids": args.ids, "n_maps": n_maps, "seconds": total - timer["gen"],
           "gen_seconds": timer["gen"], "peak_rss_mb": meas.peak_increase_mb(), "steps": steps.tolist()}
    if args.device == "cuda":
        out["peak_gpu_mb"] = (torch.cuda.max_memory_allocated() - base_gpu) / 2 ** 20
    np.save(f"{args.out}/{kind}.npy", labels)
    return out


def run_sub(kind: str, args, out_dir: str) -> dict:
    worker_args = ["--worker", kind, "--out", out_dir]
    for key in ("ids", "channels", "height", "width", "device", "ids_per_batch", "max_steps", "min_labels",
                "hidden", "out_channels", "threads"):
        worker_args += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return run_worker(__file__, kind, *worker_args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=None, help="identities (default 16 on CPU, 96 on CUDA)")
    ap.add_argument("--channels", type=int, default=2048)
    ap.add_argument("--height", type=int, default=16)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--ids-per-batch", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=32)
    ap.add_argument("--min-labels", type=int, default=18)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--out-channels", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for all methods (default 1: on a "
                    "shared 2-vCPU machine a descheduled second OpenMP thread makes every op wait)")
    ap.add_argument("--skip-split", action="store_true", help="do not run ours-conv")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.ids is None:
        args.ids = 96 if args.device == "cuda" else 16
    if args.worker:
        emit(worker(args.worker, args))
        return
    print(f"HCGA co-parsing, one round: {args.ids} Market-like identities, {args.channels}x{args.height}x"
          f"{args.width} maps, decoder {args.channels}->{args.hidden}->{args.out_channels}, max_steps "
          f"{args.max_steps}, min_labels {args.min_labels}, ids_per_batch {args.ids_per_batch}")
    print(runtime_line(args.device, args.threads))
    kinds = ["ours"] + ([] if args.skip_split else ["ours-conv"]) + ["loop"]
    with tempfile.TemporaryDirectory() as tmp:
        args.out = tmp
        rows = [run_sub(k, args, tmp) for k in kinds]
        labels = {k: np.load(f"{tmp}/{k}.npy") for k in kinds}
    gpu = args.device == "cuda"
    print(f"{'method':<12}{'ids':>5}{'maps':>7}{'wall s':>9}{'gen s':>8}{'mean steps':>12}{'peak RSS MB':>13}"
          + (f"{'peak GPU MB':>13}" if gpu else ""))
    for r in rows:
        print(f"{r['kind']:<12}{r['n_ids']:>5}{r['n_maps']:>7}{r['seconds']:>9.2f}{r['gen_seconds']:>8.1f}"
              f"{np.mean(r['steps']):>12.1f}{r['peak_rss_mb']:>13.0f}"
              + (f"{r.get('peak_gpu_mb', float('nan')):>13.0f}" if gpu else ""))
    ref = rows[-1]
    for r in rows[:-1]:
        same_px = float((labels[r["kind"]] == labels["loop"]).mean())
        same_steps = int((np.array(r["steps"]) == np.array(ref["steps"])).sum())
        print(f"speed-up {r['kind']} vs loop: {ref['seconds'] / r['seconds']:.1f}x wall ({ref['seconds']:.2f} s vs "
              f"{r['seconds']:.2f} s, excluding map generation); labels equal to the loop's on {same_px:.1%} of "
              f"pixels, same step count for {same_steps}/{len(ref['steps'])} identities")


if __name__ == "__main__":
    main()
