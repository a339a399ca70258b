"""Stage rank: score the ranking of the gallery for every query; write metrics and pictures.

    python -m stages.rank --features results/mars/baseline/features.zarr \
        --frames results/mars/frames.zarr --index results/mars/index.parquet \
        --output results/mars/baseline/metrics.json --params '{"protocol": "official", "distance": "global"}'

Writes, beside ``--output`` (metrics.json): ``cmc.csv`` (the full CMC curve), ``per_query.parquet``
(pid, camid, AP, rank of the first true match per query), ``cmc.png``, ``ranked.png`` (the drawn queries'
ranked lists, overlaid with the model's own part maps where it predicts parsing, else with the ground-truth
parts where the data set has them), ``training.png`` (the model's training curves) and ``metrics.html``
(the headline numbers, for ``snakemake --report``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from hspreid import viz
from hspreid.data.frames import FrameStore
from hspreid.data.index import tracklet_table
from hspreid.eval.ranking import rank_config, rank_feature_store
from hspreid.io import atomic_file, log, write_json
from hspreid.models import load_model
from hspreid.models.parsing import predict_parsing
from hspreid.runtime import pick_device
from hspreid.stage import parse_params, run_stage, stage_parser

REPORTED_RANKS = (1, 5, 10, 20)
RUN_KEYS = ("dataset", "method", "config_hash", "trained_on")


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__, torch_threads=True)
    p.add_argument("--features", required=True, type=Path, help="features.zarr")
    p.add_argument("--frames", required=True, type=Path, help="frames.zarr (for the ranked-list picture)")
    p.add_argument("--index", required=True, type=Path, help="index.parquet (for the ranked-list picture)")
    p.add_argument("--model", required=True, type=Path, help="the model.pt behind the features (its training "
                   "curves, and its part maps in the ranked-list picture)")
    p.add_argument("--output", required=True, type=Path, help="metrics.json to write; the other outputs go beside it")
    p.add_argument("--device", default="cpu", help="where distances are computed: auto, cpu, cuda or cuda:N")
    p.add_argument("--queries-drawn", type=int, default=8, help="queries in ranked.png")
    args = p.parse_args(argv)

    def body() -> None:
        t0 = time.monotonic()
        params = parse_params(args.params)
        run = {k: params.pop(k) for k in RUN_KEYS if k in params}
        cfg = rank_config(params)
        ranking, feats, attrs = rank_feature_store(args.features, cfg, device=pick_device(args.device))
        cmc, out = ranking.cmc, args.output.parent
        metrics = {
            **run, "protocol": cfg["protocol"], "distance": cfg["distance"], "metric": cfg["metric"],
            "components": cfg["components"], "ap": cfg["ap"], "rerank": cfg["rerank"],
            "aggregation": attrs.get("aggregation"), "rounds": attrs.get("rounds", []),
            "parsing_iou": attrs.get("parsing_iou"), "parsing": attrs.get("parsing"),
            "segmentation": attrs.get("segmentation"), "world_size": attrs.get("world_size", 1),
            "num_query": int(len(ranking.q_idx)), "num_gallery": int(len(ranking.g_idx)),
            "num_valid_query": int(ranking.per_query["valid"].sum()),
            **{f"rank{r}": round(float(cmc[min(r, len(cmc)) - 1]), 6) for r in REPORTED_RANKS},
            "mAP": round(ranking.mAP, 6), "mINP": round(ranking.mINP, 6),
            "cmc": [round(float(c), 6) for c in cmc],
            "stage_seconds": {**attrs.get("stage_seconds", {}), "rank": round(time.monotonic() - t0, 2)},
        }
        with atomic_file(out / "cmc.csv") as tmp:
            pd.DataFrame({"rank": np.arange(1, len(cmc) + 1), "cmc": cmc}).to_csv(tmp, index=False)
        with atomic_file(out / "per_query.parquet") as tmp:
            ranking.per_query.to_parquet(tmp, index=False)
        title = f"{run['dataset']} / {run['method']}: R1 {100 * metrics['rank1']:.1f}%, mAP {100 * ranking.mAP:.1f}%"
        viz.plot_cmc(cmc, out / "cmc.png", title=title)
        model, ckpt = load_model(args.model)
        viz.plot_training(ckpt["history"], out / "training.png",
                          title=f"{run['dataset']} / {run['method']}: training ({args.model})")
        parsing = None
        if model.predicts_parsing:
            device = pick_device(args.device)
            parsing = lambda rows: predict_parsing(model, args.frames, rows, device=device)  # noqa: E731
        draw_ranked_lists(ranking, feats, args.frames, args.index, out / "ranked.png", args.queries_drawn, parsing)
        with atomic_file(out / "metrics.html") as tmp:
            tmp.write_text(metrics_table(metrics))
        write_json(args.output, metrics)
        log.info("%s/%s: rank-1 %.2f%%  mAP %.2f%%  mINP %.2f%% (%d queries, %d gallery, protocol %s, distance %s%s)",
                 run["dataset"], run["method"], 100 * metrics["rank1"], 100 * ranking.mAP, 100 * ranking.mINP,
                 metrics["num_query"], metrics["num_gallery"], cfg["protocol"], cfg["distance"],
                 ", re-ranked" if cfg["rerank"]["enabled"] else "")

    return run_stage("rank", args, body)


def metrics_table(metrics: dict) -> str:
    """A small HTML table of the headline numbers and the settings (for snakemake --report)."""
    rows = {"data set": metrics["dataset"], "method": metrics["method"], "protocol": metrics["protocol"],
            "distance": metrics["distance"], "re-ranking": "k1={k1}, k2={k2}, lambda={lambda}".format(**metrics["rerank"])
            if metrics["rerank"]["enabled"] else "off", "queries / gallery": f"{metrics['num_query']} / {metrics['num_gallery']}",
            **{f"rank-{r}": f"{100 * metrics[f'rank{r}']:.2f}%" for r in REPORTED_RANKS},
            "mAP": f"{100 * metrics['mAP']:.2f}%", "mINP": f"{100 * metrics['mINP']:.2f}%",
            "config hash": metrics["config_hash"]}
    return pd.DataFrame({"value": rows}).to_html(border=0)


def draw_ranked_lists(ranking, feats: dict, frames: Path, index: Path, path: Path, count: int,
                      parsing: Callable[[np.ndarray], np.ndarray] | None) -> None:
    """ranked.png: the hardest, easiest and some middle queries with their top-10 gallery items; ``parsing``
    (frame rows -> part maps) overlays predicted parts, else the store's ground-truth masks are drawn."""
    sel = viz.pick_queries(ranking.per_query, count)
    q, g = ranking.q_idx[sel], ranking.g_idx
    ranked, matches, junk = viz.top_ranked(ranking.distance(sel), feats["pid"][q], feats["pid"][g],
                                           feats["camid"][q], feats["camid"][g], top=10)
    image = viz.ranked_list_image(FrameStore(frames), tracklet_table(pd.read_parquet(index)), feats["tracklet"][q],
                                  feats["tracklet"][g], ranked, matches, junk,
                                  captions=viz.query_captions(ranking.per_query, sel), parsing=parsing)
    viz.save_png(path, image)


if __name__ == "__main__":
    sys.exit(main())
