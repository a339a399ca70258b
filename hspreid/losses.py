"""Losses and the criterion that sums the terms a method's config names.

A loss term is ``{"weight": w, "heads": [head names], ...options}``; the model's outputs carry
``features[head]`` (for metric losses) and ``logits[head]`` (for identity losses).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F

from hspreid.errors import UserError


def identity_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy with label smoothing (Szegedy et al., 2016), as in BoT / ISP eq. 7."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al., 2017) on Euclidean distances.

    For each anchor: hardest positive (farthest same label) and hardest negative (closest other
    label); loss = mean(relu(d_ap - d_an + margin)). Anchors without a positive or a negative
    are left out.
    """
    x = features.float()
    dist = torch.cdist(x, x).clamp_min(1e-12)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        return x.sum() * 0.0
    d_ap = torch.where(pos_mask, dist, torch.full_like(dist, -1.0)).amax(1)
    d_an = torch.where(neg_mask, dist, torch.full_like(dist, float("inf"))).amin(1)
    return F.relu(d_ap - d_an + margin)[valid].mean()


def _head_identity_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Identity loss of one head: logits [B, classes], or [B, P, classes] for P features of one kind
    (e.g. SS-HSP's K+1 local features), each classified, the losses averaged."""
    if logits.dim() == 3:
        return identity_loss(logits.flatten(0, 1), labels.repeat_interleave(logits.shape[1]), label_smoothing)
    return identity_loss(logits, labels, label_smoothing)


def _id_term(out: dict, batch: dict, heads: list[str], label_smoothing: float = 0.1) -> torch.Tensor:
    return sum(_head_identity_loss(out["logits"][h], batch["label"], label_smoothing) for h in heads) / len(heads)


def _triplet_term(out: dict, batch: dict, heads: list[str], margin: float = 0.3) -> torch.Tensor:
    return sum(batch_hard_triplet(out["features"][h], batch["label"], margin) for h in heads) / len(heads)


def parsing_loss(part_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """ISP eq. 6: pixel-wise cross-entropy of the part classifier against pseudo part labels.

    ``part_logits`` [N, K, h, w]; ``labels`` [N, H, W] (any resolution: nearest-resized to h x w);
    pixels labelled ``ignore_index`` do not count. Averaged over counted pixels (eq. 6 sums; the
    reference code averages, which only rescales alpha).
    """
    if labels.shape[-2:] != part_logits.shape[-2:]:
        labels = F.interpolate(labels[:, None].float(), size=part_logits.shape[-2:], mode="nearest")[:, 0]
    return F.cross_entropy(part_logits.float(), labels.long(), ignore_index=ignore_index)


def _parsing_term(out: dict, batch: dict, heads: list[str], ignore_index: int = 255) -> torch.Tensor:
    return parsing_loss(out["part_logits"], batch["part_labels"].flatten(0, 1), ignore_index)


def ssn_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SSN3D eq. 4: L_SSN = -sum_i log softmax_j(p_{i,j})[i], the 2nd-round cross-entropy of each part
    tensor Y^i against its own part label i.

    ``logits`` [M, N, N] (image m, part feature i, scores over the N parts: eq. 4's p_{i,j}, used as
    the softmax's inputs), ``targets`` [M, N] long (i for row i). Summed over the N parts as in eq. 4,
    averaged over the M images (frames); with unshared classifiers (SSN3D Table 2) this is the mean
    of the T per-frame losses rather than their sum, i.e. lambda / T.
    """
    m = logits.shape[0]
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten().long(), reduction="sum") / max(m, 1)


def _ssn_term(out: dict, batch: dict, heads: list[str]) -> torch.Tensor:
    return ssn_loss(out["ssn_logits"], out["ssn_targets"])


LOSS_TERMS: dict[str, Callable[..., torch.Tensor]] = {"id": _id_term, "triplet": _triplet_term,
                                                      "parsing": _parsing_term, "ssn": _ssn_term}


class Criterion:
    """Weighted sum of the loss terms in a method's ``losses`` config."""

    def __init__(self, cfg: dict[str, dict[str, Any]]):
        self.terms = []
        for name, term in cfg.items():
            if name not in LOSS_TERMS:
                raise UserError(f"losses: unknown loss {name!r}; expected one of {sorted(LOSS_TERMS)}")
            term = dict(term)
            weight = float(term.pop("weight", 1.0))
            heads = list(term.pop("heads", ["global"]))
            allowed = set(inspect.signature(LOSS_TERMS[name]).parameters) - {"out", "batch", "heads"}
            unknown = sorted(set(term) - allowed)
            if unknown:
                raise UserError(f"losses.{name}: unknown option(s) {unknown}; expected some of "
                                f"{sorted(allowed | {'weight', 'heads'})}")
            if weight:
                self.terms.append((name, weight, heads, term))

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = 0.0, {}
        for name, weight, heads, opts in self.terms:
            value = LOSS_TERMS[name](outputs, batch, heads, **opts)
            total = total + weight * value
            parts[name] = float(value.detach())
        return total, parts
