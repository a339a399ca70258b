"""ISP (Zhu et al., ECCV 2020): part-aligned representations from a pixel-wise part classifier.

backbone map M_g [B, C, h, w] -> 1x1 conv + softmax over K classes (eq. 5; class 0 background)
-> part features F_k = GAP(P_k * M_g), k = 1..K-1; foreground F_f = GAP(sum_{k>=1} P_k * M_g);
global F_g = GAP(M_g) (section 3.3). Each group has its own BNNeck and classifier (eq. 7).
At test time part k is visible when it wins the argmax somewhere in the map (eq. 8).
"""
from __future__ import annotations

import torch
from torch import nn

from hspreid.models.backbone import build_resnet
from hspreid.models.base import ReIDModel
from hspreid.models.heads import BNNeck, Normalize


def part_pooling(maps: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """GAP(P_k * M) for every class k: maps [B, C, h, w], probs [B, K, h, w] -> [B, K, C] (divided by h*w)."""
    return torch.einsum("bchw,bkhw->bkc", maps, probs) / (maps.shape[2] * maps.shape[3])


def visible_parts(part_logits: torch.Tensor) -> torch.Tensor:
    """ISP eq. 8: l_k = 1 if argmax_i P_i(x, y) = k for some pixel; [B, K, h, w] -> bool [B, K-1] (k >= 1)."""
    winners = part_logits.argmax(dim=1)                                   # [B, h, w]
    k = part_logits.shape[1]
    hits = torch.nn.functional.one_hot(winners, k).flatten(1, 2).any(dim=1)  # [B, K]
    return hits[:, 1:]


class HighResolutionHead(nn.Module):
    """Backbone maps at stride 4, as ISP's HRNet gives them (§4.1: the part classifier and the clustering run on
    the 1/4-resolution output): the last stage's maps M [N, C, h, w] upsampled (bilinear) to the first stage's
    grid and fused with its maps L [N, C1, 4h', 4w'] by a 1x1 conv + BN + ReLU to C channels (an FPN-style
    lateral fusion; HRNet fuses its branches the same way, by upsampling and summation)."""

    def __init__(self, channels: int, low_channels: int):
        super().__init__()
        self.fuse = nn.Sequential(nn.Conv2d(channels + low_channels, channels, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, maps: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(maps, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, low], dim=1))


class ISP(ReIDModel):
    """Clips [B,T,3,H,W] -> features/logits for the global, foreground and parts groups, part logits.

    Video clips are pooled over time after the per-frame features (temporal average pooling);
    the part logits keep one map per frame (``part_logits`` [B*T, K, h, w]) for the parsing loss.
    ``part_stride=4`` puts the part classifier, the part pooling and the clustered maps on the backbone's
    stride-4 grid (:class:`HighResolutionHead`, as ISP's HRNet output); the default (None) uses the last
    stage's grid. The global feature always pools the last stage.
    """

    predicts_parsing = True

    def __init__(self, num_classes: int, num_parts: int = 7, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, layer3_stride: int = 2, part_stride: int | None = None):
        super().__init__()
        if num_parts < 2:
            raise ValueError("num_parts counts the background: it must be at least 2")
        if part_stride not in (None, 4):
            raise ValueError(f"part_stride: expected null (the last stage's grid) or 4, got {part_stride!r}")
        self.num_parts = num_parts
        self.normalize = Normalize()
        self.trunk, self.dim = build_resnet(backbone, last_stride, pretrained, layer3_stride)
        self.high_res = None if part_stride is None else HighResolutionHead(self.dim, _low_channels(self.trunk))
        self.part_classifier = nn.Conv2d(self.dim, num_parts, kernel_size=1)   # eq. 5: W_k^T M_g(x, y)
        self.necks = nn.ModuleDict({"global": BNNeck(self.dim, num_classes),
                                    "foreground": BNNeck(self.dim, num_classes),
                                    "parts": BNNeck(self.dim * (num_parts - 1), num_classes)})

    def pool_parts(self, maps: torch.Tensor, probs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Foreground F_f = GAP(sum_k>=1 P_k * M_g) and parts [F_1 .. F_K-1], F_k = GAP(P_k * M_g)."""
        pooled = part_pooling(maps, probs)                                 # [B*T, K, C]
        return {"foreground": pooled[:, 1:].sum(dim=1), "parts": pooled[:, 1:].flatten(1)}

    def stage_maps(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the last stage's maps M_g, the part maps: M_g or its stride-4 fusion) of frames [N, 3, H, W]."""
        x = self.normalize(frames)
        if self.high_res is None:
            maps = self.trunk(x)
            return maps, maps
        low = self.trunk[:5](x)                                            # conv1 .. layer1: stride 4
        maps = self.trunk[5:](low)
        return maps, self.high_res(maps, low)

    def frame_maps(self, frames: torch.Tensor) -> torch.Tensor:
        """The maps the pseudo labels cluster (:meth:`clustered_maps`) of frames [N, 3, H, W]."""
        return self.clustered_maps(*self.stage_maps(frames))

    def clustered_maps(self, maps: torch.Tensor, part_maps: torch.Tensor) -> torch.Tensor:
        """The maps ISP's pseudo labels cluster, from :meth:`stage_maps`' pair: M_g, or with ``part_stride=4`` the
        stride-4 part maps' directions (the parts are clustered on unit vectors, eq. 4) at the norm of M_g bilinearly
        upsampled to their grid, so that eq. 3's activation is M_g's. The fused maps' own norm follows ``layer1``'s
        texture rather than the person (synth_market, after ISP's round 0: ROC AUC 0.53 for the person against
        0.70 for M_g's)."""
        if self.high_res is None:
            return maps
        norm = nn.functional.interpolate(torch.linalg.vector_norm(maps, dim=1, keepdim=True), size=part_maps.shape[-2:],
                                         mode="bilinear", align_corners=False)
        return part_maps / torch.linalg.vector_norm(part_maps, dim=1, keepdim=True).clamp(min=1e-12) * norm

    def forward(self, clips: torch.Tensor) -> dict:
        b, t = clips.shape[:2]
        maps, part_maps = self.stage_maps(clips.flatten(0, 1))              # M_g
        logits = self.part_classifier(part_maps)
        probs = logits.softmax(dim=1)                                      # eq. 5
        feats = {"global": maps.mean(dim=(2, 3)), **self.pool_parts(part_maps, probs)}
        feats = {k: v.view(b, t, -1).mean(dim=1) for k, v in feats.items()}
        out = {"features": feats, "logits": {}, "embedding": {}, "part_logits": logits}
        for name, neck in self.necks.items():
            out["embedding"][name], out["logits"][name] = neck(feats[name])
        k = self.num_parts - 1
        out["embedding"]["parts"] = out["embedding"]["parts"].view(b, k, self.dim)
        out["embedding"]["visible"] = visible_parts(logits).view(b, t, k).any(dim=1)
        return out


def _low_channels(trunk: nn.Sequential) -> int:
    """Output channels of the trunk's first stage (layer1)."""
    return trunk[4][-1].conv2.out_channels if not hasattr(trunk[4][-1], "conv3") else trunk[4][-1].conv3.out_channels
