"""``hspreid`` command line: look inside the pipeline's stores.

    hspreid inspect results/synth_mars/frames.zarr              # arrays, shapes, attrs
    hspreid inspect results/synth_mars/frames.zarr --png a.png  # a grid of frames (with masks if any)
    hspreid inspect results/synth_market/isp/round1/pseudo_labels.zarr --png labels.png
    hspreid inspect --rounds results/synth_market/isp --png rounds.png   # the same images, round by round
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hspreid.errors import UserError

import hspreid.io  # noqa: F401  (filters zarr's warning about Snakemake's timestamp file)


def _describe(path: Path) -> str:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    lines = [f"{path}"]
    for name, arr in sorted(group.arrays()):
        lines.append(f"  {name:<12} {str(arr.dtype):<8} {tuple(arr.shape)} chunks={tuple(arr.chunks)}")
    attrs = dict(group.attrs)
    if attrs:
        lines.append("  attrs: " + json.dumps(attrs, indent=2, sort_keys=True, default=str).replace("\n", "\n  "))
    return "\n".join(lines)


def frame_grid(path: Path, count: int = 16, seed: int = 0) -> np.ndarray:
    """BGR picture of ``count`` random frames of a frame store; ground-truth masks below when present."""
    from hspreid.data.frames import FrameStore

    store = FrameStore(path)
    rows = np.sort(np.random.default_rng(seed).choice(len(store), size=min(count, len(store)), replace=False))
    images = store.read(rows)[..., ::-1]
    row = np.concatenate(list(images), axis=1)
    if store.masks is not None:
        from hspreid.viz import PART_PALETTE

        masks = store.read(rows, "masks")
        row = np.concatenate([row, np.concatenate(list(PART_PALETTE[masks][..., ::-1]), axis=1)], axis=0)
    return np.ascontiguousarray(row)


def label_rows(frames: Path, label_stores: list[Path], count: int = 12, seed: int = 0) -> np.ndarray:
    """BGR picture: the same ``count`` training frames, then one row per label store overlaying its
    part labels (nearest-upsampled to the frame) -- e.g. the rounds of ISP going from coarse to fine."""
    from hspreid.data.datasets import PartLabels
    from hspreid.data.frames import FrameStore
    from hspreid.viz import _blend

    stores = [PartLabels(p) for p in label_stores]
    rows = np.sort(np.random.default_rng(seed).choice(stores[0].rows, size=min(count, len(stores[0].rows)),
                                                      replace=False))
    images = FrameStore(frames).read(rows)
    h, w = images.shape[1:3]
    lines = [np.concatenate(list(images), axis=1)]
    for store in stores:
        maps = store.read(rows)
        big = maps.repeat(h // maps.shape[1], axis=1).repeat(w // maps.shape[2], axis=2)
        lines.append(np.concatenate([_blend(img, m) for img, m in zip(images, big)], axis=1))
    return np.ascontiguousarray(np.concatenate(lines, axis=0)[..., ::-1])


def _frames_of(label_store: Path) -> Path:
    """The frame store a label store was made from: its ``frames`` attribute, else the layout's
    results/<dataset>/<method>/round<r>/pseudo_labels.zarr -> results/<dataset>/frames.zarr."""
    import zarr

    recorded = zarr.open_group(str(label_store), mode="r").attrs.get("frames")
    parents = label_store.resolve().parents
    candidates = ([Path(recorded)] if recorded else []) + [parents[min(2, len(parents) - 1)] / "frames.zarr"]
    for frames in candidates:
        if (frames / "zarr.json").is_file():
            return frames
    raise UserError(f"{label_store}: its frame store is not at {' or '.join(map(str, candidates))}")


def main(argv: list[str] | None = None) -> int:
    try:
        return _inspect(argv)
    except (UserError, FileNotFoundError) as e:
        print(f"hspreid: {e}", file=sys.stderr)
        return 1


def _inspect(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="hspreid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="describe a .zarr store (and draw its frames or label maps)")
    ins.add_argument("store", type=Path, nargs="?", help="a frames.zarr, pseudo_labels.zarr or features.zarr")
    ins.add_argument("--rounds", type=Path, help="a method's results folder: draw every round's labels")
    ins.add_argument("--png", type=Path, help="write a picture (frame and label stores)")
    ins.add_argument("--count", type=int, default=16)
    args = parser.parse_args(argv)
    if args.rounds:
        stores = sorted(args.rounds.glob("round*/pseudo_labels.zarr"), key=lambda p: int(p.parent.name[5:]))
        if not stores:
            print(f"hspreid: {args.rounds}: no round*/pseudo_labels.zarr inside", file=sys.stderr)
            return 1
        for store in stores:
            print(_describe(store).splitlines()[0])
        return _write(args.png, label_rows(_frames_of(stores[0]), stores, args.count))
    if args.store is None or not (args.store / "zarr.json").is_file():
        print(f"hspreid: {args.store}: not a zarr store", file=sys.stderr)
        return 1
    print(_describe(args.store))
    if not args.png:
        return 0
    if (args.store / "labels").is_dir():
        return _write(args.png, label_rows(_frames_of(args.store), [args.store], args.count))
    return _write(args.png, frame_grid(args.store, args.count))


def _write(path: Path | None, bgr: np.ndarray) -> int:
    if path is None:
        print("hspreid: add --png PATH to draw", file=sys.stderr)
        return 1
    import cv2

    cv2.imwrite(str(path), bgr)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
