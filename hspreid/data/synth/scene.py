"""Per-camera scenery and image formation: textured backgrounds, occluders, detector crops, camera effects."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .figure import VIEWS, Painter, draw_figure
from .identity import sample_identity

OCCLUDERS = ("pole", "box", "person")
_MUTED = np.array([(70, 80, 90), (120, 125, 130), (160, 170, 180), (60, 90, 120), (90, 120, 100),
                   (150, 140, 120), (110, 100, 150), (200, 200, 195), (80, 70, 60), (130, 160, 170)])


@dataclass
class Camera:
    """One camera: its scenery and its photometric character (its typical viewpoint: :func:`dominant_view`)."""

    background: np.ndarray       # wide strip, canvas height; crops slide along it
    gain: float
    cast: np.ndarray             # per-channel multiplier (BGR)
    blur: float                  # Gaussian sigma in output pixels
    noise: float                 # Gaussian noise std (0..255 scale)


def _texture(rng: np.random.Generator, h: int, w: int, amp: float) -> np.ndarray:
    small = rng.normal(0, amp, (max(2, h // 24), max(2, w // 24), 1)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]


def make_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street-like strip: facades with windows and doors above a paved ground with lines."""
    horizon = int(h * rng.uniform(0.45, 0.65))
    img = np.zeros((h, w, 3), np.float32)
    top, ground = _MUTED[rng.integers(len(_MUTED))], _MUTED[rng.integers(len(_MUTED))] * rng.uniform(0.6, 1.0)
    ramp = np.linspace(0.85, 1.1, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = top * ramp
    img[horizon:] = ground * np.linspace(1.0, 0.8, h - horizon, dtype=np.float32)[:, None, None]
    x = 0
    while x < w:                                     # facades
        fw = int(rng.uniform(0.15, 0.5) * h)
        col = _MUTED[rng.integers(len(_MUTED))] * rng.uniform(0.7, 1.1)
        fy = int(horizon * rng.uniform(0.0, 0.3))
        cv2.rectangle(img, (x, fy), (x + fw, horizon), col.tolist(), -1)
        win = (col * rng.uniform(0.3, 0.6)).tolist()
        step = max(6, int(h * rng.uniform(0.08, 0.14)))
        for wy in range(fy + step // 2, horizon - step, step):
            for wx in range(x + step // 3, x + fw - step // 2, step):
                cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2), win, -1)
        if rng.random() < 0.4:                        # a door or shop front
            dx = x + int(rng.uniform(0.1, 0.6) * fw)
            cv2.rectangle(img, (dx, horizon - int(0.3 * h)), (dx + int(0.12 * h), horizon), win, -1)
        x += fw
    line = (ground * rng.uniform(0.6, 1.3)).tolist()
    for k in range(int(rng.integers(2, 6))):         # kerb / tile lines
        y = int(horizon + (h - horizon) * (k + rng.random()) / 5)
        cv2.line(img, (0, y), (w, y), line, max(1, h // 150))
    for _ in range(int(rng.integers(w // max(h, 1), 3 * w // max(h, 1) + 1))):   # thin background poles
        px = int(rng.integers(w))
        cv2.line(img, (px, int(horizon * rng.uniform(0, 0.5))), (px, horizon + int(rng.integers(h // 10 + 1))),
                 (_MUTED[rng.integers(len(_MUTED))] * 0.6).tolist(), max(1, h // 80))
    img += _texture(rng, h, w, 10.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def dominant_view(seed: int, cam: int) -> str:
    """The way most people face camera ``cam``: consecutive cameras cycle through the four views."""
    return VIEWS[(cam + seed) % len(VIEWS)]


def make_camera(seed: int, cam: int, canvas_hw: tuple[int, int]) -> Camera:
    """Camera ``cam`` (1-based) of the data set with ``seed``; depends on nothing else."""
    rng = np.random.default_rng([seed, 7919, cam])
    h, w = canvas_hw
    return Camera(
        background=make_background(rng, h, w * 6),
        gain=float(rng.uniform(0.7, 1.25)),
        cast=rng.uniform(0.85, 1.15, 3).astype(np.float32),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(1.5, 5.0)),
    )


# ---------------------------------------------------------------- occluders

def sample_occluder(rng: np.random.Generator, P: float, palette_size: int) -> dict:
    """An occluder placed relative to the person (x offset in units of ``P``), drawn by :func:`draw_occluder`."""
    kind = OCCLUDERS[int(rng.choice(3, p=[0.3, 0.45, 0.25]))]
    occ: dict = {"kind": kind, "seed": int(rng.integers(2**31))}
    if kind == "pole":
        occ.update(dx=rng.uniform(-0.12, 0.12) * P, w=rng.uniform(0.06, 0.12) * P,
                   color=_MUTED[rng.integers(len(_MUTED))].tolist())
    elif kind == "box":
        reach = 1.0 if rng.random() < 0.35 else rng.uniform(-0.08, 0.3)   # past the person's centre line
        occ.update(top=rng.uniform(0.3, 0.6) * P, reach=reach * P, side=int(rng.choice([-1, 1])),
                   color=_MUTED[rng.integers(len(_MUTED))].tolist(), car=bool(rng.random() < 0.5))
    else:
        occ.update(dx=rng.choice([-1, 1]) * rng.uniform(0.1, 0.24) * P, scale=rng.uniform(1.0, 1.15),
                   dy=rng.uniform(0.02, 0.08) * P, view=VIEWS[int(rng.integers(4))],
                   phase=rng.uniform(0, 2 * np.pi), palette_size=palette_size)
    return occ


def draw_occluder(img: np.ndarray, occ: dict, cx: float, ground_y: float, P: float) -> np.ndarray:
    """Draw ``occ`` into ``img``; return its pixel mask (uint8, 1 = occluder)."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    p = Painter(img, mask)
    kind = occ["kind"]
    if kind == "pole":
        x = cx + occ["dx"]
        half = occ["w"] / 2
        p.poly([(x - half, -2), (x + half, -2), (x + half, h + 2), (x - half, h + 2)], tuple(occ["color"]), 1)
        hl = tuple(int(min(255, c * 1.25)) for c in occ["color"])
        cv2.rectangle(img, (int(x - half * 0.5), 0), (int(x - half * 0.2), h), hl, -1)
    elif kind == "box":
        top = ground_y - occ["top"]
        x0, x1 = (cx - occ["reach"], w + 5) if occ["side"] > 0 else (-5, cx + occ["reach"])
        col, dark = tuple(occ["color"]), tuple(int(c * 0.5) for c in occ["color"])
        r = 0.08 * P if occ["car"] else 0.0
        outline = np.array([(x0, top + r), (x0 + r, top), (x1 - r, top), (x1, top + r), (x1, h + 5), (x0, h + 5)])
        p.poly(outline, col, 1)
        cv2.polylines(img, [outline.astype(np.int32)], True, dark, max(1, int(0.012 * P)), cv2.LINE_AA)
        band = (0.03, 0.12) if occ["car"] else (0.06, 0.09)          # car windows / packing tape
        cv2.rectangle(img, (int(x0 + r), int(top + band[0] * P)), (int(x1 - r), int(top + band[1] * P)),
                      tuple(int(c * (0.45 if occ["car"] else 0.7)) for c in col), -1)
    else:
        rng = np.random.default_rng(occ["seed"])
        other = sample_identity(rng, occ["palette_size"])
        draw_figure(p, other, occ["view"], occ["phase"], cx + occ["dx"], ground_y + occ["dy"], P * occ["scale"])
    return mask


# ---------------------------------------------------------------- crops and camera effects

def crop_box(rng: np.random.Generator, bbox: tuple[float, float, float, float], out_hw: tuple[int, int],
             jitter: float, shift: tuple[float, float] = (0.0, 0.0), zoom: float = 1.0) -> np.ndarray:
    """Detector box (x0, y0, x1, y1) around person ``bbox`` with the output aspect, random shift/scale.

    ``shift`` (fractions of the box) and ``zoom`` move the box deliberately (partial or junk detections).
    """
    x0, y0, x1, y1 = bbox
    bh = (y1 - y0) * rng.uniform(1.04, 1.12) * (1 + rng.uniform(-jitter, jitter)) * zoom
    bw = bh * out_hw[1] / out_hw[0] * (1 + rng.uniform(-jitter, jitter) * 0.5)
    cx = (x0 + x1) / 2 + (rng.uniform(-jitter, jitter) * 0.6 + shift[0]) * bw
    cy = (y0 + y1) / 2 + (rng.uniform(-jitter, jitter) * 0.4 + shift[1]) * bh
    return np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])


def apply_crop(arr: np.ndarray, box: np.ndarray, out_hw: tuple[int, int], nearest: bool) -> np.ndarray:
    """Cut ``box`` out of ``arr`` (padding by reflection, or zeros for label maps) and resize to ``out_hw``."""
    h, w = arr.shape[:2]
    x0, y0, x1, y1 = np.round(box).astype(int)
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        border = cv2.BORDER_CONSTANT if nearest else cv2.BORDER_REFLECT_101
        arr = cv2.copyMakeBorder(arr, pad, pad, pad, pad, border, value=0)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    cut = arr[y0:y1, x0:x1]
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(cut, (out_hw[1], out_hw[0]), interpolation=interp)


def camera_effects(rng: np.random.Generator, img: np.ndarray, cam: Camera, noise_scale: float) -> np.ndarray:
    """Illumination (gain, colour cast, per-frame flicker), blur and sensor noise."""
    out = img.astype(np.float32) * (cam.gain * rng.uniform(0.93, 1.07)) * cam.cast
    sigma = cam.blur + rng.uniform(0, 0.4)
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if noise_scale > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(cam.noise * noise_scale)
    return np.clip(out, 0, 255).astype(np.uint8)
