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
  (full (Q+G)^2 matrices, per-item loops; the tests' oracle, ``tests/eval/_reference_rerank.py``)
  fed with ``pairwise_distance`` matrices as torchreid's engine does, then ``evaluate_rank`` on
  its dense output. If its estimated peak exceeds ``--ref-max-gb`` it is run on a proportionally
  smaller subset instead (reported).

Both use the same convention (metric ``euclidean`` = squared L2, squared again and normalised by
each item's max, torchreid's behaviour). When the reference ran at the same size, the ``ours``
worker afterwards (outside the measurement) compares its distances with the reference's block by
block. mAP / R1 are also reported for the original distance ("before").

Usage: ``python bench/bench_rerank.py [--quick] [--dim 512] [--metric euclidean] [--device cuda]``
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import Measurement, Size, emit, load_labels, make_features, run_in_subprocess, runtime_line, save_arrays
from _references import reference_from_features

FULL = Size("MARS", 1980, 11310, 625, distractor_frac=0.03)
QUICK = Size("MARS-quick", 300, 1800, 100, distractor_frac=0.03)


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


# ----------------------------------------------------------------------------- worker (subprocess)
def _metrics(res) -> dict:
    cmc, mAP = (res["cmc"], res["mAP"]) if isinstance(res, dict) else (res[0], res[1])
    return {"R1": float(cmc[0]), "R5": float(cmc[4]), "mAP": float(mAP)}


def run_worker(method: str, data: Path, args: argparse.Namespace) -> dict:
    import torch

    from hspreid.eval import evaluate_features, evaluate_rank
    from hspreid.eval.rerank import KReciprocalReranker

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    qf, gf = np.load(data / "qf.npy"), np.load(data / "gf.npy")
    labels = load_labels(data)
    kw = {"k1": args.k1, "k2": args.k2, "lambda_value": args.lam}
    out: dict = {"method": method, "num_q": len(qf), "num_g": len(gf)}
    if method == "before":
        out.update(_metrics(evaluate_features(qf, gf, *labels, metric=args.metric, device=args.device)))
        return out
    meas = Measurement()
    if method == "ours":
        rr = KReciprocalReranker(qf, gf, metric=args.metric, device=args.device, **kw)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        out["build_s"] = meas.seconds()
        res = evaluate_features(None, None, *labels, distance_fn=rr.distance_block, device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    else:
        distmat = reference_from_features(qf, gf, args.metric, **kw)
        out["build_s"] = meas.seconds()
        res = evaluate_rank(distmat, *labels)
    out["seconds"] = meas.seconds()
    out["peak_mb"], out["peak_increase_mb"] = meas.peak_mb(), meas.peak_increase_mb()
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
    return run_in_subprocess(__file__, "--_worker", method, "--_data", str(data), "--threads", str(args.threads),
                             "--device", "cpu" if method == "reference" else args.device, "--metric", args.metric,
                             "--k1", str(args.k1), "--k2", str(args.k2), "--lam", str(args.lam))


# ----------------------------------------------------------------------------- report
def run_size(size: Size, args: argparse.Namespace, with_reference: bool) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        save_arrays(Path(tmp), make_features(size, args.dim))
        methods = ["before"] + (["reference"] if with_reference else []) + ["ours"]
        return {m: measure(m, Path(tmp), args) for m in methods}


def print_rows(size: Size, results: dict[str, dict], ref_seconds: float | None, dim: int) -> None:
    print(f"\n{size.describe()}, D={dim}")
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
        emit(run_worker(args._worker, args._data, args))
        return 0

    print(f"{runtime_line(args.device, args.threads)}; reference: numpy (single-threaded loops); metric={args.metric} (squared again "
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
