"""One round of ISP pseudo-label clustering: ours (batched) vs the reference approach, on several structures.

    python bench/bench_kmeans.py [--scale 0.05] [--structures market,rows,patches,camera] [--ids 120]
                                 [--images 16] [--device cpu|cuda] [--parts 7] [--iters 20]
                                 [--ids-per-batch N] [--threads 1] [--no-sharpen]
                                 [--reference-foreground auto|kmeans|exact] [--skip-reference]

Structures (the generator is ``tests/parsing/_isp_reference.py``, shared with the tests):

* ``market`` -- Market-1501-like: 256 x 64 x 32 maps, Market's images per identity (~17), a person
  box whose feature blends from one part vector to the next down the rows (structure ``blend``).
  Market-1501 train has 12,936 maps of 751 identities; ``--scale`` takes that fraction of the
  identities -- 0.05 (38 identities) by default on the CPU, 1 on CUDA. Ours also runs at twice
  the identities, to show that peak memory is set by the batch, not by the number of identities.
* ``rows`` (sharp horizontal bands over a weak background), ``patches`` (Voronoi parts of unequal
  size), ``camera`` (bands plus a per-image appearance offset) -- ``--ids`` identities (120) of
  ``--images`` maps (16) of 64 x 32 x 16.

Each measurement runs in a fresh subprocess on the same generated stream, one identity at a time
(the benchmark never holds a whole round):

* ours: :func:`hspreid.parsing.label_identities` (default options) -- exact 1-D 2-means, then
  masked batched k-means (best of 4 k-means++ seedings refined on a subsample, ``--iters`` Lloyd
  cap), ``--ids-per-batch`` identities and at most ``--max-points`` pixels at a time;
* reference: ISP's approach as a per-identity Python loop with scikit-learn -- the fg/bg split of
  the 1-D activations by ``KMeans(2)`` (ISP's way; ``market`` by default) or by the exact 1-D
  2-means (the other structures by default, so that both sides cluster the same foreground and the
  part SSE ratio compares the k-means alone; ``--reference-foreground`` sets it for all), then
  ``KMeans(K-1, n_init=1, max_iter=--iters)`` on the L2-normalised foreground pixels, ranking by
  mean row with numpy (vectorised; the original code does that part with per-pixel Python loops,
  which would only make it slower).

Both sides run under ``threadpool_limits(--threads)`` with ``torch.set_num_threads(--threads)``; each
worker reports the threads it ran with (torch, and every OpenMP / BLAS pool threadpoolctl sees).
Times (wall and CPU) exclude generating the features; labels are written to a zarr array as they
come (:func:`hspreid.parsing.write_rows`) by both methods. Peak memory: CPU = peak RSS (VmHWM, reset
at start) minus RSS before the run; CUDA = ``torch.cuda.max_memory_allocated`` (reference: host RSS,
it runs on the CPU). Quality: after the timed run every labelling is scored by the same float64
evaluator -- the SSE of its fg/bg split of the activations and the SSE of the normalised foreground
features around their part means (the k-means objective of the partition), summed over identities.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
from _common import REPO, Measurement, emit, run_worker, runtime_line

if str(REPO / "tests" / "parsing") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "parsing"))

from _isp_reference import evaluate, identity_maps, reference_identity

MARKET_MAPS, MARKET_IDS = 12936, 751
SMALL = ("rows", "patches", "camera")
CASES = ("market",) + SMALL


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


def reference_foreground(case: str, choice: str) -> str:
    """The reference's fg/bg split for a case: ``choice``, where ``auto`` is ISP's KMeans(2) on
    ``market`` and the exact 1-D 2-means on the other structures."""
    if choice != "auto":
        return choice
    return "kmeans" if case == "market" else "exact"


def case_data(case: str, n_ids: int, images: int) -> tuple[str, dict, np.ndarray]:
    """(generator structure, its map size keywords, images per identity [n_ids]) of a case."""
    if case == "market":
        return "blend", {"C": 256, "H": 64, "W": 32}, image_counts(MARKET_IDS, MARKET_MAPS)[:n_ids]
    return case, {"C": 64, "H": 32, "W": 16}, np.full(n_ids, images)


def stream(case: str, n_ids: int, args, timer: dict):
    """(features, pids, rows) chunks, one identity per chunk, pixel-major (channels_last, the layout
    the reference keeps: (N, h*w, C)); generation time goes to timer['gen'] / ['gen_cpu']."""
    import torch

    structure, size, counts = case_data(case, n_ids, args.images)
    row = 0
    for pid in range(n_ids):
        t0, c0 = time.perf_counter(), time.process_time()
        f = identity_maps(structure, pid, int(counts[pid]), parts=args.parts, device=args.device, **size)
        f = f.contiguous(memory_format=torch.channels_last)
        if args.device == "cuda":
            torch.cuda.synchronize()
        timer["gen"] += time.perf_counter() - t0
        timer["gen_cpu"] += time.process_time() - c0
        n = f.shape[0]
        yield f, np.full(n, pid), np.arange(row, row + n)
        row += n


def threading() -> str:
    """The threads this process computes with: torch's, then every pool threadpoolctl finds
    (OpenMP runtimes -- scikit-learn's Lloyd --, BLAS), as ``"torch 1; openmp 1 (libgomp), ..."``."""
    import torch
    from threadpoolctl import threadpool_info

    pools = sorted({f"{p['user_api']} {p['num_threads']} ({p['prefix']})" for p in threadpool_info()})
    return f"torch {torch.get_num_threads()}; " + (", ".join(pools) or "no OpenMP/BLAS pool loaded")


def worker(kind: str, case: str, n_ids: int, args, out_dir: str) -> dict:
    import torch
    import zarr
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    from hspreid.parsing import KMeansOptions, label_identities, write_rows

    if kind == "reference":
        import sklearn.cluster  # noqa: F401  (loads scikit-learn's OpenMP runtime, so that it is reported)
    structure, size, counts = case_data(case, n_ids, args.images)
    n_maps, H, W = int(counts.sum()), size["H"], size["W"]
    labels = zarr.open_array(f"{out_dir}/{case}_{kind}_{n_ids}.zarr", mode="w", shape=(n_maps, H, W),
                             chunks=(256, H, W), dtype="uint8")
    timer = {"gen": 0.0, "gen_cpu": 0.0}
    if args.device == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    with threadpool_limits(args.threads):
        threads = threading()
        meas = Measurement()
        cpu0 = time.process_time()
        if kind == "ours":
            options = KMeansOptions(ids_per_batch=args.ids_per_batch, iters=args.iters, sharpen=args.sharpen,
                                    init_sample=args.init_sample or None, max_points=args.max_points or None)
            for rows, lab in label_identities(stream(case, n_ids, args, timer), args.parts, options,
                                              device=args.device):
                write_rows(labels, rows, lab)
        else:
            fg_split = reference_foreground(case, args.reference_foreground)
            for f, pids, rows in stream(case, n_ids, args, timer):
                t1, c1 = time.perf_counter(), time.process_time()
                fn = f.cpu().numpy()          # [n, C, H, W] view of pixel-major memory
                timer["gen"] += time.perf_counter() - t1
                timer["gen_cpu"] += time.process_time() - c1
                write_rows(labels, rows, reference_identity(fn, args.parts, args.iters, args.sharpen, int(pids[0]),
                                                            foreground=fg_split))
                del f, fn
        if args.device == "cuda":
            torch.cuda.synchronize()
        total = meas.seconds()
        cpu = time.process_time() - cpu0
        peak = meas.peak_increase_mb()
    out = {"kind": kind, "case": case, "n_ids": n_ids, "n_maps": n_maps, "seconds": total - timer["gen"],
           "cpu_seconds": cpu - timer["gen_cpu"], "gen_seconds": timer["gen"], "peak_rss_mb": peak,
           "threads": threads}
    if args.device == "cuda":
        out["peak_gpu_mb"] = (torch.cuda.max_memory_allocated() - base_gpu) / 2 ** 20
    if args.score:
        ev, row = [], 0
        for pid in range(n_ids):
            f = identity_maps(structure, pid, int(counts[pid]), parts=args.parts, **size).numpy()
            ev.append(evaluate(f, labels[row:row + len(f)], args.parts, args.sharpen))
            row += len(f)
        out["fg_sse"], out["part_sse"], out["nfg"] = (list(v) for v in zip(*ev))
    return out


def run_sub(kind: str, case: str, n_ids: int, args, out_dir: str, score: bool) -> dict:
    worker_args = ["--worker", kind, "--case", case, "--n-ids", str(n_ids), "--device", args.device, "--out", out_dir,
                   "--parts", str(args.parts), "--iters", str(args.iters), "--ids-per-batch", str(args.ids_per_batch),
                   "--threads", str(args.threads), "--init-sample", str(args.init_sample or 0),
                   "--max-points", str(args.max_points or 0), "--images", str(args.images),
                   "--reference-foreground", args.reference_foreground]
    worker_args += ([] if args.sharpen else ["--no-sharpen"]) + (["--score"] if score else [])
    return run_worker(__file__, f"{kind} ({case})", *worker_args)


def report_case(case: str, rows: list[dict], gpu: bool) -> dict | None:
    """Print one case's table and its speed / quality lines; return its summary row."""
    print(f"{'method':<26}{'ids':>5}{'maps':>7}{'wall s':>9}{'CPU s':>9}{'gen s':>8}{'peak RSS MB':>13}"
          + (f"{'peak GPU MB':>13}" if gpu else "") + "  threads")
    for r in rows:
        name = "ours (batched torch)" if r["kind"] == "ours" else "reference (sklearn loop)"
        print(f"{name:<26}{r['n_ids']:>5}{r['n_maps']:>7}{r['seconds']:>9.2f}{r['cpu_seconds']:>9.2f}"
              f"{r['gen_seconds']:>8.1f}{r['peak_rss_mb']:>13.0f}"
              + (f"{r.get('peak_gpu_mb', float('nan')):>13.0f}" if gpu else "") + f"  {r['threads']}")
    ours = rows[0]
    ref = next((r for r in rows if r["kind"] == "reference"), None)
    double = next((r for r in rows[1:] if r["kind"] == "ours"), None)
    if double:
        print(f"peak memory of ours at {ours['n_ids']} vs {double['n_ids']} identities: {ours['peak_rss_mb']:.0f} vs "
              f"{double['peak_rss_mb']:.0f} MB RSS"
              + (f", {ours['peak_gpu_mb']:.0f} vs {double['peak_gpu_mb']:.0f} MB GPU" if gpu else ""))
    if ref is None:
        return None
    o_fg, r_fg = np.array(ours["fg_sse"]), np.array(ref["fg_sse"])
    o_ps, r_ps = np.array(ours["part_sse"]), np.array(ref["part_sse"])
    same_fg = np.array(ours["nfg"]) == np.array(ref["nfg"])
    summary = {"case": case, "n_ids": ours["n_ids"], "wall": ref["seconds"] / ours["seconds"],
               "cpu": ref["cpu_seconds"] / ours["cpu_seconds"], "part": o_ps.sum() / r_ps.sum(),
               "better": int((o_ps <= r_ps * (1 + 1e-9)).sum()), "same_fg": int(same_fg.sum())}
    print(f"speed-up ours vs reference: {summary['wall']:.1f}x wall ({ref['seconds']:.2f} s vs "
          f"{ours['seconds']:.2f} s, excluding feature generation), {summary['cpu']:.1f}x CPU time")
    print(f"fg/bg split SSE (same float64 evaluator): ours {o_fg.sum():.4f}, reference {r_fg.sum():.4f}, "
          f"ratio {o_fg.sum() / r_fg.sum():.6f}; ours <= ref on {int((o_fg <= r_fg * (1 + 1e-9)).sum())}/"
          f"{len(o_fg)} identities; same foreground on {summary['same_fg']}/{len(o_fg)}")
    print(f"part k-means inertia (partition SSE, same evaluator): ours {o_ps.sum():.2f}, reference "
          f"{r_ps.sum():.2f}, ratio {summary['part']:.4f}; ours <= ref on {summary['better']}/{len(o_ps)} identities"
          + ("" if same_fg.all() else f"; ratio on the identities with the same foreground "
             f"{o_ps[same_fg].sum() / max(r_ps[same_fg].sum(), 1e-300):.4f}"))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=None, help="market: fraction of Market's 751 identities (default "
                    "0.05 -- 38 identities -- on CPU, 1 on CUDA)")
    ap.add_argument("--structures", default=",".join(CASES), help=f"comma-separated cases of {CASES}")
    ap.add_argument("--ids", type=int, default=120, help="identities of the 64 x 32 x 16 structures")
    ap.add_argument("--images", type=int, default=16, help="maps per identity of the 64 x 32 x 16 structures")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--parts", type=int, default=7, help="K incl. background (ISP: 7)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--ids-per-batch", type=int, default=None, help="default 16 on CPU, 64 on CUDA")
    ap.add_argument("--init-sample", type=int, default=4096, help="ours: the k-means++ seedings use at most "
                    "min(this, 64 x (K-1)) points per identity (0: all points)")
    ap.add_argument("--max-points", type=int, default=None, help="ours: padded pixels per batch (default "
                    "ids_per_batch x 17 images x 64 x 32, Market's mean identity; 0: no cap)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads and BLAS/OpenMP threads of scikit-learn "
                    "(default 1: on a shared 2-vCPU machine a second OpenMP thread that gets descheduled makes every "
                    "parallel op wait a scheduler tick -- both methods then run several times slower)")
    ap.add_argument("--no-sharpen", dest="sharpen", action="store_false")
    ap.add_argument("--reference-foreground", default="auto", choices=["auto", "kmeans", "exact"],
                    help="reference's fg/bg split: KMeans(2) on the activations (ISP's) or the exact 1-D 2-means "
                    "(auto: kmeans on market, exact on the other structures)")
    ap.add_argument("--skip-reference", action="store_true")
    for internal in ("--worker", "--case", "--n-ids", "--out"):          # the worker processes' protocol
        ap.add_argument(internal, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--score", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ids_per_batch is None:
        args.ids_per_batch = 64 if args.device == "cuda" else 16
    if args.max_points is None:
        args.max_points = args.ids_per_batch * 17 * 64 * 32
    if args.worker:
        emit(worker(args.worker, args.case, int(args.n_ids), args, args.out))
        return
    cases = [c.strip() for c in args.structures.split(",") if c.strip()]
    if not cases or any(c not in CASES for c in cases):
        raise SystemExit(f"--structures: expected a comma-separated subset of {CASES}, got {args.structures!r}")
    scale = args.scale if args.scale is not None else (1.0 if args.device == "cuda" else 0.05)
    gpu = args.device == "cuda"
    print(f"ISP pseudo labels, one round: {args.parts - 1} parts, iters {args.iters}, sharpen {args.sharpen}, "
          f"ids_per_batch {args.ids_per_batch}, max_points {args.max_points or 'none'}, "
          f"init_sample {args.init_sample or 'all'}")
    print(runtime_line(args.device, args.threads) + f"; scikit-learn limited to {args.threads} thread(s)")
    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            n_ids = max(2, round(MARKET_IDS * scale)) if case == "market" else args.ids
            structure, size, counts = case_data(case, n_ids, args.images)
            print(f"\n== {case}: {n_ids} identities, {int(counts.sum())} maps of {size['C']} x {size['H']} x "
                  f"{size['W']} (structure {structure}), reference foreground "
                  f"{reference_foreground(case, args.reference_foreground)}")
            rows = [run_sub("ours", case, n_ids, args, tmp, score=not args.skip_reference)]
            if case == "market" and min(2 * n_ids, MARKET_IDS) > n_ids:
                rows.append(run_sub("ours", case, min(2 * n_ids, MARKET_IDS), args, tmp, score=False))
            if not args.skip_reference:
                rows.append(run_sub("reference", case, n_ids, args, tmp, score=True))
            summary = report_case(case, rows, gpu)
            if summary:
                summaries.append(summary)
    if summaries:
        print(f"\n{'structure':<10}{'ids':>5}{'speed-up wall':>15}{'speed-up CPU':>14}{'part SSE ours/ref':>19}"
              f"{'ours <= ref':>12}{'same fg':>9}")
        for s in summaries:
            print(f"{s['case']:<10}{s['n_ids']:>5}{s['wall']:>14.1f}x{s['cpu']:>13.1f}x{s['part']:>19.4f}"
                  f"{s['better']:>8}/{s['n_ids']:<3}{s['same_fg']:>5}/{s['n_ids']}")


if __name__ == "__main__":
    main()
