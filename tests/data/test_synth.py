"""The synthetic generator writes each native layout correctly, with ground truth, deterministically."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import scipy.io

from hspreid.data.synth import DEFAULTS, LAYOUTS, generate, resolve_params
from hspreid.data.synth.figure import JOINTS
from hspreid.errors import UserError
from hspreid.partmaps import LIMB_NAMES, LIMB_TO_GROUND_TRUTH

SMALL = {
    "mars": {"num_train_ids": 6, "num_test_ids": 6, "cameras": 4, "cams_per_id": [2, 3], "tracklets_per_cam": [1, 2],
             "frames_per_tracklet": [3, 5], "num_distractors": 3, "num_junk": 3, "occlusion_share": 0.3},
    "market": {"num_train_ids": 8, "num_test_ids": 8, "cameras": 4, "cams_per_id": [2, 3], "images_per_cam": [2, 3],
               "num_distractors": 4, "num_junk": 4, "occlusion_share": 0.2},
    "occluded_duke": {"num_train_ids": 8, "num_test_ids": 8, "cameras": 5, "cams_per_id": [2, 3],
                      "images_per_cam": [2, 3], "num_distractor_ids": 2},
}
MARS_NAME = re.compile(r"^(\d{4}|00-1)C(\d)T(\d{4})F(\d{3})\.jpg$")
MARKET_NAME = re.compile(r"^([-\d]+)_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
DUKE_NAME = re.compile(r"^(\d{4})_c(\d)_f(\d{7})\.jpg$")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for layout in LAYOUTS:
        root = tmp_path_factory.mktemp("synth") / layout
        out[layout] = (root, generate(layout, root, SMALL[layout], seed=3))
    return out


def _images(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def _pid(prefix: str) -> int:
    return -1 if prefix in ("00-1", "-1") else int(prefix)


def test_mars_layout(made):
    root, summary = made["mars"]
    for split in ("train", "test"):
        names = (root / "info" / f"{split}_name.txt").read_text().split()
        on_disk = sorted(p.name for p in (root / f"bbox_{split}").rglob("*.jpg"))
        assert sorted(names) == on_disk and len(names) == len(set(names))
        for n in names:
            m = MARS_NAME.match(n)
            assert m, n
            assert (root / f"bbox_{split}" / m.group(1) / n).is_file()
        var = f"track_{split}_info"
        info = scipy.io.loadmat(root / "info" / f"tracks_{split}_info.mat")[var]
        assert info.dtype == np.int32 and info.ndim == 2 and info.shape[1] == 4
        assert info[0, 0] == 1 and info[-1, 1] == len(names)
        assert (info[1:, 0] == info[:-1, 1] + 1).all() and (info[:, 1] >= info[:, 0]).all()
        for start, end, pid, cam in info:
            rows = [MARS_NAME.match(n).groups() for n in names[start - 1:end]]
            assert {(_pid(r[0]), int(r[1]), r[2]) for r in rows} == {(pid, cam, rows[0][2])}
            assert [int(r[3]) for r in rows] == list(range(1, end - start + 2))
        if split == "test":
            assert {0, -1} <= set(info[:, 2].tolist())
            test_info = info
    q = scipy.io.loadmat(root / "info" / "query_IDX.mat")["query_IDX"]
    assert q.dtype == np.uint16 and q.shape[0] == 1 and q.shape[1] > 0
    assert q.min() >= 1 and q.max() <= len(test_info)
    qrows = test_info[q[0].astype(int) - 1]
    assert (qrows[:, 2] > 0).all()
    pairs = [tuple(r) for r in qrows[:, 2:4].tolist()]
    assert len(pairs) == len(set(pairs))                      # one query per (pid, cam)
    people = test_info[test_info[:, 2] > 0]
    expect = {(p, c) for p, c in people[:, 2:4].tolist() if len(set(people[people[:, 2] == p][:, 3])) >= 2}
    assert set(pairs) == expect
    assert summary["tracklets"]["query"] == q.shape[1]


@pytest.mark.parametrize("layout,pattern", [("market", MARKET_NAME), ("occluded_duke", DUKE_NAME)])
def test_image_layouts(made, layout, pattern):
    root, _ = made[layout]
    ids = {}
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        files = sorted(p.name for p in (root / folder).glob("*.jpg"))
        assert files, folder
        ids[folder] = Counter()
        for n in files:
            m = pattern.match(n)
            assert m, n
            assert 1 <= int(m.group(2)) <= SMALL[layout]["cameras"]
            ids[folder][(_pid(m.group(1)), int(m.group(2)))] += 1
    train = {p for p, _ in ids["bounding_box_train"]}
    gallery = {p for p, _ in ids["bounding_box_test"]}
    assert not train & gallery
    assert all(n == 1 for n in ids["query"].values())          # one query per (pid, camera)
    for pid, cam in ids["query"]:
        assert pid > 0 and pid in gallery
        assert any(p == pid and c != cam for p, c in ids["bounding_box_test"])
    if layout == "market":
        assert {0, -1} <= gallery and not {0, -1} & train
    else:
        images = pd.read_csv(root / "ground_truth" / "images.csv")
        assert (images.loc[images["split"] == "query", "occluder"] != "none").all()
        assert images.loc[images["split"] == "query", "occluded_frac"].median() > 0.1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ground_truth(made, layout):
    root, summary = made[layout]
    images = _images(root)
    kp = pd.read_csv(root / "ground_truth" / "keypoints.csv")
    assert list(kp.columns) == ["path"] + [f"{j}_{c}" for j in JOINTS for c in ("x", "y", "v")]
    assert sorted(kp["path"]) == images
    assert set(kp.filter(like="_v").stack().unique()) <= {0, 1}
    table = pd.read_csv(root / "ground_truth" / "images.csv").set_index("path")
    assert sorted(table.index) == images
    h, w = DEFAULTS[layout]["height"], DEFAULTS[layout]["width"]
    fold = np.asarray(LIMB_TO_GROUND_TRUTH, np.uint8)
    limbs_seen: set[int] = set()
    for rel in images:
        img = cv2.imread(str(root / rel))
        mask = cv2.imread(str(root / "ground_truth" / "masks" / Path(rel).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
        limbs = cv2.imread(str(root / "ground_truth" / "limbs" / Path(rel).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
        assert img.shape == (h, w, 3) and mask.shape == (h, w) and mask.dtype == np.uint8
        assert mask.max() <= 5 and limbs.shape == (h, w) and limbs.dtype == np.uint8
        assert np.array_equal(fold[limbs], mask), rel                 # the limbs fold into the mask exactly
        limbs_seen |= set(np.unique(limbs).tolist())
        assert np.count_nonzero(mask) == table.loc[rel, "person_pixels"]
        if table.loc[rel, "role"] == "person":
            assert np.count_nonzero(mask) > 0, rel
            if table.loc[rel, "occluder"] == "none":
                assert np.count_nonzero(mask) > 0.12 * h * w, rel
                assert {1, 2, 3, 4} <= set(np.unique(mask).tolist()), rel
    assert limbs_seen == set(range(len(LIMB_NAMES)))                   # every piece drawn somewhere
    assert "l_forearm" in (root / "ground_truth" / "README.txt").read_text()
    assert (root / "synth.json").is_file()
    assert sum(summary["images"].values()) == len(images)


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(tmp_path, made):
    params = SMALL["mars"]
    a = _digest(made["mars"][0])
    generate("mars", tmp_path / "b", params, seed=3, workers=2)
    assert _digest(tmp_path / "b") == a                        # same seed, other worker count: same bytes
    generate("mars", tmp_path / "c", params, seed=4)
    c = _digest(tmp_path / "c")
    masks = [k for k in a if k.startswith("ground_truth/masks/")]
    assert masks and sum(a[k] != c.get(k) for k in masks) > len(masks) // 2


def test_limb_maps_change_no_other_file(tmp_path, made):
    """Drawing the limb maps takes no random number and changes no image, mask or key point."""
    with_limbs = _digest(made["mars"][0])
    generate("mars", tmp_path / "plain", SMALL["mars"], seed=3, limbs=False)
    plain = _digest(tmp_path / "plain")
    limbs = {k for k in with_limbs if k.startswith("ground_truth/limbs/")}
    assert len(limbs) == sum(k.endswith(".jpg") for k in plain) and not any("limbs/" in k for k in plain)
    assert {k: v for k, v in with_limbs.items() if k not in limbs | {"ground_truth/README.txt"}} == \
        {k: v for k, v in plain.items() if k != "ground_truth/README.txt"}


def test_side_view_share(tmp_path):
    """``side_view_share`` 1 puts every walk in a side view, 0 in front or back views; both kinds appear."""
    views = {}
    for share in (1.0, 0.0):
        root = tmp_path / str(share)
        generate("mars", root, {**SMALL["mars"], "side_view_share": share}, seed=3)
        people = pd.read_csv(root / "ground_truth" / "images.csv").query("view != 'none'")
        views[share] = set(people["view"])
    assert views == {1.0: {"left", "right"}, 0.0: {"front", "back"}}
    assert resolve_params("mars", {"side_view_share": None})["side_view_share"] is None   # null: the default


def test_gait_amplitude_scales_the_swing():
    """The ankles' reach across the frame in a side view grows with ``gait_amplitude``; 0 stands still."""
    from hspreid.data.synth.figure import make_pose
    from hspreid.data.synth.identity import sample_identity

    ident = sample_identity(np.random.default_rng(0), 8)

    def reach(amplitude: float) -> float:
        xs = [make_pose(ident, "right", phase, 0.0, 100.0, 100.0, amplitude).j["l_ankle"][0]
              for phase in np.linspace(0, 2 * np.pi, 24)]
        return float(np.ptp(xs))

    assert reach(0.0) < 1e-9 < reach(1.0) < reach(1.5)
    assert make_pose(ident, "right", 0.7, 0.0, 100.0, 100.0).j["l_ankle"].tolist() == \
        make_pose(ident, "right", 0.7, 0.0, 100.0, 100.0, 1.0).j["l_ankle"].tolist()


