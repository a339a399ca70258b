"""Region codes and folding tables: any label set -> SPReID's five-region code.

The five-region code (SPReID sec. 3.3, footnote 2): 0 background, 1 head, 2 upper body, 3 lower body,
4 shoes; ``IGNORE`` (255) counts in no region. The synthetic ground truth adds 5 belongings, and its
limb maps (:data:`LIMB_NAMES`) the pieces the renderer moves rigidly, which fold into those codes.

torch is imported by the functions that need it, so that the synthetic generator's rendering processes,
which draw with these codes, do not load it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from hspreid.errors import UserError

if TYPE_CHECKING:
    import torch

REGION_NAMES = ("background", "head", "upper", "lower", "shoes")
"""Names of the region codes 0-4."""
REGIONS = ("foreground", "head", "upper", "lower", "shoes")
"""The five SPReID regions (SPReID footnote 2): the foreground stands in channel 0 of SPReID's maps."""
GROUND_TRUTH_NAMES = ("background", "head", "upper", "lower", "shoes", "belongings")
"""Codes of the synthetic ground-truth masks."""
IGNORE = 255

LIMB_NAMES = ("background", "head", "torso", "pelvis", "l_upper_arm", "l_forearm", "r_upper_arm", "r_forearm",
              "l_thigh", "l_shin", "r_thigh", "r_shin", "l_shoe", "r_shoe", "belongings")
"""Codes of the synthetic limb maps (``ground_truth/limbs/``): every piece that hspreid.data.synth.figure draws
with a motion of its own (hip and knee angles swing thigh and shin apart, shoulder and elbow angles upper arm and
forearm; in front and back views the limbs foreshorten instead of turning). ``l_``/``r_``: the person's left and
right (``hspreid.data.keypoints.flip_order`` gives a mirror's permutation). head: face, neck, hair, cap; torso:
the shirt from neck to hem; pelvis: the hips below the hem, a skirt too (it moves with the hips, half the torso's
sway, but is lower body in the masks); an upper arm holds its sleeve, a forearm its hand, a thigh its shorts leg;
a shoe is carried by its ankle without turning; belongings: a backpack (moves with the torso) or a shoulder bag
(with the hips; its strap stretches)."""
LIMB_TO_GROUND_TRUTH: tuple[int, ...] = (0, 1, 2, 3, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5)
"""Limb code -> synthetic ground-truth code (:data:`GROUND_TRUTH_NAMES`); folds a limb map into its mask
exactly, pixel for pixel (the renderer draws the mask through this table)."""

# LIP's 20 classes (SPReID footnote 1) -> the five-region code, as grouped by the official code:
#  0 Background->0 | 1 Hat, 2 Hair, 4 Sunglasses, 13 Face -> 1 head
#  3 Glove, 5 Upper-clothes, 6 Dress, 7 Coat, 10 Jumpsuits, 11 Scarf, 14 Left-arm, 15 Right-arm -> 2 upper body
#  9 Pants, 12 Skirt, 16 Left-leg, 17 Right-leg -> 3 lower body | 8 Socks, 18 Left-shoe, 19 Right-shoe -> 4 shoes
LIP_TO_REGIONS: tuple[int, ...] = (0, 1, 1, 2, 1, 2, 2, 2, 4, 3, 2, 2, 3, 1, 2, 2, 3, 3, 4, 4)
TABLES: dict[str, Sequence[int]] = {"lip": LIP_TO_REGIONS}

HEIGHT_BANDS = (0.15, 0.5, 0.85)
"""Row-fraction boundaries head | upper | lower | shoes used by :func:`fold_parts_by_height`."""


