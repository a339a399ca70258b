"""SPReID (Kalayeh et al., CVPR 2018): human-semantic-parsing-guided pooling.

Five parsing probability maps S_r (foreground, head, upper body, lower body, shoes; SPReID
sec. 3.3, footnote 2), each l1-normalised over pixels, weight the backbone activations X:
F_r = sum_z S_r(z) X(z) / sum_z S_r(z) -- one batched matrix product (SPReID sec. 3.3, "a matrix
multiplication between the output of re-identification backbone and human semantic parsing").
The four body-part vectors are merged by an element-wise max and concatenated with the
foreground vector and the global average pooled vector x_a (sec. 3.3).

Representations (SPReID Table 4):

* ``"wfg"`` (SPReID^{w/fg}) -- [F_fg, max_r F_r, x_a], 3C-d: the official code's descriptor
  (6144-d with Inception-V3);
* ``"wofg"`` (SPReID^{w/o fg}) -- [max_r F_r, x_a], 2C-d;
* ``"combined"`` (SPReID^{combined}) -- "their combination (l2-normalization+concatenation)": two
  independent networks, one per variant above (disjoint parameters, summed losses -- the same as
  training them separately on the same batches); retrieval uses [l2(e_wfg), l2(e_wofg)].

``shared_backbone`` (SPReID Table 5, "weight sharing"): whether the global-average-pooling head
and the parsing-pooling head read the same backbone (Y) or each have their own (N; the paper's
slightly better setting; the official code shares).

Parsing input (``forward(clips, parsing)``): labels uint8/long [B, T, H', W'] in the five-region
code (0 background, 1 head, 2 upper body, 3 lower body, 4 shoes; any other value, e.g. 255, counts
in no region), or probabilities float [B, T, 5, H', W'] (channel 0 background, foreground =
1 - p_0 as in the official code). Without parsing (e.g. at feature extraction) a fixed stripe
prior is used (``fallback="stripes"``; see :func:`stripe_prior`) or an error raised
(``fallback="error"``).

Deviations: ResNet instead of Inception-V3 (the paper's Table 3 also reports ResNet-50/152);
BNNeck heads (repo convention; the paper's classifier is a biased linear layer on the raw
descriptor and the loss softmax cross-entropy only: configure ``id`` with label_smoothing 0 and no
triplet to match); the parsing maps are resized to the backbone grid instead of upsampling the
activations to the parser grid (sec. 3.3), which keeps the pooling cost at h*w pixels; last stride
1 by default (output stride 16, a 16 x 8 grid at 256 x 128) for a finer pooling grid than the
paper's stride 32.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hspreid.errors import UserError
from hspreid.models.backbone import build_resnet
from hspreid.models.base import ReIDModel
from hspreid.models.heads import BNNeck, Normalize
from hspreid.partmaps import REGIONS, stripe_rows

REPRESENTATIONS = ("wfg", "wofg", "combined")
FALLBACKS = ("stripes", "error")

STRIPE_BANDS = (1 / 7, 1 / 2, 6 / 7)
"""Row-fraction boundaries of the fallback prior (head ~1/7 of a standing person, hips at 1/2)."""


# ----------------------------------------------------------------------------- region maps and pooling
def stripe_prior(size: tuple[int, int], bounds: Sequence[float] = STRIPE_BANDS,
                 device: torch.device | None = None) -> torch.Tensor:
    """Fallback region maps [5, h, w] without a parser: foreground everywhere, parts as horizontal
    stripes cut at ``bounds`` (row fractions) -- a fixed prior in the spirit of ISP's stripe fallback."""
    h, w = size
    band = torch.as_tensor(stripe_rows(h, bounds=bounds), device=device)                 # [h] in 1..4
    parts = (band[None, :] == torch.arange(1, 5, device=device)[:, None]).float()     # [4, h]
    maps = torch.cat([torch.ones(1, h, device=device), parts])                        # [5, h]
    return maps[:, :, None].expand(5, h, w).contiguous()


