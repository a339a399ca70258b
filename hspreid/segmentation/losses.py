"""Losses of the SS-HSP semantic segmentation network (section 3.4): reconstruction (eq. 6),
equivariance (eq. 7) under a random thin-plate-spline warp, geometric concentration (eq. 8).

Reconstruction backbones, chosen by ``build_reconstruction_loss(spec)``:

* a path to a local VGG-19 state dict (torchvision layout): the paper's perceptual loss;
* ``"vgg_random"``: the same VGG-19 slices with fixed, seeded random weights (offline substitute);
* ``"l1_ssim"``: a multi-scale L1 + SSIM pyramid (offline substitute, much cheaper).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hspreid.errors import UserError
from hspreid.segmentation.motion import coordinate_grid, inverse_2x2, part_centres, part_grid

SUBSTITUTES = ("vgg_random", "l1_ssim")
# vgg19.features slices ending at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (as in MCS/FOMM)
VGG_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def image_pyramid(x: torch.Tensor, scales: Sequence[float]) -> list[torch.Tensor]:
    """``x`` resized by each scale (anti-aliased bilinear; scale 1 is ``x`` itself)."""
    out = []
    for s in scales:
        if s == 1:
            out.append(x)
        else:
            size = (max(1, round(x.shape[-2] * s)), max(1, round(x.shape[-1] * s)))
            out.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True))
    return out


# ----------------------------------------------------------------------------------------------------
# eq. 6: reconstruction
# ----------------------------------------------------------------------------------------------------

def _vgg19_layers(weights: str | Path | None, seed: int) -> nn.Sequential:
    """torchvision's vgg19().features[:30], from a local state-dict file (full VGG-19 with ``features.*`` keys,
    or the features alone), or with seeded random weights (torchvision's init) when ``weights`` is None."""
    from torchvision.models import vgg

    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            features = vgg.make_layers(vgg.cfgs["E"])
            for m in features.modules():                      # torchvision's VGG initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        return features[:30]
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"{path}: VGG-19 weights file not found (use reconstruction 'vgg_random' or 'l1_ssim' "
                        "for an offline substitute)")
    features = vgg.make_layers(vgg.cfgs["E"])                 # = vgg19(weights=None).features
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        features.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 -- any unreadable / mismatching file is the user's to fix
        raise UserError(f"{path}: not a torchvision VGG-19 state dict ({type(e).__name__}: {e})"[:500]) from None
    return features[:30]


class VGGPerceptualLoss(nn.Module):
    """SS-HSP eq. 6: sum over scales and VGG-19 layers i of ||phi_i(I'_{t+1}) - phi_i(I_{t+1})||_2^2.

    Each term is a mean over the feature elements (the paper's sum, rescaled per layer so that
    layers and scales weigh alike); ``distance="l1"`` gives MCS's mean absolute difference instead.
    Layers whose input would shrink below one pixel (relu5_1 at 16 x 8) are skipped. The network is
    frozen and always in eval mode; inputs are RGB in [0, 1], ImageNet-normalised inside.
    """

    def __init__(self, weights: str | Path | None = None, scales: Sequence[float] = (1.0, 0.5, 0.25),
                 seed: int = 0, distance: str = "l2"):
        super().__init__()
        if distance not in ("l1", "l2"):
            raise UserError(f"reconstruction distance: expected 'l1' or 'l2', got {distance!r}")
        layers = _vgg19_layers(weights, seed)
        self.slices = nn.ModuleList(layers[a:b] for a, b in VGG_SLICES)
        self.pools = [sum(isinstance(m, nn.MaxPool2d) for m in layers[:b]) for _, b in VGG_SLICES]
        self.scales, self.distance = tuple(scales), distance
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """phi_i(x) for the slices that fit x's resolution."""
        out, h = [], (x - self.mean) / self.std
        for block, pools in zip(self.slices, self.pools):
            if min(x.shape[-2:]) < 2 ** pools:
                break
            h = block(h)
            out.append(h)
        return out

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for pred, tgt in zip(image_pyramid(prediction, self.scales), image_pyramid(target, self.scales)):
            with torch.no_grad():
                tgt_feats = self.features(tgt)
            for fp, ft in zip(self.features(pred), tgt_feats):
                diff = fp - ft
                total = total + (diff.abs().mean() if self.distance == "l1" else diff.pow(2).mean())
        return total


