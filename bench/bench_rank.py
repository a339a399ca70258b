"""Benchmark hspreid.eval ranking against torchreid's Python ``eval_market1501``.

Synthetic features of real sizes (D=512, identity + camera structure so that mAP is non-trivial):

* MARS   : 1,980 queries x 11,310 gallery, 625 ids, 6 cameras (official gallery size)
* Market : 3,368 queries x 15,913 gallery, 751 ids, 6 cameras, ~2.8k pid-0 distractors

Measured, each in a fresh subprocess once the inputs are loaded: seconds of the call, and the
peak RSS increase during the call (Linux: peak counter reset via ``/proc/self/clear_refs``, then
``VmHWM`` minus the RSS at the reset; elsewhere ``ru_maxrss`` before/after):

* ``ours: evaluate_rank``      -- blocked evaluation of a precomputed float32 distance matrix;
* ``ours: evaluate_features``  -- distances computed block by block from features (no Q x G matrix);
* ``reference``                -- a faithful copy of torchreid ``metrics/rank.py::eval_market1501``
  (full ``np.argsort`` of the Q x G matrix, per-query Python loop) plus fast-reid's mINP lines
  (``bench/_references.py``).

The script checks that all three give the same CMC / mAP / mINP.

Usage: ``python bench/bench_rank.py [--quick] [--sizes mars market] [--threads N] [--device cuda]``
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import Measurement, Size, emit, load_labels, make_features, run_in_subprocess, runtime_line, save_arrays
from _references import eval_market1501_reference

SIZES = {
    "mars": Size("MARS", 1980, 11310, 625, distractor_frac=0.03),
    "market": Size("Market", 3368, 15913, 751, distractor_frac=2793 / 15913),
}
QUICK_SIZES = {
    "mars": Size("MARS-quick", 300, 1800, 100, distractor_frac=0.03),
    "market": Size("Market-quick", 400, 2400, 120, distractor_frac=0.17),
}
METHODS = ("evaluate_rank", "evaluate_features", "reference")


# ----------------------------------------------------------------------------- synthetic data
def make_data(size: Size, out: Path, dtype: str, dim: int = 512, seed: int = 0) -> None:
    """Write float32 qf, gf, the cosine distmat (``dtype``) and labels to ``out`` as .npy files."""
    from hspreid.eval import pairwise_distance

    arrays = make_features(size, dim, seed)
    arrays["distmat"] = pairwise_distance(arrays["qf"].astype(dtype), arrays["gf"].astype(dtype), "cosine").numpy()
    save_arrays(out, arrays)


# ----------------------------------------------------------------------------- worker (subprocess)
def run_worker(method: str, data: Path, block: int, threads: int, device: str) -> dict:
    """Load inputs, then time one evaluation; returns seconds, peak RSS increase and metrics."""
    import torch

    from hspreid.eval import evaluate_features, evaluate_rank

    if threads > 0:
        torch.set_num_threads(threads)
    labels = load_labels(data)
    if method == "evaluate_features":
        qf, gf = np.load(data / "qf.npy"), np.load(data / "gf.npy")
    else:
        distmat = np.load(data / "distmat.npy")
    meas = Measurement()
    if method == "evaluate_rank":
        dm = torch.from_numpy(distmat).to(device) if device != "cpu" else distmat
        cmc, mAP, mINP = evaluate_rank(dm, *labels, max_rank=50, block=block)
    elif method == "evaluate_features":
        res = evaluate_features(qf, gf, *labels, metric="cosine", max_rank=50, block=block, device=device)
        cmc, mAP, mINP = res["cmc"], res["mAP"], res["mINP"]
    else:
        cmc, mAP, mINP = eval_market1501_reference(distmat, *labels, max_rank=50)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = meas.seconds()
    return {"method": method, "seconds": seconds, "peak_mb": meas.peak_increase_mb(),
            "cmc": [float(c) for c in cmc], "mAP": mAP, "mINP": mINP}


def measure(method: str, data: Path, args: argparse.Namespace) -> dict:
    device = "cpu" if method == "reference" else args.device
    return run_in_subprocess(__file__, "--_worker", method, "--_data", str(data),
                             "--block", str(args.block), "--threads", str(args.threads), "--device", device)


# ----------------------------------------------------------------------------- report
def max_diff(a: dict, b: dict) -> float:
    """Largest absolute difference over CMC[1..50], mAP and mINP."""
    return max(float(np.abs(np.subtract(a["cmc"], b["cmc"])).max()),
               abs(a["mAP"] - b["mAP"]), abs(a["mINP"] - b["mINP"]))


def verdict(a: dict, ref: dict) -> str:
    """'exact' (CMC within the reference's float32 rounding, mAP/mINP within 1e-12), 'ties'
    (< 1e-4: only equal distances ordered differently -- the reference's np.argsort is unstable
    and float32 distances tie often), else 'NO'."""
    cmc_diff = float(np.abs(np.subtract(a["cmc"], ref["cmc"])).max())
    if cmc_diff < 1e-6 and abs(a["mAP"] - ref["mAP"]) < 1e-12 and abs(a["mINP"] - ref["mINP"]) < 1e-12:
        return "exact"
    return "ties" if max_diff(a, ref) < 1e-4 else "NO"


def print_table(size: Size, results: dict[str, dict]) -> None:
    ref = results["reference"]
    print(f"\n{size.describe()}, {size.num_cams} cams")
    print(f"{'method':<32}{'seconds':>9}{'ref/ours':>10}{'peak dRSS MB':>14}"
          f"{'R1':>8}{'R5':>8}{'mAP':>8}{'mINP':>8}{'max|d| vs ref':>15}")
    for method in METHODS:
        r = results[method]
        label = "reference (torchreid Python)" if method == "reference" else f"ours: {method}"
        ratio = ref["seconds"] / r["seconds"]
        print(f"{label:<32}{r['seconds']:>9.2f}{ratio:>10.1f}{r['peak_mb']:>14.0f}"
              f"{100 * r['cmc'][0]:>8.2f}{100 * r['cmc'][4]:>8.2f}{100 * r['mAP']:>8.2f}"
              f"{100 * r['mINP']:>8.2f}{max_diff(r, ref):>10.1e} {verdict(r, ref):<5}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["mars", "market"])
    parser.add_argument("--block", type=int, default=256, help="queries per block (ours)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for ours (0: torch default)")
    parser.add_argument("--device", default="cpu", help="device for ours (e.g. cuda)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="precomputed distmat dtype; float64 avoids ties so ours must equal the "
                             "unstable-argsort reference exactly (evaluate_features is float32 anyway)")
    parser.add_argument("--_worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--_data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        emit(run_worker(args._worker, args._data, args.block, args.threads, args.device))
        return 0

    print(f"{runtime_line(args.device, args.threads)}, block={args.block}; reference is single-threaded numpy; "
          f"distmat {args.dtype}, features float32")
    table = QUICK_SIZES if args.quick else SIZES
    worst = "exact"
    for key in args.sizes:
        size = table[key]
        with tempfile.TemporaryDirectory() as tmp:
            make_data(size, Path(tmp), args.dtype)
            results = {m: measure(m, Path(tmp), args) for m in METHODS}
        print_table(size, results)
        verdicts = {verdict(results[m], results["reference"]) for m in METHODS}
        worst = "NO" if "NO" in verdicts else "ties" if "ties" in verdicts | {worst} else worst
    print({"exact": "\nall methods give exactly the reference's numbers",
           "ties": "\nall methods agree with the reference up to tie-breaking of equal float32 distances",
           "NO": "\nMISMATCH with the reference"}[worst])
    return 1 if worst == "NO" else 0


if __name__ == "__main__":
    sys.exit(main())