def test_rendering_processes_do_not_load_torch():
    """The generator's spawned workers import the renderer, which draws with the limb codes of
    hspreid.partmaps.regions: that must not pull in torch (~0.5 GB per process)."""
    code = "import sys, hspreid.data.synth.render; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_identities_share_colours(made):
    ids = pd.read_csv(made["market"][0] / "ground_truth" / "identities.csv")
    people = ids[ids["role"].isin(["train", "test"])]
    assert people["upper"].value_counts().max() >= 3           # a small palette: colours are shared
    assert people["upper"].nunique() >= 4
    sig = ["upper", "sleeves", "pattern", "lower", "lower_type", "shoes", "hair", "hair_style", "belongings"]
    assert not people.duplicated(sig).any()                    # ... but combinations differ


def test_bad_params(tmp_path):
    with pytest.raises(UserError, match=r"'num_trains'.*allowed: .*num_train_ids"):
        generate("mars", tmp_path / "x", {"num_trains": 3})
    with pytest.raises(UserError, match="images_per_cam"):
        generate("mars", tmp_path / "x", {"images_per_cam": [1, 2]})
    with pytest.raises(UserError, match="frames_per_tracklet"):
        generate("mars", tmp_path / "x", {"frames_per_tracklet": [5, 2]})
    with pytest.raises(UserError, match="layout"):
        generate("duke", tmp_path / "x")
    with pytest.raises(UserError, match=r"'side_view_share' = 1.5 must be a float in 0..1"):
        generate("mars", tmp_path / "x", {"side_view_share": 1.5})
    with pytest.raises(UserError, match="'gait_amplitude'"):
        generate("mars", tmp_path / "x", {"gait_amplitude": None})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(UserError, match="empty"):
        generate("market", tmp_path / "full", SMALL["market"])