def region_maps(parsing: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The five SPReID maps [B*T, 5, h, w] (foreground, head, upper, lower, shoes) on the backbone grid.

    Labels [B, T, H', W'] -> one-hot of regions 1..4 (foreground = their sum, so ignored pixels count
    nowhere), area-resized (the fraction of each cell covered by the region). Probabilities
    [B, T, 5, H', W'] -> bilinear resize (antialiased when shrinking), foreground = 1 - p_background.
    """
    if parsing.is_floating_point():
        if parsing.dim() != 5 or parsing.shape[2] != len(REGIONS):
            raise ValueError(f"parsing: probabilities must be [B, T, 5, H, W], got {tuple(parsing.shape)}")
        p = parsing.flatten(0, 1).float()
        if tuple(p.shape[-2:]) != tuple(size):
            p = F.interpolate(p, size=size, mode="bilinear", align_corners=False, antialias=True)
        return torch.cat([1.0 - p[:, :1], p[:, 1:]], dim=1).clamp_min(0.0)
    if parsing.dim() != 4:
        raise ValueError(f"parsing: labels must be [B, T, H, W], got {tuple(parsing.shape)}")
    lab = parsing.flatten(0, 1).long()
    parts = (lab[:, None] == torch.arange(1, 5, device=lab.device)[None, :, None, None]).float()
    maps = torch.cat([parts.sum(1, keepdim=True), parts], dim=1)
    return maps if tuple(maps.shape[-2:]) == tuple(size) else F.interpolate(maps, size=size, mode="area")


def l1_normalize(maps: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """[M, R, h, w] -> [M, R, h*w], each map divided by its sum (SPReID sec. 3.3, "l1-normalized per
    channel"). A map with (almost) no mass -- a region not visible -- gets all-zero weights, so its
    pooled vector is the zero vector (with ReLU activations this never wins the element-wise max)."""
    flat = maps.flatten(2)
    mass = flat.sum(-1, keepdim=True)
    return torch.where(mass > eps, flat / mass.clamp_min(eps), torch.zeros_like(flat))


def parsing_pooling(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """F_r = sum_z S_r(z) X(z) / sum_z S_r(z) for every region: maps [M, C, h, w], regions [M, R, h, w]
    -> [M, R, C], one batched matrix product (SPReID sec. 3.3)."""
    return torch.einsum("mrp,mcp->mrc", l1_normalize(regions), maps.flatten(2))


def spreid_descriptor(pooled: torch.Tensor, global_feat: torch.Tensor, with_foreground: bool) -> torch.Tensor:
    """[F_fg, max(F_head, F_upper, F_lower, F_shoes), x_a] (w/fg) or [max part, x_a] (w/o fg): pooled
    [M, 5, C], global [M, C] -> [M, 3C or 2C] (SPReID sec. 3.3, element-wise max over the body parts)."""
    pieces = [pooled[:, 1:].amax(dim=1), global_feat]
    return torch.cat([pooled[:, 0]] + pieces if with_foreground else pieces, dim=1)


# ----------------------------------------------------------------------------- model
class RegionSource:
    """Region maps on demand for a grid size: from the batch's parsing, or the stripe prior."""

    def __init__(self, parsing: torch.Tensor | None, frames: int):
        self.parsing, self.frames, self._cache = parsing, frames, {}

    def __call__(self, size: torch.Size | tuple[int, int], device: torch.device) -> torch.Tensor:
        size = (int(size[0]), int(size[1]))
        if size not in self._cache:
            if self.parsing is None:
                self._cache[size] = stripe_prior(size, device=device)[None].expand(self.frames, -1, -1, -1)
            else:
                self._cache[size] = region_maps(self.parsing.to(device), size)
        return self._cache[size]


class SPReIDNet(nn.Module):
    """One SPReID network: backbone(s), parsing-guided pooling and one BNNeck on its descriptor."""

    def __init__(self, num_classes: int, with_foreground: bool, shared_backbone: bool, backbone: str,
                 last_stride: int, pretrained: str | None, layer3_stride: int):
        super().__init__()
        self.with_foreground = with_foreground
        self.trunk, self.dim = build_resnet(backbone, last_stride, pretrained, layer3_stride)
        self.parse_trunk = None if shared_backbone else build_resnet(backbone, last_stride, pretrained,
                                                                     layer3_stride)[0]
        self.neck = BNNeck(self.dim * (3 if with_foreground else 2), num_classes)

    def descriptor(self, images: torch.Tensor, regions_for: RegionSource) -> torch.Tensor:
        """Normalised frames [M, 3, H, W] -> per-frame descriptor [M, 3C or 2C]."""
        maps = self.trunk(images)
        global_feat = maps.mean(dim=(2, 3))                                   # x_a = GAP(X)
        part_maps = maps if self.parse_trunk is None else self.parse_trunk(images)
        pooled = parsing_pooling(part_maps, regions_for(part_maps.shape[-2:], part_maps.device))
        return spreid_descriptor(pooled, global_feat, self.with_foreground)


class SPReID(ReIDModel):
    """Clips [B, T, 3, H, W] (+ parsing) -> SPReID features, logits and embeddings.

    Heads: ``"global"`` is the network of the chosen representation (for ``combined``: the w/fg
    network, plus ``"wofg"`` for the w/o-fg one). ``features`` are the pre-BN descriptors (per frame,
    then averaged over T), ``logits`` their classifiers (softmax CE in the paper), ``embedding["global"]``
    the BN descriptor (``combined``: [l2(e_wfg), l2(e_wofg)], with ``"wfg"`` and ``"wofg"`` alongside).
    """

    extra_inputs = ("parsing",)

    def __init__(self, num_classes: int, representation: str = "wfg", shared_backbone: bool = True,
                 backbone: str = "resnet50", last_stride: int = 1, pretrained: str | None = None,
                 layer3_stride: int = 2, fallback: str = "stripes"):
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise UserError(f"model.representation: expected one of {REPRESENTATIONS}, got {representation!r}")
        if fallback not in FALLBACKS:
            raise UserError(f"model.fallback: expected one of {FALLBACKS}, got {fallback!r}")
        self.representation, self.fallback = representation, fallback
        self.requires_parsing = fallback == "error"
        variants = {"wfg": {"global": True}, "wofg": {"global": False},
                    "combined": {"global": True, "wofg": False}}[representation]
        self.nets = nn.ModuleDict({
            head: SPReIDNet(num_classes, with_fg, bool(shared_backbone), backbone, last_stride, pretrained,
                            layer3_stride)
            for head, with_fg in variants.items()})
        self.normalize = Normalize()

    def forward(self, clips: torch.Tensor, parsing: torch.Tensor | None = None) -> dict:
        b, t = clips.shape[:2]
        if parsing is None and self.requires_parsing:
            raise ValueError("SPReID: parsing maps are required (model.fallback is 'error')")
        if parsing is not None and tuple(parsing.shape[:2]) != (b, t):
            raise ValueError(f"parsing: leading dims {tuple(parsing.shape[:2])} do not match clips {(b, t)}")
        images = self.normalize(clips.flatten(0, 1))
        source = RegionSource(parsing, b * t)
        out: dict = {"features": {}, "logits": {}, "embedding": {}}
        for head, net in self.nets.items():
            feat = net.descriptor(images, source).view(b, t, -1).mean(dim=1)    # temporal average pooling
            out["features"][head] = feat
            out["embedding"][head], out["logits"][head] = net.neck(feat)
        if self.representation == "combined":
            wfg, wofg = out["embedding"]["global"], out["embedding"]["wofg"]
            out["embedding"] = {"global": torch.cat([F.normalize(wfg, dim=1), F.normalize(wofg, dim=1)], dim=1),
                                "wfg": wfg, "wofg": wofg}
        return out
