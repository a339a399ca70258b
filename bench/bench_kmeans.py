"""One round of ISP pseudo-label clustering at Market-1501 size: ours (batched) vs the reference approach.

    python bench/bench_kmeans.py [--scale 0.1] [--device cpu|cuda] [--parts 7] [--iters 20]
                                 [--ids-per-batch N] [--no-sharpen] [--skip-reference]

Market-1501 train: 12,936 maps of 256 x 64 x 32 from 751 identities (~17 images each). ``--scale``
shrinks the number of identities (and maps) -- 0.1 by default so a CPU run stays within a few
minutes; ``--scale 1`` is the full size. Feature maps are generated identity by identity on the fly
(a person box split into K-1 horizontal bands of identity-specific, correlated, noisy feature
vectors over a low-norm background), so the benchmark never holds the 27 GB of a full round.

Each measurement runs in a fresh subprocess on the same generated stream:

* ours: :func:`hspreid.parsing.label_identities` -- exact 1-D 2-means, then masked batched k-means
  (k-means++ seeded on a subsample, ``--iters`` cap), ``--ids-per-batch`` identities and at most
  ``--max-points`` pixels at a time; run at two identity counts (N and 2N) to show that peak
  memory is set by the batch, not by the number of identities;
* reference: ISP's approach as a per-identity Python loop with scikit-learn -- ``KMeans(2)`` on the
  1-D activations, then ``KMeans(K-1)`` on the L2-normalised foreground pixels, ``n_init=1`` and
  the same iteration cap, ranking by mean row with numpy (vectorised; the original code does
  that part with per-pixel Python loops, which would only make it slower).

Times (wall and CPU) exclude generating the features; labels are written to a zarr array as
they come (:func:`hspreid.parsing.write_rows`) by both methods. Peak memory: CPU = peak RSS (VmHWM, reset at start) minus
RSS before the run; CUDA = ``torch.cuda.max_memory_allocated`` (reference: host RSS, it runs on
the CPU). Quality: after the timed run each labelling is scored by the same float64 evaluator --
the SSE of its fg/bg split of the activations and the SSE of the normalised foreground features
around their part means (the k-means objective of the partition), summed over identities.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import Measurement, emit, run_worker, runtime_line

MARKET_MAPS, MARKET_IDS = 12936, 751
C, H, W = 256, 64, 32


def image_counts(n_ids: int, n_maps: int, seed: int = 0) -> np.ndarray:
    """Market-like images per identity (2..72, mean n_maps / n_ids)."""
    rng = np.random.default_rng(seed)
    c = np.clip(np.round(rng.lognormal(np.log(n_maps / n_ids) - 0.1, 0.45, n_ids)), 2, 72).astype(int)
    while c.sum() != n_maps:
        i = rng.integers(n_ids)
        step = 1 if c.sum() < n_maps else -1
        if 2 <= c[i] + step <= 72:
            c[i] += step
    return c


def identity_maps(pid: int, n: int, parts: int, device: str, seed: int = 0):
    """[n, 256, 64, 32] float32 maps of one identity: inside a jittered person box, a feature that
    blends smoothly from one identity-specific part vector to the next down the rows (so part
    boundaries are fuzzy and Lloyd needs its iterations), plus noise; low-norm noise elsewhere."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed * 100003 + pid)
    shared = torch.randn(C, generator=g, device=device)
    protos = 0.6 * shared + 0.8 * torch.randn(parts - 1, C, generator=g, device=device)
    jit = torch.randint(-3, 4, (n, 4), generator=g, device=device).float()
    rows = torch.arange(H, device=device, dtype=torch.float32)[None]
    cols = torch.arange(W, device=device, dtype=torch.float32)[None]
    top, bot = 4 + jit[:, :1], 60 + jit[:, 1:2]
    inside_r = (rows >= top) & (rows < bot)                                       # [n, H]
    inside_c = (cols >= 8 + jit[:, 2:3]) & (cols < 24 + jit[:, 3:4])              # [n, W]
    pos = ((rows - top) / (bot - top) * (parts - 1) - 0.5).clamp(0, parts - 2)    # [n, H] in part units
    kk = torch.arange(parts - 1, device=device, dtype=torch.float32)
    wgt = (1 - (pos[..., None] - kk).abs()).clamp(min=0) * inside_r[..., None]    # [n, H, K-1]
    body = torch.einsum("nhk,kc->nch", wgt, protos)                               # [n, C, H]
    fgm = (inside_r[:, :, None] & inside_c[:, None, :]).float()                   # [n, H, W]
    x = torch.randn(n, C, H, W, generator=g, device=device).mul_(0.45)
    x.mul_(1 + 0.8 * fgm[:, None]).add_(body[..., None] * fgm[:, None])
    return x


