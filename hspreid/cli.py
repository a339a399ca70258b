"""``hspreid`` command line: look inside the pipeline's stores.

    hspreid inspect results/synth_mars/frames.zarr              # arrays, shapes, attrs
    hspreid inspect results/synth_mars/frames.zarr --png a.png  # a grid of frames (with masks if any)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


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
    import cv2

    from hspreid.data.frames import FrameStore

    store = FrameStore(path)
    rows = np.sort(np.random.default_rng(seed).choice(len(store), size=min(count, len(store)), replace=False))
    images = np.stack([store.images[int(r)] for r in rows])[..., ::-1]
    row = np.concatenate(list(images), axis=1)
    if store.masks is not None:
        from hspreid.viz import PART_PALETTE

        masks = np.stack([store.masks[int(r)] for r in rows])
        row = np.concatenate([row, np.concatenate(list(PART_PALETTE[masks][..., ::-1]), axis=1)], axis=0)
    return np.ascontiguousarray(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hspreid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="describe a .zarr store (and draw its frames)")
    ins.add_argument("store", type=Path)
    ins.add_argument("--png", type=Path, help="write a grid of frames (frame stores only)")
    ins.add_argument("--count", type=int, default=16)
    args = parser.parse_args(argv)
    if not (args.store / "zarr.json").is_file():
        print(f"hspreid: {args.store}: not a zarr store", file=sys.stderr)
        return 1
    print(_describe(args.store))
    if args.png:
        import cv2

        cv2.imwrite(str(args.png), frame_grid(args.store, args.count))
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