def ssim(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al., 2004) with 3x3 mean windows and reflection padding -> [B, C, H, W]."""
    pad = lambda t: F.pad(t, (1, 1, 1, 1), mode="reflect" if min(t.shape[-2:]) > 1 else "replicate")  # noqa: E731
    pool = lambda t: F.avg_pool2d(pad(t), 3, stride=1)  # noqa: E731
    mu_x, mu_y = pool(x), pool(y)
    var_x = pool(x * x) - mu_x * mu_x
    var_y = pool(y * y) - mu_y * mu_y
    cov = pool(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))


class L1SSIMPyramidLoss(nn.Module):
    """Offline substitute for eq. 6: sum over scales of alpha * (1 - SSIM) / 2 + (1 - alpha) * |I' - I|."""

    def __init__(self, scales: Sequence[float] = (1.0, 0.5, 0.25), alpha: float = 0.85):
        super().__init__()
        self.scales, self.alpha = tuple(scales), alpha

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for pred, tgt in zip(image_pyramid(prediction, self.scales), image_pyramid(target, self.scales)):
            dssim = ((1 - ssim(pred, tgt)) / 2).clamp(0, 1).mean()
            total = total + self.alpha * dssim + (1 - self.alpha) * (pred - tgt).abs().mean()
        return total


def build_reconstruction_loss(spec: str | Path, scales: Sequence[float] = (1.0, 0.5, 0.25), seed: int = 0,
                              distance: str = "l2") -> nn.Module:
    """Eq. 6 loss module: a VGG-19 weights path, or a substitute name (``"vgg_random"``, ``"l1_ssim"``)."""
    if not scales or any(not 0 < s <= 1 for s in scales):
        raise UserError(f"reconstruction scales must be in (0, 1], got {list(scales)}")
    if spec == "vgg_random":
        return VGGPerceptualLoss(None, scales, seed, distance)
    if spec == "l1_ssim":
        return L1SSIMPyramidLoss(scales)
    if isinstance(spec, Path) or (isinstance(spec, str) and ("/" in spec or spec.endswith((".pth", ".pt")))):
        return VGGPerceptualLoss(spec, scales, seed, distance)
    raise UserError(f"reconstruction: expected a VGG-19 weights path or one of {SUBSTITUTES}, got {spec!r}")


# ----------------------------------------------------------------------------------------------------
# eq. 7: equivariance under T_s (thin-plate spline) and T_c (colour)
# ----------------------------------------------------------------------------------------------------

