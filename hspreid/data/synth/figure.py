"""An articulated 2-D person drawn with OpenCV: body parts into an image, part labels into a mask and a limb map,
joints out.

Every primitive is labelled with the piece it belongs to (:data:`~hspreid.partmaps.regions.LIMB_NAMES`: head,
torso, pelvis, each upper arm, forearm, thigh, shin and shoe, belongings), the pieces that move with their own
transform: hip and knee angles swing thigh and shin separately, shoulder and elbow angles upper arm and forearm.
The mask gets the piece's ground-truth code (``LIMB_TO_GROUND_TRUTH``), so the limb map folds into it exactly.

Coordinates are canvas pixels (y down). ``P`` is the body height in pixels (top of head to soles). Views:
``front`` (facing the camera), ``back``, ``left``/``right`` (walking towards the image's left/right edge).
The gait phase drives hip, knee, shoulder and elbow angles sinusoidally.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hspreid.partmaps.regions import LIMB_NAMES, LIMB_TO_GROUND_TRUTH

from .identity import Color, Identity

JOINTS = ("head", "neck", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
          "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
LIMB = {name: code for code, name in enumerate(LIMB_NAMES)}
"""Limb name -> code, the label every part painter draws with."""
PART_NAMES = ("background", "head", "upper_body", "lower_body", "shoes", "belongings")
VIEWS = ("front", "back", "left", "right")

_SHIFT = 2                     # OpenCV fixed-point bits: sub-pixel accurate anti-aliased drawing
_ONE = 1 << _SHIFT
_EYE: Color = (30, 30, 30)


def _fix(p) -> np.ndarray:
    return np.round(np.asarray(p, dtype=np.float64) * _ONE).astype(np.int32)


def shade(color: Color, f: float) -> Color:
    """Scale a colour's brightness (far-side limbs, pockets)."""
    return tuple(int(min(255, c * f)) for c in color)  # type: ignore[return-value]


