"""Tests for hspreid.eval.rank against an independent, per-query textbook implementation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hspreid.eval import evaluate_features, evaluate_rank, pairwise_distance


# ----------------------------------------------------------------------------- textbook reference
def _textbook_ap_non_interpolated(matches: np.ndarray) -> float:
    hits, total = 0, 0.0
    for j, m in enumerate(matches):
        if m:
            hits += 1
            total += hits / (j + 1)
    return total / hits


def _textbook_ap_trapezoid(matches: np.ndarray) -> float:
    """Literal port of the official Market-1501 / MARS MATLAB compute_AP.m loop (junk already removed)."""
    n_good = int(matches.sum())
    old_recall, old_precision, ap, intersect = 0.0, 1.0, 0.0, 0
    for j, m in enumerate(matches):
        intersect += int(m)
        recall = intersect / n_good
        precision = intersect / (j + 1)
        ap += (recall - old_recall) * ((old_precision + precision) / 2)
        old_recall, old_precision = recall, precision
    return ap


def textbook_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, ap="non_interpolated"):
    """One query at a time, following the reference doc's step list literally."""
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")  # 1. stable ascending sort
        remove = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])  # 2. delete junk
        matches = (g_pids[order][~remove] == q_pids[i]).astype(np.int64)  # 3. raw_cmc
        if not matches.any():  # 4. skip
            continue
        cmc = np.minimum(np.cumsum(matches), 1)  # 5. CMC
        if len(cmc) < max_rank:
            cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])
        all_cmc.append(cmc[:max_rank])
        ap_fn = _textbook_ap_non_interpolated if ap == "non_interpolated" else _textbook_ap_trapezoid
        all_ap.append(ap_fn(matches))  # 6. AP
        last_hit_rank = np.flatnonzero(matches)[-1] + 1
        all_inp.append(matches.sum() / last_hit_rank)  # mINP (fast-reid)
    if not all_cmc:
        raise ValueError("no valid query")
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap)), float(np.mean(all_inp))


def random_case(seed: int, num_q: int = 40, num_g: int = 60, num_ids: int = 8, num_cams: int = 3):
    """Integer distances (many ties), gallery distractors (pid 0), queries without any match."""
    rng = np.random.default_rng(seed)
    distmat = rng.integers(0, 6, size=(num_q, num_g)).astype(np.float32)
    q_pids = rng.integers(1, num_ids + 3, size=num_q)  # ids > num_ids never appear in the gallery
    g_pids = rng.integers(0, num_ids + 1, size=num_g)  # 0 = distractor
    q_camids = rng.integers(0, num_cams, size=num_q)
    g_camids = rng.integers(0, num_cams, size=num_g)
    return distmat, q_pids, g_pids, q_camids, g_camids


def assert_same(ours, ref, tol=1e-6):
    np.testing.assert_allclose(ours[0], ref[0], atol=tol, rtol=0)
    assert ours[1] == pytest.approx(ref[1], abs=tol)
    assert ours[2] == pytest.approx(ref[2], abs=tol)


