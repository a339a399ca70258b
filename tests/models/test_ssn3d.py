"""SSN3D eqs. 1-4, the semi-supervised key point path and the 3D part blocks on small tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from hspreid.errors import UserError
from hspreid.losses import LOSS_TERMS, Criterion, ssn_loss
from hspreid.models.ssn3d import (SSN3D, AttentionClassifier, PartBlocks3D, keypoint_cells, keypoint_windows,
                                  spatial_softmax, ssn_targets, window_pool)


def small_model(**kw) -> SSN3D:
    opts = dict(num_classes=5, num_parts=4, backbone="resnet18", hidden=16, part_dim=8, embed_dim=32,
                layer3_stride=1)
    return SSN3D(**{**opts, **kw})


def test_attention_maps_sum_to_one_eq2():
    a = spatial_softmax(torch.randn(3, 4, 5, 6) * 5)
    assert torch.allclose(a.sum(dim=(2, 3)), torch.ones(3, 4), atol=1e-6) and (a > 0).all()


@pytest.mark.parametrize("padding", [0, 1])
def test_window_pool_is_weighted_sum_of_3x3_windows_eq3(padding):
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 5, 4, generator=g)
    h, w = 5 + 2 * padding - 2, 4 + 2 * padding - 2
    att = spatial_softmax(torch.randn(2, 6, h, w, generator=g))
    got = window_pool(maps, att, padding)
    padded = F.pad(maps, (padding,) * 4)
    expected = torch.zeros(2, 6, 3, 3, 3)
    for m in range(2):
        for i in range(6):
            for y in range(h):
                for x in range(w):
                    expected[m, i] += att[m, i, y, x] * padded[m, :, y:y + 3, x:x + 3]   # A^i_{h,w} X_{h,w}
    assert got.shape == (2, 6, 3, 3, 3)
    assert torch.allclose(got, expected, atol=1e-5)


def test_keypoint_windows_equal_pooling_with_one_hot_attention():
    maps = torch.randn(2, 3, 4, 5)
    cells = torch.tensor([[[0, 0], [3, 4]], [[2, 1], [1, 3]]])
    att = torch.zeros(2, 2, 4, 5)
    for m in range(2):
        for i in range(2):
            att[m, i, cells[m, i, 0], cells[m, i, 1]] = 1.0
    assert torch.allclose(keypoint_windows(maps, cells), window_pool(maps, att))


def test_keypoint_cells_visibility_nan_and_grid():
    kp = torch.tensor([[0.0, 0.0, 1], [0.99, 0.99, 1], [0.5, 0.25, 0], [float("nan"), 0.5, 1], [1.2, 0.5, 1]])
    cells, ok = keypoint_cells(kp, (8, 4))
    assert ok.tolist() == [True, True, False, False, False]
    assert cells[:2].tolist() == [[0, 0], [7, 3]]
    cells2, ok2 = keypoint_cells(kp[:, :2], (8, 4))                  # no flag: NaN / outside = missing
    assert ok2.tolist() == [True, True, True, False, False] and cells2[2].tolist() == [2, 2]
    cells0, _ = keypoint_cells(kp, (8, 4), padding=0)               # valid windows: grid 6 x 2, cell - 1
    assert cells0[:3].tolist() == [[0, 0], [5, 1], [1, 1]]


def test_padding0_keypoint_window_is_centred_on_the_point():
    model = small_model(padding=0).eval()
    clips = torch.randint(0, 255, (1, 1, 3, 64, 32), dtype=torch.uint8)
    kp = torch.tensor([[[[0.4, 0.6]] * 4]])                          # feature cell (4, 1) of the 8 x 4 map
    with torch.no_grad():
        maps = model.trunk(model.normalize(clips.flatten(0, 1)))
        ssn = model.separate(maps, 1, kp)
    assert maps.shape[-2:] == (8, 4) and ssn["attention"].shape[-2:] == (6, 2)
    assert torch.allclose(ssn["parts"][0, 3], maps[0, :, 3:6, 0:3])
    with pytest.raises(ValueError, match="no full 3x3 window"):
        small_model(padding=0)(torch.zeros(1, 1, 3, 16, 8))


def test_second_round_matches_first_round_on_the_same_window():
    clf = AttentionClassifier(channels=3, num_parts=4, hidden=8)
    maps = torch.randn(1, 3, 5, 5)
    scores = clf.score_map(maps)                                     # eq. 1 on every window
    window = F.pad(maps, (1,) * 4)[:, :, 2:5, 1:4]                   # the window centred on (2, 1)
    assert torch.allclose(clf.score_windows(window)[0], scores[0, :, 2, 1], atol=1e-5)


def test_ssn_loss_eq4_minimal_for_own_part():
    n = 4
    good = torch.eye(n)[None] * 10                                   # Y^i classified as part i
    perm = good[:, torch.tensor([1, 2, 3, 0])]                       # Y^i classified as part i+1
    targets = ssn_targets(1, n)
    assert float(ssn_loss(good, targets)) < 1e-2 < float(ssn_loss(perm, targets))
    assert float(ssn_loss(torch.zeros(3, n, n), ssn_targets(3, n))) == pytest.approx(n * math.log(n), rel=1e-6)
    logits = torch.randn(2, n, n)
    manual = -sum(logits[m, i].log_softmax(0)[i] for m in range(2) for i in range(n)) / 2
    assert float(ssn_loss(logits, ssn_targets(2, n))) == pytest.approx(float(manual), rel=1e-5)


def test_ssn_term_in_criterion():
    assert "ssn" in LOSS_TERMS
    out = {"ssn_logits": torch.zeros(2, 3, 3), "ssn_targets": ssn_targets(2, 3)}
    total, parts = Criterion({"ssn": {"weight": 0.1}})(out, {})
    assert float(total) == pytest.approx(0.1 * 3 * math.log(3), rel=1e-6) and "ssn" in parts
    with pytest.raises(UserError, match="losses.ssn"):
        Criterion({"ssn": {"weight": 0.1, "margin": 1}})


def test_part_blocks_are_separate_per_part():
    blocks = PartBlocks3D(channels=3, num_parts=2, dim=4).eval()
    x = torch.randn(2, 2, 3, 4, 3, 3)
    y = x.clone()
    y[:, 0] += 5                                                     # change part 0 only
    a, b = blocks(x), blocks(y)
    assert a.shape == (2, 8)
    assert torch.allclose(a[:, 4:], b[:, 4:]) and not torch.allclose(a[:, :4], b[:, :4])
    assert PartBlocks3D(channels=3, num_parts=2, dim=4, shared=True)(x).shape == (2, 8)


@pytest.mark.parametrize("t", [1, 4])
def test_ssn3d_shapes_and_backward(t):
    model = small_model()
    out = model(torch.randint(0, 255, (2, t, 3, 32, 16), dtype=torch.uint8))
    assert out["features"]["global"].shape == (2, 32) and out["embedding"]["global"].shape == (2, 32)
    assert out["logits"]["global"].shape == (2, 5)
    assert out["ssn_logits"].shape == (2 * t, 4, 4) and out["ssn_targets"].shape == (2 * t, 4)
    assert out["attention"].shape == (2, t, 4, 4, 2)
    assert torch.allclose(out["attention"].sum(dim=(-1, -2)), torch.ones(2, t, 4), atol=1e-5)
    loss = out["features"]["global"].pow(2).mean() + 0.1 * ssn_loss(out["ssn_logits"], out["ssn_targets"])
    loss.backward()
    assert model.trunk[0].weight.grad is not None and model.classifiers[0].conv.weight.grad is not None
    assert model.channels == 256 and SSN3D.extra_inputs == ("keypoints",)


def test_id_probe_is_detached_by_default():
    model = small_model()
    out = model(torch.randint(0, 255, (2, 1, 3, 32, 16), dtype=torch.uint8))
    out["logits"]["global"].sum().backward()
    assert model.fusion.weight.grad is None and model.neck.classifier.weight.grad is not None


def test_semi_supervised_keypoints_replace_part_tensors():
    model = small_model().eval()
    clips = torch.randint(0, 255, (1, 2, 3, 32, 16), dtype=torch.uint8)
    kp = torch.full((1, 2, 4, 3), float("nan"))
    kp[0, 0, 0] = torch.tensor([0.1, 0.1, 1.0])                      # frame 0, part 0 -> cell (0, 0)
    kp[0, 0, 2] = torch.tensor([0.9, 0.9, 1.0])                      # frame 0, part 2 -> cell (3, 1)
    with torch.no_grad():
        maps = model.trunk(model.normalize(clips.flatten(0, 1)))
        free = model.separate(maps, 2, None)
        ssn = model.separate(maps, 2, kp)
        out = model(clips, kp)
    assert ssn["labelled"].tolist() == [[True, False, True, False], [False] * 4]
    expected = keypoint_windows(maps, torch.tensor([[[0, 0], [0, 0], [3, 1], [0, 0]]] * 2))
    assert torch.allclose(ssn["parts"][0, 0], expected[0, 0]) and torch.allclose(ssn["parts"][0, 2], expected[0, 2])
    assert torch.allclose(ssn["parts"][0, 1], free["parts"][0, 1]) and torch.allclose(ssn["parts"][1], free["parts"][1])
    assert torch.allclose(out["ssn_logits"], ssn["logits"]) and out["labelled"].shape == (1, 2, 4)
    with pytest.raises(ValueError, match="keypoints"):
        model(clips, torch.zeros(1, 2, 3, 2))


def test_unshared_classifiers_one_per_frame():
    model = small_model(share_classifier=False, num_frames=2)
    assert len(model.classifiers) == 2
    out = model(torch.randint(0, 255, (2, 2, 3, 32, 16), dtype=torch.uint8))
    ssn_loss(out["ssn_logits"], out["ssn_targets"]).backward()
    assert all(c.fc.weight.grad is not None and c.fc.weight.grad.abs().sum() > 0 for c in model.classifiers)
    with torch.no_grad():                                            # frame slot 1 is scored by classifier 1
        maps = model.trunk(model.normalize(torch.zeros(1, 2, 3, 32, 16).flatten(0, 1)))
        att = model.separate(maps, 2, None)["attention"]
        assert torch.allclose(att[1], spatial_softmax(model.classifiers[1].score_map(maps[1:]))[0], atol=1e-6)


def test_ssn3d_config_errors():
    with pytest.raises(UserError, match="model.num_parts"):
        small_model(num_parts=1)
    with pytest.raises(UserError, match="model.padding"):
        small_model(padding=2)


def test_unshared_classifiers_take_clips_shorter_than_the_slots():
    model = small_model(share_classifier=False, num_frames=2).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 255, (2, 1, 3, 32, 16), dtype=torch.uint8))   # the last, 1-frame test clip
    assert out["ssn_logits"].shape == (2, 4, 4) and torch.isfinite(out["embedding"]["global"]).all()