class Painter:
    """Draws every primitive of limb code ``label`` (:data:`LIMB`) as anti-aliased colour into ``img``, as the
    hard ground-truth code ``LIMB_TO_GROUND_TRUTH[label]`` into ``lab`` and, when given, as ``label`` into
    ``limbs``: the same pixels in the same order, so that the limb map folds into ``lab`` exactly. Drawing
    ``limbs`` changes nothing in ``img`` or ``lab`` (an occluder's painter draws no limb map)."""

    def __init__(self, img: np.ndarray, lab: np.ndarray, limbs: np.ndarray | None = None):
        self.img, self.lab, self.limbs = img, lab, limbs

    def _labels(self, label: int) -> list[tuple[np.ndarray, int]]:
        """(label array, value) pairs a primitive of limb code ``label`` is drawn into."""
        out = [(self.lab, LIMB_TO_GROUND_TRUTH[label])]
        return out if self.limbs is None else out + [(self.limbs, label)]

    def poly(self, pts, color: Color, label: int) -> None:
        q = [_fix(pts).reshape(-1, 1, 2)]
        cv2.fillPoly(self.img, q, color, cv2.LINE_AA, _SHIFT)
        for arr, value in self._labels(label):
            cv2.fillPoly(arr, q, value, cv2.LINE_8, _SHIFT)

    def ellipse(self, center, axes, color: Color, label: int, angle: float = 0, start: float = 0,
                end: float = 360) -> None:
        c = (round(float(center[0]) * _ONE), round(float(center[1]) * _ONE))
        a = (max(1, round(float(axes[0]) * _ONE)), max(1, round(float(axes[1]) * _ONE)))
        cv2.ellipse(self.img, c, a, angle, start, end, color, -1, cv2.LINE_AA, _SHIFT)
        for arr, value in self._labels(label):
            cv2.ellipse(arr, c, a, angle, start, end, value, -1, cv2.LINE_8, _SHIFT)

    def circle(self, center, r: float, color: Color, label: int) -> None:
        self.ellipse(center, (r, r), color, label)

    def capsule(self, p0, p1, r0: float, r1: float, color: Color, label: int) -> None:
        """A tapered limb segment with round ends."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = p1 - p0
        n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6)
        self.poly([p0 + n * r0, p1 + n * r1, p1 - n * r1, p0 - n * r0], color, label)
        self.circle(p0, r0, color, label)
        self.circle(p1, r1, color, label)

    def line(self, p0, p1, width: float, color: Color, label: int) -> None:
        self.capsule(p0, p1, width / 2, width / 2, color, label)

    def stripes(self, pts, color: Color, period: float) -> None:
        """Horizontal stripes of ``color`` inside polygon ``pts`` (labels unchanged)."""
        pts = np.asarray(pts, float)
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
        h, w = self.img.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return
        region = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(region, [_fix(pts - (x0, y0)).reshape(-1, 1, 2)], 1, cv2.LINE_8, _SHIFT)
        rows = ((np.arange(y0, y1) - y0) // max(1, int(period))) % 2 == 1
        region[~rows] = 0
        self.img[y0:y1, x0:x1][region > 0] = color


@dataclass
class Pose:
    """Joint positions plus the body measures the part painters need."""

    j: dict[str, np.ndarray]
    view: str
    d: int                 # side views: +1 facing right, -1 facing left; 0 front/back
    sx: dict[str, int]     # front/back: image-x sign of the person's left/right side
    P: float
    head_r: tuple[float, float]
    shoulder_w: float      # half width (front/back) or torso depth (side)
    hip_w: float

    @property
    def side(self) -> bool:
        return self.d != 0

    @property
    def near(self) -> str:
        """Side of the body facing the camera in a side view."""
        return "l" if self.d > 0 else "r"


def make_pose(ident: Identity, view: str, phase: float, cx: float, ground_y: float, P: float,
              amplitude: float = 1.0) -> Pose:
    """Place the joints for ``view`` at gait ``phase``; the lower ankle stands on ``ground_y``. ``amplitude``
    scales the hip swing, the knee's swing flexion and the arm swing (1 = the default walk)."""
    d = {"left": -1, "right": 1}.get(view, 0)
    sx = {"l": 1, "r": -1} if view == "front" else {"l": -1, "r": 1}
    b, hs = ident.build, ident.head_scale
    head_h = 0.13 * hs * P
    hip_y = (1 - ident.leg_ratio) * P
    thigh = shin = (ident.leg_ratio - 0.035) * P / 2
    upper_arm, forearm = 0.16 * P, 0.15 * P
    shoulder_y, neck_y = 0.19 * P, head_h + 0.02 * P
    shoulder_w = (0.15 if d else 0.105) * b * P
    hip_w = 0.068 * b * P
    sway = 0.008 * P * np.sin(phase) * (d == 0)
    j = {"head": np.array([sway, head_h / 2]), "neck": np.array([sway, neck_y])}
    for s, off in (("l", 0.0), ("r", np.pi)):
        psi = phase + off
        theta = 0.45 * amplitude * np.sin(psi)
        kappa = 0.1 + 0.75 * amplitude * max(0.0, np.cos(psi)) ** 2
        alpha = -ident.arm_swing * amplitude * np.sin(psi)
        flex = 0.15 + 0.35 * max(0.0, np.sin(-psi))
        if d:
            nx = 0.01 * P * (1 if s == "l" else -1) * d            # near/far joints slightly apart
            sh = np.array([nx, shoulder_y])
            hip = np.array([nx * 0.5, hip_y])
            knee = hip + thigh * np.array([d * np.sin(theta), np.cos(theta)])
            ankle = knee + shin * np.array([d * np.sin(theta - kappa), np.cos(theta - kappa)])
            elbow = sh + upper_arm * np.array([d * np.sin(alpha), np.cos(alpha)])
            wrist = elbow + forearm * np.array([d * np.sin(alpha + flex), np.cos(alpha + flex)])
        else:
            x = sx[s]
            sh = np.array([sway + x * shoulder_w * 0.92, shoulder_y])
            hip = np.array([sway * 0.5 + x * hip_w, hip_y])
            knee = hip + np.array([x * 0.004 * P, thigh * np.cos(theta)])
            ankle = knee + np.array([-x * 0.004 * P, shin * np.cos(theta - kappa)])
            elbow = sh + np.array([x * 0.018 * P, upper_arm * np.cos(alpha)])
            wrist = elbow + np.array([x * 0.006 * P, forearm * np.cos(alpha + flex)])
        j.update({f"{s}_shoulder": sh, f"{s}_elbow": elbow, f"{s}_wrist": wrist,
                  f"{s}_hip": hip, f"{s}_knee": knee, f"{s}_ankle": ankle})
    foot = 0.035 * P
    dy = ground_y - foot - max(j["l_ankle"][1], j["r_ankle"][1])
    j = {k: v + (cx, dy) for k, v in j.items()}
    return Pose(j, view, d, sx, P, (0.052 * hs * P, head_h / 2), shoulder_w, hip_w)


