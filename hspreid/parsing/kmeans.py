"""Batched clustering primitives for ISP's cascaded clustering: exact 1-D 2-means and masked batched Lloyd k-means.

Both work on a batch of B independent problems ("groups", e.g. identities) padded to a common
length n and masked, so one call handles many identities with a handful of tensor ops; they run on
whatever device the input lives on.

* :func:`two_means_1d` -- exact 1-D 2-means. The optimal 2-partition of 1-D data is contiguous in
  sorted order, so sorting once and scoring every split point with prefix sums (float64) finds the
  global optimum in O(n log n). No initialisation, no iterations, deterministic.
* :func:`batched_kmeans` -- Lloyd's algorithm on [B, n, d] with a [B, n] validity mask, groups
  stopping independently (scikit-learn's tolerance rule). Two exact variants of the iteration:
  dense (default on CUDA: one batched matmul for the distances and one for the centroid sums per
  iteration, bitwise deterministic) and bound-pruned (default on CPU: Hamerly's upper/lower
  bounds skip the points whose cluster provably cannot change, the others are gathered per group,
  and the centroid sums are updated from the points that moved -- after the first iterations an
  iteration touches a small fraction of the data). Both give the same assignments up to float
  rounding. ``init_sample`` optionally seeds from a random subsample of each group; ``n_init``
  seedings, each refined by a few Lloyd iterations on that subsample, keep the best (lowest
  inertia there) as the start of the full Lloyd.

Random draws (k-means++ / random init) come from one CPU ``torch.Generator`` per group, seeded with
that group's seed, and are drawn in a fixed amount independent of the group's size and position.
A group therefore gets exactly the same clustering alone or inside any batch, on CPU or CUDA (up
to float rounding of the matmuls), given the same seed.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from hspreid.errors import UserError

INITS = ("kmeans++", "random", "deterministic")
_DENSE_FRACTION = 0.5     # pruned Lloyd: a group with more candidates than this fraction is done densely
_INIT_ITERS = 10          # n_init > 1: Lloyd iterations (at most) refining each seeding on the subsample


class Workspace:
    """Reusable scratch buffers, grown (by >= 1.5x) but never shrunk. On the CPU a fresh large
    allocation is paid again in page faults every time (glibc maps blocks > 32 MB anew), which
    costs as much as the k-means passes themselves; callers that cluster batch after batch pass
    one Workspace to every call."""

    def __init__(self):
        self.bufs: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple, dtype, device) -> torch.Tensor:
        numel = int(np.prod(shape))
        key = (name, dtype, str(device))
        buf = self.bufs.pop(key, None)
        if buf is None or buf.numel() < numel:
            grow = 0 if buf is None else int(buf.numel() * 1.5)
            del buf
            buf = torch.empty(max(numel, grow), dtype=dtype, device=device)
        self.bufs[key] = buf
        return buf[:numel].view(shape)

    def reserve(self, name: str, numel: int, dtype, device) -> None:
        """Make sure the next ``get`` of up to ``numel`` elements does not allocate."""
        self.get(name, (int(numel),), dtype, device)


# ----------------------------------------------------------------------------------------------
# exact 1-D 2-means
# ----------------------------------------------------------------------------------------------

def two_means_1d(values: torch.Tensor, mask: torch.Tensor | None = None, *,
                 return_threshold: bool = False):
    """Exact 1-D 2-means of each group: values [B, n] (or [n]), mask [B, n] bool (valid entries).

    Returns a bool assignment ``upper`` [B, n]: True for the valid points of the cluster with the
    higher mean, False for the lower cluster and for masked points. With ``return_threshold=True``
    returns ``(upper, threshold [B])`` where ``upper == mask & (values > threshold)``.

    Method: sort each group, evaluate the within-cluster SSE of every split "first i points | the
    rest" with float64 prefix sums of the (group-centred) values, take the argmin. Only splits
    between *distinct* values are considered, so equal values always land in the same cluster
    (this loses nothing: an optimal split never needs to cut a run of equal values). Ties in SSE
    go to the first (lowest) split point, so the result is deterministic.

    Degenerate groups -- no valid point, one valid point, or all valid values equal -- have no
    split: every valid point is put in the upper cluster and the threshold is ``-inf``.
    """
    squeeze = values.dim() == 1
    if squeeze:
        values = values[None]
        mask = None if mask is None else mask[None]
    if values.dim() != 2:
        raise UserError(f"two_means_1d: values must be [B, n] or [n], got shape {tuple(values.shape)}")
    if mask is None:
        mask = torch.ones_like(values, dtype=torch.bool)
    if mask.shape != values.shape:
        raise UserError(f"two_means_1d: mask shape {tuple(mask.shape)} != values shape {tuple(values.shape)}")
    mask = mask.to(torch.bool)
    B, n = values.shape
    if n == 0:
        upper = torch.zeros_like(mask)
        thr = torch.full((B,), -math.inf, dtype=torch.float64, device=values.device)
        return (upper, thr) if return_threshold else upper

    v = values.to(torch.float64)
    cnt = mask.sum(1)                                                  # [B]
    vs = values if values.dtype in (torch.float32, torch.float64) else v
    v_inf = torch.where(mask, vs, torch.full_like(vs, math.inf))
    if v_inf.device.type == "cpu":
        s = torch.from_numpy(np.sort(v_inf.numpy(), axis=1)).to(torch.float64)   # numpy's sort is ~3x faster
    else:
        s = torch.sort(v_inf, dim=1)[0].to(torch.float64)              # valid values first, ascending
    valid = torch.arange(n, device=v.device)[None] < cnt[:, None]      # [B, n] prefix of sorted valid
    mean = torch.where(mask, v, torch.zeros_like(v)).sum(1) / cnt.clamp(min=1)
    c = torch.where(valid, s - mean[:, None], torch.zeros_like(s))     # centred: less cancellation
    S1 = torch.cumsum(c, 1)
    S2 = torch.cumsum(c * c, 1)
    T1, T2 = S1[:, -1:], S2[:, -1:]
    nl = torch.arange(1, n + 1, device=v.device, dtype=torch.float64)[None]   # points left of split i
    nr = cnt[:, None].to(torch.float64) - nl
    sse = (S2 - S1 * S1 / nl) + ((T2 - S2) - (T1 - S1) ** 2 / nr.clamp(min=1))
    # split after sorted position i is allowed if both sides are non-empty and s[i] < s[i+1]
    ok = torch.zeros_like(valid)
    if n > 1:
        ok[:, :-1] = (nr[:, :-1] >= 1) & (s[:, :-1] < s[:, 1:])
    sse = torch.where(ok, sse, torch.full_like(sse, math.inf))
    best = sse.argmin(1)                                               # first minimum
    has_split = ok.any(1)
    thr = torch.where(has_split, s.gather(1, best[:, None])[:, 0],
                      torch.full((B,), -math.inf, dtype=torch.float64, device=v.device))
    upper = mask & (v > thr[:, None])
    if squeeze:
        upper, thr = upper[0], thr[0]
    return (upper, thr) if return_threshold else upper


def sse_1d(values: torch.Tensor, mask: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Within-cluster SSE [B] (float64) of a 2-cluster assignment ``upper`` of masked 1-D values."""
    v = values.to(torch.float64)
    out = torch.zeros(v.shape[0], dtype=torch.float64, device=v.device)
    for part in (mask & upper, mask & ~upper):
        n = part.sum(1).clamp(min=1)
        m = torch.where(part, v, torch.zeros_like(v)).sum(1) / n
        out += torch.where(part, (v - m[:, None]) ** 2, torch.zeros_like(v)).sum(1)
    return out


