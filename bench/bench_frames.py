"""Frame store layouts at real scale: bytes on disk against the JPEG files, random training clips/s against
decoding the same JPEG files with cv2.imread, in one run.

    python bench/bench_frames.py [--clips 300] [--frames 8] [--ids 16] [--repeats 3] [--workers N]

Generates a synthetic MARS-layout data set (JPEG files at 256 x 128, tracklets of 20-100 frames as MARS'
~60) and writes it as each candidate layout. Then reads the same random training clips (T frames each,
restricted random sampling as the train stage's sampler) from every layout and from the JPEG files, in
one process and one thread:

* ``JPEG files``: ``cv2.imread`` then RGB at the store's size (what a JPEG-based loader must do; the
  reference of the ratios), and ``cv2.imread`` alone (BGR, no conversion);
* ``raw``: uint8 frames, 32 per chunk file (the previous default; the synthetic demo's); zstd, 8 per chunk;
* ``zarr vlen-bytes``: the JPEG bytes in a zarr variable-length bytes array, 32 frames per chunk, and
  sharded (one frame per inner chunk, 1024 per shard), both read through zarr-python;
* ``encoded`` (the new default): the JPEG bytes end to end plus offsets, read by ``FrameStore.read``
  (pread + ``cv2.imdecode``); the same bytes decoded by ``torchvision.io.decode_jpeg`` on the CPU, and
  batched on the GPU (nvJPEG) when CUDA is present.

Bytes are those of the frames' arrays (labels and metadata excluded; the whole store in ``store MB``).
Then the Market-1501 case (JPEG files at 128 x 64, stores at 256 x 128: kept bytes, upscaled when read),
and the train stage's item (``TrainClips``: read + clip augmentation) per process, which DataLoader
workers multiply (``--workers N`` times a DataLoader with N workers; not one thread then).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import zarr

from hspreid.data import synth
from hspreid.data.datasets import AugmentConfig, TrainClips
from hspreid.data.frames import (
    FramesConfig,
    FrameStore,
    decode_frame,
    resize_frame,
    write_frame_store,
)
from hspreid.data.index import tracklet_table
from hspreid.data.readers import read_dataset
from hspreid.data.sampling import restricted_random_clip


def sample_clips(index, num_clips: int, num_frames: int, seed: int) -> list[np.ndarray]:
    tracks = tracklet_table(index)
    tracks = tracks[tracks["subset"] == "train"]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(tracks), num_clips)
    return [int(tracks["start"].iat[i]) + restricted_random_clip(int(tracks["length"].iat[i]), num_frames, rng)
            for i in picks]


def time_it(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall time and best CPU time (user + system, this process) of ``repeats`` calls after one warm-up
    call (files in the page cache). On a shared machine the CPU time is the steadier of the two."""
    fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def du(*paths: Path) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def write_vlen(out: Path, blobs: list[np.ndarray], sharded: bool) -> Path:
    """The JPEG bytes as a zarr v3 variable-length bytes array (no codec)."""
    data = np.empty(len(blobs), dtype=object)
    data[:] = [b.tobytes() for b in blobs]
    group = zarr.open_group(str(out), mode="w")
    kw = {"chunks": (1,), "shards": (1024,)} if sharded else {"chunks": (32,)}
    group.create_array("frames", shape=(len(blobs),), dtype="bytes", compressors=None, **kw)[:] = data
    return out / "frames"


