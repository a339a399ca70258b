"""HCGA's PRNet (Li et al., T-IP 2023, §III.C): ISP's part-aligned network with the Guided Alignment Module.

The parsing head (1x1 conv + softmax, C maps, channel 0 background) is supervised by the
co-parsing pseudo labels. Foreground confidence CM_fore = sum_{i>=1} CM_i (eq. 6) pools the
foreground feature. GAM (eqs. 7, 8) reshapes the part confidences before pooling the part
features: in training confidences <= 1/t are zeroed (eq. 7); at inference confidences
> 1 - 1/t become 1 and the rest 0 (eq. 8). ``gam_t=None`` is the "w/o GAM" ablation (soft
confidences, as ISP). Ranking uses HCGA eq. 10 (foreground + shared visible parts).
"""
from __future__ import annotations

import torch

from hspreid.models.isp import ISP, part_pooling


def gam_train(conf: torch.Tensor, t: float) -> torch.Tensor:
    """HCGA eq. 7: keep part confidences e > 1/t, zero the rest."""
    return torch.where(conf > 1.0 / t, conf, torch.zeros_like(conf))


def gam_test(conf: torch.Tensor, t: float, value: float = 1.0) -> torch.Tensor:
    """HCGA eq. 8: part confidences e > 1 - 1/t become ``value`` (1 in the paper; the reference code
    uses 0.5), the rest 0."""
    return (conf > 1.0 - 1.0 / t).to(conf.dtype) * value


class HCGA(ISP):
    """PRNet: ISP's global / foreground / parts groups, parts pooled through GAM (C = 4 by default:
    background, head, upper body, lower body)."""

    def __init__(self, num_classes: int, num_parts: int = 4, gam_t: float | None = 4.0, gam_test_value: float = 1.0,
                 **kwargs):
        super().__init__(num_classes, num_parts=num_parts, **kwargs)
        if gam_t is not None and gam_t <= 1:
            raise ValueError("gam_t must be > 1 (the paper uses 2, 3, 4)")
        self.gam_t, self.gam_test_value = gam_t, gam_test_value

    def clustered_maps(self, maps: torch.Tensor, part_maps: torch.Tensor) -> torch.Tensor:
        """The maps HCGA's co-parsing reads: the part classifier's input (with ``part_stride=4`` the stride-4 fusion
        itself; ISP's maps carry M_g's norm for its activation split, which co-parsing does not have)."""
        return part_maps

    def pool_parts(self, maps: torch.Tensor, probs: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = probs[:, 1:]
        fore = parts.sum(dim=1, keepdim=True)                             # eq. 6: CM_fore
        if self.gam_t is not None:
            parts = gam_train(parts, self.gam_t) if self.training else gam_test(parts, self.gam_t, self.gam_test_value)
        pooled = part_pooling(maps, torch.cat([fore, parts], dim=1))
        return {"foreground": pooled[:, 0], "parts": pooled[:, 1:].flatten(1)}
