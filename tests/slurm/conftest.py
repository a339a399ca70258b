"""The `slurm_cluster` fixture: a real single-node SLURM for the tests marked `slurm` (local_slurm.py)."""
from __future__ import annotations

import json

import local_slurm
import pytest


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM: {'state', 'node', 'partition', 'gpus', 'pids'}. One that
    `python tests/slurm/local_slurm.py up` started is used and left up; otherwise one is brought up here
    and torn down after the session. Skips where SLURM cannot run (not root, packages missing, a real
    /etc/slurm/slurm.conf, no executor plugin)."""
    reason = local_slurm.plugin_missing()
    if reason:
        pytest.skip(reason)
    previous = local_slurm.state_of()
    if previous is not None and local_slurm.running(previous):
        yield json.loads((previous / "pids.json").read_text())
        return
    reason = local_slurm.unavailable()
    if reason:
        pytest.skip(reason)
    facts = local_slurm.up()
    try:
        yield facts
    finally:
        local_slurm.down()
