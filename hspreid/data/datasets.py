"""Torch datasets over ``frames.zarr``: training clips with augmentation, and test clips."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hspreid.data.frames import FrameStore
from hspreid.data.keypoints import Keypoints
from hspreid.data.index import tracklet_table
from hspreid.data.label_maps import LabelMaps
from hspreid.data.sampling import restricted_random_clip
from hspreid.partmaps import resize_nearest

IMAGENET_MEAN_U8 = np.array([0.485, 0.456, 0.406]) * 255


@dataclass(frozen=True)
class AugmentConfig:
    """Clip-consistent augmentation: the same flip/crop/erase for every frame of a clip."""

    flip: float = 0.5
    pad: int = 10
    erase: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.4)
    erase_aspect: float = 0.3


@dataclass
class ClipAugment:
    """One drawn clip transform (the same for every frame), applicable to frames, label maps and key points.

    ``flip`` mirrors left-right; ``pad`` pixels of zero padding then a crop at ``(dy, dx)`` of the
    padded frame; ``erase`` the erased rectangle ``(y, x, h, w)`` or None.
    """

    size: tuple[int, int]
    flip: bool = False
    pad: int = 0
    dy: int = 0
    dx: int = 0
    erase: tuple[int, int, int, int] | None = None

    def frames(self, frames: np.ndarray) -> np.ndarray:
        """Clip [T, H, W, 3]: erased pixels take the ImageNet mean colour."""
        out = self.maps(frames, erased=None)
        if self.erase is not None:
            y, x, eh, ew = self.erase
            out[:, y:y + eh, x:x + ew] = IMAGENET_MEAN_U8.astype(np.uint8)
        return out

    def maps(self, maps: np.ndarray, erased: int | None = 0) -> np.ndarray:
        """Pixel-aligned maps [T, H, W, ...] moved like the frames; padding is 0, erased pixels ``erased``."""
        t, (h, w) = maps.shape[0], self.size
        if self.flip:
            maps = maps[:, :, ::-1]
        if self.pad > 0:
            p = self.pad
            padded = np.zeros((t, h + 2 * p, w + 2 * p, *maps.shape[3:]), maps.dtype)
            padded[:, p:p + h, p:p + w] = maps
            maps = padded[:, self.dy:self.dy + h, self.dx:self.dx + w]
        maps = np.ascontiguousarray(maps)
        if self.erase is not None and erased is not None:
            y, x, eh, ew = self.erase
            maps[:, y:y + eh, x:x + ew] = erased
        return maps

    def points(self, points: np.ndarray, flip_order: np.ndarray | None = None) -> np.ndarray:
        """Key points [T, J, 3] (x, y fractions of the width and height, visibility) moved like the frames.

        A flip mirrors x (x -> 1 - x on pixel-edge coordinates) and, with ``flip_order``, reorders the
        joints (left <-> right); pad + crop shifts them; a point under the erased rectangle gets
        visibility 0. Points pushed outside [0, 1] stay there (the model counts them as missing).
        """
        (h, w), out = self.size, points.astype(np.float32, copy=True)
        if self.flip:
            out[..., 0] = 1.0 - out[..., 0]
            out = out[:, flip_order] if flip_order is not None else out
        out[..., 0] += (self.pad - self.dx) / w
        out[..., 1] += (self.pad - self.dy) / h
        if self.erase is not None:
            y, x, eh, ew = self.erase
            with np.errstate(invalid="ignore"):
                px, py = out[..., 0] * w, out[..., 1] * h
                hidden = (px >= x) & (px < x + ew) & (py >= y) & (py < y + eh)
            out[..., 2] = np.where(hidden, 0.0, out[..., 2])
        return out


def draw_augment(rng: np.random.Generator, cfg: AugmentConfig, size: tuple[int, int]) -> ClipAugment:
    """Draw one clip transform for frames of ``size`` (H, W)."""
    h, w = size
    aug = ClipAugment(size=(h, w), flip=bool(rng.random() < cfg.flip), pad=max(int(cfg.pad), 0))
    if aug.pad > 0:
        aug.dy, aug.dx = (int(v) for v in rng.integers(0, 2 * aug.pad + 1, size=2))
    if rng.random() < cfg.erase:
        for _ in range(100):
            area = rng.uniform(*cfg.erase_area) * h * w
            aspect = np.exp(rng.uniform(np.log(cfg.erase_aspect), -np.log(cfg.erase_aspect)))
            eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 0 < eh < h and 0 < ew < w:
                aug.erase = (int(rng.integers(0, h - eh)), int(rng.integers(0, w - ew)), eh, ew)
                break
    return aug


def augment_clip(frames: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
                 maps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Flip, pad+crop and random-erase a clip [T,H,W,3]; ``maps`` [T,H,W,...] (label maps) move with it.

    Padding fills frames with 0 and label maps with 0 (background); erased label pixels become 0
    too, as ISP's reference loader does for the image.
    """
    aug = draw_augment(rng, cfg, frames.shape[1:3])
    return aug.frames(frames), (aug.maps(maps) if maps is not None else None)


