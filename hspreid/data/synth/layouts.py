"""Plan each layout as render jobs with its native file names, and write its index and ground-truth files.

Planning happens in one process with RNG streams derived from the seed only, so the plan (and, since every
job carries its own seed, every pixel) is the same whatever the number of workers.
"""
from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import scipy.io

from hspreid.errors import UserError
from hspreid.partmaps.regions import LIMB_NAMES, LIMB_TO_GROUND_TRUTH

from .figure import JOINTS, PART_NAMES, VIEWS
from .identity import Identity, sample_identities
from .render import FrameSpec, Job
from .scene import dominant_view

SPLIT_OF_DIR = {"bbox_train": "train", "bbox_test": "test", "bounding_box_train": "train",
                "query": "query", "bounding_box_test": "gallery"}
_JUNK_CROPS = ("background", "fragment", "tiny")


@dataclass
class Planner:
    """Shared planning state: RNG streams, identity pool, unique names, the growing job list."""

    params: dict
    seed: int
    layout: str
    jobs: list[Job] = field(default_factory=list)
    identities: dict[str, tuple[Identity, str, int]] = field(default_factory=dict)  # key -> (ident, role, pid)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, 2])
        self._id_rng = np.random.default_rng([self.seed, 1])
        self._taken: set[tuple] = set()
        self._names: set[str] = set()

    # -- sampling helpers
    def identity(self, key: str, role: str, pid: int) -> Identity:
        """A new identity, unlike every earlier one, recorded for identities.csv."""
        ident = sample_identities(self._id_rng, 1, self.params["palette_size"], self._taken)[0]
        self.identities[key] = (ident, role, pid)
        return ident

    def pids(self, n_extra: int = 0) -> tuple[list[int], list[int], list[int]]:
        """Train, test and extra pids: 1..N dealt out at random (real data sets interleave them)."""
        n_tr, n_te = self.params["num_train_ids"], self.params["num_test_ids"]
        perm = self.rng.permutation(n_tr + n_te + n_extra) + 1
        return sorted(perm[:n_tr].tolist()), sorted(perm[n_tr:n_tr + n_te].tolist()), sorted(perm[n_tr + n_te:].tolist())

    def draw(self, key: str) -> int:
        """An integer from the inclusive range parameter ``key``."""
        lo, hi = self.params[key]
        return int(self.rng.integers(lo, hi + 1))

    def cams(self) -> list[int]:
        k = self.draw("cams_per_id")
        return sorted((self.rng.choice(self.params["cameras"], size=k, replace=False) + 1).tolist())

    def random_cam(self) -> int:
        return int(self.rng.integers(self.params["cameras"])) + 1

    def view(self, cam: int) -> str:
        """The camera's dominant view 60% of the time, another view otherwise; with ``side_view_share`` set, a
        side view (left or right) with that probability, else front or back."""
        share = self.params["side_view_share"]
        if share is not None:
            pair = ("left", "right") if self.rng.random() < share else ("front", "back")
            return pair[int(self.rng.integers(2))]
        dom = dominant_view(self.seed, cam)
        if self.rng.random() < 0.6:
            return dom
        return str(self.rng.choice([v for v in VIEWS if v != dom]))

    def occluded(self, share: float) -> bool:
        return bool(self.rng.random() < share)

    def add(self, key: str, ident: Identity | None, cam: int, crop: str, frames: list[FrameSpec], **meta) -> None:
        self.jobs.append(Job(key, int(self.rng.integers(2**62)), ident, cam, self.view(cam), crop, tuple(frames),
                             dict(meta)))

    def unique(self, make) -> str:
        """``make(k)`` for k = 0, 1, ... until the name is new."""
        k = 0
        while make(k) in self._names:
            k += 1
        self._names.add(make(k))
        return make(k)

    def image_names(self, pid: int, cam: int, ts: list[int]) -> list[str]:
        """Native image-layout names for frames ``ts`` of one walk past camera ``cam``."""
        pid_s = "-1" if pid < 0 else f"{pid:04d}"
        if self.layout == "market":
            seq, base = int(self.rng.integers(1, 7)), int(self.rng.integers(0, 150000))
            return [self.unique(lambda k, t=t: f"{pid_s}_c{cam}s{seq}_{base + t:06d}_{k + 1:02d}.jpg") for t in ts]
        base = int(self.rng.integers(0, 9_000_000))
        return [self.unique(lambda k, t=t: f"{pid_s}_c{cam}_f{base + t + k:07d}.jpg") for t in ts]

    def junk_crop(self) -> str:
        return str(self.rng.choice(_JUNK_CROPS))


# ---------------------------------------------------------------- video: MARS

