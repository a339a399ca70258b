"""SS-HSP re-ID model: the temporal relation block (eqs. 4-5), mask pooling, clip flows, ablation switches."""
from __future__ import annotations

import pytest
import torch

from hspreid.losses import Criterion
from hspreid.models import build_model
from hspreid.models.ss_hsp import (SSHSP, TemporalRelationBlock, clip_flows, mask_pooling,
                                   segmenter_architecture)
from hspreid.segmentation import CoPartSegmenter
from hspreid.segmentation.motion import coordinate_grid

SMALL_SEG = {"num_parts": 3, "seg_size": [32, 16], "unet_channels": 4, "unet_max_channels": 16}


def small_model(**kw) -> SSHSP:
    torch.manual_seed(0)
    cfg = {"backbone": "resnet18", "feat_dim": 16, "num_frames": 3, "relation_dim": 8, "motion_channels": 4,
           "segmenter": SMALL_SEG, **kw}
    return SSHSP(num_classes=5, **cfg)


def test_trb_eq4_relations_by_hand():
    """eq. 4: r_{t,m} = h_1([phi(f_t), varphi(f_t - f_m)]), r~_t their concatenation over m, in m order."""
    torch.manual_seed(0)
    trb = TemporalRelationBlock(dim=4, num_frames=3, relation_dim=2).eval()
    f = torch.randn(2, 3, 4)
    rel = trb.relations(f)
    assert rel.shape == (2, 3, 3 * 2)
    for t in range(3):
        for m in range(3):
            want = trb.h1(torch.cat([trb.phi(f[:, t]), trb.varphi(f[:, t] - f[:, m])], dim=1))
            torch.testing.assert_close(rel[:, t, 2 * m:2 * m + 2], want)


def test_trb_eq5_attention_weighted_mean():
    """eq. 5: a_t in (0, 1) and f~ = sum_t a_t f^_t / sum_t a_t, a convex combination of the refined f^_t."""
    torch.manual_seed(1)
    trb = TemporalRelationBlock(dim=4, num_frames=3, relation_dim=2).eval()
    with torch.no_grad():
        trb.bn_a.running_var.fill_(0.01)                          # spread a_t away from 0.5
    f = torch.randn(2, 3, 4)
    rel = trb.relations(f)
    a = trb.attention(f, rel)
    assert a.shape == (2, 3) and bool(((a > 0) & (a < 1)).all())
    refined = trb.h2(torch.cat([f, rel], dim=-1).flatten(0, 1)).view(2, 3, 4)
    want = (a[..., None] * refined).sum(1) / a.sum(1, keepdim=True)
    torch.testing.assert_close(trb(f), want)
    weights = a / a.sum(1, keepdim=True)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))


def test_trb_equal_frames_give_that_frame():
    """Identical frames: every r_{t,m} is the same, so f~ = f^_t for any attention."""
    torch.manual_seed(2)
    trb = TemporalRelationBlock(dim=4, num_frames=4, relation_dim=3).eval()
    f = torch.randn(5, 1, 4).expand(5, 4, 4)
    refined = trb.h2(torch.cat([f[:, 0], trb.relations(f)[:, 0]], dim=-1))
    torch.testing.assert_close(trb(f), refined)


def test_trb_gated_residual_starts_as_attention_pooling():
    """Deviation (model.relation_residual): f^_t = f_t + gamma h_2([f_t, r~_t]) with gamma = 0 at start, so
    the block begins as eq. 5's attention-weighted mean of the frame features and learns how much of eq. 4
    to add; gamma = 1 adds all of it."""
    torch.manual_seed(3)
    trb = TemporalRelationBlock(dim=4, num_frames=3, relation_dim=2, residual=True).eval()
    f = torch.randn(2, 3, 4)
    rel = trb.relations(f)
    a = trb.attention(f, rel)
    torch.testing.assert_close(trb(f), (a[..., None] * f).sum(1) / a.sum(1, keepdim=True))
    with torch.no_grad():
        trb.gate.fill_(1.0)
    refined = f + trb.h2(torch.cat([f, rel], dim=-1).flatten(0, 1)).view(2, 3, 4)
    torch.testing.assert_close(trb(f), (a[..., None] * refined).sum(1) / a.sum(1, keepdim=True))
    assert TemporalRelationBlock(dim=4, num_frames=3, relation_dim=2).gate is None    # eq. 4 as written


def test_trb_resamples_other_clip_lengths():
    trb = TemporalRelationBlock(dim=4, num_frames=4, relation_dim=2).eval()
    f = torch.randn(2, 7, 4)
    assert trb(f).shape == (2, 4)
    assert trb(f[:, :1]).shape == (2, 4)
    assert torch.equal(trb.to_num_frames(f[:, :2]), f[:, [0, 0, 1, 1]])   # linspace(0, 1, 4).round()


def test_mask_pooling_is_mass_normalised_average():
    maps = torch.arange(2 * 3 * 4 * 2, dtype=torch.float).view(2, 3, 4, 2)
    masks = torch.zeros(2, 1, 4, 2)
    masks[:, 0, :2] = 2.0                                           # the top half, any positive weight
    torch.testing.assert_close(mask_pooling(maps, masks)[:, 0], maps[:, :, :2].mean(dim=(2, 3)))


def _seg(shift, affine, masks):
    return {"shift": shift, "affine": affine, "masks": masks}


