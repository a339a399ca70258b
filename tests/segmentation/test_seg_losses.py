"""SS-HSP eqs. 6-8: reconstruction substitutes, equivariance under a random TPS, geometric concentration."""
import pytest
import torch

from hspreid.errors import UserError
from hspreid.segmentation.losses import (build_reconstruction_loss, concentration_loss, equivariance_loss,
                                         mask_kl, part_area_loss, random_color, random_tps)
from hspreid.segmentation.unet import SegmentationUNet


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_eq8_concentration_zero_for_point_masses_positive_for_spread_mass():
    masks = torch.zeros(2, 3, 8, 4)
    masks[:, 0] = 1.0
    masks[:, 0, 1, 2] = masks[:, 0, 6, 0] = 0.0
    masks[:, 1, 1, 2] = 1.0                                      # part 1: one pixel
    masks[:, 2, 6, 0] = 1.0                                      # part 2: one pixel
    assert float(concentration_loss(masks)) == 0.0
    spread = masks.clone()
    spread[:, 2, 6, 0] = 0.5
    spread[:, 2, 0, 3] = 0.5                                     # part 2 split over two far pixels
    got = float(concentration_loss(spread))
    assert got > 0
    dx, dy = 2.0, 6 * 2 / 7                                      # x: col 0 -> 3 on a 4-wide grid, y: row 6 -> 0 of 8
    assert got == pytest.approx((dx ** 2 + dy ** 2) / 4, rel=1e-5)   # two equal masses: variance = |d|^2 / 4


def test_eq8_uses_an_h_by_w_grid_for_non_square_maps():
    masks = torch.zeros(1, 2, 16, 4)
    masks[0, 1, :, 0] = 1.0                                      # a vertical line: all spread along y
    assert float(concentration_loss(masks)) == pytest.approx(float((torch.linspace(-1, 1, 16) ** 2).mean()), rel=1e-5)


def test_part_area_hinge_is_zero_above_the_minimum_and_grows_as_a_part_vanishes():
    masks = torch.zeros(2, 3, 10, 10)
    masks[:, 0] = 1.0
    masks[:, 0, :2] = 0.0
    masks[:, 1, 0] = 1.0                                         # part 1: 10 % of the frame
    masks[:, 2, 1] = 1.0                                         # part 2: 10 %
    assert float(part_area_loss(masks, 0.05)) == 0.0
    masks[1, 2, 1] = 0.0                                         # part 2 gone from sample 1: 5 % over the batch
    masks[1, 0, 1] = 1.0
    assert float(part_area_loss(masks, 0.1)) == pytest.approx((1 - 0.05 / 0.1) / 2)
    masks[:, 2] = 0.0
    assert float(part_area_loss(masks, 0.1)) == pytest.approx(0.5)   # a vanished part costs 1, averaged over K = 2
    with pytest.raises(UserError, match="min_part_area"):
        part_area_loss(masks, 0.0)


def test_tps_with_zero_parameters_is_the_identity():
    t = random_tps(3, sigma_affine=0.0, sigma_tps=0.0)
    pts = torch.rand(3, 5, 2) * 2 - 1
    assert torch.equal(t.warp_coordinates(pts), pts)
    assert torch.allclose(t.jacobian(pts), torch.eye(2).expand(3, 5, 2, 2))
    img = torch.rand(3, 2, 16, 8)
    assert torch.allclose(t.warp_images(img), img, atol=1e-5)


def test_tps_is_seeded_and_its_analytic_jacobian_matches_autograd():
    a = random_tps(2, 0.05, 0.05, generator=torch.Generator().manual_seed(1))
    b = random_tps(2, 0.05, 0.05, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.theta, b.theta) and torch.equal(a.control_params, b.control_params)
    pts = (torch.rand(2, 4, 2) * 1.8 - 0.9).requires_grad_(True)
    out = a.warp_coordinates(pts)
    rows = [torch.autograd.grad(out[..., i].sum(), pts, retain_graph=True)[0] for i in range(2)]
    auto = torch.stack(rows, dim=-2)                             # [B, N, 2 (T_x, T_y), 2 (d/dx, d/dy)]
    assert torch.allclose(a.jacobian(pts.detach()), auto, atol=1e-5)


def test_tps_warp_images_samples_the_original_at_T_z():
    t = random_tps(1, 0.0, 0.0)
    t.theta[0, 0, 2] = 2 * 2 / 7                                 # T(z) = z + 2 px in x on an 8-wide image
    img = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 4, 8).contiguous()
    out = t.warp_images(img)
    assert torch.allclose(out[0, 0, :, :6], img[0, 0, :, 2:], atol=1e-4)
    assert torch.allclose(out[0, 0, :, 6:], torch.full((4, 2), 7.0), atol=1e-4)   # border padding


def _seg(masks, shift, affine):
    return {"masks": masks, "shift": shift, "affine": affine}


