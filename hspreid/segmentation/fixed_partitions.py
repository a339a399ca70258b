"""Does the pretext task reward the right parts? Fixed partitions for the co-part segmenter.

SS-HSP's stage 1 can only find body parts if predicting I_{t+1} (eq. 6) is easier with them than without.
This module builds fixed segmentation maps from a frame's ground-truth part masks, to be fed to
``CoPartSegmenter.forward(..., masks=...)`` in place of the U-Net's: the motion heads and the prediction
module still learn, the partition does not. Comparing the held-out eq. 6 loss reached with each partition
(bench/study_ss_hsp_pretext.py) measures what the pretext task pays for each piece of parsing:

* ``ground_truth``: the ground-truth parts (the target of the parsing: the five regions);
* ``limbs``: the pieces the renderer moves rigidly (the store's "limbs"), what one affine motion per part
  (eqs. 1-2) can explain;
* ``foreground``: every ground-truth part merged into part 1 (a person / background split only);
* ``stripes``: K horizontal stripes of the whole frame (a fixed positional layout, no background);
* ``background``: every pixel background (one global motion for the frame).

With the maps' centroids as shifts (:func:`~hspreid.segmentation.motion.part_centres`) the parts' motion is
fixed too (each part translates with its centroid): the partition's worth to eq. 6 on this data, apart from how
long the heat maps take to learn to track its parts.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hspreid.errors import UserError
from hspreid.partmaps import stripe_labels

PARTITIONS = ("ground_truth", "limbs", "foreground", "stripes", "background")
TRUTH = {"limbs": "limbs"}
"""The store array a partition is built from (default: the masks)."""


def partition_labels(truth: np.ndarray, num_parts: int, partition: str) -> np.ndarray:
    """uint8 [n, h, w] label maps (0 background, 1..num_parts) of a fixed ``partition`` (see ``PARTITIONS``)
    built from ground-truth label maps ``truth`` [n, h, w] (0 background, 1..G, G <= num_parts)."""
    truth = np.asarray(truth)
    if truth.ndim != 3:
        raise UserError(f"fixed partition: expected ground-truth maps [n, h, w], got shape {truth.shape}")
    if partition in ("ground_truth", "limbs"):
        if int(truth.max(initial=0)) > num_parts:
            raise UserError(f"fixed partition {partition}: labels go up to {int(truth.max())} > K = {num_parts}")
        return truth.astype(np.uint8)
    if partition == "foreground":
        return (truth > 0).astype(np.uint8)
    if partition == "stripes":
        return stripe_labels(truth.shape, num_parts)
    if partition == "background":
        return np.zeros(truth.shape, np.uint8)
    raise UserError(f"fixed partition: expected one of {list(PARTITIONS)}, got {partition!r}")


def partition_masks(labels: np.ndarray | torch.Tensor, num_parts: int, size: tuple[int, int]) -> torch.Tensor:
    """Label maps [n, h, w] -> float [n, K+1, size] segmentation maps: one-hot, area-averaged to ``size``
    (soft at part borders when ``size`` is smaller, as the U-Net's softmax maps are)."""
    labels = torch.as_tensor(np.asarray(labels)).long()
    one_hot = F.one_hot(labels, num_parts + 1).permute(0, 3, 1, 2).float()
    return F.interpolate(one_hot, size=tuple(size), mode="area")