def _mars_tracklet(pl: Planner, split: str, key: str, ident: Identity | None, pid: int, cam: int, tno: int,
                   crop: str, role: str, query: bool = False) -> None:
    n = pl.draw("frames_per_tracklet")
    occ = 0 if ident is not None and pl.occluded(pl.params["occlusion_share"]) else -1   # one static occluder
    pid4 = "00-1" if pid < 0 else f"{pid:04d}"
    frames = [FrameSpec(f"bbox_{split}/{pid4}/{pid4}C{cam}T{tno:04d}F{i + 1:03d}.jpg", i, occ) for i in range(n)]
    pl.add(key, ident, cam, crop, frames, pid=pid, role=role, tracklet=tno, query=query)


def plan_mars(pl: Planner) -> None:
    """Train/test people walking past 2+ cameras, plus pid-0 distractor and pid-(-1) junk tracklets."""
    train, test, _ = pl.pids()
    for split, pids in (("train", train), ("test", test)):
        for pid in pids:
            ident = pl.identity(f"p{pid:04d}", split, pid)
            counts = {cam: pl.draw("tracklets_per_cam") for cam in pl.cams()}
            tno = 0
            for cam, n in counts.items():
                q = int(pl.rng.integers(n)) if split == "test" and len(counts) >= 2 else -1
                for k in range(n):
                    tno += 1
                    _mars_tracklet(pl, split, f"p{pid:04d}", ident, pid, cam, tno, "person", "person", query=k == q)
    for k in range(1, pl.params["num_distractors"] + 1):
        ident = pl.identity(f"d{k:04d}", "distractor", 0)
        crop = "person" if pl.rng.random() < 0.6 else "partial"
        _mars_tracklet(pl, "test", f"d{k:04d}", ident, 0, pl.random_cam(), k, crop, "distractor")
    for k in range(1, pl.params["num_junk"] + 1):
        crop = pl.junk_crop()
        ident = None if crop == "background" else pl.identity(f"j{k:04d}", "junk", -1)
        _mars_tracklet(pl, "test", f"j{k:04d}" if ident else "", ident, -1, pl.random_cam(), k, crop, "junk")


