"""Stage parse_frames: five-region label maps (SPReID's parsing) of every frame, from a pluggable source.

    python -m stages.parse_frames --frames results/market/frames.zarr --index results/market/index.parquet \
        --output results/market/parsing/isp.zarr --model results/market/isp/model.pt --params '{"source": "isp"}'

Sources (``--params`` ``source`` plus that source's options): ``oracle`` (ground-truth masks;
``belongings``), ``isp`` / ``hcga`` (the trained parser given by ``--model``, folded by height;
``bands``, ``frames_per_batch``), ``external`` (any parser's label maps: ``path``, ``table``),
``ss_hsp`` (the trained SS-HSP model's fine-tuned segmenter, folded by height as isp). Writes ``rows`` and ``labels`` uint8 [n, h, w] (0 background,
1 head, 2 upper body, 3 lower body, 4 shoes, 255 nowhere) for every frame, train and test; see
:mod:`hspreid.data.parsing_stores`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hspreid.config import block_values, typed_config
from hspreid.data.frames import FrameStore
from hspreid.data.parsing_stores import SOURCES, external_blocks, oracle_blocks, scored, write_parsing_store
from hspreid.errors import UserError
from hspreid.io import log
from hspreid.models import load_model
from hspreid.models.parsing import parser_blocks
from hspreid.partmaps import RegionIoU, resolve_table
from hspreid.runtime import pick_device
from hspreid.stage import parse_params, run_stage, stage_parser

QUALITY_FRAMES = 2000  # about this many frames are scored against the ground truth, where it exists


def resolve_params(given: dict) -> dict:
    """The source and its options (defaults filled in); an unknown source or key is named."""
    source = given.get("source")
    if source not in SOURCES:
        raise UserError(f"parsing.source: expected one of {sorted(SOURCES)}, got {source!r}")
    options = {k: v for k, v in given.items() if k != "source"}
    params = {"source": source, **block_values(typed_config(SOURCES[source], options, f"parsing.{source}"))}
    if source == "external" and not params["path"]:
        raise UserError("parsing.external.path: not set; name a directory of PNG label maps or a zarr store")
    return params


def region_blocks(params: dict, args, store: FrameStore, index: pd.DataFrame, rows: np.ndarray):
    """(rows, region maps) blocks of the chosen source."""
    source = params["source"]
    if source == "oracle":
        return oracle_blocks(store, rows, params["belongings"])
    if source == "external":
        table = resolve_table(params["table"], "parsing.external.table")
        return external_blocks(Path(params["path"]), index, rows, table, store.frame_size)
    if args.model is None:
        raise UserError(f"parsing source {source}: --model (the trained {source} parser) is required")
    model, _ = load_model(args.model)
    return parser_blocks(model, args.frames, rows, device=pick_device(args.device), bands=params["bands"],
                         frames_per_batch=params["frames_per_batch"])


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__, torch_threads=True)
    p.add_argument("--frames", required=True, type=Path, help="frames.zarr")
    p.add_argument("--index", required=True, type=Path, help="index.parquet")
    p.add_argument("--output", required=True, type=Path, help="parsing store (.zarr) to write")
    p.add_argument("--model", type=Path, nargs="?", default=None,
                   help="the trained parser (model.pt) for sources isp, hcga and ss_hsp (empty: none)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args(argv)

    def body() -> None:
        t0 = time.monotonic()
        params = resolve_params(parse_params(args.params))
        store, index = FrameStore(args.frames), pd.read_parquet(args.index)
        if len(index) != len(store):
            raise UserError(f"{args.index}: {len(index)} rows but {args.frames} holds {len(store)} frames")
        rows = np.arange(len(store), dtype=np.int64)
        blocks = region_blocks(params, args, store, index, rows)
        scorer = RegionIoU()
        if store.masks is not None and params["source"] != "oracle":  # scored on ~QUALITY_FRAMES frames
            blocks = scored(blocks, store, scorer, step=max(1, len(rows) // QUALITY_FRAMES))

        def attrs() -> dict:  # called once every map is written
            return {"source": params["source"], "options": {k: v for k, v in params.items() if k != "source"},
                    "frames": str(args.frames), "model": str(args.model) if args.model else None,
                    "iou": scorer.result() if scorer.frames else None, "seconds": round(time.monotonic() - t0, 2)}

        size = write_parsing_store(args.output, blocks, len(rows), attrs)
        log.info("%s: %d frames of %s region maps from %s; IoU against the ground truth %s", args.output, len(rows),
                 "x".join(map(str, size)), params["source"], scorer.result() if scorer.frames else None)

    return run_stage("parse_frames", args, body)


if __name__ == "__main__":
    sys.exit(main())
