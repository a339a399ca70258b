"""A dense, literal numpy re-implementation of torchreid's ``utils/rerank.py::re_ranking`` (full
(Q+G)^2 matrices, per-item Python loops): the oracle of ``test_rerank.py`` and the peer that
``bench/bench_rerank.py`` measures (through ``bench/_references.py``). One copy, kept here so that
the tests stand on their own; not collected by pytest (no ``test_`` prefix)."""
from __future__ import annotations

import numpy as np

from hspreid.eval import pairwise_distance


def torchreid_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3,
                         argsort_kind="quicksort", power=2):
    """torchreid ``re_ranking`` step by step (``power=2`` squares the input, as torchreid does;
    ``argsort_kind="stable"`` only changes the order of exactly tied distances). The ``del`` lines
    are torchreid's: they free memory early, which the benchmark's peak RSS sees."""
    original_dist = np.concatenate([np.concatenate([q_q_dist, q_g_dist], axis=1),
                                    np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, power).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind=argsort_kind).astype(np.int32)

    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    half = int(np.around(k1 / 2.0))
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        for k in nonzero:
            rows = inv_index[k]
            temp_min[0, rows] = temp_min[0, rows] + np.minimum(V[i, k], V[rows, k])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    del original_dist, V, jaccard_dist
    return final_dist[:query_num, query_num:]


def reference_from_features(qf, gf, metric, **kw):
    """The reference fed with hspreid's own distance convention (``pairwise_distance`` matrices,
    as torchreid's engine feeds it)."""
    dist = lambda a, b: pairwise_distance(a, b, metric).numpy()
    return torchreid_re_ranking(dist(qf, gf), dist(qf, qf), dist(gf, gf), **kw)
