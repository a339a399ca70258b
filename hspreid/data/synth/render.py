"""Render one job (a tracklet, or the images of one person in one camera) to JPEG images + PNG part masks and
PNG limb maps (:data:`~hspreid.partmaps.regions.LIMB_NAMES`; ``RenderConfig.limbs``).

A job carries its own seed, so its pixels do not depend on which process renders it or in what order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .figure import JOINTS, Painter, draw_figure
from .identity import Identity
from .scene import Camera, apply_crop, camera_effects, crop_box, draw_occluder, make_camera, sample_occluder

SUPERSAMPLE_P = 1.6          # body height on the canvas, in output heights (drawn larger, then downsampled)
CROPS = ("person", "partial", "fragment", "tiny", "background")


@dataclass(frozen=True)
class FrameSpec:
    """One output image."""

    path: str        # image path relative to the data-set root (POSIX, .jpg)
    t: int           # frames since the walk began: drives the gait phase and the background slide
    occ: int = -1    # occlusion group: frames sharing a group share one occluder; -1 = not occluded


@dataclass(frozen=True)
class Job:
    """Frames of one person (or none, for background junk) walking past one camera."""

    key: str                       # identity key in identities.csv ("" for background-only junk)
    seed: int
    identity: Identity | None
    cam: int                       # 1-based
    view: str
    crop: str                      # one of CROPS
    frames: tuple[FrameSpec, ...]
    meta: dict = field(default_factory=dict)   # pid, role, tracklet, query ... copied to images.csv


@dataclass(frozen=True)
class RenderConfig:
    seed: int
    height: int
    width: int
    jitter: float
    noise: float
    jpeg_quality: int
    palette_size: int
    limbs: bool = True      # also write ground_truth/limbs/ (drawing them changes no image, mask or key point)
    gait_amplitude: float = 1.0   # the person's swing of hips, knees and arms (make_pose's ``amplitude``)

    @property
    def canvas_hw(self) -> tuple[int, int]:
        return int(round(2.6 * self.height)), int(round(4.0 * self.width))


_CAMERAS: dict[tuple, Camera] = {}


def _camera(cfg: RenderConfig, cam: int) -> Camera:
    key = (cfg.seed, cam, cfg.canvas_hw)
    if key not in _CAMERAS:
        _CAMERAS[key] = make_camera(cfg.seed, cam, cfg.canvas_hw)
    return _CAMERAS[key]


def _crop_offsets(rng: np.random.Generator, crop: str) -> tuple[tuple[float, float], float]:
    """Deliberate box shift (fractions of the box) and zoom for partial / junk detections.

    For ``tiny`` the zoom shrinks the drawn person instead of growing the box (no content outside the canvas).
    """
    sign = lambda: float(rng.choice([-1, 1]))  # noqa: E731
    if crop == "partial":
        return ((sign() * rng.uniform(0.3, 0.45), 0.0) if rng.random() < 0.5
                else (0.0, sign() * rng.uniform(0.25, 0.35))), 1.0
    if crop == "fragment":
        return (sign() * rng.uniform(0.6, 0.85), sign() * rng.uniform(0.0, 0.5)), rng.uniform(0.4, 0.7)
    if crop == "tiny":
        return (sign() * rng.uniform(0.15, 0.3), rng.uniform(-0.1, 0.25)), rng.uniform(2.2, 3.2)
    if crop == "background":
        return (sign() * rng.uniform(0.0, 0.5), rng.uniform(-0.15, 0.15)), rng.uniform(0.8, 1.2)
    return (0.0, 0.0), 1.0


def render_job(job: Job, root: str, cfg: RenderConfig) -> list[dict]:
    """Write the job's images and masks under ``root``; return one ground-truth row per frame."""
    H, W = cfg.height, cfg.width
    ch, cw = cfg.canvas_hw
    cam = _camera(cfg, job.cam)
    rng = np.random.default_rng(job.seed)
    P = SUPERSAMPLE_P * H
    cx, ground_y = cw / 2, ch / 2 + P / 2
    ident = job.identity if job.crop != "background" else None
    d = {"left": -1, "right": 1}.get(job.view, 0)
    speed = d * 0.03 * P if d else rng.uniform(-0.004, 0.004) * P        # background slide per frame
    ts = [f.t for f in job.frames]
    span = cam.background.shape[1] - cw
    lo, hi = -min(speed * min(ts), speed * max(ts)), span - max(speed * min(ts), speed * max(ts))
    off0 = rng.uniform(max(0, lo), max(max(0, lo), hi))
    phase0 = rng.uniform(0, 2 * np.pi)
    shift, zoom = _crop_offsets(rng, job.crop)
    tiny = job.crop == "tiny"                      # small person in a normal-sized box
    fig_p, box_zoom = (P / zoom, 1.0) if tiny else (P, zoom)
    nominal = (cx - 0.2 * P, ground_y - P, cx + 0.2 * P, ground_y)
    occluders: dict[int, tuple[dict, float]] = {}       # group -> (occluder, background offset it is placed at)
    for g in sorted({f.occ for f in job.frames if f.occ >= 0}):
        mid = [f.t for f in job.frames if f.occ == g]
        off_mid = float(np.clip(off0 + speed * mid[len(mid) // 2], 0, span))   # centred on the person mid-group
        occluders[g] = (sample_occluder(np.random.default_rng([job.seed, 1, g]), P, cfg.palette_size), off_mid)
    root_p = Path(root)
    rows = []
    for i, f in enumerate(job.frames):
        frng = np.random.default_rng([job.seed, 2, i])
        off = float(np.clip(off0 + speed * f.t, 0, span))
        canvas = cam.background[:, int(off):int(off) + cw].copy()
        lab = np.zeros((ch, cw), np.uint8)
        limbs = np.zeros_like(lab) if cfg.limbs else None
        joints, bbox = None, nominal
        if ident is not None:
            phase = phase0 + ident.gait_speed * f.t
            joints = draw_figure(Painter(canvas, lab, limbs), ident, job.view, phase, cx, ground_y, fig_p,
                                 cfg.gait_amplitude)
            if not tiny:
                x, y, bw, bh = cv2.boundingRect(lab)
                bbox = (x, y, x + bw, y + bh)
        visible, occ_mask, occ_kind = lab, None, "none"
        if f.occ >= 0:
            occ, off_ref = occluders[f.occ]
            drift = (off - off_ref) * (0.5 if occ["kind"] == "person" else 1.0)   # static objects slide with the scene
            occ_mask = draw_occluder(canvas, occ, cx - drift, ground_y, P)
            visible = lab.copy()
            visible[occ_mask > 0] = 0
            if limbs is not None:
                limbs[occ_mask > 0] = 0
        box = crop_box(frng, bbox, (H, W), cfg.jitter, shift, box_zoom)
        img = camera_effects(frng, apply_crop(canvas, box, (H, W), nearest=False), cam, cfg.noise)
        mask = apply_crop(visible, box, (H, W), nearest=True)
        frac = 0.0
        if occ_mask is not None:
            before = int(np.count_nonzero(apply_crop(lab, box, (H, W), nearest=True)))
            frac = 1.0 - np.count_nonzero(mask) / before if before else 0.0
            occ_kind = occ["kind"] if frac > 0 else "none"
        kp = _keypoints(joints, box, (H, W), occ_mask)
        _write(root_p / f.path, cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])[1])
        _write(root_p / "ground_truth" / "masks" / Path(f.path).with_suffix(".png"), cv2.imencode(".png", mask)[1])
        if limbs is not None:
            _write(root_p / "ground_truth" / "limbs" / Path(f.path).with_suffix(".png"),
                   cv2.imencode(".png", apply_crop(limbs, box, (H, W), nearest=True))[1])
        rows.append({"path": f.path, "identity": job.key, **job.meta, "cam": job.cam, "frame": i + 1,
                     "view": job.view if ident is not None else "none", "crop": job.crop, "occluder": occ_kind,
                     "occluded_frac": round(frac, 4), "person_pixels": int(np.count_nonzero(mask)),
                     "keypoints": kp})
    return rows


def _keypoints(joints: dict | None, box: np.ndarray, out_hw: tuple[int, int],
               occ_mask: np.ndarray | None) -> list:
    """Flat [x, y, v, ...] in output pixels; v = 0 outside the crop or under an occluder; -1,-1,0 if no person."""
    if joints is None:
        return [-1.0, -1.0, 0] * len(JOINTS)
    sx, sy = out_hw[1] / (box[2] - box[0]), out_hw[0] / (box[3] - box[1])
    out: list = []
    for name in JOINTS:
        px, py = joints[name]
        x, y = (px - box[0]) * sx, (py - box[1]) * sy
        v = int(0 <= x < out_hw[1] and 0 <= y < out_hw[0])
        inside = occ_mask is not None and 0 <= py < occ_mask.shape[0] and 0 <= px < occ_mask.shape[1]
        if v and inside and occ_mask[int(py), int(px)]:
            v = 0
        out += [round(float(x), 2), round(float(y), 2), v]
    return out


def _write(path: Path, data: np.ndarray) -> None:
    os.makedirs(path.parent, exist_ok=True)
    path.write_bytes(data.tobytes())


def render_star(args: tuple) -> list[dict]:
    """``render_job(*args)`` for ``Pool.imap``."""
    return render_job(*args)
