"""ISP eqs. 5-8 on small tensors."""
import pytest
import torch

from hspreid.losses import parsing_loss
from hspreid.models.isp import ISP, part_pooling, visible_parts


def test_part_pooling_is_gap_of_probability_weighted_maps():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    probs = torch.rand(2, 4, 2, 2).softmax(dim=1)
    got = part_pooling(maps, probs)
    for b in range(2):
        for k in range(4):
            expected = (maps[b] * probs[b, k]).mean(dim=(1, 2))  # GAP(P_k o M), divided by h*w
            assert torch.allclose(got[b, k], expected, atol=1e-5)


def test_visibility_eq8_part_present_in_the_argmax_map():
    logits = torch.full((1, 4, 2, 2), -5.0)
    logits[0, 0] = 0.0                    # background everywhere ...
    logits[0, 2, 0, 1] = 3.0              # ... except one pixel of part 2
    logits[0, 3, 1, 1] = -1.0             # part 3 never wins
    assert visible_parts(logits).tolist() == [[False, True, False]]


def test_parsing_loss_eq6_ignores_255_and_resizes_labels():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 10.0                   # predicts part 1 everywhere
    good = torch.ones(1, 4, 4, dtype=torch.uint8)
    assert float(parsing_loss(logits, good)) < 1e-3
    bad = torch.full((1, 4, 4), 2, dtype=torch.uint8)
    ignored = bad.clone()
    ignored[:, :, :2] = 255               # left half ignored -> same per-pixel loss
    assert float(parsing_loss(logits, bad)) == pytest.approx(float(parsing_loss(logits, ignored)), rel=1e-5)
    assert float(parsing_loss(logits, bad)) == pytest.approx(10.0, abs=1e-3)


def test_isp_forward_shapes_and_groups():
    model = ISP(num_classes=5, num_parts=4, backbone="resnet18").eval()
    out = model(torch.randint(0, 255, (2, 3, 3, 64, 32), dtype=torch.uint8))
    assert set(out["logits"]) == {"global", "foreground", "parts"}
    assert out["features"]["parts"].shape == (2, 3 * 512)
    assert out["embedding"]["parts"].shape == (2, 3, 512) and out["embedding"]["visible"].shape == (2, 3)
    assert out["part_logits"].shape == (6, 4, 4, 2)  # one map per frame, stride 16 with last stride 1


def test_part_stride_4_parses_on_the_first_stages_grid():
    from hspreid.models import build_model

    plain = build_model({"name": "isp", "backbone": "resnet18", "num_parts": 5, "layer3_stride": 1}, 3)
    fine = build_model({"name": "isp", "backbone": "resnet18", "num_parts": 5, "layer3_stride": 1,
                        "part_stride": 4}, 3)
    clips = torch.randint(0, 255, (2, 1, 3, 64, 32), dtype=torch.uint8)
    assert plain(clips)["part_logits"].shape[-2:] == (8, 4)          # output stride 8
    out = fine(clips)
    assert out["part_logits"].shape[-2:] == (16, 8) and fine.frame_maps(clips[:, 0]).shape[-2:] == (16, 8)
    assert out["embedding"]["parts"].shape == (2, 4, 512)
    assert not any(k.startswith("high_res") for k in plain.state_dict())   # the default model is unchanged
    out["part_logits"].sum().backward()
    assert fine.high_res.fuse[0].weight.grad is not None and fine.trunk[4][0].conv1.weight.grad is not None


def test_part_stride_4_clusters_the_fused_directions_at_the_last_stages_activation():
    """With part_stride 4 the clustered maps point as the fused part maps do (eq. 4 clusters unit vectors) and
    their norm is M_g's, bilinearly upsampled (eq. 3's activation)."""
    import torch.nn.functional as F

    from hspreid.models import build_model

    torch.manual_seed(0)
    fine = build_model({"name": "isp", "backbone": "resnet18", "num_parts": 5, "layer3_stride": 1,
                        "part_stride": 4}, 3).eval()
    frames = torch.randint(0, 255, (2, 3, 64, 32), dtype=torch.uint8)
    with torch.no_grad():
        maps, part_maps = fine.stage_maps(frames)
        clustered = fine.frame_maps(frames)
    norm = F.interpolate(maps.norm(dim=1, keepdim=True), size=(16, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(clustered.norm(dim=1, keepdim=True), norm, rtol=1e-4, atol=1e-5)
    assert torch.allclose(F.normalize(clustered, dim=1), F.normalize(part_maps, dim=1), atol=1e-5)