def stream(n_ids: int, counts: np.ndarray, parts: int, device: str, timer: dict):
    """(features, pids, rows) chunks, one identity per chunk; generation time goes to timer['gen']."""
    import torch

    row = 0
    for pid in range(n_ids):
        t0, c0 = time.perf_counter(), time.process_time()
        # pixel-major (channels_last) maps, as the reference keeps them ((N, H*W, C) on the host)
        f = identity_maps(pid, int(counts[pid]), parts, device).contiguous(memory_format=torch.channels_last)
        if device == "cuda":
            torch.cuda.synchronize()
        timer["gen"] += time.perf_counter() - t0
        timer["gen_cpu"] += time.process_time() - c0
        n = f.shape[0]
        yield f, np.full(n, pid), np.arange(row, row + n)
        row += n


def reference_identity(f: np.ndarray, parts: int, iters: int, sharpen: bool, seed: int) -> np.ndarray:
    """ISP's per-identity cascaded clustering with scikit-learn; f [n, C, h, w] float32 (CPU,
    pixel-major memory). Returns the uint8 label maps [n, h, w]."""
    from sklearn.cluster import KMeans

    n = f.shape[0]
    X = f.transpose(0, 2, 3, 1).reshape(n, H * W, C)                  # (n, hw, C) as in the reference
    nrm = np.linalg.norm(X, axis=2)
    a = nrm / np.maximum(nrm.max(1, keepdims=True), 1e-12)
    if sharpen:
        a = 1.0 / (1.0 + np.exp(-10.0 * a + 2.0))
    km = KMeans(2, n_init=1, max_iter=iters, random_state=seed).fit(a.reshape(-1, 1))
    fg = km.labels_ == int(np.argmax(km.cluster_centers_[:, 0]))
    P = X.reshape(-1, C)[fg] / np.maximum(nrm.reshape(-1)[fg], 1e-12)[:, None]
    k = min(parts - 1, len(P))
    km2 = KMeans(k, n_init=1, max_iter=iters, random_state=seed).fit(P)
    rows = (np.flatnonzero(fg) % (H * W)) // W
    cnt = np.bincount(km2.labels_, minlength=k)
    mean_h = np.bincount(km2.labels_, rows, minlength=k) / np.maximum(cnt, 1)
    rank = np.argsort(np.argsort(mean_h, kind="stable"), kind="stable") + 1
    lab = np.zeros(n * H * W, np.uint8)
    lab[fg] = rank[km2.labels_]
    return lab.reshape(n, H, W)


def evaluate(f: np.ndarray, lab: np.ndarray, parts: int, sharpen: bool) -> tuple[float, float, int]:
    """The objective values of a labelling, computed the same way (float64) for both methods:
    (SSE of the 1-D fg/bg split of the activations, SSE of the normalised foreground features
    around their part means -- the k-means inertia of the partition at its optimal centroids,
    a lower bound of the inertia either k-means reports --, number of foreground pixels)."""
    n = f.shape[0]
    X = f.transpose(0, 2, 3, 1).reshape(-1, C).astype(np.float64)
    nrm = np.linalg.norm(X, axis=1)
    a = (nrm.reshape(n, -1) / np.maximum(nrm.reshape(n, -1).max(1, keepdims=True), 1e-12)).reshape(-1)
    if sharpen:
        a = 1.0 / (1.0 + np.exp(-10.0 * a + 2.0))
    lab = lab.reshape(-1)
    fg = lab > 0
    sse1 = sum(float(((a[m] - a[m].mean()) ** 2).sum()) for m in (fg, ~fg) if m.any())
    P = X[fg] / np.maximum(nrm[fg], 1e-12)[:, None]
    sse2 = 0.0
    for p in range(1, parts):
        Q = P[lab[fg] == p]
        if len(Q):
            sse2 += float(((Q - Q.mean(0)) ** 2).sum())
    return sse1, sse2, int(fg.sum())


