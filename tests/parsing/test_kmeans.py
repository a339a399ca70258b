"""Exact 1-D 2-means and masked batched k-means (hspreid.parsing.kmeans)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from hspreid.errors import UserError
from hspreid.parsing import (KMeansOptions, batched_kmeans, cascaded_part_labels, kmeans_fit, kmeans_inertia,
                             two_means_1d)
from hspreid.parsing.kmeans import sse_1d

# ISP's per-identity scikit-learn loop and the synthetic structures are in _isp_reference.py beside
# this file (pytest's default "prepend" import mode puts this folder on sys.path); it is also what
# bench/bench_kmeans.py measures against.
from _isp_reference import evaluate, identity_maps, reference_identity


# ------------------------------------------------------------------------------- two_means_1d
def brute_force_sse(v: np.ndarray) -> float:
    """Min over every split point of the sorted values (including splits inside runs of ties) of
    the within-cluster SSE; 0 for fewer than 2 points."""
    v = np.sort(v.astype(np.float64))
    if len(v) < 2:
        return 0.0
    best = np.inf
    for i in range(1, len(v)):
        a, b = v[:i], v[i:]
        best = min(best, ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum())
    return best


def random_groups(seed: int, B: int = 40, n: int = 30):
    rng = np.random.default_rng(seed)
    vals = np.round(rng.random((B, n)) * rng.integers(2, 12, (B, 1)), 0) / 7.0   # many ties
    vals[::3] = rng.standard_normal((len(vals[::3]), n))                           # and continuous rows
    mask = rng.random((B, n)) < 0.7
    sizes = [0, 1, 2, 2, 3]                                                         # tiny groups
    for b, m in enumerate(sizes):
        mask[b] = False
        mask[b, rng.choice(n, m, replace=False)] = True
    vals[5] = 0.5                                                                   # constant group
    return torch.from_numpy(vals), torch.from_numpy(mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_means_equals_brute_force(seed):
    vals, mask = random_groups(seed)
    upper, thr = two_means_1d(vals, mask, return_threshold=True)
    ours = sse_1d(vals, mask, upper).numpy()
    for b in range(len(vals)):
        v = vals[b][mask[b]].numpy()
        assert ours[b] == pytest.approx(brute_force_sse(v), rel=1e-9, abs=1e-12), b
        u = upper[b][mask[b]].numpy()
        if u.all() or not u.any():
            continue
        assert v[~u].max() < v[u].min()          # contiguous, ties on one side
        assert (v[u] > thr[b].item()).all() and (v[~u] <= thr[b].item()).all()
    assert not upper[~mask].any()


def test_two_means_degenerate_and_deterministic():
    vals, mask = random_groups(3)
    upper, thr = two_means_1d(vals, mask, return_threshold=True)
    assert not upper[0].any() and thr[0].item() == -np.inf                  # no point
    assert upper[1].sum() == 1 and thr[1].item() == -np.inf                 # one point: upper
    assert upper[5][mask[5]].all() and thr[5].item() == -np.inf             # constant group: upper
    again = two_means_1d(vals, mask)
    assert torch.equal(upper, again)
    # 1-D input; an exact tie in SSE (2|4 and 4|2 both 101.5) goes to the lowest split point
    v = torch.tensor([21.0, 0.0, 11.0, 1.0, 20.0, 10.0])
    assert two_means_1d(v).tolist() == [True, False, True, False, True, True]
    assert two_means_1d(v.float().flip(0)).tolist() == [True, True, False, True, False, True]


def test_two_means_bad_shapes():
    with pytest.raises(UserError):
        two_means_1d(torch.zeros(2, 3, 4))
    with pytest.raises(UserError):
        two_means_1d(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))


# ------------------------------------------------------------------------------- batched_kmeans
def blobs(seed: int, B: int, n: int, d: int, k: int, spread: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(B, k, d, generator=g) * 3
    lab = torch.randint(0, k, (B, n), generator=g)
    x = centres.gather(1, lab[..., None].expand(-1, -1, d)) + spread * torch.randn(B, n, d, generator=g)
    return x


def test_matches_sklearn_with_same_init():
    B, n, d, k = 4, 600, 8, 5
    x = blobs(0, B, n, d, k, spread=2.0)
    rng = np.random.default_rng(0)
    sizes = [600, 450, 300, 120]
    mask = torch.zeros(B, n, dtype=torch.bool)
    init = torch.zeros(B, k, d)
    for b, m in enumerate(sizes):
        mask[b, rng.choice(n, m, replace=False)] = True
        pts = x[b][mask[b]]
        init[b] = pts[rng.choice(m, k, replace=False)]
    for pruned in (True, False):
        lab, C, inertia, _ = kmeans_fit(x, mask, k, init=init, iters=50, tol=1e-6, pruned=pruned)
        for b in range(B):
            pts = x[b][mask[b]].numpy()
            km = KMeans(k, init=init[b].numpy(), n_init=1, max_iter=50, tol=1e-6).fit(pts)
            assert inertia[b].item() == pytest.approx(km.inertia_, rel=0.01)
            assert kmeans_inertia(x[b:b + 1], mask[b:b + 1], lab[b:b + 1], C[b:b + 1]).item() == \
                pytest.approx(km.inertia_, rel=0.01)
            assert (lab[b][~mask[b]] == -1).all()


@pytest.mark.parametrize("init", ["kmeans++", "random", "deterministic", "tensor"])
@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("n_init", [1, 3])
def test_padded_groups_equal_groups_alone(init, cosine, n_init):
    B, n, d, k = 5, 400, 6, 4
    x = blobs(1, B, n, d, k, spread=1.5)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(B, n, generator=g) < torch.tensor([0.9, 0.5, 0.3, 0.7, 0.05])[:, None]
    seeds = [11, 12, 13, 14, 15]
    it = torch.randn(B, k, d, generator=g) if init == "tensor" else init
    lab, C = batched_kmeans(x, mask, k, init=it, seed=seeds, cosine=cosine, iters=30, n_init=n_init, init_sample=150)
    for b in range(B):
        alone = x[b][mask[b]][None]
        it_b = it[b] if init == "tensor" else init
        lab_b, C_b = batched_kmeans(alone, None, k, init=it_b, seed=seeds[b], cosine=cosine, iters=30, n_init=n_init,
                                    init_sample=150)
        assert torch.equal(lab[b][mask[b]], lab_b[0]), (init, b)
        assert torch.allclose(C[b], C_b[0], atol=1e-5)


def test_pruned_equals_dense_and_deterministic():
    B, n, d, k = 3, 2000, 16, 6
    x = blobs(2, B, n, d, k, spread=2.5)
    mask = torch.rand(B, n, generator=torch.Generator().manual_seed(2)) < 0.8
    for cosine in (False, True):
        a = kmeans_fit(x, mask, k, seed=3, pruned=True, cosine=cosine)
        b = kmeans_fit(x, mask, k, seed=3, pruned=False, cosine=cosine)
        assert torch.equal(a[0], b[0]) and torch.equal(a[3], b[3])
        assert torch.allclose(a[1], b[1], atol=1e-5)
        assert torch.allclose(a[2], b[2], rtol=1e-4)
        c = kmeans_fit(x, mask, k, seed=3, pruned=True, cosine=cosine)
        assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    # init_sample: deterministic, valid, and close in inertia to full k-means++
    full = kmeans_fit(x, mask, k, seed=3)
    s1 = kmeans_fit(x, mask, k, seed=3, init_sample=300)
    s2 = kmeans_fit(x, mask, k, seed=3, init_sample=300)
    assert torch.equal(s1[0], s2[0])
    assert (s1[2] <= full[2] * 1.2).all()


def test_empty_cluster_reseeded():
    g = torch.Generator().manual_seed(4)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres.repeat_interleave(50, 0) + 0.3 * torch.randn(150, 2, generator=g))[None]
    init = torch.tensor([[0.1, 0.0], [-0.1, 0.0], [1000.0, 1000.0]])   # third centroid gets no point
    for pruned in (True, False):
        lab, C, inertia, _ = kmeans_fit(x, None, 3, init=init, iters=20, pruned=pruned)
        counts = torch.bincount(lab[0], minlength=3)
        assert (counts > 0).all()
        truth = torch.arange(3).repeat_interleave(50)
        # the three blobs are recovered (up to a permutation)
        for t in range(3):
            assert lab[0][truth == t].unique().numel() == 1
        assert inertia.item() < 150 * 2 * 0.3 ** 2 * 1.5


@pytest.mark.parametrize("init", ["kmeans++", "random", "deterministic"])
def test_fewer_points_than_k(init):
    x = torch.randn(3, 10, 4)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, :2] = True          # 2 points, k = 4
    mask[1, :10] = True
    x[2] = 1.0                  # group 2: no valid point
    lab, C = batched_kmeans(x, mask, 4, init=init)
    assert (lab[0, :2] >= 0).all() and (lab[0, :2] < 4).all() and (lab[0, 2:] == -1).all()
    assert (lab[2] == -1).all()
    assert torch.isfinite(C).all()
    # identical points
    same = torch.ones(1, 20, 3)
    lab, C = batched_kmeans(same, None, 3, init=init)
    assert ((lab >= 0) & (lab < 3)).all() and torch.isfinite(C).all()


def test_cosine_centroids_unit_and_assignment():
    x = blobs(5, 2, 500, 8, 3, spread=1.0)
    lab, C = batched_kmeans(x, None, 3, cosine=True, seed=0)
    assert torch.allclose(C.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    xn = x / x.norm(dim=-1, keepdim=True)
    assert torch.equal(torch.einsum("bnd,bkd->bnk", xn, C).argmax(-1), lab)


def test_bad_arguments():
    x = torch.randn(2, 5, 3)
    with pytest.raises(UserError):
        batched_kmeans(x, None, 0)
    with pytest.raises(UserError):
        batched_kmeans(x, None, 2, init="bogus")
    with pytest.raises(UserError):
        batched_kmeans(x, None, 2, init=torch.zeros(3, 3))
    with pytest.raises(UserError):
        batched_kmeans(x[0], None, 2)
    with pytest.raises(UserError):
        batched_kmeans(x, None, 2, seed=[1, 2, 3])
    with pytest.raises(UserError):
        batched_kmeans(x, None, 2, n_init=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = blobs(6, 4, 800, 16, 5, spread=2.0)
    mask = torch.rand(4, 800, generator=torch.Generator().manual_seed(6)) < 0.7
    cpu = kmeans_fit(x, mask, 5, seed=1)
    gpu = kmeans_fit(x.cuda(), mask.cuda(), 5, seed=1)
    assert (cpu[0] == gpu[0].cpu()).float().mean() > 0.999
    assert torch.allclose(cpu[2], gpu[2].cpu(), rtol=1e-4)
    up_c = two_means_1d(x[..., 0], mask)
    up_g = two_means_1d(x[..., 0].cuda(), mask.cuda())
    assert torch.equal(up_c, up_g.cpu())


# ----------------------------------------------------------------- ISP labels vs scikit-learn
@pytest.mark.parametrize("structure", ["rows", "patches", "camera", "blend"])
def test_part_sse_not_above_sklearn_reference(structure):
    """The default cascaded_part_labels call clusters each identity's foreground at least as well as
    ISP's per-identity scikit-learn loop with the same iteration cap (20): total part SSE <= 1.01x.
    One k-means++ run per identity (the old default, and scikit-learn's) misses this on some
    structures by several %, as its local optimum depends on the seeds."""
    n_ids, n_img, parts = 12, 8, 7
    maps = [identity_maps(structure, pid, n_img, parts=parts) for pid in range(n_ids)]
    options = KMeansOptions(iters=20)                                    # the defaults: sharpened, as ISP's code
    ours = cascaded_part_labels(torch.cat(maps), torch.arange(n_ids).repeat_interleave(n_img), parts, options)
    ours_sse = ref_sse = 0.0
    with threadpool_limits(1):
        for pid, f in enumerate(maps):
            f = f.numpy()
            ref = evaluate(f, reference_identity(f, parts, 20, options.sharpen, 0, foreground="exact"), parts,
                           options.sharpen)
            own = evaluate(f, ours[pid * n_img:(pid + 1) * n_img].numpy(), parts, options.sharpen)
            assert abs(own[2] - ref[2]) <= 0.005 * ref[2]       # the same foreground, up to float rounding
            ours_sse, ref_sse = ours_sse + own[1], ref_sse + ref[1]
    assert ours_sse <= 1.01 * ref_sse, (structure, ours_sse / ref_sse)