def region_code(value: Any, where: str) -> int:
    """A region code (0-4, or 255 = nowhere), or a UserError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in (*range(len(REGION_NAMES)), IGNORE):
        raise UserError(f"{where}: expected a region code 0-4 (background, head, upper, lower, shoes) or "
                        f"{IGNORE} (nowhere), got {value!r}")
    return value


def resolve_table(table: str | Sequence[int] | Mapping[Any, int], where: str = "table") -> Sequence[int] | dict:
    """``lip`` (or another name in TABLES), a list (source label i -> region) or a mapping label -> region."""
    if isinstance(table, str):
        if table not in TABLES:
            raise UserError(f"{where}: unknown table {table!r}; expected one of {sorted(TABLES)}, a list or a mapping")
        return TABLES[table]
    if isinstance(table, Mapping):
        out = {}
        for k, v in table.items():
            try:
                label = int(k)
            except (TypeError, ValueError):
                label = -1
            if not 0 <= label < 256:
                raise UserError(f"{where}: source label {k!r} is not an integer 0-255")
            out[label] = region_code(v, f"{where}[{k}]")
        return out
    if isinstance(table, (list, tuple)) and table:
        return [region_code(v, f"{where}[{i}]") for i, v in enumerate(table)]
    raise UserError(f"{where}: expected a table name, a non-empty list or a mapping, got {table!r}")


def ground_truth_table(belongings: int = IGNORE) -> list[int]:
    """Synthetic ground-truth codes (0-4 as the regions, 5 belongings) -> region code."""
    return [0, 1, 2, 3, 4, region_code(belongings, "oracle.belongings")]


def _lookup_table(table: Sequence[int] | Mapping[int, int], unknown: int) -> torch.Tensor:
    """Label -> region lookup of size >= 256; labels absent from ``table`` map to ``unknown``."""
    import torch

    pairs = table.items() if isinstance(table, Mapping) else enumerate(table)
    pairs = [(int(k), int(v)) for k, v in pairs]
    lut = torch.full((max([256] + [k + 1 for k, _ in pairs]),), unknown, dtype=torch.long)
    for k, v in pairs:
        lut[k] = v
    return lut


def fold_to_regions(labels: torch.Tensor | np.ndarray, table: Sequence[int] | Mapping[int, int] = LIP_TO_REGIONS,
                    unknown: int = IGNORE) -> torch.Tensor | np.ndarray:
    """Map any label set to the five-region code with ``table`` (label -> region; e.g. LIP_TO_REGIONS,
    SPReID footnotes 1-2). Labels missing from the table become ``unknown`` (255: counted in no region).
    Same shape and container type (tensor or array) as ``labels``; dtype uint8 if the values fit."""
    import torch

    is_np = isinstance(labels, np.ndarray)
    lab = torch.as_tensor(np.asarray(labels) if is_np else labels).long()
    if lab.numel() and int(lab.min()) < 0:
        raise ValueError("fold_to_regions: labels must be non-negative")
    lut = _lookup_table(table, unknown).to(lab.device)
    out = torch.where(lab < len(lut), lut[lab.clamp_max(len(lut) - 1)], torch.full_like(lab, unknown))
    out = out.to(torch.uint8) if 0 <= int(lut.min()) and int(lut.max()) < 256 else out
    return out.numpy() if is_np else out


def fold_probs_to_regions(probs: torch.Tensor, table: Sequence[int] = LIP_TO_REGIONS) -> torch.Tensor:
    """Sum class probabilities [..., C, H, W] into the five regions [..., 5, H, W] (channel r = sum of the
    classes that ``table`` sends to r; channel 0 background), as the official code groups LIP's softmax."""
    import torch
    import torch.nn.functional as F

    if probs.shape[-3] != len(table):
        raise ValueError(f"fold_probs_to_regions: {probs.shape[-3]} channels but a table of {len(table)} classes")
    member = F.one_hot(torch.as_tensor(list(table), device=probs.device), len(REGIONS)).to(probs.dtype)  # [C, 5]
    return torch.einsum("...chw,cr->...rhw", probs, member)


def fold_parts_by_height(labels: torch.Tensor | np.ndarray, num_parts: int,
                         bounds: Sequence[float] = HEIGHT_BANDS) -> torch.Tensor | np.ndarray:
    """Map a K-part top-to-bottom label map [..., H, W] (0 background, 1..K-1 parts ordered top to bottom,
    as the ISP / HCGA / SS-HSP parsers produce) to the five-region code, by height.

    Rule: in every map, part k goes to the band holding its mean row fraction (pixel centres, (row+0.5)/H):
    head below ``bounds[0]``, upper body below ``bounds[1]``, lower body below ``bounds[2]``, shoes
    beyond. Per map, not per table, so that a crop that cuts the legs still sends the legs to
    "lower". Background stays 0; values >= K (e.g. 255) are kept as they are (counted in no region).
    """
    import torch

    if num_parts < 2:
        raise ValueError("fold_parts_by_height: num_parts counts the background and must be at least 2")
    is_np = isinstance(labels, np.ndarray)
    lab = torch.as_tensor(np.asarray(labels) if is_np else labels).long()
    h, w = lab.shape[-2:]
    flat = lab.reshape(-1, h, w)
    ids = torch.arange(1, num_parts, device=lab.device)
    member = (flat[:, None] == ids[:, None, None]).float()                      # [N, K-1, H, W]
    rows = (torch.arange(h, device=lab.device, dtype=torch.float32) + 0.5) / h
    mean_row = (member.sum(3) * rows).sum(2) / member.sum((2, 3)).clamp_min(1)  # [N, K-1]
    edges = torch.as_tensor(list(bounds), dtype=torch.float32, device=lab.device)
    region = (mean_row[..., None] >= edges).sum(-1) + 1                         # [N, K-1] in 1..4
    is_part = (flat >= 1) & (flat < num_parts)
    mapped = torch.gather(region, 1, (flat.flatten(1) - 1).clamp(0, num_parts - 2)).view_as(flat)
    out = torch.where(is_part, mapped, flat).view_as(lab)
    out = out.to(torch.uint8) if out.numel() == 0 or int(out.max()) < 256 else out
    return out.numpy() if is_np else out


def check_height_bands(bands: Sequence[float], where: str = "bands") -> None:
    """Three increasing row fractions in (0, 1), or a UserError naming ``where``."""
    if len(bands) != 3 or list(bands) != sorted(bands) or not all(0 < b < 1 for b in bands):
        raise UserError(f"{where}: expected three increasing row fractions in (0, 1), got {list(bands)}")
