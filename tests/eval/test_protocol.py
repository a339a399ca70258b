"""Both MARS protocols, end to end through rank_features, against a textbook evaluation."""
import numpy as np
import pytest

from hspreid.errors import UserError
from hspreid.eval import evaluate_rank
from hspreid.eval.protocol import split_query_gallery
from hspreid.eval.ranking import rank_config, rank_features


def mars_like(seed=0, n=120, d=8):
    rng = np.random.default_rng(seed)
    pid = rng.integers(0, 15, n)                 # 0 = distractor
    camid = rng.integers(0, 4, n)
    query = np.zeros(n, bool)
    for p in range(1, 15):                       # one query tracklet per (pid, cam), as MARS
        for c in range(4):
            rows = np.flatnonzero((pid == p) & (camid == c))
            if len(rows) and rng.random() < 0.5:
                query[rows[0]] = True
    feats = rng.normal(size=(n, d)).astype(np.float32) + pid[:, None] * 0.3
    labels = {"pid": pid, "camid": camid, "query": query, "gallery": np.ones(n, bool), "tracklet": np.arange(n)}
    return labels, feats


@pytest.mark.parametrize("protocol", ["official", "torchreid"])
def test_protocols_select_the_documented_gallery(protocol):
    labels, feats = mars_like()
    q_idx, g_idx = split_query_gallery(labels["query"], labels["gallery"], protocol)
    if protocol == "official":
        assert set(q_idx) <= set(g_idx)          # queries stay in the gallery (they are junk to themselves)
    else:
        assert not set(q_idx) & set(g_idx)
    r = rank_features(labels, {"global": feats[q_idx]}, {"global": feats[g_idx]}, q_idx, g_idx,
                      rank_config({"protocol": protocol}))
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    dist = 1 - unit[q_idx] @ unit[g_idx].T
    cmc, mAP, mINP = evaluate_rank(dist, labels["pid"][q_idx], labels["pid"][g_idx], labels["camid"][q_idx],
                                   labels["camid"][g_idx])
    assert np.allclose(r.cmc, cmc, atol=1e-6) and r.mAP == pytest.approx(mAP, abs=1e-6)
    assert r.mINP == pytest.approx(mINP, abs=1e-6)


def test_unknown_protocol_and_keys():
    labels, _ = mars_like()
    with pytest.raises(UserError, match="protocol"):
        split_query_gallery(labels["query"], labels["gallery"], "offical")
    with pytest.raises(UserError, match="rerank"):
        rank_config({"rerank": {"k3": 1}})
    with pytest.raises(UserError, match="distanse"):
        rank_config({"distanse": "isp"})