# ---------------------------------------------------------------- part painters

def _leg(p: Painter, ps: Pose, ident: Identity, s: str, f: float) -> None:
    P, j = ps.P, ps.j
    hip, knee, ankle = j[f"{s}_hip"], j[f"{s}_knee"], j[f"{s}_ankle"]
    rh, rk, ra = 0.048 * ident.build * P, 0.036 * P, 0.027 * P
    cloth, skin = shade(ident.lower_color, f), shade(ident.skin_color, f)
    thigh, shin, foot = LIMB[f"{s}_thigh"], LIMB[f"{s}_shin"], LIMB[f"{s}_shoe"]
    if ident.lower_type == "trousers":
        p.capsule(hip, knee, rh, rk, cloth, thigh)
        p.capsule(knee, ankle, rk, ra, cloth, shin)
    else:
        p.capsule(hip, knee, rh * 0.8, rk * 0.85, skin, thigh)
        p.capsule(knee, ankle, rk * 0.85, ra * 0.9, skin, shin)
        if ident.lower_type == "shorts":
            p.capsule(hip, hip + 0.6 * (knee - hip), rh * 1.05, rk * 1.1, cloth, thigh)
    shoe = shade(ident.shoes_color, f)
    if ps.side:
        d = ps.d
        pts = np.array([(-0.03, -0.012), (0.03, -0.008), (0.08, 0.022), (0.078, 0.036), (-0.035, 0.036)])
        p.poly(ankle + pts * (d * P, P), shoe, foot)
    else:
        p.ellipse(ankle + (0, 0.018 * P), (0.034 * P, 0.022 * P), shoe, foot)


def _pelvis(p: Painter, ps: Pose, ident: Identity) -> None:
    P, j = ps.P, ps.j
    hl, hr = j["l_hip"], j["r_hip"]
    c = (hl + hr) / 2
    w = (0.07 if ps.side else ps.hip_w / P + 0.045) * ident.build * P
    top, y = c[1] - 0.06 * P, c[1]
    if ident.lower_type == "skirt":
        knee_y = (j["l_knee"][1] + j["r_knee"][1]) / 2
        flare = w + 0.05 * P
        p.poly([(c[0] - w, top), (c[0] + w, top), (c[0] + flare, knee_y), (c[0] - flare, knee_y)],
               ident.lower_color, LIMB["pelvis"])
    elif ps.side:
        p.ellipse(c, (w, 0.065 * P), ident.lower_color, LIMB["pelvis"])
    else:
        p.poly([(c[0] - w, top), (c[0] + w, top), (c[0] + w * 0.95, y + 0.05 * P), (c[0] - w * 0.95, y + 0.05 * P)],
               ident.lower_color, LIMB["pelvis"])


