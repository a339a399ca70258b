"""Segmentation module of SS-HSP (section 3.2): a U-Net whose (6K+1)-channel output S_t splits into
K+1 segmentation logits, K shift heat maps and 4K affine maps (the MCS SegmentationModule layout).

S_t[:K+1]      -> channel softmax -> M_t [B, K+1, h, w] (channel 0 background)
S_t[K+1:2K+1]  -> spatial softmax(logits / temperature) -> heat maps -> soft-argmax -> e_t^k [B, K, 2]
S_t[2K+1:]     -> heat-weighted spatial average -> A_t^k [B, K, 2, 2] (identity at initialisation)

``part_motion="masks"`` (not in the paper or MCS) weighs the shift and the affine maps by each part's own
segmentation map instead of its heat map, M_t^k / z^k (eq. 8's distribution): e_t^k is the part's centroid, so
a part moves with its own mass, and eq. 6 rewards maps whose pieces move rigidly without waiting for K heat
maps to learn to track them (bench/study_ss_hsp_pretext.py --motion centroid; docs/results.md).
"""
from __future__ import annotations

import torch
from torch import nn

from hspreid.errors import UserError

from hspreid.segmentation.motion import coordinate_grid, part_centres

PART_MOTIONS = ("heatmaps", "masks")


class DownBlock(nn.Module):
    """3x3 conv -> BN -> ReLU -> 2x2 average pooling (halves the resolution)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                                  nn.ReLU(inplace=True), nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpBlock(nn.Module):
    """Nearest x2 up-sampling -> 3x3 conv -> BN -> ReLU (doubles the resolution)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1),
                                  nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SegmentationUNet(nn.Module):
    """Frames [B, 3, h, w] in [0, 1] (h, w divisible by 16, e.g. 64 x 32) -> masks, shifts, affines.

    Four down blocks (channels 2b, 4b, 8b, 16b for ``base_channels`` b, capped at ``max_channels``),
    four up blocks with skip concatenation, then one conv (7x7 as MCS's heads, ``head_kernel``) to the 6K+1
    channels of S_t. The weights
    of the 4K affine channels start at zero with bias [1, 0, 0, 1] per part, so A^k = I at the start.
    ``part_motion``: what weighs the shift and affine maps, "heatmaps" (the paper, MCS) or "masks" (the
    module docstring). The layers are the same either way.
    """

    def __init__(self, num_parts: int = 6, base_channels: int = 32, max_channels: int = 1024,
                 temperature: float = 0.1, num_blocks: int = 4, head_kernel: int = 7, part_motion: str = "heatmaps"):
        super().__init__()
        if part_motion not in PART_MOTIONS:
            raise UserError(f"segmenter part_motion: expected one of {list(PART_MOTIONS)}, got {part_motion!r}")
        self.num_parts, self.temperature, self.part_motion = num_parts, temperature, part_motion
        widths = [min(max_channels, base_channels * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down = nn.ModuleList(DownBlock(c_in, c_out) for c_in, c_out in zip([3] + widths[:-1], widths))
        self.up = nn.ModuleList()
        c_in = widths[-1]
        for i in reversed(range(num_blocks)):
            c_out = min(max_channels, base_channels * 2 ** i)
            self.up.append(UpBlock(c_in, c_out))
            c_in = c_out + (widths[i - 1] if i > 0 else 3)                    # skip concatenation
        k = num_parts
        self.head = nn.Conv2d(c_in, 6 * k + 1, kernel_size=head_kernel, padding=head_kernel // 2)
        with torch.no_grad():
            self.head.weight[2 * k + 1:].zero_()
            self.head.bias[2 * k + 1:] = torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(k)

    def hourglass(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.up:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """-> {"logits", "masks" [B,K+1,h,w], "heatmaps" [B,K,h,w], "shift" [B,K,2], "affine" [B,K,2,2]}."""
        s = self.head(self.hourglass(x))                                      # S_t [B, 6K+1, h, w]
        b, _, h, w = s.shape
        k = self.num_parts
        logits = s[:, :k + 1]
        masks = logits.softmax(dim=1)
        if self.part_motion == "masks":
            heat, shift = part_centres(masks)                                  # M^k / z^k and its centroid
        else:
            heat = (s[:, k + 1:2 * k + 1].flatten(2) / self.temperature).softmax(dim=-1).view(b, k, h, w)
            grid = coordinate_grid(h, w, device=s.device, dtype=s.dtype)
            shift = torch.einsum("bkhw,hwc->bkc", heat, grid)                 # soft-argmax e_t^k
        affine_maps = s[:, 2 * k + 1:].view(b, k, 4, h, w)
        affine = torch.einsum("bkhw,bkjhw->bkj", heat, affine_maps).view(b, k, 2, 2)
        return {"logits": logits, "masks": masks, "heatmaps": heat, "shift": shift, "affine": affine}
