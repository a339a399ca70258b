"""Synthetic person re-ID data sets written in the native on-disk layout of a real one.

``generate(layout, root, params, seed, workers)`` draws articulated people (garments from a small shared
palette, hair, build, belongings, walking gait) in front of per-camera scenery, with viewpoint and
illumination changes, detector jitter, occluders, blur, noise and JPEG compression, and writes them as

* ``mars``: ``bbox_train/``, ``bbox_test/`` (``0001C1T0001F001.jpg``; ``0000`` distractors, ``00-1`` junk)
  and ``info/`` (``train_name.txt``, ``test_name.txt``, ``tracks_{train,test}_info.mat`` with rows
  [start, end, pid, cam], 1-based inclusive, and ``query_IDX.mat``: uint16 (1, Q), one query per (pid, cam));
* ``market``: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` (``0002_c1s1_000451_01.jpg``;
  ``0000_`` distractors and ``-1_`` junk in the gallery; one query per test id and camera);
* ``occluded_duke``: same folders, Duke names ``0001_c2_f0046182.jpg``; occluded queries, some occluded
  gallery/train images, gallery-only distractor identities seen by one camera.

Every layout also gets ``ground_truth/`` (part masks, limb maps, keypoints.csv, images.csv, identities.csv,
README.txt) and ``synth.json`` (layout, seed, parameters, summary). The limb maps
(:data:`hspreid.partmaps.regions.LIMB_NAMES`: head, torso, pelvis, upper arms, forearms, thighs, shins, shoes,
belongings) are the pieces the renderer moves rigidly; ``LIMB_TO_GROUND_TRUTH`` folds them into the masks
exactly. ``generate(..., limbs=False)`` leaves them out; every other file is the same byte for byte.

Parameters (``DEFAULTS[layout]`` gives the defaults; ``[lo, hi]`` ranges are inclusive, a single int means
[n, n]):

* ``num_train_ids``, ``num_test_ids``: identities per split (disjoint; pids 1..N dealt out at random).
* ``cameras``: number of cameras (1..9); ``cams_per_id`` [lo, hi]: cameras each identity walks past.
* ``tracklets_per_cam`` [lo, hi] (mars): tracklets per identity and camera.
* ``frames_per_tracklet`` [lo, hi] (mars): frames per tracklet (<= 999).
* ``images_per_cam`` [lo, hi] (market, occluded_duke): images per identity and camera.
* ``num_distractors`` (mars: pid-0 tracklets; market: ``0000`` images): people not among the test ids,
  or partial crops of people.
* ``num_junk`` (mars: ``00-1`` tracklets; market: ``-1`` images): bad detections (background only,
  body fragments, people far too small in the box).
* ``num_distractor_ids`` (occluded_duke): gallery-only identities seen by one camera.
* ``height``, ``width``: native image size in pixels.
* ``occlusion_share``: probability that a tracklet (mars: one occluder standing in the scene, which the
  person walks past, so coverage varies along the tracklet) or an image (market, occluded_duke train/gallery)
  gets an occluder (pole, box/car, another person).
* ``query_occlusion_share`` (occluded_duke): the same for query images.
* ``palette_size``: garment colours in use (2..12); small means many identities share colours.
* ``jitter``: detector box misalignment, as a fraction of the box (shift and scale).
* ``noise``: multiplier of each camera's sensor-noise level (0 = none).
* ``jpeg_quality``: JPEG quality of the images (10..100).
* ``side_view_share``: probability that a walk is seen from the side (left or right, else front or back,
  each half the time); ``null`` (the default) keeps each camera's dominant view 60 % of the time, which gives
  about half side views. Only side views show the legs and arms swinging across the frame.
* ``gait_amplitude``: multiplier of the swing of hips, knees and arms (1 = the default walk, whose hip swing
  of +-26 degrees is already at the high end of human walking).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import time
from pathlib import Path
from typing import Any

import cv2

from hspreid.errors import UserError
from hspreid.io import Progress, atomic_dir

from .identity import PALETTE
from .layouts import PLANNERS, Planner, write_ground_truth, write_mars_info
from .render import RenderConfig, render_star

__all__ = ["LAYOUTS", "DEFAULTS", "generate"]

LAYOUTS = ("mars", "market", "occluded_duke")

_COMMON: dict[str, Any] = {"height": 128, "width": 64, "palette_size": 8, "jitter": 0.08, "noise": 1.0,
                           "jpeg_quality": 90, "side_view_share": None, "gait_amplitude": 1.0}
DEFAULTS: dict[str, dict] = {
    "mars": {"num_train_ids": 60, "num_test_ids": 60, "cameras": 6, "cams_per_id": [2, 4],
             "tracklets_per_cam": [1, 2], "frames_per_tracklet": [8, 24], "num_distractors": 20, "num_junk": 10,
             "occlusion_share": 0.15, **_COMMON},
    "market": {"num_train_ids": 100, "num_test_ids": 100, "cameras": 6, "cams_per_id": [2, 4],
               "images_per_cam": [3, 6], "num_distractors": 100, "num_junk": 50, "occlusion_share": 0.05, **_COMMON},
    "occluded_duke": {"num_train_ids": 100, "num_test_ids": 100, "cameras": 8, "cams_per_id": [2, 4],
                      "images_per_cam": [3, 6], "num_distractor_ids": 20, "occlusion_share": 0.1,
                      "query_occlusion_share": 1.0, **_COMMON},
}

# key -> (kind, lo, hi); "range" values are [lo, hi] pairs of ints inside lo..hi
_RULES: dict[str, tuple[str, float, float]] = {
    "num_train_ids": ("int", 1, 9000), "num_test_ids": ("int", 1, 9000), "cameras": ("int", 1, 9),
    "cams_per_id": ("range", 1, 9), "tracklets_per_cam": ("range", 1, 99), "frames_per_tracklet": ("range", 1, 999),
    "images_per_cam": ("range", 1, 999), "num_distractors": ("int", 0, 9999), "num_junk": ("int", 0, 9999),
    "num_distractor_ids": ("int", 0, 9000), "height": ("int", 16, 1024), "width": ("int", 8, 1024),
    "occlusion_share": ("float", 0, 1), "query_occlusion_share": ("float", 0, 1),
    "palette_size": ("int", 2, len(PALETTE)), "jitter": ("float", 0, 0.5), "noise": ("float", 0, 10),
    "jpeg_quality": ("int", 10, 100), "side_view_share": ("float", 0, 1), "gait_amplitude": ("float", 0, 2.5),
}

_NULLABLE = frozenset(k for k, v in _COMMON.items() if v is None)
"""Parameters whose default is null (a different rule, not a value) and that take null."""

log = logging.getLogger("hspreid.synth")


def resolve_params(layout: str, params: dict | None) -> dict:
    """``DEFAULTS[layout]`` updated with ``params``, checked; raises :class:`UserError` naming a bad key."""
    if layout not in LAYOUTS:
        raise UserError(f"synth: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    out = json.loads(json.dumps(DEFAULTS[layout]))
    for key, value in (params or {}).items():
        if key not in out:
            raise UserError(f"synth: unknown parameter {key!r} for layout {layout!r}; "
                            f"allowed: {', '.join(sorted(out))}")
        out[key] = _check(key, value)
    lo, hi = out["cams_per_id"]
    if hi > out["cameras"]:
        raise UserError(f"synth: cams_per_id {out['cams_per_id']} exceeds cameras={out['cameras']}")
    if out["num_train_ids"] + out["num_test_ids"] + out.get("num_distractor_ids", 0) > 9999:
        raise UserError("synth: more than 9999 identities do not fit 4-digit pids")
    return out


def _check(key: str, value: Any) -> Any:
    kind, lo, hi = _RULES[key]
    if value is None and key in _NULLABLE:
        return None
    bad = UserError(f"synth: parameter {key!r} = {value!r} must be "
                    + (f"[min, max] integers in {lo}..{hi}" if kind == "range" else f"a {kind} in {lo}..{hi}")
                    + (" or null" if key in _NULLABLE else ""))
    if kind == "range":
        pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
                or not lo <= pair[0] <= pair[1] <= hi):
            raise bad
        return [int(pair[0]), int(pair[1])]
    ok_types = (int,) if kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types) or not lo <= value <= hi:
        raise bad
    return value if kind == "int" else float(value)


def _worker_init() -> None:
    cv2.setNumThreads(1)


def generate(layout: str, root: Path, params: dict | None = None, seed: int = 0, workers: int = 1,
             limbs: bool = True) -> dict:
    """Write the data set under ``root`` (which must not exist or be empty); return a summary dict
    (counts of ids/tracklets/images per split, distractors, junk, occluded share). ``limbs``: also write the
    limb maps ``ground_truth/limbs/`` (no other file changes)."""
    t0 = time.monotonic()
    p = resolve_params(layout, params)
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"synth: {root} exists and is not an empty directory")
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"synth: seed must be a non-negative integer, got {seed!r}")
    if not isinstance(workers, int) or workers < 1:
        raise UserError(f"synth: workers must be a positive integer, got {workers!r}")
    planner = Planner(p, seed, layout)
    PLANNERS[layout](planner)
    jobs = planner.jobs
    cfg = RenderConfig(seed, p["height"], p["width"], p["jitter"], p["noise"], p["jpeg_quality"], p["palette_size"],
                       limbs=bool(limbs), gait_amplitude=p["gait_amplitude"])
    progress = Progress(sum(len(j.frames) for j in jobs), f"synth {layout}", logger=log)
    with atomic_dir(root) as tmp:
        args = [(job, str(tmp), cfg) for job in jobs]
        rows: list[dict] = []
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_worker_init) as pool:
                for out in pool.imap(render_star, args, chunksize=max(1, len(args) // (workers * 16))):
                    rows += out
                    progress.update(len(out))
        else:
            for a in args:
                out = render_star(a)
                rows += out
                progress.update(len(out))
        images = write_ground_truth(tmp, rows, planner.identities, limbs=bool(limbs))
        summary = _summary(layout, seed, p, images, write_mars_info(tmp, jobs) if layout == "mars" else None)
        summary["seconds"] = round(time.monotonic() - t0, 2)
        (tmp / "synth.json").write_text(json.dumps(
            {"generator": "hspreid.data.synth", "version": 1, "layout": layout, "seed": seed, "params": p,
             "summary": {k: v for k, v in summary.items() if k != "seconds"}}, indent=2, sort_keys=True) + "\n")
    return summary


def _summary(layout: str, seed: int, p: dict, images, tracks: dict | None) -> dict:
    """Counts per split and role, and per split the share of images where an occluder hides >= 5% of the person."""
    people = images[images["role"] == "person"]
    split_ids = people.groupby("split")["pid"].nunique()
    out: dict[str, Any] = {
        "layout": layout, "seed": seed,
        "ids": {"train": int(p["num_train_ids"]), "test": int(p["num_test_ids"])},
        "images": {str(k): int(v) for k, v in images.groupby("split").size().items()},
        "ids_per_split": {str(k): int(v) for k, v in split_ids.items()},
        "distractor_images": int((images["role"] == "distractor").sum()),
        "junk_images": int((images["role"] == "junk").sum()),
        "occluded_share": {str(k): round(float(v), 4) for k, v in
                           (images["occluded_frac"] >= 0.05).groupby(images["split"]).mean().items()},
    }
    if tracks is not None:
        out["tracklets"] = tracks
        out["distractor_tracklets"] = int(p["num_distractors"])
        out["junk_tracklets"] = int(p["num_junk"])
    elif layout == "occluded_duke":
        out["distractor_ids"] = int(p["num_distractor_ids"])
    return out
