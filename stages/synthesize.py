"""Stage synthesize: write a synthetic re-ID data set in the native layout of a real one.

    python -m stages.synthesize --layout mars --output data/synth_mars --params '{"num_train_ids": 60}'
"""
from __future__ import annotations

import sys
from pathlib import Path

from hspreid.data import synth
from hspreid.io import atomic_dir, log
from hspreid.stage import parse_params, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--layout", required=True, choices=synth.LAYOUTS, help="which real data set's layout to write")
    p.add_argument("--output", required=True, type=Path, help="data-set root to create")
    p.add_argument("--workers", type=int, default=1, help="processes used for rendering")
    args = p.parse_args(argv)

    def body() -> None:
        params = parse_params(args.params)
        with atomic_dir(args.output) as tmp:
            summary = synth.generate(args.layout, tmp, params, seed=args.seed, workers=args.workers)
        log.info("synthetic %s data set in %s: %s", args.layout, args.output, summary)

    return run_stage("synthesize", args, body)


if __name__ == "__main__":
    sys.exit(main())
