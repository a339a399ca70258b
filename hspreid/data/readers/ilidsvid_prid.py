"""iLIDS-VID and PRID-2011: two cameras, one tracklet per person and camera, ten fixed train/test splits.

The split files hold ``ls_set`` (10 x n): 1-based indices into the **sorted** list of person folders (iLIDS-VID:
cam1 folders; PRID-2011: persons with >= 27 frames in both cameras). The first half of a row is test, the second
half train. Test tracklets of the first camera are queries (camid 0), those of the second the gallery (camid 1).
Frames inside a tracklet are sorted by name.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from hspreid.data.index import finalize_index
from hspreid.errors import UserError

from ._common import Tracklet, int_option, list_files, list_subdirs, require_layout, split_row, tracklets_to_records

ILIDS_SEQ = "i-LIDS-VID/sequences"
ILIDS_SPLITS = "train-test people splits/train_test_splits_ilidsvid.mat"
PRID_SPLITS = "train_test_splits_prid.mat"
PRID_MIN_FRAMES = 27
PERSON = re.compile(r"person_?(\d+)")


def read_ilidsvid(root: str | Path, *, split_id: int = 0) -> pd.DataFrame:
    """The iLIDS-VID index for split ``split_id`` (0..9; torchreid's default is 0, AP3D's 9)."""
    split_id = int_option("ilidsvid", "split_id", split_id)
    root = Path(root)
    require_layout(root, "iLIDS-VID", [f"{ILIDS_SEQ}/cam1", f"{ILIDS_SEQ}/cam2", ILIDS_SPLITS])
    persons = [p for p in list_subdirs(root / ILIDS_SEQ / "cam1") if PERSON.fullmatch(p)]
    test, train = split_row("ilidsvid", root / ILIDS_SPLITS, split_id, len(persons), "cam1 person folders")
    cams = [f"{ILIDS_SEQ}/cam1", f"{ILIDS_SEQ}/cam2"]
    return _two_camera_index(root, cams, [persons[i] for i in train], [persons[i] for i in test],
                             "iLIDS-VID", "ilidsvid", split_id)


def read_prid2011(root: str | Path, *, split_id: int = 0) -> pd.DataFrame:
    """The PRID-2011 index (178-id, >= 27-frame protocol) for split ``split_id``."""
    split_id = int_option("prid2011", "split_id", split_id)
    root = Path(root)
    base = "" if (root / "multi_shot").is_dir() else "prid_2011/"
    cams = [f"{base}multi_shot/cam_a", f"{base}multi_shot/cam_b"]
    split_file = next((p for p in (root / PRID_SPLITS, root / "train-test people splits" / PRID_SPLITS)
                       if p.exists()), root / PRID_SPLITS)
    require_layout(root, "PRID-2011", cams + [split_file.relative_to(root).as_posix()],
                   note=f" (the split file, from the iLIDS-VID package, may be in {root / 'train-test people splits'})")
    persons = _prid_persons(root, cams)
    test, train = split_row("prid2011", split_file, split_id, len(persons),
                            f"persons with >= {PRID_MIN_FRAMES} frames in both cameras")
    return _two_camera_index(root, cams, [persons[i] for i in train], [persons[i] for i in test],
                             "PRID-2011", "prid2011", split_id)


def _prid_persons(root: Path, cams: list[str]) -> list[str]:
    """Sorted ``person_NNNN`` folders present in both cameras with at least 27 frames in each."""
    common = sorted(set(list_subdirs(root / cams[0])) & set(list_subdirs(root / cams[1])))
    return [p for p in common if PERSON.fullmatch(p)
            and all(len(list_files(root / cam / p)) >= PRID_MIN_FRAMES for cam in cams)]


def _two_camera_index(root: Path, cams: list[str], train: list[str], test: list[str], name: str, dataset: str,
                      split_id: int) -> pd.DataFrame:
    """Train tracklets from both cameras; test: camera 0 = query, camera 1 = gallery."""
    tracklets = []
    for subset, persons in (("train", train), ("test", test)):
        is_test = subset == "test"
        for person in sorted(persons):
            pid = int(PERSON.fullmatch(person).group(1))
            for camid, cam in enumerate(cams):
                if not (root / cam / person).is_dir():
                    raise UserError(f"{root / cam / person}: missing; {name} needs every split person in both cameras")
                tracklets.append(Tracklet(f"{cam}/{person}", list_files(root / cam / person), pid, camid, subset,
                                          query=is_test and camid == 0, gallery=is_test and camid == 1))
    records, empty = tracklets_to_records(tracklets)
    df = finalize_index(records, name=f"{root} ({name})")
    df.attrs.update(dataset=dataset, split_id=split_id, dropped={"empty_tracklets": empty})
    return df