def vlen_reader(path: Path, height: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
    arr = zarr.open_array(str(path), mode="r")

    def read(rows: np.ndarray) -> np.ndarray:
        return np.stack([decode_frame(np.frombuffer(b, np.uint8), height, width) for b in arr.oindex[rows]])

    return read


def torchvision_reader(store: FrameStore, device: str) -> Callable[[np.ndarray], object]:
    from torchvision.io import decode_jpeg

    def read(rows: np.ndarray) -> object:
        data = [torch.from_numpy(b.copy()) for b in store.read_encoded(rows)]
        frames = torch.stack(decode_jpeg(data, device=device))
        return frames.permute(0, 2, 3, 1).cpu() if device == "cpu" else frames

    return read


class Table:
    def __init__(self, clips: list[np.ndarray], repeats: int, jpeg_bytes: int) -> None:
        self.clips, self.repeats, self.jpeg_bytes = clips, repeats, jpeg_bytes
        self.frames = sum(len(c) for c in clips)
        self.ref: tuple[float, float] | None = None   # the reference's (wall, CPU) seconds
        print(f"{'layout':<46}{'frames/s':>9}{'/CPU-s':>8}{'vs JPEG':>9}{'frame MB':>10}{'vs JPEG':>9}"
              f"{'store MB':>10}")

    def row(self, name: str, read: Callable[[np.ndarray], object], frame_bytes: int | None = None,
            store_bytes: int | None = None, cuda: bool = False) -> float:
        """One layout's line; the ratio is of CPU times (of wall times for a CUDA decode). Returns frames/CPU-s."""
        def run() -> None:
            for rows in self.clips:
                read(rows)
            if cuda:
                torch.cuda.synchronize()

        wall, cpu = time_it(run, self.repeats)
        self.ref = self.ref or (wall, cpu)
        ratio = self.ref[0] / wall if cuda else self.ref[1] / cpu
        size = ("" if frame_bytes is None else f"{frame_bytes / 1e6:>10.1f}{frame_bytes / self.jpeg_bytes:>8.2f}x"
                f"{store_bytes / 1e6:>10.1f}")
        print(f"{name:<46}{self.frames / wall:>9.0f}{self.frames / cpu:>8.0f}{ratio:>8.2f}x{size}")
        return self.frames / cpu


def jpeg_reader(paths: list[str], height: int, width: int, convert: bool = True) -> Callable[[np.ndarray], object]:
    if not convert:
        return lambda rows: [cv2.imread(paths[r], cv2.IMREAD_COLOR) for r in rows]
    return lambda rows: np.stack([resize_frame(cv2.imread(paths[r], cv2.IMREAD_COLOR), height, width) for r in rows])


def bench_mars(tmp: Path, args) -> None:
    h, w = args.height, args.width
    root = tmp / "mars"
    synth.generate("mars", root, {"height": h, "width": w, "num_train_ids": args.ids, "num_test_ids": 2,
                                  "num_distractors": 0, "num_junk": 0, "frames_per_tracklet": [20, 100]},
                   seed=0, workers=1)
    index = read_dataset("mars", root)
    paths = [str(root / p) for p in index["path"]]
    jpeg_bytes = du(*map(Path, paths))
    clips = sample_clips(index, args.clips, args.frames, seed=1)
    print(f"\nMARS layout: {len(index)} JPEG files of {h} x {w}, {jpeg_bytes / len(index):.0f} bytes/frame; "
          f"{args.clips} random clips of T = {args.frames}")
    table = Table(clips, args.repeats, jpeg_bytes)
    table.row("JPEG files: cv2.imread -> RGB (reference)", jpeg_reader(paths, h, w))
    table.row("JPEG files: cv2.imread alone (BGR)", jpeg_reader(paths, h, w, convert=False))
    for name, kw in (("raw, 32 frames/chunk (previous default)", {"chunk_frames": 32}),
                     ("raw zstd, 8 frames/chunk (through zarr)", {"chunk_frames": 8, "compressor": "zstd"})):
        out = tmp / f"raw_{kw['chunk_frames']}.zarr"
        write_frame_store(index, root, out, FramesConfig(height=h, width=w, encoding="raw", **kw))
        table.row(name, FrameStore(out).read, du(out / "images"), du(out))
    out = tmp / "encoded.zarr"
    write_frame_store(index, root, out, FramesConfig(height=h, width=w))
    store = FrameStore(out)
    blobs = store.read_encoded(np.arange(len(store)))
    for name, sharded in (("zarr vlen-bytes, 32 frames/chunk", False), ("zarr vlen-bytes, sharded 1/1024", True)):
        arr = write_vlen(tmp / f"vlen_{sharded}.zarr", blobs, sharded)
        table.row(name, vlen_reader(arr, h, w), du(arr), du(arr))
    encoded_bytes = du(out / "encoded", out / "encoded_offsets")
    rate = table.row("encoded (new default): FrameStore.read", store.read, encoded_bytes, du(out))
    table.row("encoded bytes, torchvision decode_jpeg (CPU)", torchvision_reader(store, "cpu"), encoded_bytes, du(out))
    if torch.cuda.is_available():
        table.row(f"encoded bytes, decode_jpeg batched on {torch.cuda.get_device_name()}",
                  torchvision_reader(store, "cuda"), encoded_bytes, du(out), cuda=True)
    else:
        print("(no CUDA device: batched nvJPEG decoding not measured)")
    print(f"encoded store: {encoded_bytes / jpeg_bytes:.4f}x the JPEG bytes in its frame arrays, "
          f"{du(out) / jpeg_bytes:.4f}x with labels and metadata ({(du(out) - jpeg_bytes) / len(index):.1f} "
          f"bytes/frame more than the files); FrameStore.read: {rate:.0f} frames/CPU-s")
    train_items(tmp, index, out, tmp / "raw_32.zarr", args)


def train_items(tmp: Path, index, encoded: Path, raw: Path, args) -> None:
    """The train stage's item (read + the clip augmentation), one process: what each DataLoader worker does;
    with ``--workers N``, also through a DataLoader with N worker processes (wall time)."""
    from torch.utils.data import DataLoader

    for name, path in (("encoded", encoded), ("raw", raw)):
        dataset = TrainClips(path, index, args.frames, AugmentConfig())
        keys = [(int(i), int(i)) for i in np.random.default_rng(2).integers(0, len(dataset), args.clips)]
        wall, cpu = time_it(lambda d=dataset, ks=keys: [d[k] for k in ks], args.repeats)
        print(f"TrainClips item (read + augment), {name:<8}: {len(keys) * args.frames / wall:>6.0f} frames/s, "
              f"{len(keys) * args.frames / cpu:>6.0f} frames/CPU-s per process (DataLoader: x num_workers)")
        if args.workers:
            loader = DataLoader(dataset, batch_size=8, sampler=keys, num_workers=args.workers,
                                persistent_workers=True)
            wall, _ = time_it(lambda ld=loader: [b["frames"].shape for b in ld], args.repeats)
            print(f"DataLoader, {args.workers} workers, batches of 8 clips, {name:<8}: "
                  f"{len(keys) * args.frames / wall:>6.0f} frames/s")


def bench_market(tmp: Path, args) -> None:
    h, w = args.height, args.width
    root = tmp / "market"
    synth.generate("market", root, {"height": h // 2, "width": w // 2, "num_train_ids": 4 * args.ids,
                                    "num_test_ids": 2, "num_distractors": 0, "num_junk": 0}, seed=0, workers=1)
    index = read_dataset("market1501", root)
    paths = [str(root / p) for p in index["path"]]
    jpeg_bytes = du(*map(Path, paths))
    clips = list(np.random.default_rng(1).integers(0, len(index), (args.clips, args.frames)))  # random images
    print(f"\nMarket-1501 layout: {len(index)} JPEG files of {h // 2} x {w // 2} ({jpeg_bytes / len(index):.0f} "
          f"bytes/image) stored at {h} x {w}; {args.clips} random batches of {args.frames} images")
    table = Table(clips, args.repeats, jpeg_bytes)
    table.row("JPEG files: cv2.imread -> RGB, upscaled (ref.)", jpeg_reader(paths, h, w))
    out = tmp / "market_raw.zarr"
    write_frame_store(index, root, out, FramesConfig(height=h, width=w, encoding="raw"))
    table.row("raw, 32 frames/chunk (previous default)", FrameStore(out).read, du(out / "images"), du(out))
    out = tmp / "market_encoded.zarr"
    write_frame_store(index, root, out, FramesConfig(height=h, width=w))
    table.row("encoded (new default): FrameStore.read", FrameStore(out).read,
              du(out / "encoded", out / "encoded_offsets"), du(out))
    print(f"encoded store: {du(out) / jpeg_bytes:.4f}x the JPEG bytes with labels and metadata")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--frames", type=int, default=8, help="T frames per clip")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--ids", type=int, default=16, help="train identities of the generated MARS set (x4 Market)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="also time a DataLoader with this many workers")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    print(f"one process, one thread (cv2, torch); OpenCV {cv2.__version__}, zarr {zarr.__version__}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        bench_mars(Path(tmp), args)
        bench_market(Path(tmp), args)


if __name__ == "__main__":
    main()
