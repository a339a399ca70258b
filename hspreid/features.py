"""The one feature extractor: every test tracklet (or image) -> the model's embeddings.

Aggregation modes (recorded in ``features.zarr`` attrs):

* ``all`` (default): all frames in consecutive clips of ``clip_len`` (the last may be shorter),
  each clip embedded by the model, clip embeddings averaged (the AP3D/TCLNet test protocol);
* ``evenly``: ``evenly_frames`` frames spread over the tracklet, one clip (torchreid's test mode).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from hspreid.data.frames import FrameStore
from hspreid.data.index import tracklet_table
from hspreid.data.label_maps import LabelMaps
from hspreid.data.sampling import consecutive_clips, evenly_spaced_clip
from hspreid.errors import UserError
from hspreid.io import Progress
from hspreid.models import ReIDModel

log = logging.getLogger("hspreid.features")

AGGREGATIONS = ("all", "evenly")


@dataclass(frozen=True)
class FeatureConfig:
    """The ``features`` block: how test tracklets are embedded and stored."""

    mode: Literal["all", "evenly"] = "all"   # see the module doc
    clip_len: int = 32
    evenly_frames: int = 15
    frames_per_batch: int = 256
    num_workers: int = 1
    dtype: Literal["float32", "float16"] = "float32"   # on disk
    parsing_frames: int = 2000   # test frames whose predicted parsing is scored (0: none)


class _TrackletFrames(Dataset):
    """Item i -> (i, list of clips) for the i-th test tracklet; a clip is {"frames": [L,3,H,W] uint8} plus,
    with a parsing store, {"parsing": [L,h,w] uint8} (the frames' region maps at the store's size)."""

    def __init__(self, frames_path: Path, tracks: pd.DataFrame, mode: str, clip_len: int, evenly_frames: int,
                 parsing: Path | None = None):
        self.frames_path, self.tracks, self.parsing_path = frames_path, tracks, parsing
        self.mode, self.clip_len, self.evenly_frames = mode, clip_len, evenly_frames
        self._store: FrameStore | None = None
        self._parsing: LabelMaps | None = None

    def __len__(self) -> int:
        return len(self.tracks)

    def _read(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        clip = {"frames": torch.from_numpy(self._store.read(rows)).permute(0, 3, 1, 2)}
        if self._parsing is not None:
            clip["parsing"] = torch.from_numpy(self._parsing.read(rows))
        return clip

    def __getitem__(self, i: int) -> tuple[int, list[dict[str, torch.Tensor]]]:
        if self._store is None:
            self._store = FrameStore(self.frames_path)
            self._parsing = LabelMaps(self.parsing_path) if self.parsing_path else None
        start, length = int(self.tracks["start"].iat[i]), int(self.tracks["length"].iat[i])
        if self.mode == "all":
            whole = self._read(np.arange(start, start + length))
            return i, [{k: v[c] for k, v in whole.items()} for c in consecutive_clips(length, self.clip_len)]
        return i, [self._read(start + evenly_spaced_clip(length, self.evenly_frames))]


def _clip_batches(loader: DataLoader, frames_per_batch: int) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Regroup clips of equal length into batches of about ``frames_per_batch`` frames (each key stacked)."""
    pending: dict[int, list[tuple[int, dict]]] = defaultdict(list)

    def batch(bucket: list[tuple[int, dict]]) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
        return np.array([j for j, _ in bucket]), {k: torch.stack([c[k] for _, c in bucket]) for k in bucket[0][1]}

    for i, clips in loader:
        for clip in clips:
            bucket = pending[len(clip["frames"])]
            bucket.append((i, clip))
            if len(bucket) * len(clip["frames"]) >= frames_per_batch:
                yield batch(bucket)
                bucket.clear()
    for bucket in pending.values():
        if bucket:
            yield batch(bucket)


@torch.no_grad()
def extract_features(model: ReIDModel, frames_path: str | Path, index: pd.DataFrame, *, device: torch.device,
                     mode: str = "all", clip_len: int = 32, evenly_frames: int = 15,
                     frames_per_batch: int = 256, num_workers: int = 2,
                     parsing: str | Path | None = None) -> dict[str, np.ndarray]:
    """Embeddings of every test tracklet, averaged over its clips, plus its labels.

    ``parsing`` (a parsing store) gives the region maps of the test frames to a model that takes them
    (its ``extra_inputs`` name ``parsing``, e.g. SPReID); other models never read it.

    Returns arrays: one per embedding the model outputs (``global``, ``foreground``, ``parts``
    [N, K, D] ...: float outputs are averaged over clips; bool outputs such as part visibility
    ``visible`` [N, K] are OR-ed: visible in the tracklet if visible in any clip), and
    ``pid, camid, query, gallery, tracklet, num_frames``.
    """
    if mode not in AGGREGATIONS:
        raise UserError(f"features.mode: expected one of {AGGREGATIONS}, got {mode!r}")
    tracks = tracklet_table(index)
    tracks = tracks[tracks["subset"] == "test"].reset_index()
    if tracks.empty:
        raise UserError("the data set has no test tracklets to extract features from")
    wants_parsing = parsing is not None and "parsing" in model.extra_inputs
    dataset = _TrackletFrames(Path(frames_path), tracks, mode, clip_len, evenly_frames,
                              Path(parsing) if wants_parsing else None)
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, shuffle=False)
    model.eval().to(device)
    sums: dict[str, torch.Tensor] = {}
    flags: dict[str, torch.Tensor] = {}
    counts = torch.zeros(len(tracks), dtype=torch.float64)
    progress = Progress(len(tracks), "tracklets embedded")
    done = 0
    for owners, batch in _clip_batches(loader, frames_per_batch):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        out = model(batch["frames"], **model.extras(batch))["embedding"]
        own = torch.from_numpy(owners)
        for name, value in out.items():
            if value.dtype == torch.bool:  # visibility: visible in the tracklet if visible in any clip
                if name not in flags:
                    flags[name] = torch.zeros((len(tracks), *value.shape[1:]), dtype=torch.bool)
                flags[name].index_put_((own,), value.cpu(), accumulate=True)
                continue
            value = value.float().cpu().double()
            if name not in sums:
                sums[name] = torch.zeros((len(tracks), *value.shape[1:]), dtype=torch.float64)
            sums[name].index_add_(0, own, value)
        counts.index_add_(0, own, torch.ones(len(owners), dtype=torch.float64))
        finished = int((counts > 0).sum())
        progress.update(finished - done)
        done = finished
    feats = {name: (s / counts.view(-1, *[1] * (s.dim() - 1))).float().numpy() for name, s in sums.items()}
    feats.update({name: f.numpy() for name, f in flags.items()})
    feats.update({"pid": tracks["pid"].to_numpy(np.int64), "camid": tracks["camid"].to_numpy(np.int64),
                  "query": tracks["query"].to_numpy(bool), "gallery": tracks["gallery"].to_numpy(bool),
                  "tracklet": tracks["tracklet"].to_numpy(np.int64),
                  "num_frames": tracks["length"].to_numpy(np.int64)})
    return feats