def _torso(p: Painter, ps: Pose, ident: Identity) -> None:
    P, j = ps.P, ps.j
    neck = j["neck"]
    sy = (j["l_shoulder"][1] + j["r_shoulder"][1]) / 2
    hem = (j["l_hip"][1] + j["r_hip"][1]) / 2 + 0.02 * P
    cx = neck[0]
    if ps.side:
        dep, d = ps.shoulder_w, ps.d
        pts = [(-0.45 * dep, neck[1] + 0.005 * P), (0.3 * dep, neck[1] + 0.01 * P), (0.55 * dep, sy + 0.07 * P),
               (0.48 * dep, hem), (-0.5 * dep, hem), (-0.55 * dep, sy + 0.03 * P)]
        pts = [(cx + d * x, y) for x, y in pts]
    else:
        w, hw = ps.shoulder_w, ps.hip_w + 0.03 * ident.build * P
        waist = sy + 0.17 * P
        half = [(0.5 * w, neck[1]), (w, sy + 0.012 * P), (0.85 * w, waist), (hw, hem)]
        pts = [(cx + x, y) for x, y in half] + [(cx - x, y) for x, y in reversed(half)]
    p.poly(pts, ident.upper_color, LIMB["torso"])
    if ident.pattern == "stripes":
        p.stripes(pts, ident.pattern_color, 0.03 * P)
    elif ident.pattern == "logo" and ps.view == "front":
        c = np.array([cx, sy + 0.08 * P])
        p.poly([c + (-0.035 * P, -0.025 * P), c + (0.035 * P, -0.025 * P), c + (0.035 * P, 0.025 * P),
                c + (-0.035 * P, 0.025 * P)], ident.pattern_color, LIMB["torso"])


def _head(p: Painter, ps: Pose, ident: Identity) -> None:
    P, j = ps.P, ps.j
    c, neck = j["head"], j["neck"]
    rx, ry = ps.head_r
    p.capsule(neck + (0, 0.01 * P), c, 0.022 * P, 0.025 * P, ident.skin_color, LIMB["head"])
    hair, style = ident.hair_color, ident.hair_style
    if ps.view == "back":
        p.ellipse(c, (rx, ry), hair, LIMB["head"])
        if style == "cap":
            p.ellipse(c - (0, 0.1 * ry), (rx * 1.05, ry * 0.95), ident.cap_color, LIMB["head"], start=180, end=360)
        return
    p.ellipse(c, (rx, ry), ident.skin_color, LIMB["head"])
    if ps.side:
        d = ps.d
        start, end = (110, 320) if d > 0 else (-140, 70)
        if style != "cap":
            p.ellipse(c - (0, 0.08 * ry), (rx * 1.04, ry * 0.98), hair, LIMB["head"], start=start, end=end)
        p.circle(c + (d * 0.55 * rx, -0.12 * ry), 0.07 * rx, _EYE, LIMB["head"])
    else:
        if style != "cap":
            p.ellipse(c - (0, 0.12 * ry), (rx * 1.05, ry * 0.95), hair, LIMB["head"], start=180, end=360)
            p.ellipse(c - (0, 0.25 * ry), (rx * 1.02, ry * 0.6), hair, LIMB["head"], start=160, end=380)
        for ex in (-0.38, 0.38):
            p.circle(c + (ex * rx, 0.02 * ry), 0.09 * rx, _EYE, LIMB["head"])
        p.line(c + (-0.25 * rx, 0.5 * ry), c + (0.25 * rx, 0.5 * ry), 0.05 * rx, shade(ident.skin_color, 0.7), LIMB["head"])
    if style == "cap":
        p.ellipse(c - (0, 0.15 * ry), (rx * 1.06, ry * 0.95), ident.cap_color, LIMB["head"], start=180, end=360)
        brim = c + (ps.d * 0.6 * rx, -0.12 * ry)
        p.ellipse(brim, (rx * (0.75 if ps.side else 1.1), 0.14 * ry), shade(ident.cap_color, 0.85), LIMB["head"])


