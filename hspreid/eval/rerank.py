"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in O(N·k) memory, on CPU or CUDA.

Same semantics as torchreid ``utils/rerank.py::re_ranking`` (the person-re-ranking Python code),
but nothing of size N x N (N = Q + G) or Q x G is ever held: the constructor of
:class:`KReciprocalReranker` keeps only each item's nearest neighbours and the sparse k-reciprocal
encodings, and :meth:`KReciprocalReranker.distance_block` returns final re-ranked distances for a
block of queries, so it plugs into ``evaluate_features(..., distance_fn=reranker.distance_block)``.

Steps (equation numbers of the paper), over all N = Q + G items, queries first:

0. **Original distance.** ``d`` is :func:`hspreid.eval.distance.block_distance` (``"euclidean"``
   = *squared* L2, ``"cosine"`` = 1 - cos). torchreid squares its input and divides each column of
   the full (N x N) matrix by its max; the matrix is symmetric, so after its transpose row ``i``
   is divided by ``max_j d(i, j)^2`` over all N items. We do the same with ``power=2`` (default):
   ``d0(i, j) = d(i, j)^p / max_k d(i, k)^p`` (a per-item max over all N items, found in the same
   blocked pass as the neighbours). So with ``metric="euclidean"`` the Gaussian weights and the
   λ-term use ``|a-b|^4`` normalised, exactly as torchreid does when fed its own
   ``compute_distance_matrix`` output; this keeps results comparable with published torchreid
   re-ranking numbers. ``power=1`` uses the metric distance as is (the paper's ``exp(-d)``).
   Neighbour ranks do not depend on the power; an item whose max is 0 is divided by 1.
1. **Neighbours.** The top-``max(k1+1, k2)`` neighbours of every item (itself included) from a
   blocked pass over symmetric (block x block) tiles of the N x N matrix, each tile computed once
   and used for its rows and its columns (``torch.topk`` merges, so about ``3 block^2`` floats at a
   time). Ties are broken by the lower index (a stable argsort), exactly: rows whose tie straddles
   the k-th place are recomputed with a full stable sort.
2. **Eq. 1-2, k-reciprocal sets.** ``R(p, k1) = {g in N(p, k1) : p in N(g, k1)}`` where
   ``N(p, k)`` is the first k+1 neighbours (torchreid's ``initial_rank[p, :k + 1]``).
3. **1/2 expansion (eq. 6).** ``R*(p) = R(p, k1) ∪ R(q, kh)`` for each ``q in R(p, k1)`` with
   ``|R(q, kh) ∩ R(p, k1)| > 2/3 |R(q, kh)|``, ``kh = round(k1 / 2)`` (numpy half-to-even).
4. **Eq. 7, Gaussian-kernel encoding.** ``V[p, g] = exp(-d0(p, g))`` for ``g in R*(p)``, then each
   row is divided by its sum (as torchreid). V is sparse CSR: |R*(p)| non-zeros per row.
5. **Eq. 10, local query expansion.** ``V_qe[p] = mean(V[g] for g in N(p, k2)[:k2])`` (the first
   k2 neighbours, p itself included; skipped when ``k2 == 1``), still sparse.
6. **Eq. 11, Jaccard distance.** ``d_J(p, g) = 1 - Σ min(V_p, V_g) / Σ max(V_p, V_g)``, with
   ``Σ max = Σ V_p + Σ V_g - Σ min`` (torchreid writes ``2 - Σ min``, the row sums being 1). ``Σ min``
   runs only over shared support: each query non-zero ``(p, k)`` is expanded against the inverted
   list of column ``k`` (gallery rows with ``V_qe[:, k] > 0``) with ``repeat_interleave`` and summed
   with ``index_add_``, in chunks of at most ``max_expand`` pairs. Pairs with no shared support
   get ``d_J = 1``.
7. **Final distance.** ``d* = (1 - λ) d_J + λ d0``.

Sums that feed V, V_qe and Σ min are accumulated in 2^-40 fixed point (int64), so they are exact up
to 1e-12, independent of summation order, and bit-identical on CPU and CUDA (float atomics on CUDA
are not deterministic). V is kept in float32 as in torchreid; distances are float32 (float64 if the
features are float64). Results match torchreid's ``re_ranking`` to float32 rounding when ties are
absent (torchreid's ``np.argsort`` is unstable on ties; we break them by index).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from .distance import ArrayLike, as_float_tensor, block_distance, check_metric, prepare_gallery, resolve_device

__all__ = ["KReciprocalReranker", "k_reciprocal_rerank", "rerank_distmat"]

_FIXED_SCALE = float(2**40)  # fixed-point unit for deterministic sums of values in [0, ~1]
_GATHER_BYTES = 64 * 2**20  # budget for feature rows gathered at once (pair distances)
_SET_ELEMS = 2**23  # budget for the (rows x k x k x k) comparison tensors of the R* step


# ----------------------------------------------------------------------------- small helpers
def _fixed_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """float64 ``out[index[n]] += values[n]`` via int64 fixed point: order-independent, so
    deterministic on CUDA too. Accurate to ~1e-12 for non-negative values summing to < 2^22."""
    fixed = (values.to(torch.float64) * _FIXED_SCALE).round_().to(torch.int64)
    acc = torch.zeros(size, dtype=torch.int64, device=values.device).index_add_(0, index, fixed)
    return acc.to(torch.float64) / _FIXED_SCALE


def _ragged_positions(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For segments ``[starts[s], starts[s] + lengths[s])`` return (segment id, position) of every
    element, segment by segment (vectorised ``concat(arange(st, st + len))``)."""
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    first = torch.cumsum(lengths, 0) - lengths
    pos = starts[seg] + (torch.arange(seg.numel(), device=lengths.device) - first[seg])
    return seg, pos


def _chunks(counts: torch.Tensor, budget: int) -> Iterator[tuple[int, int]]:
    """Contiguous ranges ``[a, b)`` of ``counts`` whose sums stay <= budget (at least one item each)."""
    cum = torch.cumsum(counts, 0).cpu().numpy()
    n, start = len(cum), 0
    while start < n:
        base = cum[start - 1] if start else 0
        end = max(int(np.searchsorted(cum, base + budget, side="right")), start + 1)
        yield start, end
        start = end


def _as_index(q_idx: Any, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(q_idx, slice):
        return torch.arange(n, device=device)[q_idx]
    t = q_idx if isinstance(q_idx, torch.Tensor) else torch.from_numpy(np.asarray(q_idx).reshape(-1))
    t = t.to(device=device, dtype=torch.int64).reshape(-1)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise IndexError(f"query indices must lie in [0, {n}), got [{int(t.min())}, {int(t.max())}]")
    return t


# ----------------------------------------------------------------------------- step 0-1: neighbours
def _key(dist: torch.Tensor, metric: str, power: int) -> torch.Tensor:
    """A value with the order of ``dist ** power`` (in place): |d| for squared cosine (which can
    dip a rounding error below 0), d itself otherwise (squared euclidean is clamped at 0)."""
    return dist.abs_() if power == 2 and metric == "cosine" else dist


def _merge_topk(best_v: torch.Tensor, best_i: torch.Tensor, rows: slice, tile: torch.Tensor,
                col0: int, kk: int) -> None:
    """Merge the ``kk`` smallest entries of each tile row into the running (best_v, best_i)[rows]."""
    v, i = torch.topk(tile, min(kk, tile.shape[1]), dim=1, largest=False, sorted=False)
    cat_v = torch.cat([best_v[rows], v], dim=1)
    cat_i = torch.cat([best_i[rows], i + col0], dim=1)
    v, pos = torch.topk(cat_v, kk, dim=1, largest=False, sorted=False)
    best_v[rows] = v
    best_i[rows] = torch.gather(cat_i, 1, pos)


def _nearest_neighbours(x: torch.Tensor, sqnorm: torch.Tensor | None, metric: str, power: int,
                        k: int, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices [N, k], keys [N, k], max key [N]) of every item's k nearest items (itself
    included), ordered by (distance, index), from symmetric tiles of the N x N distance matrix."""
    n = x.shape[0]
    kk = min(k + 1, n)  # one extra entry reveals ties straddling the k-th place
    best_v = torch.full((n, kk), float("inf"), dtype=x.dtype, device=x.device)
    best_i = torch.full((n, kk), n, dtype=torch.int64, device=x.device)
    row_max = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
    for a in range(0, n, block):
        ra = slice(a, min(a + block, n))
        for b in range(a, n, block):
            rb = slice(b, min(b + block, n))
            sq = None if sqnorm is None else sqnorm[rb]
            tile = _key(block_distance(x[ra], x[rb], sq, metric), metric, power)
            row_max[ra] = torch.maximum(row_max[ra], tile.amax(dim=1))
            _merge_topk(best_v, best_i, ra, tile, b, kk)
            if b != a:  # the same tile, read by columns, serves the rows of block b
                tile_t = tile.T.contiguous()
                row_max[rb] = torch.maximum(row_max[rb], tile_t.amax(dim=1))
                _merge_topk(best_v, best_i, rb, tile_t, a, kk)
    # order each row by (value, index): sort by index, then stable sort by value
    best_i, order = torch.sort(best_i, dim=1)
    best_v = torch.gather(best_v, 1, order)
    best_v, order = torch.sort(best_v, dim=1, stable=True)
    best_i = torch.gather(best_i, 1, order)
    k = min(k, n)
    if kk > k:  # rows whose k-th value ties with the next: exact stable selection over the full row
        tied = torch.nonzero(best_v[:, k] == best_v[:, k - 1]).flatten()
        step = max(1, block * block // n)  # full rows, about block^2 distances at a time
        for s in range(0, tied.numel(), step):
            rows = tied[s : s + step]
            full = _key(block_distance(x[rows], x, sqnorm, metric), metric, power)
            vals, idx = torch.sort(full, dim=1, stable=True)
            best_v[rows, :k], best_i[rows, :k] = vals[:, :k], idx[:, :k]
    return best_i[:, :k].contiguous(), best_v[:, :k].contiguous(), row_max


# ----------------------------------------------------------------------------- step 2-3: R and R*
def _reciprocal(nbr: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 1-2: mask [N, k]: is ``nbr[i, a]`` k-reciprocal with i, i.e. i in nbr[nbr[i, a], :k]?"""
    n = nbr.shape[0]
    out = torch.empty((n, k), dtype=torch.bool, device=nbr.device)
    step = max(1, _SET_ELEMS // (k * k))
    for s in range(0, n, step):
        e = min(s + step, n)
        back = nbr[nbr[s:e, :k], :k]  # [c, k, k]
        me = torch.arange(s, e, device=nbr.device)[:, None, None]
        out[s:e] = (back == me).any(dim=2)
    return out


def _expanded_sets(nbr: torch.Tensor, k1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R*(p) for every item as CSR-ordered (rows, cols), columns ascending within a row."""
    n = nbr.shape[0]
    k_full = min(k1 + 1, n)
    k_half = min(int(np.around(k1 / 2.0)) + 1, n)
    forward = nbr[:, :k_full]
    recip = _reciprocal(nbr, k_full)
    r_pad = torch.where(recip, forward, torch.full_like(forward, -1))  # R(p, k1), padded with -1
    recip_h = _reciprocal(nbr, k_half)
    rh_pad = torch.where(recip_h, nbr[:, :k_half], torch.full_like(nbr[:, :k_half], -2))  # R(q, kh)
    size_h = recip_h.sum(dim=1).to(torch.float64)
    rows_out, cols_out = [], []
    step = max(1, _SET_ELEMS // (k_full * k_full * k_half))
    for s in range(0, n, step):
        e = min(s + step, n)
        fw = forward[s:e]
        cand = rh_pad[fw]  # [c, k_full, k_half]: R(q, kh) of each forward neighbour q
        overlap = (cand[..., None] == r_pad[s:e, None, None, :]).any(dim=3).sum(dim=2)
        # torchreid: len(intersect1d(R(q,kh), R(p,k1))) > 2. / 3 * len(R(q,kh)), in float64
        accept = recip[s:e] & (overlap.to(torch.float64) > (2.0 / 3) * size_h[fw])
        cand = torch.where(accept[..., None] & (cand >= 0), cand, torch.full_like(cand, -1))
        members = torch.cat([r_pad[s:e], cand.flatten(1)], dim=1).sort(dim=1).values
        prev = torch.cat([torch.full_like(members[:, :1], -1), members[:, :-1]], dim=1)
        keep = (members >= 0) & (members != prev)  # drop padding and duplicates
        r, c = keep.nonzero(as_tuple=True)
        rows_out.append(r + s)
        cols_out.append(members[r, c])
    return torch.cat(rows_out), torch.cat(cols_out)


# ----------------------------------------------------------------------------- step 4: weights
def _pair_keys(x: torch.Tensor, sqnorm: torch.Tensor | None, metric: str, power: int,
               rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Keys of d(rows[n], cols[n]) (the formulas of block_distance, one pair at a time)."""
    out = torch.empty(rows.numel(), dtype=x.dtype, device=x.device)
    step = max(1, _GATHER_BYTES // (2 * x.shape[1] * x.element_size()))
    for s in range(0, rows.numel(), step):
        r, c = rows[s : s + step], cols[s : s + step]
        dot = (x[r] * x[c]).sum(dim=1)
        d = 1.0 - dot if metric == "cosine" else (sqnorm[r] + sqnorm[c] - 2.0 * dot).clamp_(min=0.0)
        out[s : s + step] = _key(d, metric, power)
    return out


def _lookup_keys(nbr: torch.Tensor, nbr_key: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                 x: torch.Tensor, sqnorm: torch.Tensor | None, metric: str, power: int) -> torch.Tensor:
    """Keys of the (row, col) pairs: taken from the neighbour lists when col is a listed
    neighbour of row (most of R*), computed from the features otherwise."""
    out = torch.empty(rows.numel(), dtype=nbr_key.dtype, device=nbr.device)
    step = max(1, _SET_ELEMS // nbr.shape[1])
    for s in range(0, rows.numel(), step):
        r, c = rows[s : s + step], cols[s : s + step]
        hit = nbr[r] == c[:, None]
        found = hit.any(dim=1)
        vals = torch.gather(nbr_key[r], 1, hit.to(torch.int32).argmax(dim=1, keepdim=True)).squeeze(1)
        miss = torch.nonzero(~found).flatten()
        if miss.numel():
            vals[miss] = _pair_keys(x, sqnorm, metric, power, r[miss], c[miss])
        out[s : s + step] = vals
    return out


# ----------------------------------------------------------------------------- public API
class KReciprocalReranker:
    """k-reciprocal re-ranking of queries ``qf`` against gallery ``gf`` in O((Q + G) k) memory.

    The constructor does all the per-item work (neighbours, V, V_qe, inverted index) on
    ``device`` (default: the features' device, else CPU). Then :meth:`distance_block` (also
    ``reranker(q_idx)``) returns the re-ranked distances ``[len(q_idx), G]`` of a query block, ready
    for ``evaluate_features(None, None, ..., distance_fn=reranker.distance_block)``.

    ``metric``: ``"euclidean"`` (squared L2, torchreid's default) or ``"cosine"``; ``power``: 2
    squares the metric distance before the per-item max normalisation as torchreid does, 1 does
    not (see the module docstring); ``block``: tile edge of the N x N neighbour pass (about
    ``3 * block**2`` distances in memory); ``max_expand``: (query entry, gallery row) pairs
    expanded at once in the Jaccard step.
    """

    def __init__(self, qf: ArrayLike, gf: ArrayLike, *, k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3, metric: str = "euclidean", power: int = 2,
                 block: int = 2048, device: torch.device | str | None = None,
                 query_block: int = 256, max_expand: int = 2**21) -> None:
        check_metric(metric)
        if int(k1) < 1 or int(k2) < 1:
            raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
        if not 0.0 <= float(lambda_value) <= 1.0:
            raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value}")
        if power not in (1, 2):
            raise ValueError(f"power must be 1 or 2, got {power}")
        if min(int(block), int(query_block), int(max_expand)) < 1:
            raise ValueError("block, query_block and max_expand must be >= 1")
        self.device = resolve_device(device, qf, gf)
        q, g = as_float_tensor(qf, self.device), as_float_tensor(gf, self.device)
        if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1] or len(q) == 0 or len(g) == 0:
            raise ValueError(f"features must be non-empty 2-D arrays of equal width, got "
                             f"{tuple(q.shape)} and {tuple(g.shape)}")
        self.k1, self.k2, self.lambda_value = int(k1), int(k2), float(lambda_value)
        self.metric, self.power = metric, int(power)
        self.num_q, self.num_g = len(q), len(g)
        self.query_block, self.max_expand = int(query_block), int(max_expand)
        dtype = torch.promote_types(q.dtype, g.dtype)
        with torch.no_grad():
            feats = torch.cat([q.to(dtype), g.to(dtype)])
            del q, g
            self._x, self._sqnorm = prepare_gallery(feats, metric)
            del feats
            self._build(int(block))

    # -- construction --------------------------------------------------------------------------
    def _build(self, block: int) -> None:
        n, nq = self.num_q + self.num_g, self.num_q
        x, sqnorm, metric, power = self._x, self._sqnorm, self.metric, self.power
        # steps 0-1: neighbours and the per-item max of d^p
        k_keep = max(self.k1 + 1, self.k2)
        nbr, nbr_key, row_max = _nearest_neighbours(x, sqnorm, metric, power, k_keep, block)
        scale = row_max.pow(power)
        self._scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        # steps 2-3: R*(p) for every item
        rows, cols = _expanded_sets(nbr, self.k1)
        # step 4, eq. 7: V[p, g] = exp(-d0(p, g)) / sum over R*(p)
        keys = _lookup_keys(nbr, nbr_key, rows, cols, x, sqnorm, metric, power)
        weight = torch.exp(-(keys.pow(power) / self._scale[rows]).to(torch.float32))
        vals = weight / _fixed_sum(weight, rows, n).to(torch.float32)[rows]
        # step 5, eq. 10: V_qe[p] = mean of V over p's first k2 neighbours
        k2 = min(self.k2, n)
        if k2 > 1:
            rows, cols, vals = self._query_expansion(nbr[:, :k2], rows, cols, vals, n)
        del nbr, nbr_key
        self._row_sum = _fixed_sum(vals, rows, n)  # Σ V_qe[p], float64
        # query rows stay CSR; gallery rows become the inverted index (CSC over all N columns)
        is_q = rows < nq
        self._q_ptr = self._pointers(rows[is_q], nq)
        self._q_col, self._q_val = cols[is_q], vals[is_q]
        g_rows, g_cols, g_vals = rows[~is_q] - nq, cols[~is_q], vals[~is_q]
        order = torch.sort(g_cols, stable=True).indices  # rows stay ascending within a column
        self._inv_ptr = self._pointers(g_cols[order], n)
        self._inv_row, self._inv_val = g_rows[order], g_vals[order]
        self._inv_cnt = self._inv_ptr[1:] - self._inv_ptr[:-1]
        self.nnz = int(vals.numel())

    @staticmethod
    def _pointers(sorted_ids: torch.Tensor, size: int) -> torch.Tensor:
        counts = torch.bincount(sorted_ids, minlength=size)
        return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])

    def _query_expansion(self, nbr_k2: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                         vals: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 10 on the CSR V: each row p gathers the rows of its k2 neighbours, equal columns
        are summed (fixed point) and divided by k2. Returns V_qe as CSR (rows, cols, vals)."""
        k2 = nbr_k2.shape[1]
        ptr = self._pointers(rows, n)
        length = ptr[1:] - ptr[:-1]
        per_row = length[nbr_k2].sum(dim=1)  # entries gathered for each row p
        out_r, out_c, out_v = [], [], []
        for a, b in _chunks(per_row, self.max_expand):
            src = nbr_k2[a:b].reshape(-1)  # neighbour rows, p-major, in neighbour order
            seg, pos = _ragged_positions(ptr[src], length[src])
            dest = seg // k2 + a
            key = dest * n + cols[pos]
            uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
            summed = _fixed_sum(vals[pos], inverse, uniq.numel())
            out_r.append(uniq // n)
            out_c.append(uniq % n)
            out_v.append((summed / k2).to(torch.float32))
        return torch.cat(out_r), torch.cat(out_c), torch.cat(out_v)

    # -- re-ranked distances -------------------------------------------------------------------
    def original_block(self, q_idx: Any) -> torch.Tensor:
        """The normalised original distances d0 = d^p / max_k d(q, k)^p, [len(q_idx), G]."""
        idx = _as_index(q_idx, self.num_q, self.device)
        with torch.no_grad():
            return self._original(idx)

    def _original(self, idx: torch.Tensor) -> torch.Tensor:
        nq = self.num_q
        g_sq = None if self._sqnorm is None else self._sqnorm[nq:]
        d = _key(block_distance(self._x[idx], self._x[nq:], g_sq, self.metric), self.metric, self.power)
        if self.power == 2:
            d = d.square_()
        return d.div_(self._scale[idx, None])

    def jaccard_block(self, q_idx: Any) -> torch.Tensor:
        """Eq. 11 Jaccard distances d_J (float64) of the queries ``q_idx`` to the gallery."""
        idx = _as_index(q_idx, self.num_q, self.device)
        with torch.no_grad():
            return self._jaccard(idx)

    def _jaccard(self, idx: torch.Tensor) -> torch.Tensor:
        b, ng, dev = idx.numel(), self.num_g, self.device
        ent_row, ent_pos = _ragged_positions(self._q_ptr[idx], self._q_ptr[idx + 1] - self._q_ptr[idx])
        ent_col, ent_val = self._q_col[ent_pos], self._q_val[ent_pos]
        counts = self._inv_cnt[ent_col]
        acc = torch.zeros(b * ng, dtype=torch.int64, device=dev)
        for a, e in _chunks(counts, self.max_expand):
            rep, pos = _ragged_positions(self._inv_ptr[ent_col[a:e]], counts[a:e])
            rep += a
            m = torch.minimum(ent_val[rep], self._inv_val[pos])
            fixed = (m.to(torch.float64) * _FIXED_SCALE).round_().to(torch.int64)
            acc.index_add_(0, ent_row[rep] * ng + self._inv_row[pos], fixed)
        s_min = acc.view(b, ng).to(torch.float64).div_(_FIXED_SCALE)
        s_max = self._row_sum[idx, None] + self._row_sum[None, self.num_q:] - s_min
        jac = 1.0 - s_min / s_max.clamp_(min=1e-300)
        return jac.masked_fill_(s_min <= 0, 1.0)  # no shared support: d_J = 1

    def distance_block(self, q_idx: Any) -> torch.Tensor:
        """Final re-ranked distances ``(1 - λ) d_J + λ d0`` of the queries ``q_idx`` (array of
        query indices, a slice or a tensor) to every gallery item: ``[len(q_idx), G]`` on
        ``self.device``, float32 (float64 for float64 features)."""
        idx = _as_index(q_idx, self.num_q, self.device)
        lam = self.lambda_value
        parts = []
        with torch.no_grad():
            for s in range(0, max(idx.numel(), 1), self.query_block):
                sub = idx[s : s + self.query_block]
                orig = self._original(sub)
                if lam == 1.0:
                    parts.append(orig)
                    continue
                final = self._jaccard(sub).mul_(1.0 - lam)  # eq. 11 weighted by 1 - λ
                if lam > 0.0:
                    final.add_(orig.to(torch.float64), alpha=lam)
                parts.append(final.to(orig.dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    __call__ = distance_block


def k_reciprocal_rerank(qf: ArrayLike, gf: ArrayLike, *, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3, metric: str = "euclidean", power: int = 2,
                        block: int = 2048, device: torch.device | str | None = None) -> KReciprocalReranker:
    """Prepare k-reciprocal re-ranking; the returned object is a ``distance_fn(q_idx) -> [b, G]``
    for :func:`hspreid.eval.evaluate_features` (see :class:`KReciprocalReranker`)."""
    return KReciprocalReranker(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value, metric=metric,
                               power=power, block=block, device=device)


def rerank_distmat(qf: ArrayLike, gf: ArrayLike, *, k1: int = 20, k2: int = 6,
                   lambda_value: float = 0.3, metric: str = "euclidean", power: int = 2,
                   block: int = 2048, device: torch.device | str | None = None) -> np.ndarray:
    """The dense re-ranked [Q, G] distance matrix as numpy (for small inputs and tests)."""
    rr = k_reciprocal_rerank(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value, metric=metric,
                             power=power, block=block, device=device)
    return rr.distance_block(np.arange(rr.num_q)).cpu().numpy()
