"""Tests for hspreid.eval.rerank against a dense, literal re-implementation of torchreid's
``utils/rerank.py::re_ranking`` (full (Q+G)^2 matrices, per-item Python loops)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hspreid.eval import evaluate_features, evaluate_rank, pairwise_distance
from hspreid.eval.rerank import KReciprocalReranker, k_reciprocal_rerank, rerank_distmat

# The dense reference (torchreid ``re_ranking``, copied literally) is in _reference_rerank.py beside
# this file (pytest's default "prepend" import mode puts this folder on sys.path); it is also the
# copy that bench/bench_rerank.py measures.
from _reference_rerank import reference_from_features


def clustered(seed=0, num_q=15, num_g=60, dim=8, num_ids=10, noise=0.7, dtype=np.float64):
    """Features = identity centre + noise; queries and gallery share identities."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids, dim)) * 1.5
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    qf = centers[q_pids] + noise * rng.standard_normal((num_q, dim))
    gf = centers[g_pids] + noise * rng.standard_normal((num_g, dim))
    return qf.astype(dtype), gf.astype(dtype), q_pids, g_pids


PARAMS = [(20, 6, 0.3), (6, 3, 0.3), (5, 1, 0.5), (7, 4, 0.0), (20, 6, 1.0), (3, 2, 0.7), (10, 25, 0.3)]


# ----------------------------------------------------------------------------- equality with the reference
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k1,k2,lam", PARAMS)
def test_matches_torchreid_reference(metric, k1, k2, lam):
    qf, gf, _, _ = clustered(seed=k1 + k2)
    ours = rerank_distmat(qf, gf, k1=k1, k2=k2, lambda_value=lam, metric=metric)
    ref = reference_from_features(qf, gf, metric, k1=k1, k2=k2, lambda_value=lam)
    assert ours.shape == ref.shape == (15, 60)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (4, 3, 0.0)])
def test_matches_reference_without_squaring(k1, k2, lam):
    qf, gf, _, _ = clustered(seed=3)
    ours = rerank_distmat(qf, gf, k1=k1, k2=k2, lambda_value=lam, power=1)
    ref = reference_from_features(qf, gf, "euclidean", k1=k1, k2=k2, lambda_value=lam, power=1)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_lambda_one_is_normalised_original_distance():
    qf, gf, _, _ = clustered(seed=1)
    ours = rerank_distmat(qf, gf, lambda_value=1.0)
    d = lambda a, b: pairwise_distance(a, b, "euclidean").numpy() ** 2
    row_max = np.maximum(d(qf, qf).max(axis=1), d(qf, gf).max(axis=1))
    np.testing.assert_allclose(ours, d(qf, gf) / row_max[:, None], rtol=1e-12, atol=1e-12)


def test_ties_broken_like_a_stable_argsort():
    """Small-integer features: squared euclidean distances are exact integers, so many are exactly
    tied, and there are duplicate items. Ours breaks ties by index, like the reference with a
    stable argsort, and then matches it. (Cosine distances of such features are only tied up to
    rounding, which depends on how the matrix product is blocked, so they are not used here.)"""
    rng = np.random.default_rng(7)
    qf = rng.integers(-2, 3, size=(12, 3)).astype(np.float64)
    gf = rng.integers(-2, 3, size=(50, 3)).astype(np.float64)
    gf[5] = gf[4]  # an exact duplicate
    for k1, k2, lam in [(20, 6, 0.3), (4, 3, 0.2), (7, 1, 0.0)]:
        for block in (9, 64):
            ours = rerank_distmat(qf, gf, k1=k1, k2=k2, lambda_value=lam, block=block)
            ref = reference_from_features(qf, gf, "euclidean", k1=k1, k2=k2, lambda_value=lam,
                                          argsort_kind="stable")
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_float32_features_match_reference():
    qf, gf, _, _ = clustered(seed=11, dtype=np.float32)
    ours = rerank_distmat(qf, gf)
    assert ours.dtype == np.float32
    ref = reference_from_features(qf, gf, "euclidean")
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_tiny_inputs_fewer_items_than_k1():
    qf, gf, _, _ = clustered(seed=2, num_q=3, num_g=5)
    ours = rerank_distmat(qf, gf, k1=20, k2=6)
    ref = reference_from_features(qf, gf, "euclidean", k1=20, k2=6)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- blocking and determinism