def _long_hair(p: Painter, ps: Pose, ident: Identity) -> None:
    """Hair falling to the shoulders: behind the head (front/side) or over the upper back (back)."""
    if ident.hair_style != "long":
        return
    c = ps.j["head"]
    rx, ry = ps.head_r
    bottom = ps.j["neck"][1] + 0.07 * ps.P
    x0 = c[0] - (ps.d * 0.7 * rx if ps.side else 0)
    w = rx * (0.75 if ps.side else 1.1)
    p.poly([(x0 - w, c[1]), (x0 + w, c[1]), (x0 + w * 1.05, bottom), (x0 - w * 1.05, bottom)], ident.hair_color, LIMB["head"])
    p.ellipse((x0, c[1]), (w, ry), ident.hair_color, LIMB["head"])


def _arm(p: Painter, ps: Pose, ident: Identity, s: str, f: float) -> None:
    P, j = ps.P, ps.j
    sh, el, wr = j[f"{s}_shoulder"], j[f"{s}_elbow"], j[f"{s}_wrist"]
    cloth, skin = shade(ident.upper_color, f), shade(ident.skin_color, f)
    ru, re, rw = 0.034 * ident.build * P, 0.028 * P, 0.022 * P
    upper, fore = LIMB[f"{s}_upper_arm"], LIMB[f"{s}_forearm"]
    if ident.sleeves == "long":
        p.capsule(sh, el, ru, re, cloth, upper)
        p.capsule(el, wr, re, rw, cloth, fore)
    else:
        p.capsule(sh, el, ru * 0.8, re * 0.85, skin, upper)
        p.capsule(el, wr, re * 0.85, rw * 0.9, skin, fore)
        p.capsule(sh, sh + 0.55 * (el - sh), ru * 1.08, re * 1.1, cloth, upper)
    hand = wr + 0.03 * P * (wr - el) / max(np.hypot(*(wr - el)), 1e-6)
    p.circle(hand, 0.024 * P, skin, fore)


def _backpack(p: Painter, ps: Pose, ident: Identity, straps_only: bool = False) -> None:
    P, j, col = ps.P, ps.j, ident.belongings_color
    sy = (j["l_shoulder"][1] + j["r_shoulder"][1]) / 2
    cx = j["neck"][0]
    if ps.side:
        d, back = ps.d, cx - ps.d * 0.5 * ps.shoulder_w
        if straps_only:
            p.line((cx + d * 0.05 * ps.shoulder_w, sy - 0.01 * P), (cx + d * 0.25 * ps.shoulder_w, sy + 0.17 * P),
                   0.016 * P, shade(col, 0.8), LIMB["belongings"])
            return
        xs = sorted((back - d * 0.095 * P, back + d * 0.02 * P))
        p.poly([(xs[0], sy), (xs[1], sy - 0.01 * P), (xs[1], sy + 0.24 * P), (xs[0], sy + 0.22 * P)], col, LIMB["belongings"])
        p.line((xs[0] + 0.02 * P, sy + 0.12 * P), (xs[1] - 0.03 * P, sy + 0.12 * P), 0.012 * P, shade(col, 0.7), LIMB["belongings"])
    elif ps.view == "front" or straps_only:
        for x in (-1, 1):
            p.line((cx + x * 0.55 * ps.shoulder_w, sy - 0.008 * P), (cx + x * 0.62 * ps.shoulder_w, sy + 0.2 * P),
                   0.018 * P, shade(col, 0.85), LIMB["belongings"])
    else:
        w = 0.085 * ident.build * P
        p.poly([(cx - w, sy + 0.005 * P), (cx + w, sy + 0.005 * P), (cx + w * 1.05, sy + 0.24 * P),
                (cx - w * 1.05, sy + 0.24 * P)], col, LIMB["belongings"])
        p.ellipse((cx, sy + 0.01 * P), (w * 0.9, 0.03 * P), col, LIMB["belongings"], start=180, end=360)
        p.poly([(cx - w * 0.7, sy + 0.14 * P), (cx + w * 0.7, sy + 0.14 * P), (cx + w * 0.7, sy + 0.22 * P),
                (cx - w * 0.7, sy + 0.22 * P)], shade(col, 0.75), LIMB["belongings"])


