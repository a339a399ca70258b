"""Shared fixtures: a tiny synthetic MARS-layout data set and its frame store, made once per session."""
from __future__ import annotations

import pytest

TINY_MARS = {"num_train_ids": 6, "num_test_ids": 4, "num_distractors": 2, "num_junk": 2,
             "frames_per_tracklet": [3, 9], "height": 32, "width": 16}


@pytest.fixture(scope="session")
def tiny_mars(tmp_path_factory) -> dict:
    """{'root', 'frames', 'index' (DataFrame)} for a tiny synthetic MARS set stored at 32 x 16."""
    from hspreid.data import synth
    from hspreid.data.frames import FramesConfig, write_frame_store
    from hspreid.data.loading import attach_ground_truth
    from hspreid.data.readers import read_dataset

    base = tmp_path_factory.mktemp("tiny_mars")
    root = base / "synth_mars"
    synth.generate("mars", root, TINY_MARS, seed=0)
    index = attach_ground_truth(read_dataset("mars", root), root)
    index, _ = write_frame_store(index, root, base / "frames.zarr", FramesConfig(height=32, width=16, chunk_frames=4))
    return {"root": root, "frames": base / "frames.zarr", "index": index}


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for tiny convolutions: on a shared 2-core machine a second OpenMP
    thread only adds spin-waits (8-30x slower under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _hspreid_logger_restored():
    """Stages run in-process call ``setup_logging``, which stops the ``hspreid`` logger from
    propagating; restore it after each test so later tests' ``caplog`` sees the records."""
    import logging

    logger = logging.getLogger("hspreid")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    logger.propagate, logger.level = propagate, level


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory) -> dict:
    """The real Snakefile's tiny synthetic baseline DAG (tests/_workflow.py), run once locally with --cores 2:
    {'workdir', 'metrics' (its metrics.json as first written)}. test_workflow.py edits and reruns that
    workdir; the SLURM test compares its cluster run against the metrics."""
    import json

    from _workflow import TARGET, new_workdir, set_overrides, snakemake

    wd = new_workdir(tmp_path_factory)
    set_overrides(wd, "")
    snakemake(wd, TARGET)
    return {"workdir": wd, "metrics": json.loads((wd / TARGET).read_text())}
