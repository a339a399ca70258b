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


class ISP(ReIDModel):
    """Clips [B,T,3,H,W] -> features/logits for the global, foreground and parts groups, part logits.

    Video clips are pooled over time after the per-frame features (temporal average pooling);
    the part logits keep one map per frame (``part_logits`` [B*T, K, h, w]) for the parsing loss.
    """

    predicts_parsing = True

    def __init__(self, num_classes: int, num_parts: int = 7, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, layer3_stride: int = 2):
        super().__init__()
        if num_parts < 2:
            raise ValueError("num_parts counts the background: it must be at least 2")
        self.num_parts = num_parts
        self.normalize = Normalize()
        self.trunk, self.dim = build_resnet(backbone, last_stride, pretrained, layer3_stride)
        self.part_classifier = nn.Conv2d(self.dim, num_parts, kernel_size=1)   # eq. 5: W_k^T M_g(x, y)
        self.necks = nn.ModuleDict({"global": BNNeck(self.dim, num_classes),
                                    "foreground": BNNeck(self.dim, num_classes),
                                    "parts": BNNeck(self.dim * (num_parts - 1), num_classes)})

    def pool_parts(self, maps: torch.Tensor, probs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Foreground F_f = GAP(sum_k>=1 P_k * M_g) and parts [F_1 .. F_K-1], F_k = GAP(P_k * M_g)."""
        pooled = part_pooling(maps, probs)                                 # [B*T, K, C]
        return {"foreground": pooled[:, 1:].sum(dim=1), "parts": pooled[:, 1:].flatten(1)}

    def forward(self, clips: torch.Tensor) -> dict:
        b, t = clips.shape[:2]
        maps = self.frame_maps(clips.flatten(0, 1))                         # M_g
        logits = self.part_classifier(maps)
        probs = logits.softmax(dim=1)                                      # eq. 5
        feats = {"global": maps.mean(dim=(2, 3)), **self.pool_parts(maps, probs)}
        feats = {k: v.view(b, t, -1).mean(dim=1) for k, v in feats.items()}
        out = {"features": feats, "logits": {}, "embedding": {}, "part_logits": logits}
        for name, neck in self.necks.items():
            out["embedding"][name], out["logits"][name] = neck(feats[name])
        k = self.num_parts - 1
        out["embedding"]["parts"] = out["embedding"]["parts"].view(b, k, self.dim)
        out["embedding"]["visible"] = visible_parts(logits).view(b, t, k).any(dim=1)
        return out
