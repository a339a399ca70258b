"""Part-aware query-gallery distances, computed a block of queries at a time.

Modes (``rank.distance`` in a method config):

* ``global``: distance of the global feature (the baseline): cosine, or squared euclidean with
  ``metric="euclidean"`` (torchreid's convention);
* ``concat``: cosine distance of the concatenation of L2-normalised components (each part of a
  ``parts`` array normalised on its own) -- SPReID's combined representation, SS-HSP's test feature;
* ``isp``: ISP eq. 10, ``d = (sum_k l_k^q l_k^g d_k + d_g + d_f) / (sum_k l_k^q l_k^g + 2)`` with
  cosine distances ``d = 1 - cos`` (eq. 9) and visibility ``l_k`` (eq. 8);
* ``hcga``: HCGA eq. 10, ``sim = (cos_f + 1/2 sum_i P_i cos_i) / (1 + SV)``, ``P_i`` = part i visible
  in both, ``SV`` = number of shared visible parts; the distance is ``1 - sim``.

The visibility-weighted sums over parts are matrix products -- ``sum_k l_k^q l_k^g cos_k`` is
``(l^q * F^q) . (l^g * F^g)`` over the flattened, per-part normalised features -- so a block costs
two matmuls and O(block x G) memory, never O(block x G x K).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from hspreid.errors import UserError

from .distance import ArrayLike, as_float_tensor, block_distance, check_metric, l2_normalize, prepare_gallery

DISTANCE_MODES = ("global", "concat", "isp", "hcga")
_NEEDS = {"global": ("global",), "concat": (), "isp": ("global", "foreground", "parts", "visible"),
          "hcga": ("foreground", "parts", "visible")}


def _normalised(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """L2-normalise the last dim; a [N, K, D] parts array is normalised part by part."""
    if not inplace:
        return l2_normalize(x, dim=-1)
    return x.div_(x.norm(dim=-1, keepdim=True).clamp_(min=1e-12))


def _weighted_parts(parts: ArrayLike, visible: torch.Tensor, inplace: bool, device: torch.device | None,
                    chunk: int = 1024) -> torch.Tensor:
    """[N, K, D] parts, [N, K] visibility -> [N, K*D] of visibility-masked, per-part normalised features.

    Float16 parts stay float16 (half the memory; each chunk is normalised in float32 and written
    back), so K x D part features of a Market-size gallery fit in well under 1.5 GB.
    """
    t = parts if isinstance(parts, torch.Tensor) else torch.from_numpy(np.asarray(parts))
    if t.dtype != torch.float16:
        t = as_float_tensor(t)
    elif not inplace:
        t = t.clone()
    if t.dtype != torch.float16:
        out = _normalised(t, inplace).mul_(visible[..., None].to(t.dtype)).flatten(1)
        return out if device is None else out.to(device)
    for s in range(0, len(t), chunk):
        block = _normalised(t[s:s + chunk].float(), True).mul_(visible[s:s + chunk, :, None].float())
        t[s:s + chunk] = block.half()
    return (t if device is None else t.to(device)).flatten(1)


def _matmul_t(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``a @ b.T`` in float32; a float16 ``b`` is upcast a chunk of rows at a time."""
    a = a.float()
    if b.dtype == torch.float32:
        return a @ b.T
    return torch.cat([a @ b[s:s + chunk].float().T for s in range(0, len(b), chunk)], dim=1)


class PartAwareDistance:
    """``distance_block(q_idx) -> [len(q_idx), G]`` for one of :data:`DISTANCE_MODES`.

    ``query`` and ``gallery`` map feature names (``global``, ``foreground``, ``parts`` [N,K,D],
    ``visible`` [N,K] bool, ...) to arrays. The gallery side is prepared once on ``device``.
    ``inplace=True`` normalises float32 CPU arrays where they are (no copy: peak memory stays at
    the size of the features, e.g. K = 6 parts at Market size); the caller's arrays change.
    Float16 ``parts`` are kept in float16 and upcast a chunk at a time.
    """

    def __init__(self, query: Mapping[str, ArrayLike], gallery: Mapping[str, ArrayLike], mode: str = "global",
                 *, components: Sequence[str] | None = None, metric: str = "cosine",
                 device: torch.device | str = "cpu", inplace: bool = False):
        check_metric(metric)
        if metric != "cosine" and mode != "global":
            raise UserError(f"rank.metric {metric!r} applies to distance 'global' only; {mode!r} uses cosine")
        if mode not in DISTANCE_MODES:
            raise UserError(f"rank.distance: expected one of {DISTANCE_MODES}, got {mode!r}")
        needed = list(_NEEDS[mode]) + (list(components or ["global"]) if mode == "concat" else [])
        missing = [k for k in needed if k not in query or k not in gallery]
        if missing:
            raise UserError(f"rank.distance {mode!r} needs features {missing}, which features.zarr does not hold "
                            f"(it has {sorted(query)})")
        self.mode, self.metric, self.device = mode, metric, torch.device(device)
        self.components = list(components or ["global"])
        self.inplace = inplace
        self.q = self._prepare(query, on_device=False)
        self.g = self._prepare(gallery, on_device=True)
        self.num_gallery = len(next(iter(self.g.values())))
        self._gallery: tuple | None = None

    def representation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, gallery) single-vector features this distance compares (global and concat
        modes), e.g. for k-reciprocal re-ranking."""
        if self.mode not in ("global", "concat"):
            raise UserError(f"rank.rerank needs one feature vector per item: use distance 'global' or "
                            f"'concat', not {self.mode!r}")
        key = "g" if self.mode == "global" else "c"
        return self.q[key], self.g[key]

    def _prepare(self, feats: Mapping[str, ArrayLike], on_device: bool) -> dict[str, torch.Tensor]:
        dev = self.device if on_device else None

        def t(name: str) -> torch.Tensor:
            return as_float_tensor(feats[name], dev)

        if self.mode == "global":
            return {"g": t("global")}
        if self.mode == "concat":
            parts = [_normalised(t(c)).flatten(1) for c in self.components]
            return {"c": _normalised(torch.cat(parts, dim=1))}
        vis = t("visible")
        out = {"f": _normalised(t("foreground"), self.inplace),
               "p": _weighted_parts(feats["parts"], vis.cpu(), self.inplace, dev), "v": vis}
        if self.mode == "isp":
            out["g"] = _normalised(t("global"), self.inplace)
        return out

    def distance_block(self, q_idx: np.ndarray) -> torch.Tensor:
        """Distances from the queries ``q_idx`` to the whole gallery."""
        q = {k: v[torch.as_tensor(q_idx)].to(self.device) for k, v in self.q.items()}
        g = self.g
        if self.mode == "global":
            if self._gallery is None:  # prepared once: normalised (cosine) or with squared norms
                self._gallery = prepare_gallery(g["g"], self.metric)
            return block_distance(q["g"], *self._gallery, self.metric)
        if self.mode == "concat":
            return 1.0 - q["c"] @ g["c"].T
        shared = q["v"] @ g["v"].T                     # number of shared visible parts
        part_cos = _matmul_t(q["p"], g["p"])           # sum of cosines over shared visible parts
        cos_f = q["f"] @ g["f"].T
        if self.mode == "isp":                         # ISP eq. 10, with d = 1 - cos (eq. 9)
            d_sum = (shared - part_cos) + (1.0 - q["g"] @ g["g"].T) + (1.0 - cos_f)
            return d_sum / (shared + 2.0)
        sim = (cos_f + 0.5 * part_cos) / (1.0 + shared)  # HCGA eq. 10
        return 1.0 - sim