def test_clip_flows_identity_motion_is_zero():
    b, t, k, h, w = 2, 3, 2, 8, 4
    grid = coordinate_grid(h, w)
    shift = torch.rand(1, k, 2).expand(b * t, k, 2)                  # the same parts in every frame
    affine = torch.eye(2).expand(b * t, k, 2, 2)
    masks = torch.rand(b * t, k + 1, h, w).softmax(1)
    disp = clip_flows(_seg(shift, affine, masks), b, t, grid)
    assert disp.shape == (b * t, 2, h, w)
    torch.testing.assert_close(disp, torch.zeros_like(disp), atol=1e-6, rtol=0)


def test_clip_flows_translation_of_a_part():
    """Eq. 1 with identity affines: a part whose centre moves by d gives the displacement -d inside it
    (a target pixel comes from d earlier in the source); the last frame repeats the previous flow."""
    b, t, k, h, w = 1, 2, 1, 8, 4
    grid = coordinate_grid(h, w)
    shift = torch.tensor([[[0.0, 0.0]], [[0.2, -0.1]]])
    affine = torch.eye(2).expand(b * t, k, 2, 2)
    masks = torch.zeros(b * t, k + 1, h, w)
    masks[:, 1] = 1.0                                              # the part covers the whole frame
    disp = clip_flows(_seg(shift, affine, masks), b, t, grid)
    want = torch.tensor([-0.2, 0.1]).view(1, 2, 1, 1).expand(2, 2, h, w)
    torch.testing.assert_close(disp, want)


@pytest.mark.parametrize("switches, groups", [
    ({"parts": False, "motion": False, "temporal": "avg"}, {"global"}),
    ({"parts": True, "motion": False, "temporal": "avg"}, {"global", "local"}),
    ({"parts": True, "motion": True, "temporal": "avg"}, {"global", "local", "motion"}),
    ({}, {"global", "local", "motion"}),
])
def test_forward_shapes_and_losses(switches, groups, one_torch_thread):
    model = small_model(**switches).train()
    clips = torch.randint(0, 256, (4, 3, 3, 64, 32), dtype=torch.uint8)
    out = model(clips)
    assert set(out["features"]) == groups | {"all"}
    dims = {"global": 16, "local": 16 * 4, "motion": 16}
    assert out["features"]["all"].shape == (4, sum(dims[g] for g in groups))
    assert out["embedding"]["global"].shape == out["features"]["all"].shape
    if "local" in groups:
        assert out["logits"]["local"].shape == (4, 4, 5)
        assert out["part_logits"].shape == (12, 4, 32, 16)
    heads = ["global", "local"] if "local" in groups else ["global"]
    crit = Criterion({"id": {"heads": heads}, "triplet": {"heads": ["all"]}})
    labels = torch.tensor([0, 0, 1, 1])
    loss, parts = crit(out, {"label": labels})
    loss.backward()
    if model.segmenter is not None:                                # fine-tuned with the rest
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.segmenter.parameters())
    model.eval()
    with torch.no_grad():
        assert model(clips[:, :1])["embedding"]["global"].shape[0] == 4     # single frames (images, T = 1)


def test_loads_the_pretrained_segmenter(one_torch_thread):
    seg = CoPartSegmenter(num_parts=3, seg_size=(32, 16), unet_channels=4, unet_max_channels=16,
                          predictor_channels=4, predictor_max_channels=8, num_res_blocks=1, lambda_rec=0.0)
    arch = segmenter_architecture(seg.config)
    model = build_model({"name": "ss_hsp", "backbone": "resnet18", "feat_dim": 8, "num_frames": 2,
                         "segmenter": arch}, num_classes=3)
    model.load_segmenter(seg.state_dict())
    for name, p in seg.unet.state_dict().items():
        assert torch.equal(model.segmenter.state_dict()[name], p)


def test_bad_temporal_option_is_named():
    with pytest.raises(Exception, match="model.temporal"):
        small_model(temporal="lstm")


def test_train_stage_names_a_segmenter_given_to_another_model(tiny_mars, tmp_path, one_torch_thread):
    """A `segmentation` block on a method whose model has no segmentation module: one clear error
    (build_model names the model and the unexpected `segmenter` option)."""
    import json

    from hspreid.segmentation import save_checkpoint
    from stages import train as train_stage

    seg = CoPartSegmenter(num_parts=3, seg_size=(32, 16), unet_channels=4, unet_max_channels=16,
                          predictor_channels=4, predictor_max_channels=8, num_res_blocks=1, lambda_rec=0.0)
    save_checkpoint(seg, tmp_path / "segmenter.pt")
    params = {"model": {"name": "baseline", "backbone": "resnet18"},
              "train": {"epochs": 1, "num_ids": 2, "num_instances": 2, "num_frames": 2, "num_workers": 0},
              "segmenter": str(tmp_path / "segmenter.pt")}
    index = tiny_mars["frames"].parent / "index.parquet"
    tiny_mars["index"].to_parquet(index)
    code = train_stage.main(["--frames", str(tiny_mars["frames"]), "--index", str(index),
                             "--output", str(tmp_path / "model.pt"), "--checkpoint", str(tmp_path / "ckpt.pt"),
                             "--params", json.dumps(params), "--log-file", str(tmp_path / "train.log")])
    assert code == 1 and not (tmp_path / "model.pt").exists()
    assert "bad option for 'baseline'" in (tmp_path / "train.log").read_text()   # names the model and the key
