"""Stage collect_metrics: several methods' metrics.json -> one table (an ablation study), CSV + Markdown.

    python -m stages.collect_metrics --metrics results/synth_occluded_duke/{hcga,hcga_sem}/metrics.json \
        --rows '{"hcga": "Sem + Local + Back", "hcga_sem": "Sem"}' \
        --csv results/synth_occluded_duke/hcga_ablation.csv --md results/synth_occluded_duke/hcga_ablation.md

One row per metrics file, in the order given: retrieval metrics in percent and, for methods with
part pseudo labels, the last round's label IoU and the predicted parsing's IoU against ground truth.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hspreid.io import atomic_file
from hspreid.reporting import metrics_table
from hspreid.stage import parse_params, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--metrics", required=True, type=Path, nargs="+", help="metrics.json files, one per row")
    p.add_argument("--rows", required=True, help="JSON {method: row label}")
    p.add_argument("--csv", required=True, type=Path)
    p.add_argument("--md", required=True, type=Path)
    args = p.parse_args(argv)

    def body() -> None:
        rows = parse_params(args.rows)
        table = metrics_table([json.loads(m.read_text()) for m in args.metrics], rows)
        with atomic_file(args.csv) as tmp:
            table.to_csv(tmp, index=False)
        with atomic_file(args.md) as tmp:
            Path(tmp).write_text(table.to_markdown(index=False, floatfmt=".1f") + "\n")

    return run_stage("collect_metrics", args, body)


if __name__ == "__main__":
    sys.exit(main())
