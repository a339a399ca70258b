"""Benchmark hspreid.eval.rerank (blocked k-reciprocal re-ranking) against torchreid's dense one.

Synthetic features (D=512 by default) with identity + camera structure, so that mAP is meaningful:

* MARS       : 1,980 queries x 11,310 gallery (official protocol size), 625 ids, 6 cameras
* MARS-quick :   300 queries x  1,800 gallery, 100 ids (``--quick``)

Each method runs in a fresh subprocess once its inputs are loaded; reported: seconds, peak RSS of
the process (``VmHWM``) and the peak increase over the RSS at the start of the call (the kernel's
peak counter is reset through ``/proc/self/clear_refs``; elsewhere ``ru_maxrss`` is used).

* ``ours``      -- ``KReciprocalReranker`` (build) + ``evaluate_features(distance_fn=...)``, which
  consumes the re-ranked distances 256 queries at a time (no N x N or Q x G matrix anywhere);
* ``reference`` -- a literal numpy re-implementation of torchreid ``utils/rerank.py::re_ranking``
  (full (Q+G)^2 matrices, per-item loops) fed with ``pairwise_distance`` matrices as torchreid's
  engine does, then ``evaluate_rank`` on its dense output. If its estimated peak exceeds
  ``--ref-max-gb`` it is run on a proportionally smaller subset instead (reported).

Both use the same convention (metric ``euclidean`` = squared L2, squared again and normalised by
each item's max, torchreid's behaviour). When the reference ran at the same size, the ``ours``
worker afterwards (outside the measurement) compares its distances with the reference's block by
block. mAP / R1 are also reported for the original distance ("before").

Usage: ``python bench/bench_rerank.py [--quick] [--dim 512] [--metric euclidean] [--device cuda]``
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Size:
    name: str
    num_q: int
    num_g: int
    num_ids: int
    num_cams: int = 6
    distractor_frac: float = 0.03


FULL = Size("MARS", 1980, 11310, 625)
QUICK = Size("MARS-quick", 300, 1800, 100)


# ----------------------------------------------------------------------------- synthetic data
def make_data(size: Size, out: Path, dim: int, seed: int = 0) -> None:
    """float32 qf, gf and labels as .npy files: identity centre + camera offset + noise;
    distractors (pid 0) get a centre of their own."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((size.num_ids + 1, dim)).astype(np.float32)
    cam_offsets = rng.standard_normal((size.num_cams, dim)).astype(np.float32)

    def sample(pids: np.ndarray, cams: np.ndarray) -> np.ndarray:
        base = centers[pids]
        base[pids == 0] = rng.standard_normal((int((pids == 0).sum()), dim))
        noise = rng.standard_normal((len(pids), dim)).astype(np.float32)
        return (base + 0.6 * cam_offsets[cams] + 2.0 * noise).astype(np.float32)

    g_pids = rng.integers(1, size.num_ids + 1, size=size.num_g)
    g_pids[rng.random(size.num_g) < size.distractor_frac] = 0
    g_camids = rng.integers(0, size.num_cams, size=size.num_g)
    q_pids = rng.integers(1, size.num_ids + 1, size=size.num_q)
    q_camids = rng.integers(0, size.num_cams, size=size.num_q)
    arrays = {"qf": sample(q_pids, q_camids), "gf": sample(g_pids, g_camids),
              "q_pids": q_pids, "g_pids": g_pids, "q_camids": q_camids, "g_camids": g_camids}
    for key, value in arrays.items():
        np.save(out / f"{key}.npy", value)


def subset(size: Size, max_gb: float) -> Size:
    """The largest proportional subset of ``size`` whose dense reference should fit in ``max_gb``
    (peak ~ 6 float32 N x N arrays: the matrix, its squared/normalised copies, V, V_qe, the int64
    argsort before its int32 cast)."""
    n = size.num_q + size.num_g
    est = 6 * 4 * n * n / 2**30
    if est <= max_gb:
        return size
    f = (max_gb / est) ** 0.5
    return replace(size, name=f"{size.name}-subset", num_q=int(size.num_q * f),
                   num_g=int(size.num_g * f), num_ids=max(2, int(size.num_ids * f)))