def test_block_sizes_and_query_blocks_do_not_change_the_result():
    qf, gf, _, _ = clustered(seed=4, num_q=40, num_g=150)
    base = rerank_distmat(qf, gf, block=4096)
    for block in (3, 7, 32, 64):
        np.testing.assert_allclose(rerank_distmat(qf, gf, block=block), base, rtol=0, atol=1e-9)
    rr = KReciprocalReranker(qf, gf, block=16, query_block=3, max_expand=50)
    np.testing.assert_allclose(rr.distance_block(np.arange(40)).numpy(), base, rtol=0, atol=1e-9)
    perm = np.random.default_rng(0).permutation(40)[:17]
    np.testing.assert_allclose(rr(perm).numpy(), base[perm], rtol=0, atol=1e-9)
    np.testing.assert_allclose(rr(slice(5, 6)).numpy(), base[5:6], rtol=0, atol=1e-9)
    assert rr(np.zeros(0, dtype=np.int64)).shape == (0, 150)


def test_cpu_results_are_deterministic():
    qf, gf, _, _ = clustered(seed=5, num_q=30, num_g=120, dtype=np.float32)
    a = k_reciprocal_rerank(qf, gf, block=32).distance_block(np.arange(30))
    b = k_reciprocal_rerank(qf, gf, block=32).distance_block(np.arange(30))
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    qf, gf, _, _ = clustered(seed=6, num_q=30, num_g=120)
    cpu = rerank_distmat(qf, gf, k1=10, k2=4)
    rr = k_reciprocal_rerank(torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda(), k1=10, k2=4)
    gpu = rr.distance_block(np.arange(30))
    assert gpu.is_cuda
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, rtol=0, atol=1e-9)
    assert torch.equal(gpu, rr.distance_block(np.arange(30)))


# ----------------------------------------------------------------------------- use with the evaluator
def _labels(q_pids, g_pids, seed=0):
    rng = np.random.default_rng(seed)
    return q_pids, g_pids, rng.integers(0, 3, len(q_pids)), rng.integers(3, 6, len(g_pids))


def test_plugs_into_evaluate_features_and_improves_map():
    qf, gf, q_pids, g_pids = clustered(seed=8, num_q=60, num_g=400, dim=16, num_ids=40, noise=1.3,
                                       dtype=np.float32)
    labels = _labels(q_pids, g_pids)
    before = evaluate_features(qf, gf, *labels, metric="euclidean")
    rr = k_reciprocal_rerank(qf, gf)
    after = evaluate_features(None, None, *labels, distance_fn=rr.distance_block, block=16)
    dense = evaluate_rank(rerank_distmat(qf, gf), *labels)
    assert after["mAP"] == pytest.approx(dense[1], abs=1e-12)
    np.testing.assert_allclose(after["cmc"], dense[0])
    assert after["mAP"] > before["mAP"] + 0.02, (before["mAP"], after["mAP"])


def test_invalid_arguments():
    qf, gf, _, _ = clustered()
    with pytest.raises(ValueError):
        KReciprocalReranker(qf, gf, metric="manhattan")
    with pytest.raises(ValueError):
        KReciprocalReranker(qf, gf, k1=0)
    with pytest.raises(ValueError):
        KReciprocalReranker(qf, gf, lambda_value=1.5)
    with pytest.raises(ValueError):
        KReciprocalReranker(qf, gf, power=3)
    with pytest.raises(ValueError):
        KReciprocalReranker(qf, gf[:, :4])
    with pytest.raises(IndexError):
        KReciprocalReranker(qf, gf)(np.array([15]))
