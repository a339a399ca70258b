"""Which frames form a clip, and which tracklets form a batch.

Training clips use restricted random sampling (Li et al., CVPR 2018): the tracklet is cut into T
equal chunks and one frame is drawn from each, so a clip spans the whole tracklet. Test clips cover
all frames in consecutive clips (the AP3D/TCLNet protocol) or T evenly spaced frames (torchreid).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


def restricted_random_clip(length: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """T sorted frame positions in [0, length): one random frame per equal chunk of the tracklet."""
    if length <= 0:
        raise ValueError("empty tracklet")
    if length < num_frames:
        return np.sort(rng.choice(length, size=num_frames, replace=True))
    edges = np.linspace(0, length, num_frames + 1)
    lo = np.floor(edges[:-1]).astype(np.int64)
    hi = np.maximum(np.floor(edges[1:]).astype(np.int64), lo + 1)
    return lo + (rng.random(num_frames) * (hi - lo)).astype(np.int64)


def evenly_spaced_clip(length: int, num_frames: int) -> np.ndarray:
    """T frame positions spread evenly over the tracklet (torchreid's ``evenly`` test mode)."""
    if length >= num_frames:
        return np.floor(np.arange(num_frames) * (length / num_frames)).astype(np.int64)
    return np.sort(np.concatenate([np.arange(length), np.full(num_frames - length, length - 1)]))


def consecutive_clips(length: int, clip_len: int) -> list[np.ndarray]:
    """All frames in consecutive clips of ``clip_len``; the last clip may be shorter (AP3D test protocol)."""
    return [np.arange(s, min(s + clip_len, length)) for s in range(0, length, clip_len)]


class IdentityBatchSampler:
    """P identities x K tracklets (or images) per batch; an epoch visits every identity's items.

    Each identity's items are shuffled and cut into groups of K (padded by re-drawing when it has
    fewer than K); batches take P groups of distinct identities. Yields lists of
    ``(item, sample_seed)`` so that clip sampling in the workers is deterministic whatever the
    number of workers.

    Distributed (``world_size`` W > 1): every rank draws the same global batches of W x P distinct identities
    from (seed, epoch) and keeps block ``rank`` of P identities, so the ranks' batches are disjoint, together
    they are the global batch, and each is a valid P x K batch. With W = 1 the batches are those of a
    single-process run; a W-rank run sees the batches of a 1-rank run with P' = W x P, split in W.
    """

    def __init__(self, labels: np.ndarray, num_ids: int, num_instances: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.labels = np.asarray(labels)
        self.P, self.K, self.seed = num_ids, num_instances, seed
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.rank, self.world_size = rank, world_size
        self.by_label = {int(lab): np.flatnonzero(self.labels == lab) for lab in np.unique(self.labels)}
        if len(self.by_label) < self.P * world_size:
            raise ValueError(f"batch needs {self.P} identities per rank x {world_size} ranks but the training set "
                             f"has {len(self.by_label)}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _groups_of(self, lab: int, rng: np.random.Generator) -> list[np.ndarray]:
        """The identity's items, shuffled and cut into groups of K (re-drawn items fill a short one)."""
        items = rng.permutation(self.by_label[lab])
        if len(items) < self.K:
            items = np.concatenate([items, rng.choice(items, self.K - len(items), replace=True)])
        return [items[i * self.K:(i + 1) * self.K] for i in range(len(items) // self.K)]

    def __len__(self) -> int:
        n_groups = sum(max(len(v) // self.K, 1) for v in self.by_label.values())
        return max(n_groups // (self.P * self.world_size), 1)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = {lab: self._groups_of(lab, rng) for lab in self.by_label}
        wanted = self.P * self.world_size                      # identities of one global batch
        own = slice(self.rank * self.P * self.K, (self.rank + 1) * self.P * self.K)
        for _ in range(len(self)):
            available = [lab for lab, g in groups.items() if g]
            if len(available) >= wanted:
                chosen = rng.choice(available, wanted, replace=False)
            else:  # fewer identities left than a batch needs: redraw groups for some exhausted ones
                exhausted = [lab for lab, g in groups.items() if not g]
                refill = rng.choice(exhausted, wanted - len(available), replace=False)
                for lab in refill:
                    groups[int(lab)] = self._groups_of(int(lab), rng)
                chosen = np.array(available + [int(lab) for lab in refill])
            items = np.concatenate([groups[int(lab)].pop() for lab in chosen])
            seeds = rng.integers(0, 2**31 - 1, size=len(items))
            yield [(int(i), int(s)) for i, s in zip(items[own], seeds[own])]
