"""Torch datasets over ``frames.zarr``: training clips with augmentation, and test clips."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hspreid.data.frames import FrameStore
from hspreid.data.index import tracklet_table
from hspreid.data.sampling import restricted_random_clip

IMAGENET_MEAN_U8 = np.array([0.485, 0.456, 0.406]) * 255


@dataclass
class AugmentConfig:
    """Clip-consistent augmentation: the same flip/crop/erase for every frame of a clip."""

    flip: float = 0.5
    pad: int = 10
    erase: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.4)
    erase_aspect: float = 0.3


def augment_clip(frames: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
                 maps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Flip, pad+crop and random-erase a clip [T,H,W,3]; ``maps`` [T,H,W] (part labels) move with it.

    Padding fills frames with 0 and label maps with 0 (background); erased label pixels become 0
    too, as ISP's reference loader does for the image.
    """
    t, h, w, _ = frames.shape
    if rng.random() < cfg.flip:
        frames = frames[:, :, ::-1]
        maps = maps[:, :, ::-1] if maps is not None else None
    if cfg.pad > 0:
        p = cfg.pad
        dy, dx = rng.integers(0, 2 * p + 1, size=2)
        padded = np.zeros((t, h + 2 * p, w + 2 * p, 3), frames.dtype)
        padded[:, p:p + h, p:p + w] = frames
        frames = padded[:, dy:dy + h, dx:dx + w]
        if maps is not None:
            pm = np.zeros((t, h + 2 * p, w + 2 * p), maps.dtype)
            pm[:, p:p + h, p:p + w] = maps
            maps = pm[:, dy:dy + h, dx:dx + w]
    frames = np.ascontiguousarray(frames)
    if rng.random() < cfg.erase:
        for _ in range(100):
            area = rng.uniform(*cfg.erase_area) * h * w
            aspect = np.exp(rng.uniform(np.log(cfg.erase_aspect), -np.log(cfg.erase_aspect)))
            eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 0 < eh < h and 0 < ew < w:
                y, x = rng.integers(0, h - eh), rng.integers(0, w - ew)
                frames[:, y:y + eh, x:x + ew] = IMAGENET_MEAN_U8.astype(np.uint8)
                if maps is not None:
                    maps = np.ascontiguousarray(maps)
                    maps[:, y:y + eh, x:x + ew] = 0
                break
    return frames, (np.ascontiguousarray(maps) if maps is not None else None)


class PartLabels:
    """Pseudo part-label maps of the training frames (``pseudo_labels.zarr``: ``labels`` uint8
    [n, h, w] for the frame-store rows ``rows``), held in memory (a few MB even for MARS)."""

    def __init__(self, path: str | Path):
        import zarr

        from hspreid.errors import UserError

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise UserError(f"{path}: not a pseudo-label store (run the pseudo_labels stage first)")
        group = zarr.open_group(str(path), mode="r")
        self.rows = group["rows"][...]
        self.maps = group["labels"][...]
        self.attrs = dict(group.attrs)

    def read(self, frame_rows: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.rows, frame_rows)
        if np.any(pos >= len(self.rows)) or np.any(self.rows[np.minimum(pos, len(self.rows) - 1)] != frame_rows):
            raise KeyError("frame rows without pseudo labels")
        return self.maps[pos]


class TrainClips(Dataset):
    """Item = (train tracklet number, sample seed) -> dict(frames uint8 [T,3,H,W], label, camid
    and, with ``part_labels``, the clip's label maps uint8 [T,H,W] moved with the augmentation)."""

    def __init__(self, frames_path: str | Path, index: pd.DataFrame, num_frames: int,
                 augment: AugmentConfig | None, part_labels: str | Path | None = None):
        self.frames_path = Path(frames_path)
        tracks = tracklet_table(index)
        self.tracks = tracks[tracks["subset"] == "train"].reset_index()
        self.num_frames, self.augment = num_frames, augment
        self.labels_path = Path(part_labels) if part_labels else None
        self._store: FrameStore | None = None
        self._labels: PartLabels | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.tracks["label"].to_numpy()

    @property
    def num_classes(self) -> int:
        return int(self.tracks["label"].max()) + 1

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        item, seed = key
        if self._store is None:  # opened lazily: once per worker process
            self._store = FrameStore(self.frames_path)
            self._labels = PartLabels(self.labels_path) if self.labels_path else None
        row = self.tracks.iloc[item]
        rng = np.random.default_rng(seed)
        rows = int(row["start"]) + restricted_random_clip(int(row["length"]), self.num_frames, rng)
        frames = self._store.read(rows)
        maps = None
        if self._labels is not None:  # label maps at image size, so pixel moves apply to both
            small = self._labels.read(rows)
            h, w = frames.shape[1:3]
            maps = small.repeat(h // small.shape[1], axis=1).repeat(w // small.shape[2], axis=2) \
                if h % small.shape[1] == 0 and w % small.shape[2] == 0 else _resize_nearest(small, h, w)
        if self.augment is not None:
            frames, maps = augment_clip(frames, rng, self.augment, maps=maps)
        out = {"frames": torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2),
               "label": int(row["label"]), "camid": int(row["camid"])}
        if maps is not None:
            out["part_labels"] = torch.from_numpy(np.ascontiguousarray(maps))
        return out


def _resize_nearest(maps: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in maps])
