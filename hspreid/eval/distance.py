"""Pairwise distances between feature sets (torchreid / fast-reid conventions).

* ``"cosine"``: ``1 - <a/|a|, b/|b|>`` (fast-reid ``build_dist`` default, torchreid ``cosine``).
* ``"euclidean"``: **squared** L2 distance ``|a|^2 + |b|^2 - 2<a, b>``, as torchreid's
  ``compute_distance_matrix`` and fast-reid's ``euclidean`` (no square root, clamped at 0).

Inputs may be numpy arrays or torch tensors; computation is float32 (float16/bfloat16/int inputs
are upcast, float64 stays float64) on the device of the torch input (CPU for numpy).
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

METRICS = ("cosine", "euclidean")


def as_float_tensor(x: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    """Return ``x`` as a float tensor (float32 unless it is float64), zero-copy where possible."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    return t if device is None else t.to(device)


def resolve_device(device: torch.device | str | None, *features: object) -> torch.device:
    """``device`` if given, else the device of the first torch tensor among ``features``, else CPU."""
    if device is not None:
        return torch.device(device)
    for f in features:
        if isinstance(f, torch.Tensor):
            return f.device
    return torch.device("cpu")


def l2_normalize(x: ArrayLike, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(|x|_2, eps)`` along ``dim`` (same as ``torch.nn.functional.normalize``)."""
    return torch.nn.functional.normalize(as_float_tensor(x), p=2.0, dim=dim, eps=eps)


def check_metric(metric: str) -> None:
    """Raise ValueError for a metric name other than those in :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def prepare_gallery(b: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-gallery precomputation reused across query blocks: (normalised b, None) for cosine,
    (b, squared norms of b) for squared euclidean."""
    if metric == "cosine":
        return l2_normalize(b), None
    return b, b.pow(2).sum(dim=1)


def block_distance(
    a: torch.Tensor, g: torch.Tensor, g_sqnorm: torch.Tensor | None, metric: str
) -> torch.Tensor:
    """Distances [len(a), len(g)] from a query block to a gallery prepared by :func:`prepare_gallery`."""
    if metric == "cosine":
        return 1.0 - l2_normalize(a) @ g.T
    a_sqnorm = a.pow(2).sum(dim=1, keepdim=True)
    dist = torch.addmm(a_sqnorm + g_sqnorm[None, :], a, g.T, beta=1.0, alpha=-2.0)
    return dist.clamp_(min=0.0)


def pairwise_distance(a: ArrayLike, b: ArrayLike, metric: str = "cosine") -> torch.Tensor:
    """Distance matrix [len(a), len(b)] between feature rows of ``a`` and ``b``.

    ``"cosine"`` = 1 - cosine similarity; ``"euclidean"`` = **squared** L2 (torchreid
    ``compute_distance_matrix`` convention). Returns a float32 tensor (float64 if an input is
    float64) on the device of the inputs (CPU for numpy inputs).
    """
    check_metric(metric)
    ta, tb = as_float_tensor(a), as_float_tensor(b)
    if ta.ndim != 2 or tb.ndim != 2 or ta.shape[1] != tb.shape[1]:
        raise ValueError(f"features must be 2-D with equal width, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    tb = tb.to(device=ta.device, dtype=dtype)
    g, g_sqnorm = prepare_gallery(tb, metric)
    return block_distance(ta.to(dtype), g, g_sqnorm, metric)
