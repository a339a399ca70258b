"""SS-HSP segmentation network: U-Net outputs, the full forward/loss, inference, frame pairs, pre-training."""
import numpy as np
import pandas as pd
import pytest
import torch

from hspreid.errors import UserError
from hspreid.segmentation import (CoPartSegmenter, FramePairSampler, SegmentationUNet, consecutive_pairs,
                                  load_segmenter, pretrain_segmenter)

TINY = {"seg_size": (32, 16), "unet_channels": 4, "predictor_channels": 8, "predictor_max_channels": 16,
        "num_res_blocks": 1, "reconstruction": "l1_ssim"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_unet_output_shapes_and_identity_affine_at_init():
    net = SegmentationUNet(num_parts=6, base_channels=4)
    out = net(torch.rand(2, 3, 64, 32))
    assert net.head.out_channels == 6 * 6 + 1                            # S_t has 6K+1 channels
    assert out["masks"].shape == (2, 7, 64, 32) and out["logits"].shape == (2, 7, 64, 32)
    assert torch.allclose(out["masks"].sum(1), torch.ones(2, 64, 32), atol=1e-5)
    assert out["heatmaps"].shape == (2, 6, 64, 32)
    assert torch.allclose(out["heatmaps"].sum((2, 3)), torch.ones(2, 6), atol=1e-5)
    assert out["shift"].shape == (2, 6, 2) and (out["shift"].abs() <= 1).all()
    assert out["affine"].shape == (2, 6, 2, 2)
    assert torch.allclose(out["affine"], torch.eye(2).expand(2, 6, 2, 2), atol=1e-6)


def test_unet_soft_argmax_and_heat_weighted_affine():
    net = SegmentationUNet(num_parts=1, base_channels=4, temperature=0.01)
    net.hourglass = lambda x: x                                          # feed S_t straight to a 1x1 identity head
    net.head = torch.nn.Conv2d(7, 7, 1, bias=False)
    with torch.no_grad():
        net.head.weight.copy_(torch.eye(7).view(7, 7, 1, 1))
    s = torch.zeros(1, 7, 8, 4)
    s[0, 2, 6, 1] = 1.0                                                  # shift logit peak at row 6, col 1
    s[0, 3:] = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(4, 1, 1)
    s[0, 4, 6, 1] = 0.5                                                  # a shear only at the peak
    out = net(s)
    assert torch.allclose(out["shift"][0, 0], torch.tensor([-1 + 2 / 3, -1 + 12 / 7]), atol=1e-3)
    assert torch.allclose(out["affine"][0, 0], torch.tensor([[1.0, 0.5], [0.0, 1.0]]), atol=1e-3)


def test_segmenter_forward_loss_and_segment_shapes():
    model = CoPartSegmenter(num_parts=3, **TINY)
    src, drv = torch.rand(2, 3, 64, 32), torch.rand(2, 3, 64, 32)       # frames at 2x the segmentation size
    out = model(src, drv)
    assert out["prediction"].shape == (2, 3, 64, 32)
    assert (out["prediction"] > 0).all() and (out["prediction"] < 1).all()
    assert out["masks_source"].shape == out["masks_driving"].shape == (2, 4, 32, 16)
    assert out["part_flows"].shape == (2, 3, 32, 16, 2) and out["flow"].shape == (2, 32, 16, 2)
    assert out["visibility"].shape == (2, 1, 32, 16)
    terms = model.loss(out, src, drv, torch.Generator().manual_seed(0))
    assert set(terms) == {"total", "rec", "equ", "equ_kl", "equ_affine", "equ_shift", "geo"}
    assert torch.isclose(terms["total"], terms["rec"] + terms["equ"] + terms["geo"])
    terms["total"].backward()
    assert all(p.grad is not None for p in model.unet.parameters())
    seg = model.segment((torch.rand(5, 64, 32, 3) * 255).to(torch.uint8), batch_size=2)
    assert seg["masks"].shape == (5, 4, 32, 16) and seg["labels"].dtype == torch.uint8
    assert seg["labels"].shape == (5, 32, 16) and int(seg["labels"].max()) <= 3
    assert model.training                                                # segment() restores the mode


def test_predictor_down_sets_the_resolution_the_motion_warps_at():
    model = CoPartSegmenter(num_parts=2, **TINY, predictor_down=1)
    src = torch.rand(2, 3, 64, 32)
    assert model.predictor.encode(src).shape[-2:] == (32, 16)            # warped at H/2 x W/2, not H/4 x W/4
    assert model(src, torch.rand(2, 3, 64, 32))["prediction"].shape == (2, 3, 64, 32)
    with pytest.raises(UserError, match="predictor_down"):
        CoPartSegmenter(num_parts=2, **TINY, predictor_down=-1)
    with pytest.raises(UserError, match="divisible by 8"):                # 3 blocks: H, W multiples of 8
        CoPartSegmenter(num_parts=2, **TINY, predictor_down=3)(torch.rand(1, 3, 36, 16), torch.rand(1, 3, 36, 16))


def test_detach_visibility_source_reaches_eq3():
    src, drv = torch.rand(2, 3, 64, 32), torch.rand(2, 3, 64, 32)
    assert CoPartSegmenter(num_parts=2, **TINY)(src, drv)["visibility"].requires_grad        # MCS: O trains M_t
    assert not CoPartSegmenter(num_parts=2, **TINY, detach_visibility_source=True)(src, drv)["visibility"].requires_grad


def test_identity_motion_at_init_predicts_from_unwarped_features():
    model = CoPartSegmenter(num_parts=2, **TINY).eval()
    frame = torch.rand(1, 3, 32, 16)
    out = model(frame, frame)                                            # same frame: eq. 1 is the identity
    assert torch.allclose(out["flow"], torch.stack(torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 16),
                                                                  indexing="ij")[::-1], -1)[None], atol=1e-5)
    assert torch.allclose(out["deformed"], frame, atol=1e-5)


