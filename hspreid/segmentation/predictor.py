"""Prediction module of SS-HSP (section 3.2, Fig. 3): renders I'_{t+1} from I_t and the part motion.

encoder (7x7 conv, two down-sampling blocks) -> deformation layer v'_s = O * f_w(v_s, G_hat) (eq. 3)
-> five residual blocks -> two up-sampling blocks -> 7x7 conv -> sigmoid (the numbers of blocks are options).
"""
from __future__ import annotations

import torch
from torch import nn

from hspreid.segmentation.motion import warp
from hspreid.segmentation.unet import DownBlock, UpBlock


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(ReLU(BN(conv(ReLU(BN(x)))))), 3x3 convs."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FramePredictor(nn.Module):
    """(I_t [B,3,H,W] in [0,1], G_hat [B,h,w,2], O [B,1,h,w]) -> I'_{t+1} [B,3,H,W] in (0,1).

    H and W must be divisible by 2**num_down; G_hat and O are resized to the feature resolution
    H / 2**num_down x W / 2**num_down (H/4 x W/4 with the paper's two down-sampling blocks).
    """

    def __init__(self, base_channels: int = 64, max_channels: int = 512, num_down: int = 2, num_res_blocks: int = 5):
        super().__init__()
        widths = [min(max_channels, base_channels * 2 ** i) for i in range(num_down + 1)]
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, padding=3), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        self.down = nn.Sequential(*(DownBlock(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.res = nn.Sequential(*(ResBlock(widths[-1]) for _ in range(num_res_blocks)))
        self.up = nn.Sequential(*(UpBlock(a, b) for a, b in zip(widths[::-1][:-1], widths[::-1][1:])))
        self.out = nn.Conv2d(widths[0], 3, 7, padding=3)

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        """v_s: features of I_t after the ``num_down`` down-sampling blocks (two in the paper)."""
        return self.down(self.stem(source))

    @staticmethod
    def deform(features: torch.Tensor, flow: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
        """SS-HSP eq. 3: v'_s = O * f_w(v_s, G_hat), with O resized to the feature resolution."""
        warped = warp(features, flow)
        if visibility.shape[-2:] != warped.shape[-2:]:
            visibility = nn.functional.interpolate(visibility, size=warped.shape[-2:], mode="bilinear",
                                                   align_corners=True)
        return warped * visibility

    def forward(self, source: torch.Tensor, flow: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
        v = self.deform(self.encode(source), flow, visibility)
        return torch.sigmoid(self.out(self.up(self.res(v))))
