"""HCGA co-parsing (HCGA §III.B, Algorithm 1): losses, CPLR, batched decoder training, streaming."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hspreid.errors import UserError
from hspreid.partmaps import part_iou
from hspreid.parsing.coparse import FALLBACKS, coparse_identities, coparse_part_labels
from hspreid.parsing.coparse_engine import init_decoder, patch_gram
from hspreid.parsing.coparse_losses import (background_consistency_loss, local_consistency_loss,
                                            semantic_consistency_loss)
from hspreid.parsing.cplr import cplr
from hspreid.parsing.options import CoparseOptions


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- losses
def test_semantic_loss_matches_hand_computation():
    y = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]).view(1, 3, 1, 2).requires_grad_()
    a = math.log(math.e + math.e ** 2 + 1) - 2            # pixel 1: argmax 1 (logit 2)
    b = math.log(2 + math.e ** 3) - 3                      # pixel 2: argmax 2 (logit 3)
    loss = semantic_consistency_loss(y)
    assert loss.item() == pytest.approx((a + b) / 2, rel=1e-6)
    loss.backward()                                        # target detached: grad = (softmax - onehot) / M
    sm = torch.softmax(y.detach()[0, :, 0, 0], 0)
    assert torch.allclose(y.grad[0, :, 0, 0], (sm - torch.tensor([0.0, 1.0, 0.0])) / 2)


def test_local_loss_matches_hand_computation():
    y = torch.tensor([[0.0, 1.0], [3.0, 7.0]]).view(1, 1, 2, 2)
    # half of the 3x3 window: (0,1): |0-1|,|3-7| -> 2.5; (1,-1): |1-3| -> 2; (1,0): |0-3|,|1-7| -> 4.5;
    # (1,1): |0-7| -> 7
    assert local_consistency_loss(y).item() == pytest.approx(2.5 + 2 + 4.5 + 7)
    assert local_consistency_loss(y, diagonals=False).item() == pytest.approx(2.5 + 4.5)
    assert local_consistency_loss(y, p=2).item() == pytest.approx(8.5 + 4 + 22.5 + 49)
    y2 = torch.cat([y, torch.zeros_like(y)], 1)            # a zero channel halves every mean
    assert local_consistency_loss(y2).item() == pytest.approx(8.0)
    assert local_consistency_loss(y, window=1).item() == 0.0
    two = torch.cat([y, y + 1])                            # the mean over images
    assert local_consistency_loss(two).item() == pytest.approx(16.0)


def test_background_loss_pairs_adjacent_images_of_one_camera():
    y = torch.tensor([0.0, 1.0, 10.0, 20.0, 4.0, 6.0, 5.0, 5.0]).view(4, 1, 1, 2)
    # camids [1, 0, 1, 0]: pairs (0, 2) and (1, 3)
    want = ((4 + 5) / 2 + (5 + 15) / 2) / 2
    assert background_consistency_loss(y, [1, 0, 1, 0]).item() == pytest.approx(want)
    want2 = ((16 + 25) / 2 + (25 + 225) / 2) / 2
    assert background_consistency_loss(y, np.array([1, 0, 1, 0]), p=2).item() == pytest.approx(want2)
    # one camera: consecutive pairs (0,1), (1,2), (2,3)
    d = [(10 + 19) / 2, (6 + 14) / 2, (1 + 1) / 2]
    assert background_consistency_loss(y, [3, 3, 3, 3]).item() == pytest.approx(sum(d) / 3)
    assert background_consistency_loss(y, [0, 1, 2, 3]).item() == 0.0           # no pair
    with pytest.raises(UserError, match="camids"):
        background_consistency_loss(y, [0, 1])


@pytest.mark.parametrize("shape", [(3, 5, 4, 3), (4, 3, 32, 20)])   # the second: blocked Gram (P >= 1024)
def test_patch_gram_is_the_gram_of_unfolded_patches(shape):
    f = torch.randn(*shape, dtype=torch.float64)
    U = F.unfold(f, 3, padding=1).transpose(1, 2).reshape(-1, shape[1] * 9)     # [n*h*w, 9C]
    assert torch.allclose(patch_gram(f), U @ U.t())


# ----------------------------------------------------------------------------- CPLR
def person(h=16, w=8, split_upper=False):
    """A hand-made label map: background 9, head 3 (rows 2-5), upper 4 (rows 6-9; rows 8-9 are
    label 6 with split_upper), lower 5 (rows 10-13)."""
    m = np.full((h, w), 9)
    m[2:6, 3:5] = 3
    m[6:10, 2:6] = 4
    if split_upper:
        m[8:10, 2:6] = 6
    m[10:14, 3:5] = 5
    return m


@pytest.mark.parametrize("rule", ["reference", "border_half", "ring_share"])
def test_cplr_border_rule_and_height_order(rule):
    lab = np.stack([person(), person()])
    out, info = cplr(lab, 4, rule=rule, return_info=True)
    want = np.select([lab == 3, lab == 4, lab == 5], [1, 2, 3], 0)
    assert out.dtype == np.uint8 and np.array_equal(out, want)
    assert list(info["background_labels"]) == [9] and info["fallbacks"] == []
    assert list(info["part_sizes"]) == [16, 32, 16]
    t = cplr(torch.from_numpy(lab), 4, rule=rule)
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(want).to(torch.uint8))


def test_cplr_splits_several_labels_per_part():
    lab = person(split_upper=True)[None]
    # structure: means 3.5, 6.5, 8.5, 11.5 -> head 1, upper 2, upper 2, lower 3
    out = cplr(lab, 4, split="structure")
    assert np.array_equal(out, np.select([lab == 3, (lab == 4) | (lab == 6), lab == 5], [1, 2, 3], 0))
    # mean (split_n): 4 labels by height into 3 groups [1], [1], [2] -> 3:1, 4:2, 6:3, 5:3
    out = cplr(lab, 4, split="mean")
    assert np.array_equal(out, np.select([lab == 3, lab == 4, (lab == 6) | (lab == 5)], [1, 2, 3], 0))
    # 6 parts (K = 7), 'mean' by default: fewer labels than parts leaves parts empty
    out, info = cplr(lab, 7, return_info=True)
    assert set(np.unique(out)) <= set(range(7)) and "few_foreground_labels" in info["fallbacks"]


def test_cplr_reference_rule_uses_rows_0_3_h1_h4_and_side_columns():
    lab = person()[None].copy()
    lab[0, 3, 1:6] = 7                  # label 7: 5 entries of row 3 > w/2 = 4 -> background
    lab[0, 6:9, 7] = 8                  # label 8: 3 entries of column w-1, not > h/3 -> foreground
    out, info = cplr(lab, 4, return_info=True)
    assert set(info["background_labels"]) == {7, 9}
    assert 8 in info["foreground_labels"] and (out[lab == 8] > 0).all()


def test_cplr_ring_share_keeps_the_torso_of_a_coarse_map():
    """8 x 4 (synth's part grid): the reference's rows 3 and h-4 are the torso's rows, the ring share is not."""
    lab = np.full((2, 8, 4), 9)
    lab[:, 1, 1:3] = 3                  # head
    lab[:, 2:5, 1:3] = 4                # torso: 6 pixels off the ring ...
    lab[:, 3, [0, 3]] = 4               # ... and the arms on it: share 2/8 < the ring's 20/32
    lab[:, 5:7, 1:3] = 5                # legs
    ref = cplr(lab, 4, rule="reference", return_info=True)[1]
    assert set(ref["background_labels"]) == {4, 9}          # 12 entries of rows {0, 3, 4, 7} > n w / 2 = 4
    out, info = cplr(lab, 4, rule="ring_share", return_info=True)
    assert list(info["background_labels"]) == [9] and info["fallbacks"] == []
    assert np.array_equal(out, np.select([lab == 3, lab == 4, lab == 5], [1, 2, 3], 0))
    lab[:, 7, :] = 5                    # legs down to the bottom row: 4 of 8 pixels on the ring, still < 5/8
    assert list(cplr(lab, 4, rule="ring_share", return_info=True)[1]["background_labels"]) == [9]
    lab[:, 6, [0, 3]] = 5               # and spread to the sides: 6 of 10 on the ring, not > 20/32 either
    assert 5 not in cplr(lab, 4, rule="ring_share", return_info=True)[1]["background_labels"]
    lab[:, 4, [0, 3]] = 5               # 8 of 12 > 20/32: a label gathered at the border is background
    assert 5 in cplr(lab, 4, rule="ring_share", return_info=True)[1]["background_labels"]


def test_cplr_no_background_fallback():
    lab = np.zeros((1, 8, 8), np.int64)
    lab[0, :, 4:] = 1                   # two labels, each exactly half of the ring: neither passes
    lab[0, 3:5, 3:5] = 2
    out, info = cplr(lab, 4, rule="border_half", return_info=True)
    assert "no_background" in info["fallbacks"]
    assert set(info["background_labels"]) == {0, 1} and (out[lab == 2] > 0).all() and (out[lab < 2] == 0).all()


def test_cplr_all_background_fallbacks():
    lab = np.zeros((2, 16, 8), np.int64)
    lab[:, 8:] = 1                      # both labels hold the top/bottom rows: both pass the rule
    out, info = cplr(lab, 4, return_info=True)
    assert "all_background" in info["fallbacks"]
    assert len(info["background_labels"]) == 1 and len(info["foreground_labels"]) == 1
    assert set(np.unique(out)) == {0, 2}                      # the other label -> middle part
    assert "flat_heights" in info["fallbacks"] and "few_foreground_labels" in info["fallbacks"]
    out, info = cplr(np.full((3, 4, 4), 5), 4, return_info=True)   # one label: everything background
    assert (out == 0).all() and "all_background" in info["fallbacks"]


def test_cplr_rejects_bad_input():
    with pytest.raises(UserError, match="integer"):
        cplr(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(UserError, match=r"\[n, h, w\]"):
        cplr(np.zeros((4, 4), np.int64))
    with pytest.raises(UserError, match="split='structure'"):
        cplr(np.zeros((1, 4, 4), np.int64), 5, split="structure")
    with pytest.raises(UserError, match="rule"):
        cplr(np.zeros((1, 4, 4), np.int64), rule="paper?")
    with pytest.raises(UserError, match=">= 0"):
        cplr(-np.ones((1, 4, 4), np.int64))


# ----------------------------------------------------------------------------- batched training
def random_set(counts=(3, 4, 4, 5, 2, 4), C=8, h=16, w=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = sum(counts)
    f = torch.randn(N, C, h, w, generator=g).to(dtype)
    pids = np.repeat(np.arange(len(counts)) * 3 + 1, counts)
    cams = np.concatenate([np.arange(c) % 2 for c in counts])
    return f, pids, cams


FAST = {"min_labels": 24, "max_steps": 10}   # some identities stop early, some run out of steps


def loop_reference(f, pid, cams, *, min_labels, max_steps, hidden=64, out=32, seed=0):
    """The one-identity-at-a-time approach (reference MyNet layout, torch.optim.SGD, nn.BatchNorm2d)
    with the same initial weights: raw labels and step count."""
    p = init_decoder(pid, f.shape[1], hidden=hidden, out_channels=out, seed=seed, dtype=f.dtype)
    convs = [nn.Conv2d(f.shape[1], hidden, 3, padding=1, bias=False), nn.Conv2d(hidden, out, 1, bias=False),
             nn.Conv2d(out, hidden, 3, padding=1, bias=False), nn.Conv2d(hidden, out, 1, bias=False)]
    layers = []
    for i, cv in enumerate(convs, 1):
        cv.weight.data = p[f"w{i}"].clone()
        layers += [cv, nn.BatchNorm2d(cv.out_channels)] + ([nn.ReLU()] if i < 4 else [])
    net = nn.Sequential(*layers).to(f.dtype)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for t in range(1, max_steps + 1):
        y = net(f)
        lab = y.argmax(1)
        if lab.unique().numel() < min_labels or t == max_steps:
            return lab, t
        loss = semantic_consistency_loss(y) + 2 * local_consistency_loss(y) + background_consistency_loss(y, cams)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("grouping", ["grouped", "split"])
def test_training_equals_a_plain_module_loop(grouping):
    f, pids, cams = random_set()
    options = CoparseOptions(ids_per_batch=8, layer1="conv", grouping=grouping, **FAST)
    labels, st = coparse_part_labels(f, pids, cams, 4, options)
    for pid in np.unique(pids):
        rows = pids == pid
        raw, steps = loop_reference(f[rows], int(pid), cams[rows], **FAST)
        assert torch.equal(labels[torch.from_numpy(rows)], cplr(raw, 4))
        assert st["steps"][st["pid"] == pid][0] == steps


@pytest.mark.parametrize("layer1", ["conv", "kernel"])
@pytest.mark.parametrize("grouping", ["grouped", "split"])
def test_batching_does_not_change_labels(layer1, grouping):
    f, pids, cams = random_set()
    kw = dict(layer1=layer1, grouping=grouping, **FAST)
    one, st1 = coparse_part_labels(f, pids, cams, 4, CoparseOptions(ids_per_batch=1, **kw))
    eight, st8 = coparse_part_labels(f, pids, cams, 4, CoparseOptions(ids_per_batch=8, **kw))
    ref, _ = coparse_part_labels(f, pids, cams, 4,
                                 CoparseOptions(ids_per_batch=3, layer1="conv", grouping="split", **FAST))
    assert torch.equal(one, eight) and torch.equal(one, ref)
    assert np.array_equal(st1["steps"], st8["steps"]) and np.array_equal(st1["num_labels"], st8["num_labels"])
    assert (st8["layer1"] == layer1).all() and (st8["grouped"] == (grouping == "grouped")).all()
    assert len(set(st8["steps"])) > 1                              # identities stopped at different steps


def test_batching_float32_agrees_up_to_rounding():
    f, pids, cams = random_set(dtype=torch.float32)
    one, _ = coparse_part_labels(f, pids, cams, 4, CoparseOptions(ids_per_batch=1, grouping="grouped", **FAST))
    eight, _ = coparse_part_labels(f, pids, cams, 4,
                                   CoparseOptions(ids_per_batch=8, grouping="grouped", layer1="kernel", **FAST))
    assert (one == eight).float().mean() > 0.98


def test_stats_and_output_contract():
    f, pids, cams = random_set(dtype=torch.float32)
    labels, st = coparse_part_labels(f, pids, cams, 4, CoparseOptions(**FAST))
    assert labels.dtype == torch.uint8 and labels.shape == (f.shape[0], 16, 8) and int(labels.max()) <= 3
    assert list(st["pid"]) == sorted(set(pids)) and st["part_sizes"].shape == (6, 3)
    assert (st["steps"] >= 1).all() and (st["steps"] <= 10).all()
    assert set(st["fallbacks"]) == set(FALLBACKS)
    conv = st["converged"]
    assert (conv == (st["num_labels"] < FAST["min_labels"])).all()
    assert st["fallbacks"]["max_steps"] == int((~conv).sum())
    assert st["part_sizes"].sum() == int((labels > 0).sum())


# ----------------------------------------------------------------------------- edge cases
def test_edge_cases_give_valid_labels_and_counted_fallbacks():
    g = torch.Generator().manual_seed(1)
    C, h, w = 8, 16, 8
    single = torch.randn(1, C, h, w, generator=g)
    other_cams = torch.randn(3, C, h, w, generator=g)
    const = torch.full((3, C, h, w), 0.7)
    f = torch.cat([single, other_cams, const])
    pids = np.array([5, 6, 6, 6, 7, 7, 7])
    cams = np.array([0, 0, 1, 2, 1, 1, 2])
    labels, st = coparse_part_labels(f, pids, cams, 4, CoparseOptions(**FAST))
    assert labels.dtype == torch.uint8 and int(labels.max()) <= 3
    fp = {k: list(v) for k, v in st["fallback_pids"].items()}
    assert fp["single_image"] == [5] and fp["no_camera_pair"] == [5, 6] and fp["constant_features"] == [7]
    assert (labels[4:] == 0).all() and st["steps"][2] == 0 and st["layer1"][2] == "none"
    assert st["num_pairs"].tolist() == [0, 0, 1]


def test_too_few_pixels_stop_at_the_first_forward():
    f = torch.randn(2, 4, 2, 2)
    labels, st = coparse_part_labels(f, [1, 1], [0, 0])
    assert labels.shape == (2, 2, 2) and int(labels.max()) <= 3
    assert st["fallbacks"]["few_pixels"] == 1 and st["steps"].tolist() == [1]


def test_bad_options_name_the_key():
    f, pids, cams = random_set(counts=(2,), dtype=torch.float32)
    for kw, key in [({"p": 3}, "p"), ({"window": 2}, "window"), ({"rule": "x"}, "rule"), ({"layer1": "x"}, "layer1"),
                    ({"grouping": "x"}, "grouping"),
                    ({"min_labels": 0}, "min_labels"), ({"momentum": 1.0}, "momentum"), ({"lr": -1.0}, "lr"),
                    ({"out_channels": 300}, "out_channels"), ({"split": "k"}, "split")]:
        with pytest.raises(UserError, match=key):
            coparse_part_labels(f, pids, cams, 4, CoparseOptions(**kw))
    with pytest.raises(UserError, match="camids"):
        coparse_part_labels(f, pids, cams[:1])
    with pytest.raises(UserError, match="non-finite"):
        coparse_part_labels(f * float("nan"), pids, cams)


# ----------------------------------------------------------------------------- streaming
def test_streaming_equals_in_memory_and_reports_stats():
    f, pids, cams = random_set(dtype=torch.float32)
    want, _ = coparse_part_labels(f, pids, cams, 4, CoparseOptions(ids_per_batch=2, **FAST))
    rows = np.arange(len(pids)) + 100
    cuts = [0, 2, 5, 6, 13, len(pids)]                     # chunks cut through identities
    chunks = [(f[a:b], pids[a:b], rows[a:b], cams[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    got = np.zeros((len(pids), 16, 8), np.uint8)
    seen = []
    n_batches = 0
    for r, lab in coparse_identities(iter(chunks), 4, CoparseOptions(ids_per_batch=2, **FAST), on_stats=seen.append):
        assert np.all(np.diff(r) > 0) and lab.dtype == np.uint8
        got[r - 100] = lab
        n_batches += 1
    assert np.array_equal(got, want.numpy()) and n_batches == 3
    assert sorted(s["pid"] for s in seen) == sorted(set(pids)) and all("fallbacks" in s for s in seen)


def test_streaming_rejects_a_reappearing_identity_and_bad_chunks():
    f, pids, cams = random_set(counts=(2, 2), dtype=torch.float32)
    chunks = [(f[:2], pids[:2], np.arange(2), cams[:2]), (f[2:], pids[2:], np.arange(2, 4), cams[2:]),
              (f[:1], pids[:1], np.arange(4, 5), cams[:1])]
    with pytest.raises(UserError, match="appears again"):
        list(coparse_identities(iter(chunks), 4, CoparseOptions(**FAST)))
    with pytest.raises(UserError, match="camids"):
        list(coparse_identities(iter([(f, pids, np.arange(4))]), 4))
    with pytest.raises(TypeError, match="min_label"):
        CoparseOptions(min_label=3)


# ----------------------------------------------------------------------------- sanity
def planted(n_ids=4, n_img=6, C=16, h=48, w=16, noise=0.3, seed=0):
    """A person box of 3 horizontal bands (the identity's own feature vectors + noise) over a
    per-camera background vector (+ noise); 2 cameras. Returns maps, pids, camids, truth."""
    g = torch.Generator().manual_seed(seed)
    cams = np.array([0, 0, 0, 1, 1, 1])[:n_img]
    feats, truth = [], []
    for _ in range(n_ids):
        protos, bgs = torch.randn(3, C, generator=g) * 2, torch.randn(2, C, generator=g) * 2
        for k in range(n_img):
            top = 6 + int(torch.randint(0, 3, (1,), generator=g))
            bot = h - 6 - int(torch.randint(0, 3, (1,), generator=g))
            left, right = 4 + int(torch.randint(0, 2, (1,), generator=g)), w - 4
            x = bgs[cams[k]][:, None, None] + noise * torch.randn(C, h, w, generator=g)
            t = torch.zeros(h, w, dtype=torch.uint8)
            edges = np.linspace(top, bot, 4).round().astype(int)
            for b in range(3):
                r0, r1 = edges[b], edges[b + 1]
                x[:, r0:r1, left:right] = protos[b][:, None, None] + noise * torch.randn(C, r1 - r0, right - left,
                                                                                        generator=g)
                t[r0:r1, left:right] = b + 1
            feats.append(x)
            truth.append(t)
    return torch.stack(feats), np.repeat(np.arange(n_ids) + 10, n_img), np.tile(cams, n_ids), torch.stack(truth)


def test_planted_structure_is_recovered_top_to_bottom():
    f, pids, cams, truth = planted()
    # 5 distinct feature vectors per identity: stop at < 8 labels (min_L = 18 is for 32 labels on
    # real maps, where it stops after a handful of steps here, before the bands are clean)
    labels, st = coparse_part_labels(f, pids, cams, 4, CoparseOptions(min_labels=8))
    r = part_iou(labels.numpy(), truth.numpy(), 4, match="fixed")      # fixed: order must be the truth's
    assert r["background_iou"] > 0.95 and r["foreground_iou"] > 0.95
    assert r["mean_part_iou"] > 0.9 and (r["part_iou"] > 0.85).all()
    assert st["converged"].all() and st["fallbacks"]["no_background"] == 0
