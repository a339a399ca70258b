"""The one feature extractor: every test tracklet (or image) -> the model's embeddings.

Aggregation modes (recorded in ``features.zarr`` attrs):

* ``all`` (default): all frames in consecutive clips of ``clip_len`` (the last may be shorter),
  each clip embedded by the model, clip embeddings averaged (the AP3D/TCLNet test protocol);
* ``evenly``: ``evenly_frames`` frames spread over the tracklet, one clip (torchreid's test mode).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hspreid.data.frames import FrameStore
from hspreid.data.index import tracklet_table
from hspreid.data.regions import ParsingStore
from hspreid.data.sampling import consecutive_clips, evenly_spaced_clip
from hspreid.errors import UserError
from hspreid.io import Progress
from hspreid.models import model_extras

log = logging.getLogger("hspreid.features")

AGGREGATIONS = ("all", "evenly")


class _TrackletFrames(Dataset):
    """Item i -> (i, list of clips) for the i-th test tracklet; a clip is {"frames": [L,3,H,W] uint8} plus,
    with a parsing store, {"parsing": [L,h,w] uint8} (the frames' region maps at the store's size)."""

    def __init__(self, frames_path: Path, tracks: pd.DataFrame, mode: str, clip_len: int, evenly_frames: int,
                 parsing: Path | None = None):
        self.frames_path, self.tracks, self.parsing_path = frames_path, tracks, parsing
        self.mode, self.clip_len, self.evenly_frames = mode, clip_len, evenly_frames
        self._store: FrameStore | None = None
        self._parsing: ParsingStore | None = None

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
            self._parsing = ParsingStore(self.parsing_path) if self.parsing_path else None
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
def extract_features(model: nn.Module, frames_path: str | Path, index: pd.DataFrame, *, device: torch.device,
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
    wants_parsing = parsing is not None and "parsing" in getattr(model, "extra_inputs", ())
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
        out = model(batch["frames"], **model_extras(model, batch))["embedding"]
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


LABEL_KEYS = ("pid", "camid", "query", "gallery", "tracklet", "num_frames")


def write_features(out: str | Path, feats: dict[str, np.ndarray], *, dtype: str = "float32", attrs: dict) -> None:
    """Write ``features.zarr`` atomically: embeddings (float32 or float16) and label arrays, with attrs."""
    import zarr

    from hspreid.io import atomic_dir

    if dtype not in ("float32", "float16"):
        raise UserError(f"features.dtype: expected float32 or float16, got {dtype!r}")
    with atomic_dir(Path(out)) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        embeddings = []
        for name, value in feats.items():
            if name not in LABEL_KEYS:
                if value.dtype.kind == "f":
                    value = value.astype(dtype)
                embeddings.append(name)
            rows = max(1, (4 << 20) // max(value[:1].nbytes, 1))
            group.create_array(name, data=value, chunks=(min(rows, len(value)),) + value.shape[1:])
        group.attrs.update({**attrs, "embeddings": embeddings, "count": int(len(feats["pid"]))})


def read_features(path: str | Path, rows: np.ndarray | None = None, names: "list[str] | None" = None,
                  upcast: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of ``features.zarr`` (embeddings as float32 unless ``upcast=False``) and its attrs.

    ``names`` limits which arrays are read (default: all); ``rows`` reads only those rows, so a
    caller that needs the query and the gallery rows never holds the whole store twice.
    """
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise UserError(f"{path}: not a feature store (run the extract_features stage first)")
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    feats = {}
    for name in names if names is not None else list(attrs["embeddings"]) + list(LABEL_KEYS):
        arr = group[name]
        value = arr[...] if rows is None else arr.oindex[(np.asarray(rows, dtype=np.int64),)]
        feats[name] = value.astype(np.float32, copy=False) if upcast and value.dtype.kind == "f" else value
    return feats, attrs


@torch.no_grad()
def predict_parsing(model: nn.Module, frames_path: str | Path, rows: np.ndarray, *, device: torch.device,
                    frames_per_batch: int = 256) -> np.ndarray | None:
    """The model's part map (argmax of its part classifier, ``part_logits``) of each frame-store row:
    uint8 [n, h, w], or None for a model without a part classifier."""
    store = FrameStore(frames_path)
    model.eval().to(device)
    maps = []
    for s in range(0, len(rows), frames_per_batch):
        frames = torch.from_numpy(store.read(rows[s:s + frames_per_batch])).permute(0, 3, 1, 2)
        out = model(frames[:, None].to(device))
        if "part_logits" not in out:
            return None
        maps.append(out["part_logits"].argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(maps)


def predicts_parsing(model: nn.Module) -> bool:
    """Whether ``model`` outputs ``part_logits`` (ISP's and HCGA's part classifier, SS-HSP's segmenter)."""
    return bool(getattr(model, "predicts_parsing", hasattr(model, "part_classifier")))


def predicted_parsing_quality(model: nn.Module, frames_path: str | Path, rows: np.ndarray, *, device: torch.device,
                              max_frames: int = 2000, frames_per_batch: int = 256) -> dict | None:
    """IoU (:func:`hspreid.parsing.label_quality`) of the model's predicted part maps against the
    ground-truth masks on up to ``max_frames`` of ``rows`` (evenly spread); None where the data set
    has no masks or the model no part classifier."""
    from hspreid.parsing import label_quality

    store = FrameStore(frames_path)
    if store.masks is None or max_frames <= 0 or len(rows) == 0 or not predicts_parsing(model):
        return None
    rows = np.unique(rows[np.linspace(0, len(rows) - 1, min(len(rows), max_frames)).round().astype(int)])
    pred = predict_parsing(model, frames_path, rows, device=device, frames_per_batch=frames_per_batch)
    if pred is None:
        return None
    quality = label_quality(pred, store.read(rows, "masks"), model.num_parts)
    log.info("predicted parsing on %d frames: mean part IoU %s, foreground IoU %s", len(rows),
             quality["mean_part_iou"], quality["foreground_iou"])
    return {"frames": int(len(rows)), **quality}