def _bag(p: Painter, ps: Pose, ident: Identity, strap: bool, body: bool) -> None:
    """Shoulder bag hanging at the hip on ``ident.bag_side``; the strap crosses the torso."""
    P, j, col, s = ps.P, ps.j, ident.belongings_color, ident.bag_side
    hip = j[f"{s}_hip"]
    other = "r" if s == "l" else "l"
    if ps.side:
        c = np.array([j["neck"][0] - ps.d * (0.02 if s == ps.near else 0.06) * P, hip[1] + 0.02 * P])
        top_from = j[f"{s}_shoulder"]
    else:
        c = np.array([hip[0] + ps.sx[s] * (ps.hip_w + 0.07 * P), hip[1] + 0.01 * P])
        top_from = j[f"{other}_shoulder"]
    w, h = 0.055 * P, 0.05 * P
    if strap:
        p.line(top_from, c - (0, h), 0.012 * P, shade(col, 0.8), LIMB["belongings"])
    if body:
        p.poly([c + (-w, -h), c + (w, -h), c + (w * 1.05, h), c + (-w * 1.05, h)], col, LIMB["belongings"])
        p.line(c + (-w, -0.3 * h), c + (w, -0.3 * h), 0.008 * P, shade(col, 0.7), LIMB["belongings"])


def draw_figure(p: Painter, ident: Identity, view: str, phase: float, cx: float, ground_y: float,
                P: float, amplitude: float = 1.0) -> dict[str, np.ndarray]:
    """Draw ``ident`` walking at gait ``phase`` (``amplitude``: :func:`make_pose`) seen from ``view``; return
    the joints (canvas pixels)."""
    ps = make_pose(ident, view, phase, cx, ground_y, P, amplitude)
    pack, bag = ident.belongings == "backpack", ident.belongings == "bag"
    if ps.side:
        near, far = ps.near, ("r" if ps.near == "l" else "l")
        _arm(p, ps, ident, far, 0.8)
        _leg(p, ps, ident, far, 0.8)
        if bag and ident.bag_side == far:
            _bag(p, ps, ident, strap=False, body=True)
        _long_hair(p, ps, ident)
        if pack:
            _backpack(p, ps, ident)
        _leg(p, ps, ident, near, 1.0)
        _pelvis(p, ps, ident)
        _torso(p, ps, ident)
        _head(p, ps, ident)
        if pack:
            _backpack(p, ps, ident, straps_only=True)
        if bag and ident.bag_side == near:
            _bag(p, ps, ident, strap=True, body=True)
        _arm(p, ps, ident, near, 1.0)
        return ps.j
    front = view == "front"
    if front:
        _long_hair(p, ps, ident)
    for s in ("l", "r"):
        _leg(p, ps, ident, s, 1.0)
    _pelvis(p, ps, ident)
    if bag:
        _bag(p, ps, ident, strap=False, body=True)
    _torso(p, ps, ident)
    if not front:
        if pack:
            _backpack(p, ps, ident)
        _long_hair(p, ps, ident)
    _head(p, ps, ident)
    for s in ("l", "r"):
        _arm(p, ps, ident, s, 0.95)
    if pack and front:
        _backpack(p, ps, ident)
    if bag:
        _bag(p, ps, ident, strap=True, body=False)
    return ps.j
