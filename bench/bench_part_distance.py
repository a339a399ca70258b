"""Visible-part-aware ranking (ISP eq. 10, K parts) at Market-1501 size: time and peak memory.

    python bench/bench_part_distance.py [--dim 2048] [--parts 6] [--quick]

Writes a features.zarr of Market size (3,368 queries + 15,913 gallery; global, foreground, K part
features of --dim dims and part visibility), then measures, each in a fresh subprocess:

* ours: ``rank_feature_store`` (rows read per side, features normalised in place, distances a
  block of queries at a time as two matmuls, no Q x G x K tensor), CMC/mAP/mINP included;
* reference: the way the peer toolboxes do it -- per-part Q x G distance matrices held at once
  (Q x G x K), combined with eq. 10 into the full Q x G matrix, then evaluated.

Peak RSS is the process's high-water mark (VmHWM) minus its RSS before the measured call.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import Measurement, emit, run_in_subprocess


def make_store(path: Path, num_q: int, num_g: int, k: int, dim: int, dtype: str, seed: int = 0) -> None:
    from hspreid.data.feature_store import write_features

    rng = np.random.default_rng(seed)
    n, ids = num_q + num_g, 751
    pid = np.concatenate([rng.integers(1, ids + 1, num_q), rng.integers(0, ids + 1, num_g)])
    centres = rng.standard_normal((ids + 1, dim), dtype=np.float32)

    def feature(shape_k: int | None) -> np.ndarray:
        shape = (n, dim) if shape_k is None else (n, shape_k, dim)
        base = centres[pid] if shape_k is None else centres[pid][:, None, :]
        return (base + 6.0 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    feats = {"global": feature(None), "foreground": feature(None), "parts": feature(k),
             "visible": rng.random((n, k)) < 0.8,
             "pid": pid.astype(np.int64), "camid": rng.integers(0, 6, n).astype(np.int64),
             "query": np.arange(n) < num_q, "gallery": np.arange(n) >= num_q,
             "tracklet": np.arange(n, dtype=np.int64), "num_frames": np.ones(n, np.int64)}
    write_features(path, feats, dtype=dtype, attrs={})


def worker(kind: str, store: Path) -> dict:
    import torch

    from hspreid.eval import evaluate_rank
    from hspreid.eval.ranking import rank_config, rank_feature_store

    torch.set_num_threads(2)
    meas = Measurement()  # resets the high-water mark
    if kind == "ours":
        r, _, _ = rank_feature_store(store, rank_config({"distance": "isp"}))
        cmc, mAP = r.cmc, r.mAP
    else:
        from hspreid.data.feature_store import read_features

        f, _ = read_features(store)
        q, g = f["query"], f["gallery"]

        def unit(x):
            return x / np.linalg.norm(x, axis=-1, keepdims=True)

        qp, gp = unit(f["parts"][q]), unit(f["parts"][g])
        vq, vg = f["visible"][q].astype(np.float32), f["visible"][g].astype(np.float32)
        k = qp.shape[1]
        per_part = np.stack([1.0 - qp[:, i] @ gp[:, i].T for i in range(k)])          # K x Q x G distances
        shared = np.stack([vq[:, i, None] * vg[None, :, i] for i in range(k)])      # K x Q x G visibility
        d = ((shared * per_part).sum(0) + (1 - unit(f["global"][q]) @ unit(f["global"][g]).T)
             + (1 - unit(f["foreground"][q]) @ unit(f["foreground"][g]).T)) / (shared.sum(0) + 2)
        cmc, mAP, _ = evaluate_rank(d.astype(np.float32), f["pid"][q], f["pid"][g], f["camid"][q], f["camid"][g])
    return {"seconds": meas.seconds(), "peak_mb": meas.peak_increase_mb(),
            "rank1": float(cmc[0]), "mAP": float(mAP)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--parts", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="a tenth of Market size")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                    help="features.zarr storage (features.dtype in a method config)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--_worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--_store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        emit(worker(args._worker, args._store))
        return
    num_q, num_g = (337, 1591) if args.quick else (3368, 15913)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "features.zarr"
        make_store(store, num_q, num_g, args.parts, args.dim, args.dtype)
        nbytes = 2 if args.dtype == "float16" else 4
        print(f"ISP eq. 10 ranking, {num_q} x {num_g}, K = {args.parts} parts of {args.dim} dims "
              f"(features {(num_q + num_g) * (args.parts + 2) * args.dim * nbytes / 2**20:.0f} MB as {args.dtype})")
        print(f"{'method':<44}{'seconds':>9}{'peak MB':>10}{'R1':>8}{'mAP':>8}")
        results = {}
        for kind, label in (("ours", "ours: rank_feature_store (blocked, in place)"),
                            ("reference", "reference: Q x G x K distances held at once"))[:1 if args.skip_reference else 2]:
            try:
                r = results[kind] = run_in_subprocess(__file__, "--_worker", kind, "--_store", str(store))
            except subprocess.CalledProcessError as failed:
                print(f"{label:<44}  failed: {failed.stderr.strip().splitlines()[-1]}")
                continue
            print(f"{label:<44}{r['seconds']:>9.2f}{r['peak_mb']:>10.0f}{100 * r['rank1']:>8.2f}{100 * r['mAP']:>8.2f}")
        if len(results) == 2:
            o, r = results["ours"], results["reference"]
            same = abs(o["rank1"] - r["rank1"]) < 1e-6 and abs(o["mAP"] - r["mAP"]) < 1e-5
            print(f"ratio reference/ours: time {r['seconds'] / o['seconds']:.1f}x, peak memory "
                  f"{r['peak_mb'] / o['peak_mb']:.1f}x; same R1/mAP: {'yes' if same else 'NO'}")
            if not same:
                sys.exit("bench_part_distance: ours and the reference disagree on R1/mAP")


if __name__ == "__main__":
    main()