def test_eq7_zero_for_an_exactly_equivariant_prediction_under_a_random_tps():
    g = torch.Generator().manual_seed(0)
    t = random_tps(2, 0.05, 0.01, generator=g)
    masks = torch.randn(2, 4, 16, 8, generator=g).softmax(1)
    shift_hat = torch.rand(2, 3, 2, generator=g) * 1.6 - 0.8
    affine_hat = torch.eye(2) + 0.2 * torch.randn(2, 3, 2, 2, generator=g)
    # what the original frame must give if the network is equivariant: e = T(e_hat), A = J_T(e_hat) A_hat
    seg = _seg(masks, t.warp_coordinates(shift_hat), t.jacobian(shift_hat) @ affine_hat)
    seg_hat = _seg(t.warp_images(masks), shift_hat, affine_hat)
    out = equivariance_loss(seg, seg_hat, t)
    assert float(out["kl"]) == pytest.approx(0.0, abs=1e-6)
    assert float(out["shift"]) == pytest.approx(0.0, abs=1e-10)
    assert float(out["affine"]) == pytest.approx(0.0, abs=1e-10)
    wrong = equivariance_loss(seg, _seg(masks.roll(1, dims=1), shift_hat + 0.1, affine_hat * 1.1), t)
    assert all(float(wrong[k]) > 1e-3 for k in ("kl", "shift", "affine"))


def test_eq7_zero_for_the_unet_under_the_identity_transform():
    net = SegmentationUNet(num_parts=3, base_channels=4).eval()
    x = torch.rand(2, 3, 32, 16)
    t = random_tps(2, 0.0, 0.0)
    with torch.no_grad():
        out = equivariance_loss(net(x), net(t(random_color(x, 0.0))), t)
    assert float(out["total"]) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        moved = random_tps(2, 0.2, 0.05, generator=torch.Generator().manual_seed(0))
        assert float(equivariance_loss(net(x), net(moved(x)), moved)["total"]) > 1e-4


def test_mask_kl_zero_iff_equal():
    m = torch.randn(2, 3, 4, 4).softmax(1)
    assert float(mask_kl(m, m)) == pytest.approx(0.0, abs=1e-7)
    assert float(mask_kl(m, m.flip(1))) > 0


def test_random_color_keeps_range_and_zero_strength_is_identity():
    x = torch.rand(4, 3, 8, 4)
    assert torch.equal(random_color(x, 0.0), x)
    y = random_color(x, 0.3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and (y >= 0).all() and (y <= 1).all() and not torch.allclose(x, y)


@pytest.mark.parametrize("name", ["l1_ssim", "vgg_random"])
def test_reconstruction_substitutes_zero_for_identical_images(name):
    loss = build_reconstruction_loss(name)
    x = torch.rand(2, 3, 32, 16)
    assert float(loss(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    pred = x.flip(-1).requires_grad_(True)
    value = loss(pred, x)
    assert float(value.detach()) > 0
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_vgg_random_is_seeded_and_frozen():
    a, b = build_reconstruction_loss("vgg_random", seed=3), build_reconstruction_loss("vgg_random", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not any(p.requires_grad for p in a.parameters())
    assert not a.train().training
    assert len(a.features(torch.rand(1, 3, 16, 8))) == 4            # relu5_1 does not fit 16 x 8


def test_reconstruction_config_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_reconstruction_loss(str(tmp_path / "vgg19.pth"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="VGG-19 state dict"):
        build_reconstruction_loss(str(tmp_path / "bad.pth"))
    with pytest.raises(UserError, match="vgg_random"):
        build_reconstruction_loss("vgg")
    with pytest.raises(UserError, match="scales"):
        build_reconstruction_loss("l1_ssim", scales=(1.0, 2.0))


def test_vgg_weights_file_is_loaded(tmp_path):
    from torchvision.models import vgg

    torch.manual_seed(5)
    features = vgg.make_layers(vgg.cfgs["E"])                   # vgg19().features, without the 120M classifier
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    torch.save(state, tmp_path / "vgg19.pth")
    loss = build_reconstruction_loss(str(tmp_path / "vgg19.pth"))
    assert torch.equal(loss.slices[0][0].weight, state["features.0.weight"])
    assert torch.equal(loss.slices[4][0].weight, state["features.21.weight"])


def test_eq8_isotropic_weighs_pixel_steps_alike_along_x_and_y():
    wide, tall = torch.zeros(1, 2, 9, 5), torch.zeros(1, 2, 9, 5)
    wide[0, 1, 4, 0] = wide[0, 1, 4, 4] = 0.5                    # two pixels 4 columns apart
    tall[0, 1, 2, 2] = tall[0, 1, 6, 2] = 0.5                    # two pixels 4 rows apart
    assert float(concentration_loss(wide)) == pytest.approx(4 * float(concentration_loss(tall)), rel=1e-5)
    assert float(concentration_loss(wide, isotropic=True)) == pytest.approx(
        float(concentration_loss(tall, isotropic=True)), rel=1e-5)
    assert float(concentration_loss(tall, isotropic=True)) == pytest.approx(float(concentration_loss(tall)), rel=1e-6)


def test_eq8_mass_weighted_equals_eq8_for_equal_masses_and_does_not_reward_vanishing():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 4, 8, 4, generator=g).softmax(dim=1)
    equal = masks.clone()
    equal[:, 1:] = equal[:, 1:] / equal[:, 1:].sum(dim=(2, 3), keepdim=True) * 5.0     # every part mass 5
    assert float(concentration_loss(equal, mass_weighted=True)) == pytest.approx(float(concentration_loss(equal)),
                                                                                  rel=1e-5)
    small = masks.clone()
    small[:, 1] *= 1e-3                                                          # part 1 nearly vanished
    grads = {}
    for weighted in (False, True):
        x = small.clone().requires_grad_(True)
        concentration_loss(x, mass_weighted=weighted).backward()
        grads[weighted] = float(x.grad[:, 1].abs().max())
    assert grads[True] < 1e-2 * grads[False]                                     # no 1 / z^k blow-up