def test_loss_terms_switch_off_with_zero_weight():
    model = CoPartSegmenter(num_parts=2, **{**TINY, "reconstruction": "not-a-name"}, lambda_rec=0.0, lambda_equ=0.0)
    src, drv = torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16)
    terms = model.loss(model(src, drv), src, drv)
    assert float(terms["rec"]) == float(terms["equ"]) == 0.0
    assert torch.equal(terms["total"], terms["geo"]) and float(terms["geo"].detach()) > 0


def test_unet_part_motion_from_masks():
    """part_motion="masks": e^k is part k's centroid and A^k the affine maps averaged over M^k / z^k."""
    net = SegmentationUNet(num_parts=1, base_channels=4, part_motion="masks")
    net.hourglass = lambda x: x
    net.head = torch.nn.Conv2d(7, 7, 1, bias=False)
    with torch.no_grad():
        net.head.weight.copy_(torch.eye(7).view(7, 7, 1, 1))
    s = torch.zeros(1, 7, 8, 4)
    s[0, 0] = 30.0                                                       # background everywhere ...
    s[0, 1, 6:8, 0:2] = 60.0                                             # ... but part 1 in a 2 x 2 block
    s[0, 2, 0, 0] = 50.0                                                 # a heat-map peak elsewhere: unused
    s[0, 3:] = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(4, 1, 1)
    s[0, 4, 6:8, 0:2] = 0.5                                              # a shear inside the part
    out = net(s)
    assert torch.allclose(out["shift"][0, 0], torch.tensor([-1 + 1 / 3, -1 + 13 / 7]), atol=1e-4)
    assert torch.allclose(out["affine"][0, 0], torch.tensor([[1.0, 0.5], [0.0, 1.0]]), atol=1e-4)
    with pytest.raises(UserError, match="part_motion"):
        SegmentationUNet(num_parts=1, part_motion="centroid")