# ----------------------------------------------------------------------------- reference
def torchreid_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """torchreid ``re_ranking`` (dense numpy, per-item loops), step by step."""
    original_dist = np.concatenate([np.concatenate([q_q_dist, q_g_dist], axis=1),
                                    np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)

    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    half = int(np.around(k1 / 2.0))
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        for k in nonzero:
            rows = inv_index[k]
            temp_min[0, rows] = temp_min[0, rows] + np.minimum(V[i, k], V[rows, k])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    del original_dist, V, jaccard_dist
    return final_dist[:query_num, query_num:]


# ----------------------------------------------------------------------------- worker (subprocess)
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def _reset_peak_rss() -> float:
    """Reset the peak-RSS counter (Linux ``clear_refs`` 5); returns the current RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_rss_mb() -> float:
    try:
        return _status_mb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _metrics(res) -> dict:
    cmc, mAP = (res["cmc"], res["mAP"]) if isinstance(res, dict) else (res[0], res[1])
    return {"R1": float(cmc[0]), "R5": float(cmc[4]), "mAP": float(mAP)}


def run_worker(method: str, data: Path, args: argparse.Namespace) -> dict:
    import torch

    from hspreid.eval import evaluate_features, evaluate_rank, pairwise_distance
    from hspreid.eval.rerank import KReciprocalReranker

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    qf, gf = np.load(data / "qf.npy"), np.load(data / "gf.npy")
    labels = [np.load(data / f"{k}.npy") for k in ("q_pids", "g_pids", "q_camids", "g_camids")]
    kw = {"k1": args.k1, "k2": args.k2, "lambda_value": args.lam}
    out: dict = {"method": method, "num_q": len(qf), "num_g": len(gf)}
    if method == "before":
        out.update(_metrics(evaluate_features(qf, gf, *labels, metric=args.metric, device=args.device)))
        return out
    base = _reset_peak_rss()
    t0 = time.perf_counter()
    if method == "ours":
        rr = KReciprocalReranker(qf, gf, metric=args.metric, device=args.device, **kw)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        out["build_s"] = time.perf_counter() - t0
        res = evaluate_features(None, None, *labels, distance_fn=rr.distance_block, device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    else:
        dist = lambda a, b: pairwise_distance(a, b, args.metric).numpy()
        distmat = torchreid_re_ranking(dist(qf, gf), dist(qf, qf), dist(gf, gf), **kw)
        out["build_s"] = time.perf_counter() - t0
        res = evaluate_rank(distmat, *labels)
    out["seconds"] = time.perf_counter() - t0
    out["peak_mb"], out["peak_increase_mb"] = _peak_rss_mb(), _peak_rss_mb() - base
    out.update(_metrics(res))
    if method == "reference":
        np.save(data / "ref_distmat.npy", distmat)
    elif (data / "ref_distmat.npy").exists():  # agreement, outside the measurement
        ref = np.load(data / "ref_distmat.npy", mmap_mode="r")
        worst, n_off = 0.0, 0
        for s in range(0, len(qf), 256):
            diff = np.abs(rr.distance_block(np.arange(s, min(s + 256, len(qf)))).cpu().numpy() - ref[s : s + 256])
            worst, n_off = max(worst, float(diff.max())), n_off + int((diff > 1e-4).sum())
        out["max_abs_diff"], out["frac_off_1e-4"] = worst, n_off / ref.size
        out["nnz_V_qe_per_item"] = rr.nnz / (len(qf) + len(gf))
    return out


def measure(method: str, data: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--_worker", method, "--_data", str(data), "--threads", str(args.threads),
           "--device", "cpu" if method == "reference" else args.device, "--metric", args.metric,
           "--k1", str(args.k1), "--k2", str(args.k2), "--lam", str(args.lam)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
def run_size(size: Size, args: argparse.Namespace, with_reference: bool) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        make_data(size, Path(tmp), args.dim)
        methods = ["before"] + (["reference"] if with_reference else []) + ["ours"]
        return {m: measure(m, Path(tmp), args) for m in methods}


def print_rows(size: Size, results: dict[str, dict], ref_seconds: float | None, dim: int) -> None:
    print(f"\n{size.name}: {size.num_q} queries x {size.num_g} gallery, {size.num_ids} ids, D={dim}")
    print(f"{'method':<30}{'seconds':>9}{'(build)':>9}{'ref/ours':>9}{'peak RSS MB':>13}{'(increase)':>12}"
          f"{'R1':>8}{'R5':>8}{'mAP':>8}")
    for method, r in results.items():
        label = {"before": "original distance (no RR)", "ours": "ours: KReciprocalReranker",
                 "reference": "reference: torchreid dense"}[method]
        if method == "before":
            print(f"{label:<30}{'':>9}{'':>9}{'':>9}{'':>13}{'':>12}"
                  f"{100 * r['R1']:>8.2f}{100 * r['R5']:>8.2f}{100 * r['mAP']:>8.2f}")
            continue
        ratio = f"{ref_seconds / r['seconds']:.1f}" if ref_seconds else "-"
        print(f"{label:<30}{r['seconds']:>9.2f}{r['build_s']:>9.2f}{ratio:>9}{r['peak_mb']:>13.0f}"
              f"{r['peak_increase_mb']:>12.0f}{100 * r['R1']:>8.2f}{100 * r['R5']:>8.2f}{100 * r['mAP']:>8.2f}")
    ours = results["ours"]
    if "max_abs_diff" in ours:
        print(f"ours vs reference distances: max |diff| {ours['max_abs_diff']:.2e}, fraction > 1e-4: "
              f"{ours['frac_off_1e-4']:.2e}; V_qe non-zeros per item {ours['nnz_V_qe_per_item']:.1f}")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small size only")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension")
    parser.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean")
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--lam", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for ours (0: torch default)")
    parser.add_argument("--device", default="cpu", help="device for ours (e.g. cuda)")
    parser.add_argument("--ref-max-gb", type=float, default=8.0,
                        help="run the dense reference on a subset if its estimated peak exceeds this")
    parser.add_argument("--no-reference", action="store_true", help="skip the dense reference")
    parser.add_argument("--_worker", choices=["before", "ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--_data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        print(json.dumps(run_worker(args._worker, args._data, args)))
        return 0

    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, numpy {np.__version__}; ours on {args.device} with {threads} torch "
          f"thread(s); reference: numpy (single-threaded loops); metric={args.metric} (squared again "
          f"and max-normalised per item, torchreid convention), k1={args.k1} k2={args.k2} lambda={args.lam}")
    size = QUICK if args.quick else FULL
    ref_size = subset(size, args.ref_max_gb)
    same = ref_size == size and not args.no_reference
    results = run_size(size, args, with_reference=same)
    ref_seconds = results["reference"]["seconds"] if same else None
    if not same and not args.no_reference:
        print(f"\ndense reference would need ~{6 * 4 * (size.num_q + size.num_g) ** 2 / 2**30:.1f} GB "
              f"(> --ref-max-gb {args.ref_max_gb}); running it on {ref_size.num_q} x {ref_size.num_g} instead")
        sub = run_size(ref_size, args, with_reference=True)
        print_rows(ref_size, sub, sub["reference"]["seconds"], args.dim)
    print_rows(size, results, ref_seconds, args.dim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
