"""HCGA eqs. 6-8 (PRNet's foreground confidence and the Guided Alignment Module) on small tensors."""
import torch

from hspreid.models.hcga import HCGA, gam_test, gam_train
from hspreid.models.isp import part_pooling


def test_gam_eq7_zeroes_low_confidence_in_training():
    conf = torch.tensor([0.125, 0.25, 0.375, 0.875])                    # exact in float32
    assert gam_train(conf, t=4).tolist() == [0.0, 0.0, 0.375, 0.875]    # 1/t = 0.25: "e <= 1/t -> 0"
    assert gam_train(conf, t=2).tolist() == [0.0, 0.0, 0.0, 0.875]


def test_gam_eq8_binarises_high_confidence_at_inference():
    conf = torch.tensor([0.5, 0.75, 0.875, 1.0])
    assert gam_test(conf, t=4).tolist() == [0.0, 0.0, 1.0, 1.0]          # 1 - 1/t = 0.75
    assert gam_test(conf, t=2).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert gam_test(conf, t=4, value=0.5).tolist() == [0.0, 0.0, 0.5, 0.5]


def _pooled(model, maps, probs):
    return model.pool_parts(maps, probs)


def test_foreground_eq6_and_gam_pooling_by_mode():
    model = HCGA(num_classes=3, num_parts=4, backbone="resnet18", gam_t=4)
    maps = torch.rand(2, 5, 3, 2)
    probs = torch.rand(2, 4, 3, 2).softmax(dim=1)
    fore = probs[:, 1:].sum(dim=1, keepdim=True)                       # eq. 6
    model.train()
    got = _pooled(model, maps, probs)
    assert torch.allclose(got["foreground"], part_pooling(maps, fore)[:, 0], atol=1e-6)
    expected = part_pooling(maps, gam_train(probs[:, 1:], 4)).flatten(1)
    assert torch.allclose(got["parts"], expected, atol=1e-6)
    model.eval()
    expected = part_pooling(maps, gam_test(probs[:, 1:], 4)).flatten(1)
    assert torch.allclose(_pooled(model, maps, probs)["parts"], expected, atol=1e-6)


def test_without_gam_parts_are_pooled_with_soft_confidences():
    model = HCGA(num_classes=3, num_parts=4, backbone="resnet18", gam_t=None).eval()
    maps, probs = torch.rand(1, 5, 3, 2), torch.rand(1, 4, 3, 2).softmax(dim=1)
    assert torch.allclose(_pooled(model, maps, probs)["parts"], part_pooling(maps, probs)[:, 1:].flatten(1))


def test_hcga_forward_shapes():
    model = HCGA(num_classes=5, backbone="resnet18").eval()
    out = model(torch.randint(0, 255, (2, 1, 3, 64, 32), dtype=torch.uint8))
    assert out["part_logits"].shape[1] == 4 and out["embedding"]["parts"].shape == (2, 3, 512)
    assert out["embedding"]["visible"].dtype == torch.bool and set(out["logits"]) == {"global", "foreground", "parts"}


def test_coparsing_reads_the_part_classifiers_input_maps():
    """With part_stride 4, co-parsing clusters the stride-4 fusion as it is (ISP's own maps carry M_g's norm)."""
    from hspreid.models import build_model

    torch.manual_seed(0)
    model = build_model({"name": "hcga", "backbone": "resnet18", "num_parts": 4, "layer3_stride": 1,
                         "part_stride": 4}, 3).eval()
    frames = torch.randint(0, 255, (2, 3, 64, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model.frame_maps(frames), model.stage_maps(frames)[1])
