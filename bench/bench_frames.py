"""Reading T-frame training clips: frames.zarr vs decoding the same frames from the native JPEG layout.

    python bench/bench_frames.py [--clips 400] [--frames 8] [--height 256 --width 128]

Generates a synthetic MARS-layout data set (native JPEG files at --height x --width), extracts it
into frame stores of several chunkings/codecs, then reads the same random training clips
(restricted random sampling, as the train stage does) from each store and from the JPEG files
(cv2.imread + resize to the store's size, what a JPEG-based loader must do), all in one run.
Prints clips/s, frames/s and the ratio to the JPEG reference.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from hspreid.data import synth
from hspreid.data.frames import FrameStore, resize_frame, write_frame_store
from hspreid.data.index import tracklet_table
from hspreid.data.readers import read_dataset
from hspreid.data.sampling import restricted_random_clip

STORES = [("chunk=8, none", 8, "none"), ("chunk=8, zstd", 8, "zstd"), ("chunk=8, blosc_lz4", 8, "blosc_lz4"),
          ("chunk=1, none", 1, "none"), ("chunk=32, none", 32, "none")]


def sample_clips(index, num_clips: int, num_frames: int, seed: int) -> list[np.ndarray]:
    tracks = tracklet_table(index)
    tracks = tracks[tracks["subset"] == "train"]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(tracks), num_clips)
    return [int(tracks["start"].iat[i]) + restricted_random_clip(int(tracks["length"].iat[i]), num_frames, rng)
            for i in picks]


def time_it(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--frames", type=int, default=8, help="T frames per clip")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--ids", type=int, default=40, help="train identities of the generated data set")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mars"
        synth.generate("mars", root, {"height": args.height, "width": args.width, "num_train_ids": args.ids,
                                      "num_test_ids": 4}, seed=0, workers=2)
        index = read_dataset("mars", root)
        clips = sample_clips(index, args.clips, args.frames, seed=1)
        paths = [str(root / p) for p in index["path"]]
        n_frames = args.clips * args.frames

        def read_jpeg():
            for rows in clips:
                np.stack([resize_frame(cv2.imread(paths[r], cv2.IMREAD_COLOR), args.height, args.width)
                          for r in rows])

        ref = time_it(read_jpeg)
        print(f"{len(index)} frames of {args.height}x{args.width}; {args.clips} clips of T={args.frames}")
        print(f"{'source':<24}{'clips/s':>10}{'frames/s':>11}{'MB on disk':>12}{'vs JPEG':>9}")
        jpeg_mb = sum(Path(p).stat().st_size for p in paths) / 2**20
        print(f"{'JPEG files (cv2)':<24}{args.clips / ref:>10.0f}{n_frames / ref:>11.0f}{jpeg_mb:>12.1f}{1.0:>8.2f}x")
        for name, chunk, codec in STORES:
            out = Path(tmp) / f"frames_{chunk}_{codec}.zarr"
            write_frame_store(index, root, out, height=args.height, width=args.width, chunk_frames=chunk,
                              compressor=codec)
            store = FrameStore(out)
            secs = time_it(lambda: [store.read(rows) for rows in clips])
            mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
            print(f"{'zarr ' + name:<24}{args.clips / secs:>10.0f}{n_frames / secs:>11.0f}{mb:>12.1f}"
                  f"{ref / secs:>8.2f}x")


if __name__ == "__main__":
    main()