# ----------------------------------------------------------------------------- vs textbook
@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # counting path and sorting path
@pytest.mark.parametrize("ap", ["non_interpolated", "trapezoid"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [1, 7, 256])
def test_matches_textbook(seed, ap, block, dtype):
    case = random_case(seed)
    case = (case[0].astype(dtype),) + case[1:]
    ref = textbook_eval(*case, max_rank=50, ap=ap)
    assert_same(evaluate_rank(*case, max_rank=50, ap=ap, block=block), ref)


def test_negative_zero_and_negative_distances_keep_stable_order():
    dist = np.array([[0.0, -0.0, -1.0, 0.5, -0.0, 0.0]], dtype=np.float32)
    g_pids = np.array([1, 2, 1, 1, 1, 2])
    g_cams = np.array([1, 1, 1, 0, 1, 1])  # item 3 is junk (same cam as the query)
    for dtype in (np.float32, np.float64):
        d = dist.astype(dtype)
        assert_same(evaluate_rank(d, [1], g_pids, [0], g_cams, max_rank=6),
                    textbook_eval(d, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=6))


@pytest.mark.parametrize("ap", ["non_interpolated", "trapezoid"])
@pytest.mark.parametrize("num_g", [1, 3, 9])
def test_small_gallery_is_padded(num_g, ap):
    case = random_case(11, num_q=30, num_g=num_g, num_ids=2, num_cams=2)
    ref = textbook_eval(*case, max_rank=20, ap=ap)
    ours = evaluate_rank(*case, max_rank=20, ap=ap, block=4)
    assert ours[0].shape == (20,)
    assert_same(ours, ref)


@pytest.mark.parametrize("max_rank", [1, 5, 50])
def test_max_rank_truncation(max_rank):
    case = random_case(3, num_q=25, num_g=80)
    assert_same(evaluate_rank(*case, max_rank=max_rank), textbook_eval(*case, max_rank=max_rank))


def test_continuous_distances_larger():
    rng = np.random.default_rng(5)
    case = random_case(5, num_q=120, num_g=700, num_ids=30, num_cams=6)
    distmat = rng.random(case[0].shape).astype(np.float32)
    for ap in ("non_interpolated", "trapezoid"):
        assert_same(evaluate_rank(distmat, *case[1:], ap=ap, block=32), textbook_eval(distmat, *case[1:], ap=ap))


def test_torch_and_half_inputs_agree_with_numpy():
    case = random_case(2)
    ref = evaluate_rank(*case)
    assert_same(evaluate_rank(torch.from_numpy(case[0]), *case[1:]), ref, tol=0)
    assert_same(evaluate_rank(case[0].astype(np.float16), *case[1:]), ref, tol=0)
    labels = [torch.from_numpy(a) for a in case[1:]]
    assert_same(evaluate_rank(torch.from_numpy(case[0]), *labels), ref, tol=0)


def test_string_labels():
    case = random_case(4)
    str_labels = [np.array([f"market1501_{v}" for v in a]) for a in case[1:]]
    assert_same(evaluate_rank(case[0], *str_labels), evaluate_rank(*case), tol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    case = random_case(7, num_q=300, num_g=500, num_ids=20)
    for ap in ("non_interpolated", "trapezoid"):
        ref = evaluate_rank(*case, ap=ap)
        assert_same(evaluate_rank(torch.from_numpy(case[0]).cuda(), *case[1:], ap=ap, block=64), ref)


# ----------------------------------------------------------------------------- evaluate_features
def test_features_equal_rank_on_explicit_matrix_exact():
    """Integer features: squared euclidean distances are exact, so the results must be identical."""
    rng = np.random.default_rng(0)
    _, q_pids, g_pids, q_camids, g_camids = random_case(8, num_q=50, num_g=90)
    qf = rng.integers(-3, 4, size=(50, 16)).astype(np.float32)
    gf = rng.integers(-3, 4, size=(90, 16)).astype(np.float32)
    labels = (q_pids, g_pids, q_camids, g_camids)
    distmat = pairwise_distance(qf, gf, "euclidean").numpy()
    for ap in ("non_interpolated", "trapezoid"):
        ref = evaluate_rank(distmat, *labels, ap=ap)
        assert_same(ref, textbook_eval(distmat, *labels, ap=ap))
        for block in (1, 7, 256):
            res = evaluate_features(qf, gf, *labels, metric="euclidean", ap=ap, block=block)
            assert_same((res["cmc"], res["mAP"], res["mINP"]), ref, tol=0)


def test_features_cosine_and_torch_inputs():
    rng = np.random.default_rng(1)
    _, q_pids, g_pids, q_camids, g_camids = random_case(9, num_q=64, num_g=128)
    qf, gf = rng.standard_normal((64, 32)), rng.standard_normal((128, 32))
    labels = (q_pids, g_pids, q_camids, g_camids)
    for feats in ((qf, gf), (torch.from_numpy(qf).float(), torch.from_numpy(gf).half())):
        ref = evaluate_rank(pairwise_distance(*feats, "cosine"), *labels)
        assert_same(ref, textbook_eval(pairwise_distance(*feats, "cosine").numpy(), *labels))
        res = evaluate_features(*feats, *labels, metric="cosine", block=10)
        assert_same((res["cmc"], res["mAP"], res["mINP"]), ref, tol=1e-6)


def test_distance_fn_and_per_query_frame():
    case = random_case(10)
    distmat, labels = case[0], case[1:]
    calls = []

    def distance_fn(idx: np.ndarray) -> np.ndarray:
        calls.append(len(idx))
        return distmat[idx]

    res = evaluate_features(None, None, *labels, distance_fn=distance_fn, block=16, return_per_query=True)
    assert calls == [16, 16, 8]
    assert_same((res["cmc"], res["mAP"], res["mINP"]), textbook_eval(*case), tol=1e-6)

    df = res["per_query"]
    assert list(df.columns) == ["query", "valid", "AP", "first_match_rank", "INP"]
    assert len(df) == 40 and df["valid"].sum() == res["num_valid_queries"] < 40
    assert df.loc[~df["valid"], "first_match_rank"].eq(0).all()
    assert df.loc[~df["valid"], ["AP", "INP"]].isna().all().all()
    assert df.loc[df["valid"], "first_match_rank"].ge(1).all()
    assert df.loc[df["valid"], "AP"].mean() == pytest.approx(res["mAP"])
    assert (df.loc[df["valid"], "first_match_rank"] == 1).mean() == pytest.approx(res["cmc"][0])


def test_distance_fn_bad_shape():
    case = random_case(10)
    with pytest.raises(ValueError, match="distance_fn returned shape"):
        evaluate_features(None, None, *case[1:], distance_fn=lambda idx: case[0][idx, :-1])


# ----------------------------------------------------------------------------- hand-checked cases
def _one_query(dist, g_pids, g_camids, q_pid=1, q_camid=0, **kw):
    return evaluate_rank(np.array([dist], dtype=np.float32), [q_pid], g_pids, [q_camid], g_camids, **kw)


def test_hand_checked_wrong_right_wrong_right():
    args = ([0.1, 0.2, 0.3, 0.4], [2, 1, 3, 1], [1, 1, 1, 1])
    cmc, mAP, mINP = _one_query(*args)
    assert mAP == pytest.approx((1 / 2 + 2 / 4) / 2)  # 0.5
    assert mINP == pytest.approx(2 / 4)
    np.testing.assert_array_equal(cmc, [0.0] + [1.0] * 49)
    # trapezoid: hit@2: (p_prev=0/1 + 1/2)/2 = 1/4; hit@4: (p_prev=1/3 + 2/4)/2 = 5/12; AP = (1/4+5/12)/2 = 1/3
    _, mAP_trap, _ = _one_query(*args, ap="trapezoid")
    assert mAP_trap == pytest.approx(1 / 3)


def test_hand_checked_trapezoid_single_positive_and_rank1():
    assert _one_query([0.1, 0.2], [2, 1], [1, 1], ap="trapezoid")[1] == pytest.approx(0.25)
    assert _one_query([0.1, 0.2], [2, 1], [1, 1])[1] == pytest.approx(0.5)
    # hits at ranks 1 and 3: ((1+1)/2 + (p_prev=1/2 + 2/3)/2) / 2 = (1 + 7/12) / 2
    assert _one_query([0.1, 0.2, 0.3], [1, 2, 1], [1, 1, 1], ap="trapezoid")[1] == pytest.approx(19 / 24)


def test_same_pid_same_cam_is_removed_not_counted():
    # junk at the top and between the hits: ranking after removal is [wrong, right, right]
    cmc, mAP, mINP = _one_query([0.0, 0.1, 0.2, 0.25, 0.3], [1, 2, 1, 1, 1], [0, 1, 1, 0, 2], max_rank=5)
    np.testing.assert_array_equal(cmc, [0, 1, 1, 1, 1])
    assert mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert mINP == pytest.approx(2 / 3)


def test_query_without_match_is_skipped():
    distmat = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], dtype=np.float32)
    g_pids, g_camids = [1, 2, 3], [1, 1, 1]
    # query 0 matches at rank 1; query 1 (pid 9) has no match; query-level means over query 0 only
    cmc, mAP, mINP = evaluate_rank(distmat, [1, 9], g_pids, [0, 0], g_camids, max_rank=3)
    np.testing.assert_array_equal(cmc, [1, 1, 1])
    assert (mAP, mINP) == (1.0, 1.0)
    res = evaluate_features(None, None, [1, 9], g_pids, [0, 0], g_camids, distance_fn=lambda i: distmat[i])
    assert res["num_valid_queries"] == 1


