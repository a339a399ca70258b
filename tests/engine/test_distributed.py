"""Training on several processes (DistributedDataParallel, gloo on the CPU): the identity-balanced sampler splits
each batch over the ranks, a 2-rank step equals a 1-rank step on the union of their batches, and a stopped
2-rank run resumes from its checkpoint to the same weights."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from hspreid.data.sampling import IdentityBatchSampler
from hspreid.distributed import World, join, leave
from hspreid.engine.trainer import TrainConfig, train
from hspreid.losses import Criterion
from hspreid.models import ReIDModel


# ----------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize("world_size", [2, 3])
def test_the_ranks_batches_are_disjoint_complete_and_valid(world_size):
    labels = np.repeat(np.arange(12), 5)                         # 12 identities x 5 tracklets
    single = IdentityBatchSampler(labels, 2 * world_size, 2, seed=3)
    ranks = [IdentityBatchSampler(labels, 2, 2, seed=3, rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 1):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        assert len(single) == len(ranks[0]) > 0
        for whole, *parts in zip(single, *ranks):
            items = [[i for i, _ in part] for part in parts]
            assert sorted(sum(items, [])) == sorted(i for i, _ in whole)             # complete: the global batch
            ids = [set(labels[p]) for p in items]
            assert all(len(a & b) == 0 for k, a in enumerate(ids) for b in ids[k + 1:])  # disjoint identities
            for p in items:                                                            # each a valid P x K batch
                assert len(p) == 4 and sorted(np.bincount(labels[p])[labels[p]]) == [2, 2, 2, 2]
            assert sum(parts, []) == whole                                           # same sample seeds too


def test_a_world_needs_enough_identities_for_every_rank():
    with pytest.raises(ValueError, match="2 identities per rank x 3 ranks"):
        IdentityBatchSampler(np.repeat(np.arange(5), 2), 2, 2, world_size=3)


# ----------------------------------------------------------------------------- training
class Clips:
    """A tiny training set: 4 identities x 2 clips of 2 frames, each identity its own colour."""

    labels = np.repeat(np.arange(4), 2)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        item, seed = key
        g = torch.Generator().manual_seed(int(seed))
        base = 40 * int(self.labels[item]) + 20
        frames = (base + torch.randint(0, 30, (2, 3, 8, 4), generator=g)).to(torch.uint8)
        return {"frames": frames, "label": int(self.labels[item]), "camid": item % 2}


class Linear(ReIDModel):
    """Mean colour -> logits: no BatchNorm, so a batch split over ranks gives the same gradient."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, clips):
        feat = clips.float().mean(dim=(1, 3, 4)) / 255
        return {"features": {"global": feat}, "logits": {"global": self.fc(feat)}, "embedding": {"global": feat}}


def _train(world: World, num_ids: int, epochs: int, checkpoint, out) -> None:
    torch.manual_seed(0)
    model = Linear()
    cfg = TrainConfig(epochs=epochs, lr=0.1, warmup_epochs=0, milestones=[], num_ids=num_ids, num_instances=2,
                      num_frames=2, num_workers=0, log_every=0)
    history = train(model, Clips(), Criterion({"id": {"label_smoothing": 0.0}}), cfg, device=torch.device("cpu"),
                    seed=0, checkpoint=Path(checkpoint), resume_key="k", world=world)
    if world.main:
        torch.save({"state": model.state_dict(), "history": history}, out)


def _rank(rank: int, size: int, port: int, num_ids: int, epochs: int, checkpoint, out) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world, _ = join("cpu")
    try:
        _train(world, num_ids, epochs, checkpoint, out)
    finally:
        leave(world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(epochs: int, checkpoint, out) -> dict:
    mp.spawn(_rank, args=(2, _free_port(), 2, epochs, str(checkpoint), str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=False) if os.path.exists(out) else {}


def test_two_ranks_take_the_step_of_one_rank_on_the_union_of_their_batches(tmp_path):
    two = _two_ranks(1, tmp_path / "two.ckpt", tmp_path / "two.pt")              # P = 2 per rank, one step
    _train(World(), 4, 1, tmp_path / "one.ckpt", tmp_path / "one.pt")             # P = 4: the union
    one = torch.load(tmp_path / "one.pt", weights_only=False)
    torch.manual_seed(0)
    start = Linear()
    assert not torch.equal(start.fc.weight, one["state"]["fc.weight"])             # the step moved the weights
    for key, value in one["state"].items():
        torch.testing.assert_close(two["state"][key], value, rtol=1e-5, atol=1e-6)
    assert two["history"][0]["loss"] == pytest.approx(one["history"][0]["loss"], rel=1e-5)


def test_a_stopped_two_rank_run_resumes_to_the_same_weights(tmp_path):
    straight = _two_ranks(2, tmp_path / "a.ckpt", tmp_path / "a.pt")
    _two_ranks(1, tmp_path / "b.ckpt", tmp_path / "b1.pt")                        # stopped after epoch 1
    assert torch.load(tmp_path / "b.ckpt", weights_only=False)["epoch"] == 0
    resumed = _two_ranks(2, tmp_path / "b.ckpt", tmp_path / "b.pt")
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for key, value in straight["state"].items():
        assert torch.equal(resumed["state"][key], value), key
