"""Shared fixtures: a tiny synthetic MARS-layout data set and its frame store, made once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

TINY_MARS = {"num_train_ids": 6, "num_test_ids": 4, "num_distractors": 2, "num_junk": 2,
             "frames_per_tracklet": [3, 9], "height": 32, "width": 16}


@pytest.fixture(scope="session")
def tiny_mars(tmp_path_factory) -> dict:
    """{'root', 'frames', 'index' (DataFrame)} for a tiny synthetic MARS set stored at 32 x 16."""
    from hspreid.data import synth
    from hspreid.data.frames import write_frame_store
    from hspreid.data.loading import attach_ground_truth
    from hspreid.data.readers import read_dataset

    base = tmp_path_factory.mktemp("tiny_mars")
    root = base / "synth_mars"
    synth.generate("mars", root, TINY_MARS, seed=0)
    index = attach_ground_truth(read_dataset("mars", root), root)
    index, _ = write_frame_store(index, root, base / "frames.zarr", height=32, width=16, chunk_frames=4)
    return {"root": root, "frames": base / "frames.zarr", "index": index}