class TPSTransform:
    """Random spatial transform T_s of MCS/FOMM's ``Transform`` class (per sample b):

    T(z) = theta_b[:, :2] z + theta_b[:, 2] + sum_c w_bc * phi(r_c),   phi(r) = r^2 log(r + 1e-6),

    with 5 x 5 control points c on [-1, 1]^2 and, as in the reference code, the L1 radius
    r_c = |x - c_x| + |y - c_y| and the same scalar TPS displacement added to x and y (standard TPS
    would use the Euclidean radius and a 2-D weight per point). ``T`` maps coordinates of the warped
    image to the original, so ``warp_images(I)(z) = I(T(z))`` and a point p of the warped image sits
    at T(p) in the original.
    """

    def __init__(self, theta: torch.Tensor, control_points: torch.Tensor, control_params: torch.Tensor):
        self.theta = theta                      # [B, 2, 3]
        self.control_points = control_points    # [P, 2]
        self.control_params = control_params    # [B, P]

    def _radius(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = coords[..., None, :] - self.control_points.to(coords)              # [B, ..., P, 2]
        return d, d.abs().sum(-1)

    def _weights(self, coords: torch.Tensor) -> torch.Tensor:
        return self.control_params.to(coords).view(coords.shape[0], *([1] * (coords.dim() - 2)), -1)

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """T(z) for coords [B, ..., 2] (x, y)."""
        theta = self.theta.to(coords)
        lin = torch.einsum("bij,b...j->b...i", theta[:, :, :2], coords)
        lin = lin + theta[:, :, 2].view(coords.shape[0], *([1] * (coords.dim() - 2)), 2)
        _, r = self._radius(coords)
        tps = (self._weights(coords) * r.pow(2) * torch.log(r + 1e-6)).sum(-1)
        return lin + tps[..., None]

    def jacobian(self, coords: torch.Tensor) -> torch.Tensor:
        """Analytic dT/dz at coords [B, ..., 2] -> [B, ..., 2, 2] (rows: T_x, T_y; columns: d/dx, d/dy)."""
        d, r = self._radius(coords)
        dphi = 2 * r * torch.log(r + 1e-6) + r.pow(2) / (r + 1e-6)
        g = (self._weights(coords)[..., None] * dphi[..., None] * torch.sign(d)).sum(-2)   # [B, ..., 2]
        theta = self.theta.to(coords)[:, :, :2].view(coords.shape[0], *([1] * (coords.dim() - 2)), 2, 2)
        return theta + g[..., None, :].expand(*g.shape[:-1], 2, 2)

    def warp_images(self, images: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
        """T_s(images): out(z) = images(T(z)), images [B, C, H, W]."""
        b, _, h, w = images.shape
        grid = coordinate_grid(h, w, device=images.device, dtype=images.dtype)[None].expand(b, h, w, 2)
        return F.grid_sample(images, self.warp_coordinates(grid), mode="bilinear", padding_mode=padding_mode,
                             align_corners=True)

    __call__ = warp_images


def random_tps(batch: int, sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5,
               generator: torch.Generator | None = None) -> TPSTransform:
    """Draw T_s per sample: theta = [I | 0] + N(0, sigma_affine^2), TPS weights N(0, sigma_tps^2) on a
    ``points_tps`` x ``points_tps`` control grid (MCS defaults). Zero sigmas give the identity."""
    theta = torch.eye(2, 3).expand(batch, 2, 3) + sigma_affine * torch.randn(batch, 2, 3, generator=generator)
    points = coordinate_grid(points_tps, points_tps).view(-1, 2)
    params = sigma_tps * torch.randn(batch, points_tps ** 2, generator=generator)
    return TPSTransform(theta, points, params)


def random_color(images: torch.Tensor, strength: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """T_c: per-sample brightness, contrast and saturation factors and channel gains in [1-s, 1+s]; [0, 1] kept."""
    if strength <= 0:
        return images
    b = images.shape[0]

    def factor(*shape: int) -> torch.Tensor:
        u = torch.rand(b, *shape, generator=generator)
        return (1 + strength * (2 * u - 1)).to(images)

    x = images * factor(1, 1, 1) * factor(3, 1, 1)                            # brightness, channel gains
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(1, 1, 1) + mean                                   # contrast
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * factor(1, 1, 1) + gray                                   # saturation
    return x.clamp(0, 1)


def mask_kl(masks_hat: torch.Tensor, masks_ref: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """D_KL(M_hat || M_ref) summed over the K+1 channels, averaged over pixels and samples."""
    kl = masks_hat * (torch.log(masks_hat + eps) - torch.log(masks_ref + eps))
    return kl.sum(dim=1).mean()


def equivariance_loss(seg: dict[str, torch.Tensor], seg_hat: dict[str, torch.Tensor],
                      transform: TPSTransform) -> dict[str, torch.Tensor]:
    """SS-HSP eq. 7: D_KL(M_hat || T_s(M)) + ||A_hat - T_s(A)||^2 + ||e_hat - T_s(e)||^2.

    ``seg`` is the segmentation of I_t, ``seg_hat`` that of T_s(T_c(I_t)), both at the same
    resolution. T_s(M) warps the masks like the image; since T maps warped to original coordinates,
    the shift term compares T(e_hat) with e (zero iff e_hat = T^{-1}(e)) and T_s(A) = J_T(e_hat)^{-1} A
    (a part's local frame A seen through the warp). Squared norms are summed over coordinates and
    averaged over parts and samples. Returns {"kl", "affine", "shift", "total"}.
    """
    kl = mask_kl(seg_hat["masks"], transform.warp_images(seg["masks"]))
    shift = (transform.warp_coordinates(seg_hat["shift"]) - seg["shift"]).pow(2).sum(-1).mean()
    affine_ref = inverse_2x2(transform.jacobian(seg_hat["shift"])) @ seg["affine"]
    affine = (seg_hat["affine"] - affine_ref).pow(2).sum((-2, -1)).mean()
    return {"kl": kl, "affine": affine, "shift": shift, "total": kl + affine + shift}


# ----------------------------------------------------------------------------------------------------
# eq. 8: geometric concentration
# ----------------------------------------------------------------------------------------------------

def concentration_loss(masks: torch.Tensor, isotropic: bool = False, mass_weighted: bool = False) -> torch.Tensor:
    """SS-HSP eq. 8 (SCOPS): sum_k sum_z ||z - c^k||^2 M^k(z) / z^k, averaged over samples.

    masks [B, K+1, h, w] (channel 0 background, excluded); coordinates on the h x w grid in [-1, 1]
    (x along the width, y along the height). Zero when every part is a point mass. ``isotropic``: the
    paper's pixel coordinates (h, w), scaled by 2 / (h - 1) -- a pixel step weighs the same along x and y
    (on the [-1, 1] grid a step along the width of a 2:1 map counts twice, its square four times, which
    favours tall, thin parts).

    ``mass_weighted``: part k's term is weighted by z^k / mean_j z^j (no gradient through the weights), so
    equal-mass parts give eq. 8 itself, but a vanishing part is not rewarded: eq. 8's gradient on part k
    grows as 1 / z^k, so once a part starts to shrink it is driven to nothing (all mass to the background);
    weighted, the gradient scales as 1 / mean_j z^j for every part.
    """
    pdf, centre = part_centres(masks, isotropic=isotropic)
    grid = part_grid(*masks.shape[-2:], isotropic, masks.device, masks.dtype)
    sq = (grid[None, None] - centre[:, :, None, None, :]).pow(2).sum(-1)     # [B, K, h, w]
    per_part = (pdf * sq).sum(dim=(2, 3))                                     # [B, K]
    if mass_weighted:
        mass = masks[:, 1:].sum(dim=(2, 3)).detach()
        per_part = per_part * mass / mass.mean(dim=1, keepdim=True).clamp_min(1e-8)
    return per_part.sum(dim=1).mean()


def check_min_part_area(min_area: float) -> None:
    """One clear error unless ``min_area`` is a share of the frame in (0, 1)."""
    if not 0 < min_area < 1:
        raise UserError(f"segmenter min_part_area: expected a share of the frame in (0, 1), got {min_area}")


def part_area_loss(masks: torch.Tensor, min_area: float) -> torch.Tensor:
    """Not in SS-HSP (a documented deviation, off by default): a hinge on each part's share of the frame,
    mean_k max(0, 1 - a^k / min_area) with a^k = the batch mean of M^k over pixels (parts = channels 1..K).

    Zero while every part covers at least ``min_area`` of the frames on average; it stops a part from
    vanishing into the background (eq. 8's 1 / z^k gradient drives a shrinking part to nothing) without
    asking for equal parts or saying where they lie.
    """
    check_min_part_area(min_area)
    area = masks[:, 1:].mean(dim=(0, 2, 3))                                  # [K]
    return (1 - area / min_area).clamp_min(0).mean()