class TrainClips(Dataset):
    """Item = (train tracklet number, sample seed) -> dict(frames uint8 [T,3,H,W], label, camid) plus, when given:

    * ``part_labels`` (a pseudo_labels.zarr): the clip's part-label maps uint8 [T,H,W];
    * ``parsing`` (a parsing store, :mod:`hspreid.data.parsing_stores`): its five-region maps uint8 [T,H,W];
    * ``keypoints`` (:class:`hspreid.data.keypoints.Keypoints`): key points float32 [T,J,3] (x, y fractions,
      visibility; NaN in frames that are not labelled).

    Maps are resized (nearest) to the frame size and, like the key points, moved with the augmentation.
    """

    def __init__(self, frames_path: str | Path, index: pd.DataFrame, num_frames: int,
                 augment: AugmentConfig | None, part_labels: str | Path | None = None,
                 parsing: str | Path | None = None, keypoints: Keypoints | None = None):
        self.frames_path = Path(frames_path)
        tracks = tracklet_table(index)
        self.tracks = tracks[tracks["subset"] == "train"].reset_index()
        self.num_frames, self.augment = num_frames, augment
        self.labels_path = Path(part_labels) if part_labels else None
        self.parsing_path = Path(parsing) if parsing else None
        self.keypoints = keypoints
        self._store: FrameStore | None = None
        self._labels: LabelMaps | None = None
        self._parsing: LabelMaps | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.tracks["label"].to_numpy()

    @property
    def num_classes(self) -> int:
        return int(self.tracks["label"].max()) + 1

    def __len__(self) -> int:
        return len(self.tracks)

    def _open(self) -> None:
        """Open the stores lazily: once per worker process."""
        self._store = FrameStore(self.frames_path)
        self._labels = LabelMaps(self.labels_path, in_memory=True) if self.labels_path else None
        self._parsing = LabelMaps(self.parsing_path) if self.parsing_path else None

    def __getitem__(self, key: tuple[int, int]) -> dict:
        item, seed = key
        if self._store is None:
            self._open()
        row = self.tracks.iloc[item]
        rng = np.random.default_rng(seed)
        rows = int(row["start"]) + restricted_random_clip(int(row["length"]), self.num_frames, rng)
        frames = self._store.read(rows)
        size = frames.shape[1:3]
        maps = {name: _to_size(src.read(rows), size)  # at image size, so pixel moves apply to all
                for name, src in (("part_labels", self._labels), ("parsing", self._parsing)) if src is not None}
        points = self.keypoints.read(rows) if self.keypoints is not None else None
        if self.augment is not None:
            aug = draw_augment(rng, self.augment, size)
            frames, maps = aug.frames(frames), {k: aug.maps(m) for k, m in maps.items()}
            points = aug.points(points, self.keypoints.flip_order) if points is not None else None
        out = {"frames": torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2),
               "label": int(row["label"]), "camid": int(row["camid"])}
        out.update({k: torch.from_numpy(np.ascontiguousarray(m)) for k, m in maps.items()})
        if points is not None:
            out["keypoints"] = torch.from_numpy(points)
        return out


def _to_size(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Label maps [T, h, w] at the frame size (H, W): repeated when it divides, else nearest-resized."""
    h, w = size
    if maps.shape[1:] == (h, w):
        return maps
    if h % maps.shape[1] == 0 and w % maps.shape[2] == 0:
        return maps.repeat(h // maps.shape[1], axis=1).repeat(w // maps.shape[2], axis=2)
    return resize_nearest(maps, (h, w))