def worker(kind: str, n_ids: int, args, out_dir: str) -> dict:
    import torch
    import zarr
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    from hspreid.parsing import KMeansOptions, label_identities, write_rows

    counts = image_counts(MARKET_IDS, MARKET_MAPS)[:n_ids]
    n_maps = int(counts.sum())
    labels = zarr.open_array(f"{out_dir}/{kind}_{n_ids}.zarr", mode="w", shape=(n_maps, H, W), chunks=(256, H, W),
                             dtype="uint8")
    timer = {"gen": 0.0, "gen_cpu": 0.0}
    if args.device == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    with threadpool_limits(args.threads):
        meas = Measurement()
        cpu0 = time.process_time()
        if kind == "ours":
            options = KMeansOptions(ids_per_batch=args.ids_per_batch, iters=args.iters, sharpen=args.sharpen,
                                    init_sample=args.init_sample or None, max_points=args.max_points or None)
            for rows, lab in label_identities(stream(n_ids, counts, args.parts, args.device, timer), args.parts,
                                              options, device=args.device):
                write_rows(labels, rows, lab)
        else:
            for f, pids, rows in stream(n_ids, counts, args.parts, args.device, timer):
                t1, c1 = time.perf_counter(), time.process_time()
                fn = f.cpu().numpy()          # [n, C, H, W] view of pixel-major memory
                timer["gen"] += time.perf_counter() - t1
                timer["gen_cpu"] += time.process_time() - c1
                write_rows(labels, rows, reference_identity(fn, args.parts, args.iters, args.sharpen, int(pids[0])))
                del f, fn
        if args.device == "cuda":
            torch.cuda.synchronize()
        total = meas.seconds()
        cpu = time.process_time() - cpu0
        peak = meas.peak_increase_mb()
    out = {"kind": kind, "n_ids": n_ids, "n_maps": n_maps, "seconds": total - timer["gen"], "cpu_seconds": cpu - timer["gen_cpu"],
           "gen_seconds": timer["gen"], "peak_rss_mb": peak}
    if args.device == "cuda":
        out["peak_gpu_mb"] = (torch.cuda.max_memory_allocated() - base_gpu) / 2 ** 20
    if args.evaluate:
        ev, row = [], 0
        for pid in range(n_ids):
            f = identity_maps(pid, int(counts[pid]), args.parts, "cpu").contiguous(memory_format=torch.channels_last)
            ev.append(evaluate(f.numpy(), labels[row:row + len(f)], args.parts, args.sharpen))
            row += len(f)
        out["fg_sse"], out["part_sse"], out["nfg"] = (list(v) for v in zip(*ev))
    return out