def _savemat(path: Path, variables: dict) -> None:
    """``scipy.io.savemat`` with a fixed header text (scipy stamps the current time), so output is reproducible."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables)
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by hspreid.data.synth".ljust(116)
    path.write_bytes(bytes(data))


def write_mars_info(root: Path, jobs: list[Job]) -> dict:
    """``info/``: name lists, track info [start, end, pid, cam] (1-based, inclusive) and query_IDX."""
    info_dir = root / "info"
    info_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "test"):
        mine = sorted((j for j in jobs if j.frames[0].path.startswith(f"bbox_{split}/")),
                      key=lambda j: PurePosixPath(j.frames[0].path).name)
        names: list[str] = []
        rows, query = [], []
        for j in mine:
            start = len(names) + 1
            names += [PurePosixPath(f.path).name for f in j.frames]
            rows.append([start, len(names), j.meta["pid"], j.cam])
            if j.meta.get("query"):
                query.append(len(rows))
        (info_dir / f"{split}_name.txt").write_text("".join(n + "\n" for n in names))
        var = f"track_{split}_info"
        _savemat(info_dir / f"tracks_{split}_info.mat", {var: np.asarray(rows, np.int32).reshape(-1, 4)})
        counts[split] = len(rows)
        if split == "test":
            if len(rows) > np.iinfo(np.uint16).max:
                raise UserError(f"mars: {len(rows)} test tracklets do not fit MARS's uint16 query_IDX")
            _savemat(info_dir / "query_IDX.mat", {"query_IDX": np.asarray(query, np.uint16).reshape(1, -1)})
            counts["query"] = len(query)
    return counts


# ---------------------------------------------------------------- images: Market-1501, Occluded-Duke

def _image_walk(pl: Planner, key: str, ident: Identity | None, pid: int, cam: int, n: int, split: str,
                crop: str, role: str, query_ok: bool) -> None:
    """``n`` images of one walk past ``cam``; with ``query_ok`` one of them goes to ``query/``."""
    ts = np.cumsum(pl.rng.integers(4, 20, n)).tolist()
    q = int(pl.rng.integers(n)) if query_ok else -1
    names = pl.image_names(pid, cam, ts)
    share, q_share = pl.params["occlusion_share"], pl.params.get("query_occlusion_share", pl.params["occlusion_share"])
    frames = []
    for i, (t, name) in enumerate(zip(ts, names)):
        folder = "bounding_box_train" if split == "train" else ("query" if i == q else "bounding_box_test")
        occ = i if ident is not None and pl.occluded(q_share if i == q else share) else -1
        frames.append(FrameSpec(f"{folder}/{name}", t, occ))
    pl.add(key, ident, cam, crop, frames, pid=pid, role=role, tracklet=0)


def _plan_image_people(pl: Planner, n_extra: int = 0) -> list[int]:
    train, test, extra = pl.pids(n_extra)
    for split, pids in (("train", train), ("test", test)):
        for pid in pids:
            ident, cams = pl.identity(f"p{pid:04d}", split, pid), pl.cams()
            for cam in cams:
                _image_walk(pl, f"p{pid:04d}", ident, pid, cam, pl.draw("images_per_cam"), split, "person", "person",
                            split == "test" and len(cams) >= 2)
    return extra


def plan_market(pl: Planner) -> None:
    """Market-1501: one query per (test id, camera); ``0000`` distractor and ``-1`` junk gallery images."""
    _plan_image_people(pl)
    for role, n, pid in (("distractor", pl.params["num_distractors"], 0), ("junk", pl.params["num_junk"], -1)):
        for k in range(1, n + 1):
            crop = ("person" if pl.rng.random() < 0.5 else "partial") if role == "distractor" else pl.junk_crop()
            key = f"{role[0]}{k:04d}"
            ident = None if crop == "background" else pl.identity(key, role, pid)
            _image_walk(pl, key if ident else "", ident, pid, pl.random_cam(), 1, "test", crop, role, False)


def plan_occluded_duke(pl: Planner) -> None:
    """Occluded-Duke: occluded queries, ~10% occluded gallery/train, gallery-only distractor identities."""
    for pid in _plan_image_people(pl, pl.params["num_distractor_ids"]):
        ident = pl.identity(f"p{pid:04d}", "distractor", pid)
        _image_walk(pl, f"p{pid:04d}", ident, pid, pl.random_cam(), pl.draw("images_per_cam"), "test", "person",
                    "distractor", False)


PLANNERS = {"mars": plan_mars, "market": plan_market, "occluded_duke": plan_occluded_duke}


# ---------------------------------------------------------------- ground truth shared by all layouts

README = (
    "Synthetic person re-ID ground truth written by hspreid.data.synth. masks/ holds one PNG per image, at the "
    "image's relative path with the extension .png: uint8 part labels, same size as the image ({parts}); "
    "occluder pixels are 0. {limbs}keypoints.csv: path (relative image path), then <joint>_x, <joint>_y, <joint>_v "
    "for the joints {joints}, in pixels of the saved image; v=1 visible, v=0 hidden by an occluder or outside the "
    "crop (self-occlusion is not marked); -1,-1,0 where no person was drawn (background junk). images.csv: for "
    "each image its split, identity key, pid, role (person/distractor/junk), camera (1-based), tracklet, frame, "
    "view, crop kind, occluder kind, occluded share of the person's pixels and person pixel count. "
    "identities.csv: each identity's appearance attributes (role: train/test/distractor/junk). ../synth.json: "
    "the generator's parameters, seed and summary."
)
LIMBS_README = (
    "limbs/ holds one PNG per image beside its mask (same path, size and occluder zeros): the pieces the renderer "
    "moves rigidly ({limbs}); each folds into one mask code ({fold}), so that the folded limb map equals the mask "
    "pixel for pixel. "
)


def write_ground_truth(root: Path, rows: list[dict], identities: dict[str, tuple[Identity, str, int]],
                       limbs: bool = True) -> pd.DataFrame:
    """Write keypoints.csv, images.csv, identities.csv and README.txt (describing limbs/ when ``limbs``); return
    the images table."""
    gt = root / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r["path"])
    kp_cols = [f"{j}_{c}" for j in JOINTS for c in ("x", "y", "v")]
    kp = pd.DataFrame([r["keypoints"] for r in rows], columns=kp_cols)
    kp.insert(0, "path", [r["path"] for r in rows])
    for c in kp_cols[2::3]:
        kp[c] = kp[c].astype(np.int8)
    kp.to_csv(gt / "keypoints.csv", index=False)
    images = pd.DataFrame([{k: v for k, v in r.items() if k != "keypoints"} for r in rows])
    images.insert(1, "split", images["path"].map(lambda p: SPLIT_OF_DIR[p.split("/", 1)[0]]))
    images.to_csv(gt / "images.csv", index=False)
    ids = pd.DataFrame([{"identity": k, "role": role, "pid": pid, **ident.attributes()}
                        for k, (ident, role, pid) in sorted(identities.items())])
    ids.to_csv(gt / "identities.csv", index=False)
    parts = ", ".join(f"{i} {n}" for i, n in enumerate(PART_NAMES))
    limb_text = LIMBS_README.format(
        limbs=", ".join(f"{i} {n}" for i, n in enumerate(LIMB_NAMES)),
        fold=", ".join(f"{n} -> {LIMB_TO_GROUND_TRUTH[i]}" for i, n in enumerate(LIMB_NAMES) if i)) if limbs else ""
    text = README.format(parts=parts, joints=", ".join(JOINTS), limbs=limb_text)
    (gt / "README.txt").write_text(textwrap.fill(text, 100) + "\n")
    return images