def test_merged_parts_move_as_their_union():
    """merge_parts: one flow for the union of the parts, at the mass-weighted mean of their shifts (eq. 1)."""
    from hspreid.segmentation.model import merged_motion

    masks = torch.zeros(1, 3, 4, 4)
    masks[0, 0, :, 2:] = 1.0                                             # background on the right half
    masks[0, 1, :1, :2] = 1.0                                            # part 1: 2 pixels
    masks[0, 2, 1:, :2] = 1.0                                            # part 2: 6 pixels
    shift = torch.tensor([[[0.4, 0.0], [0.0, 0.8]]])
    affine = torch.stack([torch.eye(2), 2 * torch.eye(2)])[None]
    out = merged_motion({"masks": masks, "shift": shift, "affine": affine})
    torch.testing.assert_close(out["masks"], torch.stack([masks[:, 0], masks[:, 1] + masks[:, 2]], 1))
    torch.testing.assert_close(out["shift"], torch.tensor([[[0.1, 0.6]]]))
    torch.testing.assert_close(out["affine"], 1.75 * torch.eye(2)[None, None])
    torch.manual_seed(0)
    model = CoPartSegmenter(num_parts=2, **TINY)
    src, drv = torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16)
    maps = torch.zeros(2, 3, 32, 16)
    maps[:, 1, :16], maps[:, 2, 16:] = 1.0, 1.0
    e_t, e_d = torch.tensor([[0.2, 0.0], [0.0, 0.0]]).expand(2, 2, 2), torch.zeros(2, 2, 2)
    flow = model(src, drv, (maps, maps, e_t, e_d), merge_parts=True)["flow"]
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 16), indexing="ij")[::-1], -1)
    torch.testing.assert_close(flow[0], grid + torch.tensor([0.1, 0.0]))  # both halves: the mean shift


def test_config_errors():
    with pytest.raises(UserError, match="seg_size"):
        CoPartSegmenter(num_parts=2, **{**TINY, "seg_size": (30, 16)})
    with pytest.raises(UserError, match="num_parts"):
        CoPartSegmenter(num_parts=0, **TINY)
    with pytest.raises(UserError, match="vgg_random"):
        CoPartSegmenter(num_parts=2, **{**TINY, "reconstruction": "vgg"})
    with pytest.raises(UserError, match="head_kernel"):
        CoPartSegmenter(num_parts=2, **TINY, head_kernel=4)
    with pytest.raises(UserError, match="divisible by 4"):
        CoPartSegmenter(num_parts=2, **TINY)(torch.rand(1, 3, 30, 16), torch.rand(1, 3, 30, 16))


def test_consecutive_pairs_stay_inside_tracklets():
    index = pd.DataFrame({"tracklet": [0, 0, 0, 1, 2, 2, 3, 3], "subset": ["train"] * 6 + ["test"] * 2,
                          "pid": [1, 1, 1, 2, 3, 3, 4, 4], "label": 0, "camid": 0, "query": False, "gallery": False})
    assert consecutive_pairs(index).tolist() == [[0, 1], [1, 2], [4, 5]]
    assert consecutive_pairs(index, subset=None).tolist() == [[0, 1], [1, 2], [4, 5], [6, 7]]
    assert consecutive_pairs(index, gap=2).tolist() == [[0, 2]]


def test_frame_pair_sampler_reads_consecutive_frames(tiny_mars):
    index = tiny_mars["index"]
    sampler = FramePairSampler.from_index(tiny_mars["frames"], index, batch_size=3, seed=1)
    src, drv = next(iter(sampler))
    assert src.shape == drv.shape == (3, 3, 32, 16) and src.dtype == torch.float32
    assert 0 <= float(src.min()) and float(src.max()) <= 1
    again, _ = next(iter(FramePairSampler.from_index(tiny_mars["frames"], index, batch_size=3, seed=1)))
    assert torch.equal(src, again)                                       # seeded
    rows = sampler.pairs
    assert (index["tracklet"].to_numpy()[rows[:, 0]] == index["tracklet"].to_numpy()[rows[:, 1]]).all()
    assert (index["frame"].to_numpy()[rows[:, 1]] == index["frame"].to_numpy()[rows[:, 0]] + 1).all()
    assert (index["subset"].to_numpy()[rows[:, 0]] == "train").all()