def run_sub(kind: str, n_ids: int, args, out_dir: str, evaluate_: bool) -> dict:
    worker_args = ["--worker", kind, "--n-ids", str(n_ids), "--device", args.device, "--out", out_dir,
                   "--parts", str(args.parts), "--iters", str(args.iters), "--ids-per-batch", str(args.ids_per_batch),
                   "--threads", str(args.threads), "--init-sample", str(args.init_sample or 0),
                   "--max-points", str(args.max_points or 0)]
    worker_args += ([] if args.sharpen else ["--no-sharpen"]) + (["--evaluate"] if evaluate_ else [])
    return run_worker(__file__, kind, *worker_args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=None, help="fraction of Market's 751 identities (default 0.1 on "
                    "CPU, 1 on CUDA)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--parts", type=int, default=7, help="K incl. background (ISP: 7)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--ids-per-batch", type=int, default=None, help="default 16 on CPU, 64 on CUDA")
    ap.add_argument("--init-sample", type=int, default=4096, help="ours: k-means++ seeding on <= this many points "
                    "per identity (0: all points)")
    ap.add_argument("--max-points", type=int, default=None, help="ours: padded pixels per batch (default "
                    "ids_per_batch x 17 images x 64 x 32, Market's mean identity; 0: no cap)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads and BLAS/OpenMP threads of scikit-learn "
                    "(default 1: on a shared 2-vCPU machine a second OpenMP thread that gets descheduled makes every "
                    "parallel op wait a scheduler tick -- both methods then run several times slower)")
    ap.add_argument("--no-sharpen", dest="sharpen", action="store_false")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--n-ids", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--evaluate", action="store_true")
    args = ap.parse_args()
    if args.ids_per_batch is None:
        args.ids_per_batch = 64 if args.device == "cuda" else 16
    if args.max_points is None:
        args.max_points = args.ids_per_batch * 17 * H * W
    if args.worker:
        emit(worker(args.worker, args.n_ids, args, args.out))
        return
    scale = args.scale if args.scale is not None else (1.0 if args.device == "cuda" else 0.1)
    n_ids = max(2, int(round(MARKET_IDS * scale)))
    double = min(2 * n_ids, MARKET_IDS)
    print(f"ISP pseudo labels, one round: {n_ids} identities (scale {scale}), {args.parts - 1} parts, "
          f"{C}x{H}x{W} maps, iters {args.iters}, sharpen {args.sharpen}, ids_per_batch {args.ids_per_batch}, "
          f"max_points {args.max_points or 'none'}, init_sample {args.init_sample or 'all'}")
    print(runtime_line(args.device, args.threads) + f"; scikit-learn limited to {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_sub("ours", n_ids, args, tmp, evaluate_=not args.skip_reference)
        ours_double = run_sub("ours", double, args, tmp, evaluate_=False) if double > n_ids else None
        rows = [ours] + ([ours_double] if ours_double else [])
        ref = None
        if not args.skip_reference:
            ref = run_sub("reference", n_ids, args, tmp, evaluate_=True)
            rows.append(ref)
    gpu = args.device == "cuda"
    print(f"{'method':<26}{'ids':>5}{'maps':>7}{'wall s':>9}{'CPU s':>9}{'gen s':>8}{'peak RSS MB':>13}"
          + (f"{'peak GPU MB':>13}" if gpu else ""))
    for r in rows:
        name = "ours (batched torch)" if r["kind"] == "ours" else "reference (sklearn loop)"
        print(f"{name:<26}{r['n_ids']:>5}{r['n_maps']:>7}{r['seconds']:>9.2f}{r['cpu_seconds']:>9.2f}"
              f"{r['gen_seconds']:>8.1f}{r['peak_rss_mb']:>13.0f}"
              + (f"{r.get('peak_gpu_mb', float('nan')):>13.0f}" if gpu else ""))
    if ref is not None:
        o_fg, r_fg = np.array(ours["fg_sse"]), np.array(ref["fg_sse"])
        o_ps, r_ps = np.array(ours["part_sse"]), np.array(ref["part_sse"])
        same_fg = np.array(ours["nfg"]) == np.array(ref["nfg"])
        print(f"speed-up ours vs reference: {ref['seconds'] / ours['seconds']:.1f}x wall "
              f"({ref['seconds']:.2f} s vs {ours['seconds']:.2f} s, excluding feature generation)")
        print(f"fg/bg split SSE (same float64 evaluator): ours {o_fg.sum():.4f}, reference {r_fg.sum():.4f}, "
              f"ratio {o_fg.sum() / r_fg.sum():.6f}; ours <= ref on {int((o_fg <= r_fg * (1 + 1e-9)).sum())}/"
              f"{len(o_fg)} identities; same foreground on {int(same_fg.sum())}/{len(o_fg)}")
        print(f"part k-means inertia (partition SSE, same evaluator): ours {o_ps.sum():.2f}, reference "
              f"{r_ps.sum():.2f}, ratio {o_ps.sum() / r_ps.sum():.6f}; ours <= ref on "
              f"{int((o_ps <= r_ps * (1 + 1e-9)).sum())}/{len(o_ps)} identities")
    if ours_double:
        print(f"peak memory of ours at {n_ids} vs {double} identities: {ours['peak_rss_mb']:.0f} vs "
              f"{ours_double['peak_rss_mb']:.0f} MB RSS"
              + (f", {ours['peak_gpu_mb']:.0f} vs {ours_double['peak_gpu_mb']:.0f} MB GPU" if gpu else ""))


if __name__ == "__main__":
    main()