# ----------------------------------------------------------------------------------------------
# batched k-means
# ----------------------------------------------------------------------------------------------

def _group_seeds(seed, B: int) -> list[int]:
    if isinstance(seed, torch.Tensor):
        seed = seed.item() if seed.dim() == 0 else seed.reshape(-1).tolist()
    if isinstance(seed, (int, np.integer)):
        return [int(seed)] * B
    seeds = [int(s) for s in seed]
    if len(seeds) != B:
        raise UserError(f"batched_kmeans: got {len(seeds)} seeds for {B} groups")
    return seeds


def _uniforms(seeds: Sequence[int], count: int, device) -> torch.Tensor:
    """[B, count] float64 uniforms in [0, 1), row b from a CPU generator seeded with seeds[b]."""
    rows = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s) % (2 ** 63))
        rows.append(torch.rand(count, generator=g, dtype=torch.float64))
    return torch.stack(rows).to(device)


def _sample(weights: torch.Tensor, u: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Index [B] drawn with probability proportional to ``weights`` [B, n] (>= 0) using uniforms
    ``u`` [B]; rows whose weights sum to 0 draw from ``fallback`` [B, n] (validity mask) instead;
    rows where both are 0 get index 0."""
    w = weights.to(torch.float64)
    tot = w.sum(1)
    w = torch.where((tot > 0)[:, None], w, fallback.to(torch.float64))
    cum = torch.cumsum(w, 1)
    tot = cum[:, -1]
    idx = torch.searchsorted(cum, (u * tot)[:, None].contiguous(), right=True)[:, 0]
    ar = torch.arange(w.shape[1], device=w.device)
    last = torch.where(w > 0, ar[None], torch.zeros_like(ar)[None]).amax(1)   # last positive weight
    return torch.minimum(idx, last)


def _sqdist_to(x: torch.Tensor, xsq: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances [B, n, m] from points x [B, n, d] to centres c [B, m, d], clamped >= 0."""
    csq = (c * c).sum(-1)
    d = torch.baddbmm(csq[:, None, :], x, c.transpose(1, 2), alpha=-2.0)
    return d.add_(xsq[..., None]).clamp_(min=0)


def _init_kmeanspp(x, xsq, mask, k, seeds):
    """Greedy k-means++ (as scikit-learn: 2 + floor(ln k) candidates per centre, keep the one
    that lowers the potential most), batched over groups; masked points have weight 0."""
    B, n, d = x.shape
    trials = 2 + int(math.log(k))
    u = _uniforms(seeds, 1 + (k - 1) * trials, x.device)
    maskf = mask.to(x.dtype)
    ar = torch.arange(B, device=x.device)
    first = _sample(maskf, u[:, 0], mask)
    C = x.new_zeros(B, k, d)
    C[:, 0] = x[ar, first]
    closest = _sqdist_to(x, xsq, C[:, :1])[..., 0] * maskf            # [B, n]
    for c in range(1, k):
        cands = torch.stack([_sample(closest, u[:, 1 + (c - 1) * trials + t], mask)
                             for t in range(trials)], 1)                # [B, T]
        cx = x[ar[:, None], cands]                                       # [B, T, d]
        dc = _sqdist_to(x, xsq, cx).transpose(1, 2)                      # [B, T, n]
        pot_all = torch.minimum(closest[:, None, :], dc) * maskf[:, None, :]
        pot = pot_all.to(torch.float64).sum(-1)                          # [B, T]
        best = pot.argmin(1)
        C[:, c] = cx[ar, best]
        closest = pot_all[ar, best]
    return C


def _init_random(x, mask, k, seeds):
    """k distinct valid points chosen uniformly (faiss's default init); fewer valid points than k:
    the chosen points repeat."""
    B, n, d = x.shape
    C = x.new_zeros(B, k, d)
    counts = mask.sum(1).tolist()
    for b, s in enumerate(seeds):
        m = int(counts[b])
        if m == 0:
            continue
        g = torch.Generator().manual_seed(int(s) % (2 ** 63))
        pick = torch.randperm(m, generator=g)[:k]
        if m < k:
            pick = pick.repeat((k + m - 1) // m)[:k]
        valid_idx = mask[b].nonzero()[:, 0]
        C[b] = x[b, valid_idx[pick.to(x.device)]]
    return C


def _init_deterministic(x, xsq, mask, k):
    """Farthest-first traversal: the valid point nearest the group mean, then repeatedly the valid
    point farthest from the chosen ones (ties: lowest index). No randomness."""
    B, n, d = x.shape
    maskf = mask.to(x.dtype)
    ar = torch.arange(B, device=x.device)
    mean = (x.sum(1) / maskf.sum(1).clamp(min=1)[:, None])[:, None, :]
    d0 = _sqdist_to(x, xsq, mean)[..., 0].masked_fill(~mask, math.inf)
    C = x.new_zeros(B, k, d)
    C[:, 0] = x[ar, d0.argmin(1)]
    closest = _sqdist_to(x, xsq, C[:, :1])[..., 0]
    for c in range(1, k):
        far = closest.masked_fill(~mask, -1.0).argmax(1)
        C[:, c] = x[ar, far]
        closest = torch.minimum(closest, _sqdist_to(x, xsq, C[:, c:c + 1])[..., 0])
    return C


def _unit(C: torch.Tensor) -> torch.Tensor:
    return C / C.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _dense_dist(x, xsq, Ce):
    """Squared distances [B, n, k] of every point to the (effective) centroids Ce [B, k, d]."""
    csq = (Ce * Ce).sum(-1)
    return torch.baddbmm(csq[:, None, :], x, Ce.transpose(1, 2), alpha=-2.0).add_(xsq[..., None]).clamp_(min=0)


def _full_sums(x, lab, maskf, k):
    B, n, _ = x.shape
    onehot = x.new_zeros(B, n, k).scatter_(2, lab[..., None], maskf[..., None])
    return torch.bmm(onehot.transpose(1, 2), x), onehot.sum(1)


def _own_sqdist(x, xsq, Ce, lab):
    """Exact squared distance [G, n] of every point of x [G, n, d] to its own centroid."""
    c = Ce.gather(1, lab[..., None].expand(-1, -1, x.shape[-1]))
    return (xsq - 2 * (x * c).sum(-1) + (c * c).sum(-1)).clamp(min=0)


def _lloyd(x, xsq, mask, C, iters: int, tol: float, cosine: bool, pruned: bool | None = None,
           ws: Workspace | None = None):
    """Masked batched Lloyd iterations from centroids C [B, k, d].

    x must be contiguous and zero at masked points (unit rows for cosine). Returns
    ``(labels [B, n] (-1 at masked points), C, inertia [B] float64, n_iter [B])``; the labels are
    always the assignment to the returned centroids (the last update is followed by an assignment,
    scikit-learn's final E-step).

    * Stopping, per group, as scikit-learn: after an update, a group stops when its squared
      centroid shift is <= tol x (mean per-feature variance of its points) (a zero shift -- labels
      unchanged -- always stops it). A stopped group is frozen, so its result does not depend on
      its batch mates; ``n_iter`` counts its updates (<= iters).
    * Empty clusters of a running group are reseeded to the valid points farthest from their
      centroid (largest first; ties: lowest index); if the group has no point left for one, its
      centroid stays where it was.
    * cosine: centroids are re-normalised means and points go to the largest cosine, which for
      unit points is the nearest normalised centroid -- so both variants share the code below
      with Ce = C (euclidean) or Ce = C / |C| (cosine).
    * ``pruned`` (default on CPU): Hamerly's bounds -- per point an upper bound on the distance to
      its centroid and a lower bound on the distance to the second closest, moved by the centroid
      shifts, plus half the centroid-centroid distances -- so after the first iterations only the
      points that may change cluster are re-examined (gathered per group), and the centroid sums
      are updated from the points that moved. Same assignments as the dense path up to float
      rounding (a 1e-5 safety margin re-examines near-ties). The dense path (default on CUDA)
      recomputes everything with batched matmuls every iteration and is bitwise deterministic.
    """
    B, n, d = x.shape
    k = C.shape[1]
    if pruned is None:
        pruned = x.device.type == "cpu"
    maskf = mask.to(x.dtype)
    nvalid = maskf.sum(1)
    active = nvalid > 0
    n_iter = torch.zeros(B, dtype=torch.long, device=x.device)
    flat = x.view(B * n, d)
    xsq_flat = xsq.reshape(-1)
    Ce = _unit(C) if cosine else C
    dd = _dense_dist(x, xsq, Ce)
    lab = dd.argmin(-1)
    sums, counts = _full_sums(x, lab, maskf, k)
    mean = sums.sum(1) / nvalid.clamp(min=1)[:, None]
    var = ((xsq * maskf).sum(1) / nvalid.clamp(min=1) - (mean * mean).sum(1)).clamp(min=0) / d
    tolb = tol * var
    gbuf = None
    if pruned:
        d1 = dd.gather(-1, lab[..., None])[..., 0]
        u = d1.sqrt()                                           # [B, n] upper bound to own centroid
        l = dd.scatter_(-1, lab[..., None], math.inf).amin(-1).sqrt_() if k > 1 else torch.full_like(u, math.inf)
        margin = 1e-5 * (1.0 + float(xsq.max().sqrt())) if xsq.numel() else 1e-5
        nval = nvalid.tolist()
    del dd
    for _ in range(iters):
        if not bool(active.any()):
            break
        newC = sums / counts.clamp(min=1)[..., None]
        if cosine:
            newC = _unit(newC)
        empty = (counts == 0) & active[:, None]
        if bool(empty.any()):
            newC = torch.where(empty[..., None], C, newC)
            g = empty.any(1).nonzero()[:, 0]
            own = _own_sqdist(x[g], xsq[g], Ce[g], lab[g]).masked_fill(~mask[g], -math.inf)
            val, order = torch.sort(own, dim=1, descending=True, stable=True)
            rank = torch.cumsum(empty[g].long(), 1) - 1                    # e-th empty cluster
            rk = rank.clamp(min=0, max=n - 1)
            ok = empty[g] & (rank < n) & (val.gather(1, rk) > -math.inf)
            pts = x[g[:, None], order.gather(1, rk)]                       # [G, k, d]
            newC[g] = torch.where(ok[..., None], pts, newC[g])
        newC = torch.where(active[:, None, None], newC, C)
        shift = ((newC - C) ** 2).sum((1, 2))
        n_iter += active.long()
        moved = active & (shift > 0)
        active = active & (shift > tolb)
        newCe = _unit(newC) if cosine else newC
        if pruned:
            delta = (newCe - Ce).norm(dim=-1)                              # [B, k]
        C, Ce = newC, newCe
        if not bool(moved.any()):
            break
        if not pruned:
            lab = _dense_dist(x, xsq, Ce).argmin(-1)
            sums, counts = _full_sums(x, lab, maskf, k)
            continue
        # Hamerly: move the bounds; re-examine only points whose bounds no longer prove their cluster
        if k == 1:
            continue
        top2 = delta.topk(2, dim=1)
        u += delta.gather(1, lab)
        # the lower bound (second closest) moves by the largest shift among the *other* centroids
        l -= torch.where(lab == top2.indices[:, :1], top2.values[:, 1:], top2.values[:, :1])
        half = 0.5 * torch.cdist(Ce, Ce) + torch.diag_embed(torch.full((B, k), math.inf, device=x.device,
                                                                         dtype=x.dtype))
        s_half = half.amin(2)                                              # [B, k]
        cand = (u + margin > torch.maximum(s_half.gather(1, lab), l)) & mask & moved[:, None]
        pos = cand.view(-1).nonzero()[:, 0]
        if pos.numel() == 0:
            continue
        per = torch.bincount(pos // n, minlength=B).tolist()
        csq = (Ce * Ce).sum(-1)
        lab_f, u_f, l_f = lab.view(-1), u.view(-1), l.view(-1)
        sums_f, counts_f = sums.view(B * k, d), counts.view(B * k)
        o = 0
        for b, m in enumerate(per):
            if m == 0:
                continue
            p = pos[o:o + m]
            o += m
            if m > _DENSE_FRACTION * nval[b]:
                # most of the group: one matmul over its rows (a view), no gather
                dd = torch.addmm(csq[b][None], x[b], Ce[b].t(), alpha=-2.0).index_select(0, p - b * n)
                xp = None
            else:
                if gbuf is None:
                    gbuf = (ws or Workspace()).get("lloyd_gather", (int(_DENSE_FRACTION * n) + 1, d),
                                                            x.dtype, x.device)
                xp = torch.index_select(flat, 0, p, out=gbuf[:m])
                dd = torch.addmm(csq[b][None], xp, Ce[b].t(), alpha=-2.0)
            dd = dd.add_(xsq_flat[p][:, None]).clamp_(min=0)
            nl = dd.argmin(-1)
            old = lab_f[p]
            lab_f[p] = nl
            u_f[p] = dd.gather(1, nl[:, None])[:, 0].sqrt()
            l_f[p] = dd.scatter_(1, nl[:, None], math.inf).amin(1).sqrt_()
            ch = (nl != old).nonzero()[:, 0]
            if ch.numel():
                pts = flat.index_select(0, p[ch]) if xp is None else xp.index_select(0, ch)
                new_i, old_i = nl[ch] + b * k, old[ch] + b * k
                sums_f.index_add_(0, new_i, pts)
                sums_f.index_add_(0, old_i, pts, alpha=-1)
                one = torch.ones_like(new_i, dtype=counts.dtype)
                counts_f.index_add_(0, new_i, one)
                counts_f.index_add_(0, old_i, one, alpha=-1)
    # inertia from the cluster sums: sum_i |x_i - c_l|^2 = sum |x|^2 - 2 sum_j c_j.S_j + sum_j n_j |c_j|^2
    S, N, Cd = sums.double(), counts.double(), Ce.double()
    if cosine:
        inertia = nvalid.double() - (Cd * S).sum((1, 2))
    else:
        inertia = (xsq.double() * maskf.double()).sum(1) - 2 * (Cd * S).sum((1, 2)) + (N * (Cd * Cd).sum(-1)).sum(1)
    return lab.masked_fill(~mask, -1), C, inertia.clamp(min=0), n_iter


def _onehot(lab: torch.Tensor, k: int) -> torch.Tensor:
    """Bool one-hot [..., k] of integer labels."""
    return torch.zeros(*lab.shape, k, dtype=torch.bool, device=lab.device).scatter_(-1, lab[..., None], True)


def _prepare(x: torch.Tensor, mask: torch.Tensor | None, cosine: bool):
    if x.dim() != 3:
        raise UserError(f"batched_kmeans: x must be [B, n, d], got shape {tuple(x.shape)}")
    B, n, d = x.shape
    if mask is None:
        mask = torch.ones(B, n, dtype=torch.bool, device=x.device)
    if tuple(mask.shape) != (B, n):
        raise UserError(f"batched_kmeans: mask shape {tuple(mask.shape)} != {(B, n)}")
    mask = mask.to(device=x.device, dtype=torch.bool)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    xf = x.to(dtype).masked_fill(~mask[..., None], 0)
    if cosine:
        xf = xf / xf.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return xf.contiguous(), mask


def _initial_centroids(xf, xsq, mask, k, init, seed):
    B, n, d = xf.shape
    if isinstance(init, torch.Tensor):
        C = init.to(device=xf.device, dtype=xf.dtype)
        if C.dim() == 2 and tuple(C.shape) == (k, d):
            C = C[None].expand(B, k, d)
        if tuple(C.shape) != (B, k, d):
            raise UserError(f"batched_kmeans: init centroids must be [{k}, {d}] or [{B}, {k}, {d}], "
                            f"got {tuple(init.shape)}")
        return C.clone()
    if init == "kmeans++":
        return _init_kmeanspp(xf, xsq, mask, k, _group_seeds(seed, B))
    if init == "random":
        return _init_random(xf, mask, k, _group_seeds(seed, B))
    if init == "deterministic":
        return _init_deterministic(xf, xsq, mask, k)
    raise UserError(f"batched_kmeans: init must be one of {INITS} or a tensor of centroids, got {init!r}")


def kmeans_fit(x: torch.Tensor, mask: torch.Tensor | None, k: int, *, iters: int = 20,
               init="kmeans++", seed=0, cosine: bool = False, tol: float = 1e-6,
               init_sample: int | None = None, prepared: bool = False, xsq: torch.Tensor | None = None,
               pruned: bool | None = None, workspace: Workspace | None = None, n_init: int = 1):
    """Like :func:`batched_kmeans` but returns ``(labels, centroids, inertia [B], n_iter [B])``.

    inertia is the sum of squared euclidean distances to the assigned centroid, or of ``1 - cos``
    for ``cosine=True``. ``prepared=True`` skips the copy that zeroes masked points / normalises
    (the caller guarantees x is float, contiguous, zero at masked points and, for cosine, unit rows);
    ``xsq`` optionally gives the squared row norms [B, n]; ``pruned`` picks the Lloyd variant
    (default: bound-pruned on CPU, dense on CUDA; see ``_lloyd``).
    """
    if k < 1:
        raise UserError(f"batched_kmeans: k must be >= 1, got {k}")
    if iters < 0:
        raise UserError(f"batched_kmeans: iters must be >= 0, got {iters}")
    if int(n_init) < 1:
        raise UserError(f"batched_kmeans: n_init must be >= 1, got {n_init}")
    if prepared:
        xf = x
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
    else:
        xf, mask = _prepare(x, mask, cosine)
    if xsq is None:
        xsq = torch.linalg.vector_norm(xf, dim=-1).square_()
    if isinstance(init, torch.Tensor):
        C = _initial_centroids(xf, xsq, mask, k, init, seed)
    else:
        if init_sample is not None and int(mask.sum(1).max()) > init_sample:
            xs, xss, ms = _subsample(xf, xsq, mask, seed, int(init_sample), workspace)
        else:
            xs, xss, ms = xf, xsq, mask
        if int(n_init) == 1 or init == "deterministic":
            C = _initial_centroids(xs, xss, ms, k, init, seed)
        else:
            # dense Lloyd on a (small) subsample; the caller's variant on all points
            C = _best_of_seedings(xs, xss, ms, k, init, seed, int(n_init), min(iters, _INIT_ITERS), tol, cosine,
                                  pruned if init_sample is None else False, workspace)
    if cosine:
        C = _unit(C)
    return _lloyd(xf, xsq, mask, C, iters, tol, cosine, pruned, workspace)


def _restart_seed(seed: int, r: int) -> int:
    """The seed of a group's r-th seeding: its own seed for r = 0 (so ``n_init=1`` is unchanged), a
    fixed mix of (seed, r) otherwise."""
    return int(seed) if r == 0 else (int(seed) * 0x9E3779B97F4A7C15 + r * 0xBF58476D1CE4E5B9) % (2 ** 63)


def _best_of_seedings(xs, xss, ms, k, init, seed, n_init: int, iters: int, tol: float, cosine: bool,
                      pruned: bool | None, ws: Workspace | None = None) -> torch.Tensor:
    """Centroids [B, k, d]: per group, the best of ``n_init`` seedings (``init``, each from its own
    generator, :func:`_restart_seed`), each refined by up to ``iters`` Lloyd iterations on the points
    given (a group's subsample); best = lowest inertia there (ties: the first seeding).

    One k-means++ run lands in a local optimum that depends on its seeds -- on part-structured maps the
    spread over seeds is several % of the inertia, one run at a time. Choosing among a few seedings by
    their refined inertia on a subsample (scikit-learn's MiniBatchKMeans draws its ``n_init`` seedings
    on ``init_size`` points and keeps the one with the lowest inertia on a validation subsample;
    Bradley & Fayyad, ICML 1998, refine initial points by k-means on subsamples) lands in the best of
    those optima for a fraction of one full Lloyd pass, and the full Lloyd then starts near
    convergence."""
    B = xs.shape[0]
    seeds = _group_seeds(seed, B)
    best_C, best_inertia = None, None
    for r in range(n_init):
        C = _initial_centroids(xs, xss, ms, k, init, [_restart_seed(s, r) for s in seeds])
        if cosine:
            C = _unit(C)
        _, C, inertia, _ = _lloyd(xs, xss, ms, C, iters, tol, cosine, pruned, ws)
        if best_C is None:
            best_C, best_inertia = C, inertia
        else:
            better = inertia < best_inertia
            best_C = torch.where(better[:, None, None], C, best_C)
            best_inertia = torch.where(better, inertia, best_inertia)
    return best_C


def _subsample(xf, xsq, mask, seed, sample: int, ws: Workspace | None = None):
    """``(points [B, s, d], squared norms [B, s], mask [B, s])``: a random subsample of at most
    ``sample`` valid points per group (drawn from the group's own generator, in index order)."""
    B, n, d = xf.shape
    seeds = _group_seeds(seed, B)
    counts = mask.sum(1).tolist()
    s = min(sample, max(counts))
    idx = torch.zeros(B, s, dtype=torch.long, device=xf.device)
    ms = torch.zeros(B, s, dtype=torch.bool, device=xf.device)
    for b, c in enumerate(counts):
        if c == 0:
            continue
        valid = mask[b].nonzero()[:, 0]
        if c > s:
            g = torch.Generator().manual_seed((int(seeds[b]) * 31 + 7) % (2 ** 63))
            valid = valid[torch.randperm(c, generator=g)[:s].sort().values.to(xf.device)]
        idx[b, :valid.numel()] = valid
        ms[b, :valid.numel()] = True
    flat_idx = (idx + torch.arange(B, device=xf.device)[:, None] * n).view(-1)
    ws = ws if ws is not None else Workspace()
    xs = ws.get("init_sample", (B, s, d), xf.dtype, xf.device)
    torch.index_select(xf.reshape(B * n, d), 0, flat_idx, out=xs.view(B * s, d))
    xs.masked_fill_(~ms[..., None], 0)
    xss = xsq.reshape(-1).index_select(0, flat_idx).view(B, s).masked_fill_(~ms, 0)
    return xs, xss, ms


def batched_kmeans(x: torch.Tensor, mask: torch.Tensor | None, k: int, *, iters: int = 20,
                   init="kmeans++", seed=0, cosine: bool = False, tol: float = 1e-6,
                   init_sample: int | None = None, n_init: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked batched Lloyd k-means over B independent groups.

    x [B, n, d] float (any float dtype; computed in float32, or float64 if x is float64), mask
    [B, n] bool (valid points; None = all). Returns ``(labels [B, n] long, -1 at masked points;
    centroids [B, k, d])``.

    init: ``"kmeans++"`` (greedy k-means++, scikit-learn's variant), ``"random"`` (k distinct valid
    points, faiss's default), ``"deterministic"`` (farthest-first from the point nearest the mean)
    or a tensor of initial centroids [k, d] / [B, k, d]. seed: an int used for every group, or one
    int per group; each group draws from its own CPU generator, so a group gives the same result
    alone or in any batch, on CPU and on CUDA. ``init_sample``: run the (non-tensor) init on a
    random subsample of at most that many valid points per group (None: all points, as
    scikit-learn) -- a fraction of the passes over the data for k-means++. ``n_init`` > 1
    (``"kmeans++"`` / ``"random"``): that many seedings per group, each refined by up to 10 Lloyd
    iterations (at most ``iters``) on that subsample; the one with the lowest inertia there starts
    the full Lloyd -- the best of n_init local optima instead of one run's luck, at a fraction of
    scikit-learn's ``n_init`` cost when the subsample is small (1: one seeding, as scikit-learn's
    default for k-means++).

    Iterations stop per group when the squared centroid shift is <= tol x (mean per-feature
    variance of the group) (scikit-learn's rule), or after ``iters``; labels are always those of
    the returned centroids. Empty clusters are reseeded to the valid points farthest from their
    centroid.

    Groups with fewer valid points than k do not fail: every valid point gets a label in [0, k),
    some clusters stay empty and their centroids duplicate a point (k-means++ / random init) or are
    left where they were. A group with no valid point gets all labels -1.

    cosine=True is spherical k-means: points are L2-normalised, assignment is by maximum cosine to
    the centroid, centroids are re-normalised means. With cosine=False on L2-normalised points
    (what ISP's paper, eq. 4, and its faiss code do) centroids are plain means, which changes the
    assignment rule (||c||^2 - 2 x.c instead of x.c / ||c||).
    """
    lab, C, _, _ = kmeans_fit(x, mask, k, iters=iters, init=init, seed=seed, cosine=cosine, tol=tol,
                              init_sample=init_sample, n_init=n_init)
    return lab, C


def kmeans_inertia(x: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor,
                   centroids: torch.Tensor, *, cosine: bool = False) -> torch.Tensor:
    """Per-group inertia [B] (float64): sum over valid points of ||x - c_label||^2, or of
    ``1 - cos(x, c_label)`` for cosine."""
    xf, mask = _prepare(x, mask, cosine)
    lab = labels.clamp(min=0)
    c = centroids.to(xf.dtype).gather(1, lab[..., None].expand(-1, -1, xf.shape[-1]))
    if cosine:
        cn = c / c.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        per = 1.0 - (xf * cn).sum(-1)
    else:
        per = ((xf - c) ** 2).sum(-1)
    return (per.to(torch.float64) * mask).sum(1)