def test_frame_pair_sampler_mirrors_and_shifts_both_frames_of_a_pair_alike(tiny_mars):
    index, frames = tiny_mars["index"], tiny_mars["frames"]
    def keep(a, b):                                                      # the ground truth as is
        return torch.as_tensor(a), torch.as_tensor(b)

    def batch(**aug):
        return next(iter(FramePairSampler.from_index(frames, index, batch_size=6, seed=3, masks=keep, **aug)))

    plain = batch()
    mirrored = batch(flip=1.0)                                           # the same pairs, every one mirrored
    for a, b in zip(plain[:2] + plain[2], mirrored[:2] + mirrored[2]):
        assert torch.equal(a.flip(-1), b)
    shifted = batch(shift=2)
    moved = 0
    for i in range(6):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(shifted[0][i, :, 2:-2, 2:-2], plain[0][i, :, 2 - dy:30 - dy, 2 - dx:14 - dx])]
        assert found, "the source frame is a shift of the plain one"
        dy, dx = found[0]
        moved += (dy, dx) != (0, 0)
        assert torch.equal(shifted[1][i, :, 2:-2, 2:-2], plain[1][i, :, 2 - dy:30 - dy, 2 - dx:14 - dx])
        for t in range(2):                                               # the ground truth moves with its frame
            assert torch.equal(shifted[2][t][i, 2:-2, 2:-2], plain[2][t][i, 2 - dy:30 - dy, 2 - dx:14 - dx])
    assert moved >= 3
    with pytest.raises(UserError, match="pair_flip"):
        FramePairSampler.from_index(frames, index, flip=1.5)


def test_pretrain_overfits_a_fixed_pair_batch_and_is_deterministic(tmp_path):
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 32, 16, generator=g)
    drv = torch.roll(src, 1, dims=-1)
    runs = []
    for steps in (20, 10):                                               # the second run replays the first 10 steps
        torch.manual_seed(0)
        model = CoPartSegmenter(num_parts=3, **TINY)
        runs.append(pretrain_segmenter(model, [(src, drv)], steps=steps, lr=3e-3, log_every=5, seed=0,
                                       checkpoint=tmp_path / f"seg{steps}.pt"))
    hist = runs[0]["history"]
    assert [h["step"] for h in hist] == [5, 10, 15, 20]
    assert hist[-1]["total"] < 0.8 * hist[0]["total"] and hist[-1]["rec"] < hist[0]["rec"]
    assert [h["total"] for h in runs[1]["history"]] == pytest.approx([h["total"] for h in hist[:2]], rel=1e-4)
    loaded, ckpt = load_segmenter(tmp_path / "seg10.pt")
    assert ckpt["step"] == 10 and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    np.testing.assert_array_equal(loaded.segment(src)["labels"].numpy(), model.segment(src)["labels"].numpy())


def test_pretrain_curve_reads_the_model_without_changing_its_training():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 32, 16, generator=g)
    drv = torch.roll(src, 1, dims=-1)
    states, readings = [], []

    def evaluate(model):
        assert not model.training and not torch.is_grad_enabled()       # batch norm statistics stay as they are
        readings.append(float(model.segment(src)["masks"][:, 0].mean()))
        return {"background": readings[-1]}

    for with_curve in (True, False):
        torch.manual_seed(0)
        model = CoPartSegmenter(num_parts=3, **TINY)
        result = pretrain_segmenter(model, [(src, drv)], steps=5, lr=3e-3, log_every=5, seed=0,
                                    evaluate=evaluate if with_curve else None, evaluate_every=2)
        assert model.training
        states.append(model.state_dict())
        if with_curve:
            assert [c["step"] for c in result["curve"]] == [0, 2, 4, 5]     # before, every 2 steps, the last
            assert [c["background"] for c in result["curve"]] == readings and result["curve_seconds"] >= 0
        else:
            assert result["curve"] == []
    assert all(torch.equal(a, b) for a, b in zip(states[0].values(), states[1].values()))


def test_pretrain_grad_clip_logs_the_norm_and_changes_the_steps():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 32, 16, generator=g)
    drv = torch.roll(src, 1, dims=-1)
    runs = {}
    for clip in (None, 1e-3):
        torch.manual_seed(0)
        model = CoPartSegmenter(num_parts=3, **TINY)
        if clip is None:                                                  # the first step's gradient norm, by hand
            model.loss(model(src, drv), src, drv, torch.Generator().manual_seed(0))["total"].backward()
            norm = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm()
            model.zero_grad(set_to_none=True)
        hist = pretrain_segmenter(model, [(src, drv)], steps=3, lr=3e-3, log_every=1, seed=0, grad_clip=clip)["history"]
        runs[clip] = (hist, [p.detach().clone() for p in model.parameters()])
    assert "grad_norm" not in runs[None][0][0]
    assert runs[1e-3][0][0]["grad_norm"] == pytest.approx(float(norm), rel=1e-4)   # logged before clipping
    assert not all(torch.equal(a, b) for a, b in zip(runs[None][1], runs[1e-3][1]))


