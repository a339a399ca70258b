"""Stage rank: score the ranking of the gallery for every query; write metrics.json.

    python -m stages.rank --features results/mars/baseline/features.zarr \
        --output results/mars/baseline/metrics.json --params '{"protocol": "official", "metric": "cosine"}'
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from hspreid.eval import evaluate_features
from hspreid.eval.protocol import split_query_gallery
from hspreid.features import read_features
from hspreid.io import log, write_json
from hspreid.stage import check_keys, parse_params, run_stage, stage_parser

DEFAULTS = {"protocol": "official", "metric": "cosine", "ap": "non_interpolated", "max_rank": 50,
            "embedding": "global", "dataset": None, "method": None, "config_hash": None}
REPORTED_RANKS = (1, 5, 10, 20)


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--features", required=True, type=Path, help="features.zarr")
    p.add_argument("--output", required=True, type=Path, help="metrics.json to write")
    p.add_argument("--device", default="cpu", help="where the distances are computed")
    args = p.parse_args(argv)

    def body() -> None:
        t0 = time.monotonic()
        params = {**DEFAULTS, **parse_params(args.params)}
        check_keys(params, DEFAULTS, "rank")
        feats, attrs = read_features(args.features)
        q, g = split_query_gallery(feats["query"], feats["gallery"], params["protocol"])
        emb = feats[params["embedding"]]
        res = evaluate_features(emb[q], emb[g], feats["pid"][q], feats["pid"][g], feats["camid"][q],
                                feats["camid"][g], metric=params["metric"], max_rank=params["max_rank"],
                                ap=params["ap"], device=args.device)
        cmc = res["cmc"]
        metrics = {
            "dataset": params["dataset"], "method": params["method"], "config_hash": params["config_hash"],
            "protocol": params["protocol"], "metric": params["metric"], "ap": params["ap"],
            "embedding": params["embedding"], "aggregation": attrs.get("aggregation"),
            "num_query": int(len(q)), "num_gallery": int(len(g)), "num_valid_query": int(res["num_valid_queries"]),
            **{f"rank{r}": round(float(cmc[min(r, len(cmc)) - 1]), 6) for r in REPORTED_RANKS},
            "mAP": round(float(res["mAP"]), 6), "mINP": round(float(res["mINP"]), 6),
            "cmc": [round(float(c), 6) for c in cmc],
            "stage_seconds": {**attrs.get("stage_seconds", {}), "rank": round(time.monotonic() - t0, 2)},
        }
        write_json(args.output, metrics)
        log.info("%s/%s: rank-1 %.2f%%  mAP %.2f%%  mINP %.2f%% (%d queries, %d gallery, protocol %s)",
                 params["dataset"], params["method"], 100 * metrics["rank1"], 100 * metrics["mAP"],
                 100 * metrics["mINP"], metrics["num_query"], metrics["num_gallery"], params["protocol"])

    return run_stage("rank", args, body)


if __name__ == "__main__":
    sys.exit(main())
