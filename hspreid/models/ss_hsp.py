"""SS-HSP (Wu & Liu, JUSTC 2022): the re-ID model of the second training stage (section 3.3).

Per frame t of a clip: backbone map X_t -> global feature f_g = FC(GAP(X_t)); the segmentation module
(the pretrained :class:`~hspreid.segmentation.SegmentationUNet`, fine-tuned here) gives part masks
M^1..M^K, and K+1 local features f_p^k = FC_k(weighted pooling of X_t with M^k), the last one with the
foreground sum_k M^k; the flow field G_hat between frames t and t+1 (eqs. 1-2) gives the motion feature
f_m = FC(avgpool(1x1 conv(G_hat))). A temporal relation block (eqs. 4-5) turns each kind of frame
feature into one clip feature. Identity losses on the global and local clip features, batch-hard
triplet on the concatenation of all of them, which is also the test representation.

Table 3's ablations are switches: ``parts`` (local features), ``motion`` and ``temporal``
("trb" or "avg", temporal average pooling).

Deviations (the paper is silent): the motion branch has BN + ReLU after its 1x1 conv (1x1 conv,
average pooling and FC alone would be a linear function of the mean flow) and reads the displacement
G_hat(z) - z; the last frame of a clip reuses the flow into it from the previous frame; a clip whose
length differs from the trained T (test clips) is resampled to T evenly spaced frames for the TRB,
whose concatenation r~_t has a fixed length T x d; optionally (``relation_residual``, a deviation for
training from scratch) the refined feature is f^_t = f_t + gamma h_2([f_t, r~_t]) with a learned scalar
gamma that starts at 0, so the block starts as eq. 5's attention pooling of the frame features; the
retrieval feature is the BatchNorm of that concatenation (BNNeck convention).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hspreid.errors import UserError
from hspreid.models.backbone import build_resnet
from hspreid.models.base import ReIDModel
from hspreid.models.heads import BNNeck, Normalize
from hspreid.segmentation.model import read_segmenter_checkpoint, resize_frames
from hspreid.segmentation.motion import combine_flows, coordinate_grid, part_flows
from hspreid.segmentation.unet import SegmentationUNet

SEGMENTER_ARCH = {"num_parts": 6, "seg_size": [64, 32], "unet_channels": 32, "unet_max_channels": 1024,
                  "temperature": 0.1, "head_kernel": 7, "part_motion": "heatmaps"}
"""The segmentation-module options the re-ID model needs (a segmenter checkpoint's config carries more)."""
TEMPORAL = ("trb", "avg")


def segmenter_architecture(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The architecture keys of a segmenter config (e.g. a ``segmenter.pt`` checkpoint's), defaults filled in."""
    cfg = cfg or {}
    return {k: cfg.get(k, v) for k, v in SEGMENTER_ARCH.items()}


def read_pretrained_segmenter(path: str | Path) -> dict[str, Any]:
    """A ``segmenter.pt`` from the pretrain_segmentation stage -> {"architecture", "state_dict", "summary"}
    (``summary``: that stage's ``segmentation.json`` next to it, parsing quality included, when present)."""
    path = Path(path)
    ckpt = read_segmenter_checkpoint(path)
    summary_path = path.with_name("segmentation.json")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    if summary is not None:                                   # carried to metrics.json: the numbers, not the log
        summary = {k: v for k, v in summary.items() if k not in ("history", "params")}
    return {"architecture": segmenter_architecture(ckpt["config"]), "state_dict": ckpt["state_dict"],
            "summary": summary}


def fc_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """The embedding functions phi, varphi, h_1, h_2 of SS-HSP eq. 4: FC + BN + ReLU."""
    return nn.Sequential(nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True))


def _apply_flat(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a [N, C] module to [..., C] (BatchNorm1d sees every leading index as a sample)."""
    return module(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)


class TemporalRelationBlock(nn.Module):
    """SS-HSP eqs. 4-5: frame features [N, T, D] -> clip feature [N, D].

    eq. 4: r_{t,m} = h_1([phi(f_t), varphi(f_t - f_m)]), r~_t = Concat_m r_{t,m}, f^_t = h_2([f_t, r~_t]);
    eq. 5: a_t = Sigmoid(BN(W_a [f_t, r~_t])), f~ = sum_t a_t f^_t / sum_t a_t.
    ``residual`` (deviation): f^_t = f_t + gamma h_2([f_t, r~_t]), gamma (``gate``) a learned scalar that starts at 0.
    """

    def __init__(self, dim: int, num_frames: int, relation_dim: int = 64, residual: bool = False):
        super().__init__()
        if num_frames < 1:
            raise UserError(f"model.num_frames: expected T >= 1 frames, got {num_frames}")
        self.num_frames = num_frames
        self.gate = nn.Parameter(torch.zeros(())) if residual else None
        self.phi = fc_bn_relu(dim, relation_dim)
        self.varphi = fc_bn_relu(dim, relation_dim)
        self.h1 = fc_bn_relu(2 * relation_dim, relation_dim)
        self.h2 = fc_bn_relu(dim + num_frames * relation_dim, dim)
        self.w_a = nn.Linear(dim + num_frames * relation_dim, 1)
        self.bn_a = nn.BatchNorm1d(1)

    def to_num_frames(self, f: torch.Tensor) -> torch.Tensor:
        """[N, T', D] -> [N, T, D]: T evenly spaced frames (repeats when T' < T)."""
        t = f.shape[1]
        if t == self.num_frames:
            return f
        idx = torch.linspace(0, t - 1, self.num_frames, device=f.device).round().long()
        return f[:, idx]

    def relations(self, f: torch.Tensor) -> torch.Tensor:
        """eq. 4, r~_t: [N, T, D] -> [N, T, T*d]."""
        n, t, _ = f.shape
        own = _apply_flat(self.phi, f)                                        # phi(f_t)      [N, T, d]
        diff = _apply_flat(self.varphi, f[:, :, None] - f[:, None, :])        # varphi(f_t - f_m) [N, T, T, d]
        r = _apply_flat(self.h1, torch.cat([own[:, :, None].expand_as(diff), diff], dim=-1))
        return r.flatten(2)

    def attention(self, f: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """eq. 5, a_t: [N, T] in (0, 1)."""
        return torch.sigmoid(_apply_flat(self.bn_a, _apply_flat(self.w_a, torch.cat([f, rel], dim=-1))))[..., 0]

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = self.to_num_frames(f)
        rel = self.relations(f)
        refined = _apply_flat(self.h2, torch.cat([f, rel], dim=-1))          # f^_t   [N, T, D]
        if self.gate is not None:                             # deviation: f^_t = f_t + gamma h_2([f_t, r~_t])
            refined = f + self.gate * refined
        a = self.attention(f, rel)
        return (a[..., None] * refined).sum(dim=1) / a.sum(dim=1, keepdim=True).clamp_min(1e-6)


class TemporalAverage(nn.Module):
    """Temporal average pooling (SS-HSP Table 3's "TAP"): [N, T, D] -> [N, D]."""

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f.mean(dim=1)


def mask_pooling(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Weighted pooling of backbone maps [N, C, h, w] with masks [N, P, h', w'] (area-resized to h x w,
    each divided by its mass) -> [N, P, C]."""
    if masks.shape[-2:] != maps.shape[-2:]:
        masks = F.interpolate(masks, size=maps.shape[-2:], mode="area")
    w = masks.flatten(2)
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-6)
    return torch.einsum("npz,ncz->npc", w, maps.flatten(2))


def clip_flows(seg: dict[str, torch.Tensor], b: int, t: int, grid: torch.Tensor) -> torch.Tensor:
    """Displacements G_hat(z) - z (eqs. 1-2) from each frame to the next of every clip: [B*T, 2, h, w].

    Frame t is the source, t+1 the target; the last frame reuses the flow into it. A single frame has none (0).
    """
    h, w = grid.shape[:2]
    if t == 1:
        return grid.new_zeros(b, 2, h, w)
    view = {k: seg[k].view(b, t, *seg[k].shape[1:]) for k in ("shift", "affine", "masks")}
    src = {k: v[:, :-1].flatten(0, 1) for k, v in view.items()}
    tgt = {k: v[:, 1:].flatten(0, 1) for k, v in view.items()}
    flow = combine_flows(part_flows(src["shift"], src["affine"], tgt["shift"], tgt["affine"], grid), tgt["masks"], grid)
    disp = (flow - grid).permute(0, 3, 1, 2).reshape(b, t - 1, 2, h, w)
    return torch.cat([disp, disp[:, -1:]], dim=1).flatten(0, 1)


class SSHSP(ReIDModel):
    """Clips [B, T, 3, H, W] (uint8) -> {"features", "logits", "embedding", "part_logits"}.

    ``features``: "global" (f~_g), "local" [B, K+1, D], "motion", "all" (their concatenation, for the
    triplet loss); ``logits``: "global", "local" [B, K+1, classes]; ``embedding["global"]``: the test
    representation; ``part_logits``: log M of every frame [B*T, K+1, h', w'] (parsing quality).
    ``segmenter``: the architecture of the segmentation module (:func:`segmenter_architecture`); the train
    stage fills it in from the pretrained ``segmenter.pt`` and loads its weights with :meth:`load_segmenter`.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, layer3_stride: int = 2, feat_dim: int = 256, num_frames: int = 8,
                 parts: bool = True, motion: bool = True, temporal: str = "trb", relation_dim: int = 64,
                 motion_channels: int = 64, relation_residual: bool = False,
                 segmenter: dict[str, Any] | None = None):
        super().__init__()
        if temporal not in TEMPORAL:
            raise UserError(f"model.temporal: expected one of {list(TEMPORAL)}, got {temporal!r}")
        self.use_parts, self.use_motion = bool(parts), bool(motion)
        self.normalize = Normalize()
        self.trunk, dim = build_resnet(backbone, last_stride, pretrained, layer3_stride)
        self.fc_global = nn.Linear(dim, feat_dim)
        arch = segmenter_architecture(segmenter)
        self.num_parts = arch["num_parts"] + 1                     # with the background, as ISP's num_parts
        self.seg_size = tuple(arch["seg_size"])
        self.predicts_parsing = self.use_parts or self.use_motion
        self.segmenter = SegmentationUNet(arch["num_parts"], arch["unet_channels"], arch["unet_max_channels"],
                                          arch["temperature"], head_kernel=arch["head_kernel"],
                                          part_motion=arch["part_motion"]) \
            if self.predicts_parsing else None
        groups = ["global"]
        k1 = arch["num_parts"] + 1                                   # K parts + the foreground
        if self.use_parts:
            self.fc_local = nn.Parameter(torch.empty(k1, dim, feat_dim))
            self.fc_local_bias = nn.Parameter(torch.zeros(k1, feat_dim))
            nn.init.uniform_(self.fc_local, -dim ** -0.5, dim ** -0.5)          # as nn.Linear(dim, feat_dim)
            self.local_necks = nn.ModuleList(BNNeck(feat_dim, num_classes) for _ in range(k1))
            groups.append("local")
        if self.use_motion:
            self.motion_conv = nn.Sequential(nn.Conv2d(2, motion_channels, 1), nn.BatchNorm2d(motion_channels),
                                             nn.ReLU(inplace=True))
            self.fc_motion = nn.Linear(motion_channels, feat_dim)
            groups.append("motion")
        make = (lambda: TemporalRelationBlock(feat_dim, num_frames, relation_dim, relation_residual)) \
            if temporal == "trb" else TemporalAverage
        self.temporal = nn.ModuleDict({g: make() for g in groups})
        self.global_neck = BNNeck(feat_dim, num_classes)
        total = feat_dim * (1 + (k1 if self.use_parts else 0) + (1 if self.use_motion else 0))
        self.embed_bn = nn.BatchNorm1d(total)
        self.embed_bn.bias.requires_grad_(False)

    def load_segmenter(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the pretrained segmentation module from a ``CoPartSegmenter`` state dict (its ``unet.*``)."""
        if self.segmenter is None:
            return
        own = {k[len("unet."):]: v for k, v in state_dict.items() if k.startswith("unet.")}
        self.segmenter.load_state_dict(own)

    def frame_features(self, clips: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Frame-level features {"global" [B*T, D], "local" [B*T, K+1, D], "motion" [B*T, D]} and masks."""
        b, t = clips.shape[:2]
        frames = clips.flatten(0, 1)
        maps = self.frame_maps(frames)
        feats = {"global": self.fc_global(maps.mean(dim=(2, 3)))}
        if self.segmenter is None:
            return feats, None
        small = resize_frames(frames.float() / 255 if frames.dtype == torch.uint8 else frames.float(), self.seg_size)
        seg = self.segmenter(small)
        masks = seg["masks"]
        if self.use_parts:
            weights = torch.cat([masks[:, 1:], masks[:, 1:].sum(dim=1, keepdim=True)], dim=1)   # M^1..M^K, fg
            pooled = mask_pooling(maps, weights)                                               # [B*T, K+1, C]
            feats["local"] = torch.einsum("npc,pcd->npd", pooled, self.fc_local) + self.fc_local_bias
        if self.use_motion:
            grid = coordinate_grid(*self.seg_size, device=masks.device, dtype=masks.dtype)
            motion = self.motion_conv(clip_flows(seg, b, t, grid))
            feats["motion"] = self.fc_motion(motion.mean(dim=(2, 3)))
        return feats, masks

    def forward(self, clips: torch.Tensor) -> dict:
        b, t = clips.shape[:2]
        frame_feats, masks = self.frame_features(clips)
        clip = {}
        for name, f in frame_feats.items():
            f = f.view(b, t, *f.shape[1:])
            if name == "local":                                     # parts share the block: [B*(K+1), T, D]
                k1 = f.shape[2]
                clip[name] = self.temporal[name](f.transpose(1, 2).flatten(0, 1)).view(b, k1, -1)
            else:
                clip[name] = self.temporal[name](f)
        out: dict[str, Any] = {"features": dict(clip), "logits": {}, "embedding": {}}
        bn_global, out["logits"]["global"] = self.global_neck(clip["global"])
        if self.use_parts:
            pairs = [neck(clip["local"][:, i]) for i, neck in enumerate(self.local_necks)]
            out["logits"]["local"] = torch.stack([p[1] for p in pairs], dim=1)
        everything = torch.cat([clip[n].flatten(1) for n in ("global", "local", "motion") if n in clip], dim=1)
        out["features"]["all"] = everything
        out["embedding"]["global"] = self.embed_bn(everything)
        if masks is not None:
            out["part_logits"] = masks.clamp_min(1e-8).log()
        return out
