"""The baseline: ResNet (last stride 1) -> GAP -> temporal average pooling -> BNNeck."""
from __future__ import annotations

import torch

from hspreid.models.backbone import build_resnet
from hspreid.models.base import ReIDModel
from hspreid.models.heads import BNNeck, Normalize


class Baseline(ReIDModel):
    """Clips [B,T,3,H,W] -> {"features": {"global": pre-BN}, "logits": {"global": ...}, "embedding": BN feature}.

    An image is a clip with T = 1. Temporal average pooling over frames (the video baseline of
    most video re-ID papers, e.g. SS-HSP Table 3 "Basel.").
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, layer3_stride: int = 2):
        super().__init__()
        self.normalize = Normalize()
        self.trunk, self.dim = build_resnet(backbone, last_stride, pretrained, layer3_stride)
        self.neck = BNNeck(self.dim, num_classes)

    def forward(self, clips: torch.Tensor) -> dict:
        b, t = clips.shape[:2]
        maps = self.frame_maps(clips.flatten(0, 1))
        feat = maps.mean(dim=(2, 3)).view(b, t, -1).mean(dim=1)
        emb, logits = self.neck(feat)
        return {"features": {"global": feat}, "logits": {"global": logits}, "embedding": {"global": emb}}
