"""Per-part affine motion between two frames (SS-HSP eqs. 1-3, after Siarohin et al.'s MCS).

Conventions: coordinates are (x, y) normalised to [-1, 1] with align_corners=True semantics
(x = -1 is the centre of the left pixel column, x = 1 of the right one), the layout ``grid_sample``
expects. Frame t is the *source* (current frame, whose features are warped), frame t+1 the *target*
(the next frame, to be predicted). Mask channel 0 is the background (the paper numbers it K+1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def coordinate_grid(height: int, width: int, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[height, width, 2] grid of (x, y) in [-1, 1]; x varies along the width, y along the height."""
    y = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype) if height > 1 else \
        torch.zeros(1, device=device, dtype=dtype)
    x = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype) if width > 1 else \
        torch.zeros(1, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def inverse_2x2(m: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Closed-form inverse of [..., 2, 2] matrices: adj(m) / det(m), with |det| clamped to >= ``eps``.

    Near-singular matrices get a large but finite inverse instead of inf/NaN (det 0 counts as positive).
    """
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))
    det = sign * det.abs().clamp_min(eps)
    adj = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return adj / det[..., None, None]


def part_flows(shift_src: torch.Tensor, affine_src: torch.Tensor, shift_tgt: torch.Tensor,
               affine_tgt: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """SS-HSP eq. 1: G^k(z) = e_t^k + A_t^k (A_{t+1}^k)^{-1} (z - e_{t+1}^k) for every target position z.

    shift_* [B, K, 2], affine_* [B, K, 2, 2] (t = source, t+1 = target), grid [h, w, 2]
    -> [B, K, h, w, 2]: for each part, where a target pixel z comes from in the source frame.
    """
    rel = affine_src @ inverse_2x2(affine_tgt)                                 # [B, K, 2, 2]
    offset = grid[None, None] - shift_tgt[:, :, None, None, :]                # z - e_{t+1}
    return shift_src[:, :, None, None, :] + torch.einsum("bkij,bkhwj->bkhwi", rel, offset)


def combine_flows(flows: torch.Tensor, masks_tgt: torch.Tensor, grid: torch.Tensor,
                  background: torch.Tensor | None = None) -> torch.Tensor:
    """SS-HSP eq. 2: G_hat = sum_k M_{t+1}^k * G^k, the background (channel 0) moving by the identity G = z.

    flows [B, K, h, w, 2] (eq. 1), masks_tgt [B, K+1, h, w] (target-frame soft masks) -> [B, h, w, 2].
    ``background`` [B, h, w, 2], when given, replaces the identity as the background's flow (see
    :func:`affine_flow`).
    """
    bg = grid[None].expand(flows.shape[0], *grid.shape) if background is None else background
    return masks_tgt[:, 0, ..., None] * bg + torch.einsum("bkhw,bkhwc->bhwc", masks_tgt[:, 1:], flows)


def affine_flow(theta: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """G(z) = theta[:, :, :2] z + theta[:, :, 2] for theta [B, 2, 3] on grid [h, w, 2] -> [B, h, w, 2]."""
    return torch.einsum("bij,hwj->bhwi", theta[:, :, :2], grid) + theta[:, None, None, :, 2]


def background_visibility(masks_src: torch.Tensor, masks_tgt: torch.Tensor,
                          detach_target: bool = True, detach_source: bool = False) -> torch.Tensor:
    """SS-HSP eq. 3: O = 1 - M_{t+1}^{bg} * sum_{k=1..K} M_t^k -> [B, 1, h, w] in [0, 1].

    Low where the target shows background but the source had a body part at the same place (that
    background is hidden in I_t, so the warped source features are unreliable there). With
    ``detach_target`` no gradient flows through the target background mask, as in MCS's code
    (``1 - fg_s * (1 - fg_t.detach())``); with ``detach_source`` none flows through M_t either, so O trains
    no map; the value is the same either way.
    """
    bg_tgt = masks_tgt[:, :1]
    if detach_target:
        bg_tgt = bg_tgt.detach()
    fg_src = masks_src[:, 1:].sum(dim=1, keepdim=True)
    if detach_source:
        fg_src = fg_src.detach()
    return 1.0 - bg_tgt * fg_src


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a [B, h, w, 2] sampling grid (values stay in [-1, 1] coordinates)."""
    if tuple(flow.shape[1:3]) == tuple(size):
        return flow
    out = F.interpolate(flow.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True)
    return out.permute(0, 2, 3, 1)


def warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Back-warping f_w of SS-HSP eq. 3: out(z) = x(flow(z)); x [B, C, H, W], flow [B, h, w, 2] resized to H x W."""
    flow = resize_flow(flow, tuple(x.shape[-2:]))
    return F.grid_sample(x, flow.to(x.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=True)


def part_grid(h: int, w: int, isotropic: bool = False, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:func:`coordinate_grid`, or with ``isotropic`` one unit per pixel along x and y (eq. 8's pixel grid,
    scaled so that the height spans [-1, 1])."""
    grid = coordinate_grid(h, w, device=device, dtype=dtype)
    if isotropic and h > 1 and w > 1:                  # one unit per pixel along x and y: half the height
        grid = grid * torch.tensor([(w - 1) / (h - 1), 1.0], device=device, dtype=dtype)
    return grid


def part_centres(masks: torch.Tensor, eps: float = 1e-8, isotropic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Each part's spatial pdf M^k / z^k [B, K, h, w] (eq. 8) and centroid (c_x, c_y) [B, K, 2] (parts = channels
    1..K of masks [B, K+1, h, w]; a part with no mass: pdf 0, centroid the frame's centre)."""
    parts = masks[:, 1:]
    pdf = parts / parts.sum(dim=(2, 3), keepdim=True).clamp_min(eps)
    grid = part_grid(*masks.shape[-2:], isotropic, masks.device, masks.dtype)
    return pdf, torch.einsum("bkhw,hwc->bkc", pdf, grid)
