"""Heads shared by the methods: BNNeck (Luo et al., 2019) and input normalisation."""
from __future__ import annotations

import torch
from torch import nn


class BNNeck(nn.Module):
    """feature -> BatchNorm (bias frozen at 0) -> bias-free classifier.

    Triplet loss sees the feature before BN, identity loss the logits, retrieval the BN feature.
    """

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn(feat)
        return bn, self.classifier(bn)


class Normalize(nn.Module):
    """uint8 or [0,1] float RGB -> ImageNet-normalised float."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float()
        else:
            x = x * 255
        return (x - self.mean) / self.std
