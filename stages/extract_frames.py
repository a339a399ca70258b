"""Stage extract_frames: read a data set in its native layout into frames.zarr + index.parquet.

    python -m stages.extract_frames --kind mars --root data/MARS \
        --frames results/mars/frames.zarr --index results/mars/index.parquet \
        --params '{"height": 256, "width": 128}'
"""
from __future__ import annotations

import sys
from pathlib import Path

from hspreid.config import typed_config
from hspreid.data.frames import FramesConfig, write_frame_store
from hspreid.data.keypoints import KEYPOINTS_FILE, load_keypoints
from hspreid.data.loading import attach_ground_truth
from hspreid.data.readers import READERS, read_dataset
from hspreid.io import atomic_file, log
from hspreid.stage import parse_params, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--kind", required=True, choices=sorted(READERS), help="native layout of the data set")
    p.add_argument("--root", required=True, type=Path, help="data-set root (native layout)")
    p.add_argument("--frames", required=True, type=Path, help="output frame store (.zarr)")
    p.add_argument("--index", required=True, type=Path, help="output frame index (.parquet)")
    p.add_argument("--threads", type=int, default=1, help="threads decoding frames")
    args = p.parse_args(argv)

    def body() -> None:
        params = parse_params(args.params)
        reader = params.pop("reader", None) or {}
        cfg = typed_config(FramesConfig, params, "frames")
        index = read_dataset(args.kind, args.root, **reader)
        index = attach_ground_truth(index, args.root)              # masks, limb maps
        keypoints = (load_keypoints(args.root, index, partial=True) if (args.root / KEYPOINTS_FILE).is_file()
                     else None)                                    # frames without a line: NaN
        log.info("%s: %d frames in %d tracklets (dropped: %s)", args.root, len(index),
                 index["tracklet"].nunique(), index.attrs.get("dropped", {}))
        index, summary = write_frame_store(
            index, args.root, args.frames, cfg, threads=args.threads, keypoints=keypoints,
            attrs={"kind": args.kind, "root": str(args.root), "dropped": index.attrs.get("dropped", {})})
        index.attrs = {}
        with atomic_file(args.index) as tmp:
            index.to_parquet(tmp, index=False)
        log.info("frames: %s", summary)

    return run_stage("extract_frames", args, body)


if __name__ == "__main__":
    sys.exit(main())