def test_all_invalid_raises():
    with pytest.raises(ValueError, match="no valid query"):
        # the only same-pid item is in the query's camera: removed, so nothing is left to find
        _one_query([0.1, 0.2], [1, 2], [0, 1])
    with pytest.raises(ValueError):
        evaluate_rank(np.zeros((2, 3)), [5, 6], [1, 2, 3], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="no valid query"):  # no queries at all
        evaluate_rank(np.zeros((0, 3)), [], [1, 2, 3], [], [1, 1, 1])


def test_bad_arguments():
    case = random_case(0)
    with pytest.raises(ValueError, match="ap mode"):
        evaluate_rank(*case, ap="interpolated")
    with pytest.raises(ValueError, match="pids"):
        evaluate_rank(case[0], case[1][:-1], *case[2:])
    with pytest.raises(ValueError, match="block"):
        evaluate_rank(*case, block=0)


# ----------------------------------------------------------------------------- stable tie-break
def test_ties_keep_gallery_order():
    assert _one_query([0.5, 0.5], [2, 1], [1, 1])[0][0] == 0.0  # wrong first in gallery order
    assert _one_query([0.5, 0.5], [1, 2], [1, 1])[0][0] == 1.0  # right first in gallery order


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_ties_stable_on_long_rows(device):
    num_g = 5000
    g_pids = np.full(num_g, 2)
    g_pids[[1234, num_g - 1]] = 1
    distmat = torch.zeros((3, num_g), device=device)
    cmc, mAP, mINP = evaluate_rank(distmat, [1, 1, 1], g_pids, [0, 0, 0], np.ones(num_g, dtype=int), max_rank=2000)
    assert cmc[1233] == 0.0 and cmc[1234] == 1.0
    assert mAP == pytest.approx((1 / 1235 + 2 / num_g) / 2)
    assert mINP == pytest.approx(2 / num_g)
