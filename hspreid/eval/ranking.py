"""From a feature store to scores: protocol, distance mode, optional re-ranking, CMC/mAP/mINP."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from hspreid.config import block_values, typed_config
from hspreid.data.feature_store import LABEL_KEYS, read_features

from .part_distance import PartAwareDistance
from .protocol import split_query_gallery
from .rank import evaluate_features
from .rerank import KReciprocalReranker

@dataclass(frozen=True)
class RerankConfig:
    """k-reciprocal re-ranking (Zhong et al. 2017): the ``rank.rerank`` block."""

    enabled: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = field(default=0.3, metadata={"key": "lambda"})


@dataclass(frozen=True)
class RankConfig:
    """The ``rank`` block: protocol, distance, AP convention and re-ranking."""

    protocol: str = "official"
    distance: str = "global"
    metric: str = "cosine"
    components: list[str] | None = None
    ap: str = "non_interpolated"
    max_rank: int = 50
    block: int = 256
    rerank: RerankConfig = RerankConfig()




@dataclass
class Ranking:
    """Everything the rank stage writes or draws."""

    q_idx: np.ndarray             # rows of the feature store that are queries
    g_idx: np.ndarray             # rows that form the gallery
    distance: Callable[[np.ndarray], torch.Tensor]  # query positions -> [b, G] distances
    cmc: np.ndarray
    mAP: float
    mINP: float
    per_query: pd.DataFrame
    seconds: dict[str, float]


def rank_config(params: dict[str, Any]) -> dict[str, Any]:
    """The ``rank`` block over :class:`RankConfig`'s defaults, as a mapping; a typo or a wrong type is named."""
    return block_values(typed_config(RankConfig, params, "rank"))


def rank_feature_store(path, cfg: dict[str, Any], device: str | torch.device = "cpu") -> tuple[Ranking, dict, dict]:
    """Read ``features.zarr`` row-wise (labels first, then only the query and gallery rows of
    each embedding) and rank it; returns (ranking, labels, store attrs)."""
    labels, attrs = read_features(path, names=list(LABEL_KEYS))
    q_idx, g_idx = split_query_gallery(labels["query"], labels["gallery"], cfg["protocol"])
    query, _ = read_features(path, q_idx, names=list(attrs["embeddings"]), upcast=False)
    gallery, _ = read_features(path, g_idx, names=list(attrs["embeddings"]), upcast=False)
    return rank_features(labels, query, gallery, q_idx, g_idx, cfg, device, inplace=True), labels, attrs


def rank_features(labels: dict[str, np.ndarray], query: dict[str, np.ndarray], gallery: dict[str, np.ndarray],
                  q_idx: np.ndarray, g_idx: np.ndarray, cfg: dict[str, Any], device: str | torch.device = "cpu",
                  inplace: bool = False) -> Ranking:
    """Score the ranking of ``query`` against ``gallery`` embeddings (rows ``q_idx`` / ``g_idx``
    of a feature store whose label arrays are ``labels``)."""
    t0 = time.monotonic()
    pad = PartAwareDistance(query, gallery, cfg["distance"], components=cfg["components"], metric=cfg["metric"],
                            device=device, inplace=inplace)
    distance: Callable[[np.ndarray], torch.Tensor] = pad.distance_block
    seconds = {}
    if cfg["rerank"]["enabled"]:
        r = cfg["rerank"]
        t1 = time.monotonic()
        distance = KReciprocalReranker(*pad.representation(), k1=r["k1"], k2=r["k2"], lambda_value=r["lambda"],
                                       metric=cfg["metric"], device=device).distance_block
        seconds["rerank_prepare"] = round(time.monotonic() - t1, 3)
    res = evaluate_features(None, None, labels["pid"][q_idx], labels["pid"][g_idx], labels["camid"][q_idx],
                            labels["camid"][g_idx], max_rank=cfg["max_rank"], ap=cfg["ap"], block=cfg["block"],
                            device=device, distance_fn=distance, return_per_query=True)
    per_query = res["per_query"]
    for name in ("pid", "camid", "tracklet"):
        per_query[name] = labels[name][q_idx]
    seconds["evaluate"] = round(time.monotonic() - t0, 3)
    return Ranking(q_idx, g_idx, distance, res["cmc"], res["mAP"], res["mINP"], per_query, seconds)
