"""Re-ID evaluation: pairwise distances and blocked CMC / mAP / mINP (torchreid / fast-reid conventions)."""
from .distance import l2_normalize, pairwise_distance
from .rank import AP_MODES, QueryScores, evaluate_features, evaluate_rank

__all__ = [
    "AP_MODES",
    "QueryScores",
    "evaluate_features",
    "evaluate_rank",
    "l2_normalize",
    "pairwise_distance",
]
