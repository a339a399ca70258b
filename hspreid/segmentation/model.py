"""The SS-HSP semantic segmentation network (section 3.2): segmentation U-Net + part motion + frame predictor,
trained by lambda_1 L_rec + lambda_2 L_equ + lambda_3 L_geo (section 3.4; all lambdas 1 in section 4.1).

Collapse. With the paper-literal settings (static background, all lambdas 1, consecutive frames) the parts
vanish into the background on the synthetic tracklets (mean part IoU 0.00 against 0.14 for K stripes):

* scale: our eq. 6 is a mean per element (about 0.5 for l1_ssim), while eq. 8 sums the K parts' spatial
  variances (about 4 on the [-1, 1] grid for spread parts). The cheapest way down is a part with almost
  no mass, peaked on a few pixels (eq. 8 divides by the mass z^k, so a vanishing part costs nothing), and
  eq. 3's visibility O = 1 - M_bg(t+1) * sum_k M_k(t) pushes the parts' mass down wherever the target is
  background -- everything goes to channel 0. The paper's lambdas weigh its sums over VGG-19 features;
  with per-element means eq. 8 needs a weight of a few hundredths (``lambda_geo``).
* motion: person crops follow the person, so the background is not static (detector jitter moves the
  whole crop every frame, the scenery slides behind a walking person): with G^{K+1} = z nothing moves as
  the background does, and with a weak eq. 8 one part covers the whole frame to explain the crop's
  motion. ``background_motion="affine"`` gives the background its own global affine motion, predicted
  from the pair by a small CNN (:class:`BackgroundMotion`, as the background motion predictor of Zhao &
  Zhang's thin-plate spline motion model), identity at the start; the parts then explain what moves
  differently from the scenery: the person. Frames ``gap`` = 3 apart (stage option) make that difference
  larger than the per-frame jitter.
* eq. 8's grid: on [-1, 1] x [-1, 1] a step along the width of a 2:1 map weighs four times a step along
  its height (favouring tall, thin parts); ``geo_isotropic`` uses the paper's pixel grid (h, w).
* vanishing parts: ``lambda_area`` > 0 adds a hinge on each part's batch-mean share of the frame (below
  ``min_part_area``; :func:`~hspreid.segmentation.losses.part_area_loss`). Not in the paper and off, in
  the stage too; with a strong eq. 8 it keeps compact parts instead of none (README, SS-HSP stage 1).

The stage's defaults (``hspreid.segmentation.pretrain.STAGE_MODEL_DEFAULTS``) carry these; this class's
defaults stay the paper's. Even so, on the synthetic tracklets eq. 6 pays for a foreground and not for body
parts: with the maps fixed to the ground-truth parts it reaches the loss of the ground-truth foreground as
one part (``forward(..., masks=)``, bench/study_ss_hsp_pretext.py, README "Why stage 1 finds no parts").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hspreid.errors import UserError
from hspreid.segmentation.losses import (build_reconstruction_loss, check_min_part_area, concentration_loss,
                                         equivariance_loss, part_area_loss, random_color, random_tps)
from hspreid.segmentation.motion import (affine_flow, background_visibility, combine_flows, coordinate_grid,
                                         part_flows, warp)
from hspreid.segmentation.predictor import FramePredictor
from hspreid.segmentation.unet import SegmentationUNet


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [n, H, W, 3] (as FrameStore.read returns) or float [n, 3, H, W] in [0, 1] -> float [n, 3, H, W]."""
    x = torch.as_tensor(frames)
    if x.dtype == torch.uint8:
        if x.dim() != 4 or x.shape[-1] != 3:
            raise UserError(f"frames: expected uint8 [n, H, W, 3], got shape {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2).float().div_(255)
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserError(f"frames: expected float [n, 3, H, W] in [0, 1], got shape {tuple(x.shape)}")
    return x.float()


def resize_frames(frames: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Float frames [B, 3, H, W] -> [B, 3, *size] (bilinear, anti-aliased; unchanged when already that size)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


BACKGROUND_MOTIONS = ("static", "affine")


def merged_motion(seg: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The K parts of one frame's segmentation as one part: masks [B, 2, h, w] (background, union), and the
    parts' shifts and affines averaged with weights z^k / sum_j z^j (each part's mass) -> [B, 1, 2], [B, 1, 2, 2]."""
    masks = seg["masks"]
    mass = masks[:, 1:].sum(dim=(2, 3))
    weight = mass / mass.sum(dim=1, keepdim=True).clamp_min(1e-8)                                # [B, K]
    return {"masks": torch.cat([masks[:, :1], masks[:, 1:].sum(dim=1, keepdim=True)], dim=1),
            "shift": torch.einsum("bk,bkc->bc", weight, seg["shift"])[:, None],
            "affine": torch.einsum("bk,bkij->bij", weight, seg["affine"])[:, None]}


class BackgroundMotion(nn.Module):
    """Global affine motion of the background from I_{t+1} to I_t, predicted from the pair (as the background
    motion predictor of Zhao & Zhang's thin-plate spline motion model, CVPR 2022, here a small CNN):
    [I_t, I_{t+1}] (6 channels) -> ``num_blocks`` x (3x3 conv, BN, ReLU, 2x2 average pool) -> global average
    -> linear -> theta [B, 2, 3]; the linear layer starts at zero weights and the identity bias, so the
    background starts static (SS-HSP's G^{K+1} = z)."""

    def __init__(self, channels: int = 16, num_blocks: int = 3):
        super().__init__()
        layers, c_in = [], 6
        for i in range(num_blocks):
            c_out = channels * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.AvgPool2d(2)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, 6)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(torch.cat([source, driving], dim=1)).mean(dim=(2, 3))).view(-1, 2, 3)


class CoPartSegmenter(nn.Module):
    """Motion-supervised co-part segmentation of person frames (SS-HSP eqs. 1-8).

    ``forward(source=I_t, driving=I_{t+1})``: both [B, 3, H, W] in [0, 1]. The segmentation runs at
    ``seg_size`` (H' x W' = 64 x 32 in the paper; frames are resized, anti-aliased); the predictor at the
    frame resolution (H, W divisible by 4). ``reconstruction`` names the eq. 6 backbone: a local VGG-19
    weights path, ``"vgg_random"`` or ``"l1_ssim"``. A loss weight of 0 switches its term off
    (Table 4's "w/o L_equ", "w/o L_geo"). The reconstruction network is kept outside the module's
    parameters and state dict (it is frozen and rebuilt from the config). ``background_motion``: "static"
    (the paper's G^{K+1} = z) or "affine" (:class:`BackgroundMotion`, training only: segmentation and the
    U-Net's state, which the re-ID model loads, are the same either way); ``geo_isotropic``: eq. 8 on the
    pixel grid (see the module docstring); ``part_motion``: "heatmaps" (the paper) or "masks" (each part's
    shift is its own centroid; :mod:`hspreid.segmentation.unet`); ``detach_visibility_source``: eq. 3's O is
    computed from the maps but trains none of them (with MCS's gradient through M_t, O's pull towards the
    background acts on every pixel where the target's background mass is; bench/study_ss_hsp_mask_pressure.py);
    ``predictor_down``: the prediction module's down-sampling blocks (2 in the paper: the motion warps features
    at H/4 x W/4, which at 64 x 32 frames is 16 x 8).
    """

    def __init__(self, num_parts: int = 6, seg_size: Sequence[int] = (64, 32), unet_channels: int = 32,
                 unet_max_channels: int = 1024, head_kernel: int = 7, predictor_channels: int = 64,
                 predictor_max_channels: int = 512, num_res_blocks: int = 5, temperature: float = 0.1,
                 reconstruction: str = "vgg_random",
                 rec_scales: Sequence[float] = (1.0, 0.5, 0.25), rec_distance: str = "l2", vgg_seed: int = 0,
                 lambda_rec: float = 1.0, lambda_equ: float = 1.0, lambda_geo: float = 1.0,
                 sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5,
                 color_jitter: float = 0.1, detach_visibility_target: bool = True,
                 detach_visibility_source: bool = False,
                 background_motion: str = "static", background_channels: int = 16, geo_isotropic: bool = False,
                 geo_mass_weighted: bool = False, lambda_area: float = 0.0, min_part_area: float = 0.02,
                 part_motion: str = "heatmaps", predictor_down: int = 2):
        params = dict(locals())                                         # the constructor arguments, for checkpoints
        params.pop("self")
        params.pop("__class__", None)
        super().__init__()
        if num_parts < 1:
            raise UserError(f"segmenter num_parts: expected K >= 1 body parts, got {num_parts}")
        seg_size = tuple(int(s) for s in seg_size)
        if len(seg_size) != 2 or any(s <= 0 or s % 16 for s in seg_size):
            raise UserError(f"segmenter seg_size: expected [height, width] divisible by 16, got {list(seg_size)}")
        if min(lambda_rec, lambda_equ, lambda_geo, lambda_area) < 0:
            raise UserError("segmenter loss weights lambda_rec, lambda_equ, lambda_geo, lambda_area must be >= 0")
        if lambda_area > 0:
            check_min_part_area(min_part_area)
        self.config: dict[str, Any] = {**params, "seg_size": list(seg_size), "rec_scales": list(rec_scales)}
        self.num_parts, self.seg_size = num_parts, seg_size
        if predictor_down < 0:
            raise UserError(f"segmenter predictor_down: expected >= 0 down-sampling blocks, got {predictor_down}")
        if head_kernel < 1 or head_kernel % 2 == 0:
            raise UserError(f"segmenter head_kernel: expected an odd size >= 1, got {head_kernel}")
        if background_motion not in BACKGROUND_MOTIONS:
            raise UserError(f"segmenter background_motion: expected one of {list(BACKGROUND_MOTIONS)}, "
                            f"got {background_motion!r}")
        self.unet = SegmentationUNet(num_parts, unet_channels, unet_max_channels, temperature, head_kernel=head_kernel,
                                     part_motion=part_motion)
        self.predictor = FramePredictor(predictor_channels, predictor_max_channels, predictor_down, num_res_blocks)
        self.background = BackgroundMotion(background_channels) if background_motion == "affine" else None
        rec = build_reconstruction_loss(reconstruction, rec_scales, vgg_seed, rec_distance) if lambda_rec > 0 else None
        object.__setattr__(self, "_rec_loss", rec)                     # not a submodule: no params, no state

    # -- segmentation ----------------------------------------------------------------------------------------
    def to_seg_size(self, frames: torch.Tensor) -> torch.Tensor:
        return resize_frames(frames, self.seg_size)

    def segment_raw(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """U-Net outputs (masks, heatmaps, shift, affine, logits) of frames [B, 3, H, W] at ``seg_size``."""
        return self.unet(self.to_seg_size(frames))

    @torch.no_grad()
    def segment(self, frames: np.ndarray | torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Inference on single frames: {"masks": float [n, K+1, h, w], "labels": uint8 [n, h, w] (argmax, 0 = bg)}."""
        x = frames_to_tensor(frames)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            masks = [self.segment_raw(x[i:i + batch_size].to(device))["masks"].cpu()
                     for i in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        m = torch.cat(masks) if masks else torch.zeros(0, self.num_parts + 1, *self.seg_size)
        return {"masks": m, "labels": m.argmax(dim=1).to(torch.uint8)}

    # -- training --------------------------------------------------------------------------------------------
    def forward(self, source: torch.Tensor, driving: torch.Tensor,
                masks: Sequence[torch.Tensor] | None = None, merge_parts: bool = False) -> dict[str, Any]:
        """I_t, I_{t+1} -> prediction I'_{t+1}, both frames' segmentations, part flows (eq. 1), G_hat (eq. 2),
        O (eq. 3).

        ``masks`` = (M_t, M_{t+1}), float [B, K+1, h', w'], replaces the U-Net's segmentation maps (the shifts
        and affines still come from the U-Net): how well the pretext task does with a given partition, e.g.
        the ground-truth parts (bench/study_ss_hsp_pretext.py). ``masks`` = (M_t, M_{t+1}, e_t, e_{t+1}) also
        fixes the parts' shifts [B, K, 2] (e.g. the maps' centroids,
        :func:`~hspreid.segmentation.motion.part_centres`), with A = I: each part translates,
        and what the pretext task pays for a partition no longer waits for the heat maps to learn to track it.
        ``merge_parts``: the K parts move as one (their union, with the mass-weighted mean of their shifts and
        affines: the union's centroid under ``part_motion="masks"``), the pre-training's ``part_warmup``."""
        m = 2 ** self.config["predictor_down"]
        if source.shape != driving.shape or source.shape[-2] % m or source.shape[-1] % m:
            raise UserError(f"segmenter: source and driving frames must have one shape with H, W divisible by {m}, "
                            f"got {tuple(source.shape)} and {tuple(driving.shape)}")
        b = source.shape[0]
        both = self.segment_raw(torch.cat([source, driving]))
        seg_s = {k: v[:b] for k, v in both.items()}
        seg_d = {k: v[b:] for k, v in both.items()}
        if masks is not None:
            want = (b, self.num_parts + 1, *self.seg_size)
            if len(masks) not in (2, 4) or any(tuple(m.shape) != want for m in masks[:2]) \
                    or any(tuple(e.shape) != (b, self.num_parts, 2) for e in masks[2:]):
                raise UserError(f"segmenter: fixed masks must be two tensors of shape {list(want)}, then optionally "
                                f"two shifts of shape {[b, self.num_parts, 2]}, got {[list(m.shape) for m in masks]}")
            seg_s["masks"], seg_d["masks"] = masks[:2]
            if len(masks) == 4:
                eye = torch.eye(2, dtype=masks[2].dtype, device=masks[2].device).expand(b, self.num_parts, 2, 2)
                seg_s.update(shift=masks[2], affine=eye)
                seg_d.update(shift=masks[3], affine=eye)
        grid = coordinate_grid(*self.seg_size, device=source.device, dtype=seg_s["shift"].dtype)
        motion_s, motion_d = (merged_motion(seg) if merge_parts else seg for seg in (seg_s, seg_d))
        flows = part_flows(motion_s["shift"], motion_s["affine"], motion_d["shift"], motion_d["affine"], grid)
        theta = None
        if self.background is not None:                               # the background's own global motion
            theta = self.background(self.to_seg_size(source), self.to_seg_size(driving))
        flow = combine_flows(flows, motion_d["masks"], grid, None if theta is None else affine_flow(theta, grid))
        visibility = background_visibility(seg_s["masks"], seg_d["masks"], self.config["detach_visibility_target"],
                                           self.config["detach_visibility_source"])
        prediction = self.predictor(source, flow, visibility)
        with torch.no_grad():
            deformed = warp(source, flow)                             # I_t warped by G_hat, for inspection
        return {"prediction": prediction, "deformed": deformed, "masks_source": seg_s["masks"],
                "masks_driving": seg_d["masks"], "seg_source": seg_s, "seg_driving": seg_d,
                "part_flows": flows, "flow": flow, "visibility": visibility, "background_theta": theta}

    def loss(self, out: dict[str, Any], source: torch.Tensor, driving: torch.Tensor,
             generator: torch.Generator | None = None,
             scale: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """lambda_1 L_rec (eq. 6) + lambda_2 L_equ (eq. 7) + lambda_3 L_geo (eq. 8) -> {"total", "rec", "equ",
        "equ_kl", "equ_affine", "equ_shift", "geo"}, and "area" when ``lambda_area`` > 0 (unweighted terms; a term
        with weight 0 is not computed).
        ``scale`` multiplies the configured weights for this call, e.g. {"lambda_geo": 0.5} during a warm-up."""
        cfg = {**self.config, **{k: self.config[k] * float(v) for k, v in (scale or {}).items()}}
        zero = out["prediction"].new_zeros(())
        terms = {"rec": zero, "equ": zero, "equ_kl": zero, "equ_affine": zero, "equ_shift": zero, "geo": zero}
        total = zero
        if self.config["lambda_rec"] > 0:
            rec = self._reconstruction_module(driving.device)
            terms["rec"] = rec(out["prediction"], driving)
            total = total + cfg["lambda_rec"] * terms["rec"]
        if self.config["lambda_equ"] > 0:
            small = self.to_seg_size(source)
            transform = random_tps(small.shape[0], cfg["sigma_affine"], cfg["sigma_tps"], cfg["points_tps"], generator)
            seg_hat = self.unet(transform.warp_images(random_color(small, cfg["color_jitter"], generator)))
            equ = equivariance_loss(out["seg_source"], seg_hat, transform)
            terms.update(equ=equ["total"], equ_kl=equ["kl"], equ_affine=equ["affine"], equ_shift=equ["shift"])
            total = total + cfg["lambda_equ"] * equ["total"]
        if self.config["lambda_geo"] > 0:
            terms["geo"] = concentration_loss(out["masks_source"], isotropic=bool(cfg.get("geo_isotropic", False)),
                                              mass_weighted=bool(cfg.get("geo_mass_weighted", False)))
            total = total + cfg["lambda_geo"] * terms["geo"]
        if self.config["lambda_area"] > 0:
            terms["area"] = part_area_loss(out["masks_source"], cfg["min_part_area"])
            total = total + cfg["lambda_area"] * terms["area"]
        return {"total": total, **terms}

    def _reconstruction_module(self, device: torch.device) -> nn.Module:
        rec = self._rec_loss
        buf = next(iter(rec.buffers()), None)
        if buf is not None and buf.device != device:
            rec.to(device)
        return rec


def read_segmenter_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict ``save_checkpoint`` wrote ({"config", "state_dict", ...}); one clear error if it is missing
    or is not a segmenter checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: segmenter checkpoint not found (run the segmentation pre-training first)")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"{path}: not a segmenter checkpoint (expected the keys 'config' and 'state_dict')")
    return ckpt


def load_segmenter(path: str | Path, map_location: str | torch.device = "cpu",
                   for_training: bool = False) -> tuple[CoPartSegmenter, dict]:
    """Rebuild a segmenter from a checkpoint written by ``pretrain_segmenter``; (model in eval mode, checkpoint).

    Unless ``for_training``, the reconstruction network is not rebuilt (lambda_rec set to 0): inference
    needs no VGG-19 weights file.
    """
    ckpt = read_segmenter_checkpoint(path, map_location)
    cfg = ckpt["config"] if for_training else {**ckpt["config"], "lambda_rec": 0.0}
    model = CoPartSegmenter(**cfg)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