def test_pretrain_rejects_bad_steps():
    model = CoPartSegmenter(num_parts=2, **TINY)
    with pytest.raises(UserError, match="steps"):
        pretrain_segmenter(model, [], steps=0)
    with pytest.raises(UserError, match="no batch"):
        pretrain_segmenter(model, [], steps=1)


def test_affine_background_motion_starts_static_and_is_trained():
    torch.manual_seed(0)
    static = CoPartSegmenter(num_parts=2, **TINY)
    torch.manual_seed(0)
    moving = CoPartSegmenter(num_parts=2, **TINY, background_motion="affine")
    assert static.background is None and not any(k.startswith("background.") for k in static.state_dict())
    src, drv = torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16)
    a, b = static(src, drv), moving(src, drv)
    assert b["background_theta"].shape == (2, 2, 3) and a["background_theta"] is None
    assert torch.allclose(b["background_theta"], torch.eye(2, 3).expand(2, 2, 3))
    assert torch.allclose(a["flow"], b["flow"], atol=1e-6)                      # identity at initialisation
    moving.loss(b, src, drv)["total"].backward()
    assert moving.background.fc.weight.grad is not None and moving.background.fc.weight.grad.abs().sum() > 0
    # the U-Net (what the re-ID model loads) is the same either way; segmentation does not use the background net
    assert set(static.unet.state_dict()) == set(moving.unet.state_dict())
    with pytest.raises(UserError, match="background_motion"):
        CoPartSegmenter(num_parts=2, **TINY, background_motion="dynamic")


def test_loss_scale_and_geo_warmup():
    model = CoPartSegmenter(num_parts=2, **TINY, geo_isotropic=True)
    src, drv = torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16)
    out = model(src, drv)
    off = model.loss(out, src, drv, torch.Generator().manual_seed(0), scale={"lambda_geo": 0.0})
    assert float(off["geo"].detach()) > 0                                 # still computed and logged, weighted 0
    assert torch.isclose(off["total"], off["rec"] + off["equ"])
    half = model.loss(out, src, drv, torch.Generator().manual_seed(0), scale={"lambda_geo": 0.5})
    assert torch.isclose(half["total"], half["rec"] + half["equ"] + 0.5 * half["geo"])
    assert model.config["lambda_geo"] == 1.0                               # the config is not changed
    with pytest.raises(UserError, match="geo_warmup"):
        pretrain_segmenter(model, [(src, drv)], steps=2, geo_warmup=1.5)
    hist = pretrain_segmenter(model, [(src, drv)], steps=2, geo_warmup=0.5, log_every=1)["history"]
    assert [h["step"] for h in hist] == [1, 2] and all(h["geo"] > 0 for h in hist)


def test_part_warmup_merges_the_parts_for_its_share_of_the_steps(monkeypatch):
    model = CoPartSegmenter(num_parts=2, **TINY)
    src, drv = torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16)
    calls, forward = [], CoPartSegmenter.forward
    monkeypatch.setattr(CoPartSegmenter, "forward", lambda self, *a, **k: calls.append(a[3]) or forward(self, *a, **k))
    pretrain_segmenter(model, [(src, drv)], steps=4, part_warmup=0.5)
    assert calls == [True, True, False, False]                            # one forward pass per step
    with pytest.raises(UserError, match="part_warmup"):
        pretrain_segmenter(model, [(src, drv)], steps=2, part_warmup=-0.1)


def test_part_area_prior_is_added_only_when_weighted():
    src, drv = torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16)
    plain = CoPartSegmenter(num_parts=2, **TINY)
    assert "area" not in plain.loss(plain(src, drv), src, drv, torch.Generator().manual_seed(0))
    model = CoPartSegmenter(num_parts=2, **TINY, lambda_area=2.0, min_part_area=0.9)   # more than the parts hold
    terms = model.loss(model(src, drv), src, drv, torch.Generator().manual_seed(0))
    assert float(terms["area"]) > 0
    assert torch.isclose(terms["total"], terms["rec"] + terms["equ"] + terms["geo"] + 2.0 * terms["area"])
    with pytest.raises(UserError, match="min_part_area"):
        CoPartSegmenter(num_parts=2, **TINY, lambda_area=1.0, min_part_area=1.5)
