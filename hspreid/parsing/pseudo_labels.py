"""ISP pseudo part labels (paper §3.2): per-identity cascaded clustering, batched over identities.

For each identity, over *all* pixels of all its feature maps M (C x h x w each):

1. foreground / background. Activation ``a = ||M(x, y)||_2 / max_(i,j) ||M(i, j)||_2`` per image
   (eq. 3); with ``sharpen=True`` it is passed through ``sigmoid(10 a - 2)`` as the reference code
   does (its ``ENHANCED`` flag, on by default there, off for Occluded-Duke). The identity's
   activations are split by the *exact* 1-D 2-means (:func:`~hspreid.parsing.kmeans.two_means_1d`;
   the reference runs faiss Lloyd from a random start, which usually lands on the same split);
   the cluster with the higher mean is foreground (``foreground="activation"``, the paper's premise that
   the network responds more to the person). ``foreground="centre"`` (a deviation, for backbones without
   that premise, e.g. trained from scratch) keeps the split but takes the lower cluster as the foreground
   for each identity whose mean activation is higher on its images' border pixels than inside them: the
   network responds more to the background than to the centred person (the centre prior by which HCGA's
   CPLR picks its background).
2. parts. Foreground pixel features are L2-normalised (eq. 4) and clustered into K-1 clusters
   with :func:`~hspreid.parsing.kmeans.batched_kmeans`. As in the paper ("k-means" on D(x, y)) and
   the reference (faiss, ``spherical=False``) this is plain euclidean Lloyd on the unit vectors --
   centroids are *not* re-normalised. ``spherical=True`` switches to spherical (cosine) k-means.
   (methods.md §8 item 2 calls it "cosine k-means"; §1(a) and the paper say euclidean on
   normalised features, which is what is done by default.) Seeding: ``n_init`` (4) k-means++
   seedings (scikit-learn's greedy variant) per identity on one random subsample of
   min(``init_sample``, ``init_points_per_part`` (64) x (K-1)) foreground pixels (``init_sample``
   None: all of them), each refined there by up to 10 Lloyd iterations; the one with the lowest inertia on the subsample
   starts the full Lloyd (:func:`~hspreid.parsing.kmeans.kmeans_fit`, ``n_init``). One seeding
   lands in a seed-dependent local optimum (scikit-learn's ``n_init=1``); the best of four is
   systematically lower, and the full Lloyd, started near convergence, needs fewer iterations.
   The reference seeds faiss with random points (``init="random"``). The iteration cap
   (``iters``, 20 as the reference) applies to the full-data Lloyd iterations.
3. the K-1 clusters are ranked by the mean row index of their pixels over all the identity's
   images (top to bottom) and labelled 1..K-1; background is 0. Empty clusters rank last.

Batching: identities are bucketed by size (sorted), at most ``ids_per_batch`` (and at most
``max_points`` padded pixels) at a time; within a batch the 2-means and the k-means run in
sub-batches whose padding is at most ~25% of the real points. Features in channels_last memory
format (pixel-major, ``x.contiguous(memory_format=torch.channels_last)`` -- the layout the
reference keeps, (N, h*w, C)) are gathered ~3x faster on the CPU than NCHW ones. Each identity's random
stream is seeded from ``(seed, pid)``, so labels do not depend on ``ids_per_batch``, bucketing or device (up to float
rounding). Peak memory is that of one batch.

Entry points: :func:`cascaded_part_labels` (all maps in one tensor) and :func:`label_identities`
(streaming: chunks grouped by identity in, (rows, labels) out -- write each to zarr as it comes,
e.g. with :func:`~hspreid.parsing.identities.write_rows`). Options, defaults included:
:class:`~hspreid.parsing.options.KMeansOptions`.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from hspreid.errors import UserError
from hspreid.partmaps import border_ring

from .identities import (batched, check_parts, identity_groups, identity_seed, per_map_arrays, pixel_major,
                         sorted_rows, stats_table, stream_identities, take_rows)
from .kmeans import Workspace, kmeans_fit, sse_1d, two_means_1d
from .options import KMeansOptions

log = logging.getLogger("hspreid.parsing")

_EPS = 1e-12
_PAD_WASTE = 1.25          # k-means sub-batch: padded points <= 1.25 x real points (or one identity)
# On the CPU batching only saves Python overhead, while a big point matrix costs page faults and
# cache misses: k-means sub-batches there hold at most this many (padded) points.
_CPU_SUB_BATCH_POINTS = 1 << 16


def _norms(f: torch.Tensor, pm: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel L2 norm over channels, float32 [n, h*w]."""
    n, C, h, w = f.shape
    if pm is not None:
        return torch.linalg.vector_norm(pm, dim=1, dtype=torch.float32).view(n, h * w)
    out = torch.empty(n, h * w, dtype=torch.float32, device=f.device)
    if f.device.type != "cpu":
        return torch.linalg.vector_norm(f.reshape(n, C, h * w), dim=1, dtype=torch.float32, out=out)
    for j in range(n):   # per image: no temporary of the whole stack (large allocations are slow on CPU)
        torch.sum(f[j].reshape(C, h * w).float().square(), 0, out=out[j])
    return out.sqrt_()


def activation(nrm: torch.Tensor, sharpen: bool) -> torch.Tensor:
    """ISP eq. 3: per-pixel norms [n, hw] -> activation (divided by the image's maximum), through the reference's
    ``sigmoid(10 a - 2)`` when ``sharpen``; flat [n*hw]."""
    a = nrm / nrm.amax(1, keepdim=True).clamp(min=_EPS)
    if sharpen:
        a = torch.sigmoid(10.0 * a - 2.0)
    return a.reshape(-1)


def _gather_foreground(X: torch.Tensor, f: torch.Tensor, pm: torch.Tensor | None, ix: torch.Tensor,
                       inv: torch.Tensor) -> None:
    """X[:m] = L2-normalised features of the foreground pixels ix (flat n*hw indices, ascending) of
    f [n, C, h, w]; ``inv`` = 1 / norm of those pixels."""
    n, C, h, w = f.shape
    hw = h * w
    if pm is not None:
        if pm.dtype == X.dtype:
            torch.index_select(pm, 0, ix, out=X)
        else:
            X.copy_(pm.index_select(0, ix))
    else:
        j, q = ix // hw, ix % hw
        f = f.reshape(n, C, hw)
        step = max(1, (1 << 21) // max(C, 1))       # ~8 MB temporaries
        for o in range(0, ix.numel(), step):
            X[o:o + step] = f[j[o:o + step], :, q[o:o + step]]
    X.mul_(inv[:, None])


def _sub_batches(sizes: list[int], limit: int | None) -> list[list[int]]:
    """Split positions 0..len-1 (sizes ascending) into runs with padded total <= _PAD_WASTE x real
    (and <= limit padded points, when given); an identity alone always forms a run."""
    runs, cur, tot = [], [], 0
    for i, m in enumerate(sizes):
        pad = (len(cur) + 1) * max(m, 1)
        if cur and (pad > _PAD_WASTE * (tot + m) or (limit is not None and pad > limit)):
            runs.append(cur)
            cur, tot = [], 0
        cur.append(i)
        tot += m
    if cur:
        runs.append(cur)
    return runs


def _label_batch(items: list[tuple[int, torch.Tensor]], num_parts: int, opt: KMeansOptions, *, seed: int,
                 device: torch.device, ws: Workspace | None = None,
                 tol: float = 1e-6) -> tuple[list[torch.Tensor], list[dict]]:
    """Pseudo labels for a batch of identities ``[(pid, features [n_i, C, h, w]), ...]``.

    Returns (labels uint8 [n_i, h, w] on ``device`` for each item, per-identity stats dicts)."""
    ws = ws if ws is not None else Workspace()
    K1 = num_parts - 1
    G = len(items)
    feats, pms, norms = [], [], []
    for pid, f in items:
        f = f.to(device, non_blocking=True)
        if not f.is_floating_point():
            f = f.float()
        pm = pixel_major(f)
        feats.append(f)
        pms.append(pm)
        norms.append(_norms(f, pm))
    C, h, w = feats[0].shape[1:]
    hw = h * w
    npix = [nrm.numel() for nrm in norms]
    fg_idx: list = [None] * G
    thr: list = [0.0] * G
    fg_sse: list = [0.0] * G
    below = [False] * G                                                 # the foreground is the lower cluster
    ring = torch.from_numpy(border_ring(h, w)).to(device).view(-1)
    centre = opt.foreground == "centre" and not bool(ring.all())      # a map with an inside to compare
    by_size = sorted(range(G), key=lambda i: (npix[i], i))
    for run in _sub_batches([npix[i] for i in by_size], None):          # little padding
        ids = [by_size[r] for r in run]
        P = max(npix[i] for i in ids)
        A = torch.zeros(len(ids), P, dtype=torch.float32, device=device)
        M = torch.zeros(len(ids), P, dtype=torch.bool, device=device)
        for r, i in enumerate(ids):
            A[r, :npix[i]] = activation(norms[i], opt.sharpen)
            M[r, :npix[i]] = True
        finite = torch.isfinite(A).all(1).tolist()
        if not all(finite):
            bad = [items[i][0] for i, ok in zip(ids, finite) if not ok]
            raise UserError(f"ISP pseudo labels: non-finite feature values for identity/ies {bad[:10]}")
        fg, th = two_means_1d(A, M, return_threshold=True)
        sse = sse_1d(A, M, fg).tolist()
        th = th.tolist()
        for r, i in enumerate(ids):
            upper = fg[r, :npix[i]]
            if centre and th[r] != float("-inf"):
                a = A[r, :npix[i]].view(-1, hw)
                below[i] = bool(a[:, ring].mean() > a[:, ~ring].mean())
            fg_idx[i] = (~upper if below[i] else upper).nonzero()[:, 0]
            thr[i], fg_sse[i] = th[r], sse[r]
        del A, M, fg
    nfg = [int(ix.numel()) for ix in fg_idx]

    stats = [{"pid": int(items[i][0]), "num_images": int(feats[i].shape[0]), "num_pixels": npix[i],
              "num_foreground": nfg[i], "fg_threshold": float(thr[i]), "fg_below_threshold": below[i],
              "fg_sse": float(fg_sse[i]),
              "part_inertia": 0.0, "part_sizes": np.zeros(K1, np.int64), "n_iter": 0} for i in range(G)]
    out = [torch.zeros(npix[i], dtype=torch.uint8, device=device) for i in range(G)]

    sample = None if opt.init_sample is None else min(opt.init_sample, opt.init_points_per_part * K1)
    order = sorted(range(G), key=lambda i: (nfg[i], i))
    limit = opt.max_points
    if device.type == "cpu":
        limit = _CPU_SUB_BATCH_POINTS if limit is None else min(limit, _CPU_SUB_BATCH_POINTS)
    runs = [[order[r] for r in run if nfg[order[r]] > 0] for run in _sub_batches([nfg[i] for i in order], limit)]
    runs = [ids for ids in runs if ids]
    if runs:   # one buffer for the largest sub-batch, reused by the others
        ws.reserve("X", max(len(ids) * max(nfg[i] for i in ids) for ids in runs) * C, torch.float32, device)
    for ids in runs:
        g = len(ids)
        m = max(nfg[i] for i in ids)
        X = ws.get("X", (g, m, C), torch.float32, device)
        xsq = torch.zeros(g, m, dtype=torch.float32, device=device)
        R = torch.zeros(g, m, dtype=torch.float32, device=device)
        mask = torch.zeros(g, m, dtype=torch.bool, device=device)
        for b, i in enumerate(ids):
            ix, mi = fg_idx[i], nfg[i]
            nrm = norms[i].view(-1)[ix]
            inv = 1.0 / nrm.clamp(min=_EPS)
            _gather_foreground(X[b, :mi], feats[i], pms[i], ix, inv)                # eq. 4
            X[b, mi:].zero_()
            xsq[b, :mi] = (nrm * inv).square_()
            R[b, :mi] = torch.div(ix % hw, w, rounding_mode="floor").float()
            mask[b, :mi] = True
        seeds = [identity_seed(seed, items[i][0]) for i in ids]
        lab, _, inertia, n_iter = kmeans_fit(X, mask, K1, iters=opt.iters, init=opt.init, seed=seeds,
                                             cosine=opt.spherical, tol=tol, init_sample=sample, n_init=opt.n_init,
                                             prepared=True, xsq=xsq, workspace=ws)
        labc = lab.clamp(min=0)
        maskf = mask.float()
        cnt = torch.zeros(g, K1, device=device).scatter_add_(1, labc, maskf)
        rsum = torch.zeros(g, K1, device=device).scatter_add_(1, labc, R * maskf)
        mean_row = torch.where(cnt > 0, rsum / cnt.clamp(min=1), torch.full_like(rsum, float("inf")))
        rank_order = torch.argsort(mean_row, dim=1, stable=True)        # clusters top to bottom
        rank = torch.argsort(rank_order, dim=1)                          # cluster -> its position
        part = (rank.gather(1, labc) + 1).to(torch.uint8)                # [g, m]
        sizes = cnt.gather(1, rank_order).long().cpu().numpy()
        inertia, n_iter = inertia.tolist(), n_iter.tolist()
        for b, i in enumerate(ids):
            out[i][fg_idx[i]] = part[b, :nfg[i]]
            stats[i].update(part_inertia=float(inertia[b]), part_sizes=sizes[b], n_iter=int(n_iter[b]))

    for i, st in enumerate(stats):
        pid, fb = st["pid"], []
        if st["num_images"] == 1:
            fb.append("single_image")
            log.warning("ISP pseudo labels: identity %s has a single image; its parts come from that image alone", pid)
        if thr[i] == float("-inf"):
            fb.append("constant_activations")
            log.warning("ISP pseudo labels: identity %s has constant activations, no foreground/background "
                        "split; all its pixels are taken as foreground", pid)
        if st["num_foreground"] < K1:
            fb.append("few_foreground_pixels")
            log.warning("ISP pseudo labels: identity %s has %d foreground pixels for %d parts; some parts stay empty",
                        pid, st["num_foreground"], K1)
        elif int((st["part_sizes"] > 0).sum()) < K1:
            fb.append("empty_parts")
            log.warning("ISP pseudo labels: identity %s: k-means found only %d non-empty parts of %d "
                        "(constant or degenerate features)", pid, int((st["part_sizes"] > 0).sum()), K1)
        st["fallbacks"] = fb
    labels = [o.view(f.shape[0], h, w) for o, f in zip(out, feats)]
    return labels, stats


def _plan(sizes: list[int], ids_per_batch: int, max_points: int | None) -> list[list[int]]:
    """Batches of identity positions (sizes ascending): <= ids_per_batch each and, with max_points,
    batch_len x largest size <= max_points (one identity always fits)."""
    batches, cur = [], []
    for i, s in enumerate(sizes):
        if cur and (len(cur) >= ids_per_batch or (max_points is not None and (len(cur) + 1) * s > max_points)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def cascaded_part_labels(features: torch.Tensor, pids, num_parts: int, options: KMeansOptions = KMeansOptions(), *,
                         seed: int = 0, return_stats: bool = False, device: torch.device | str | None = None):
    """ISP pseudo part labels of N feature maps: features float [N, C, h, w], pids [N].

    Returns uint8 [N, h, w] on the features' device: 0 background, 1..num_parts-1 parts ordered top
    to bottom by mean row over the identity's images. With ``return_stats=True`` returns
    ``(labels, stats)``, stats a dict of per-identity arrays sorted by pid: pid, num_images,
    num_pixels, num_foreground, fg_threshold (on the (sharpened) activation; -inf = no split), fg_below_threshold
    (the foreground is the lower cluster: ``foreground="centre"`` flipped the split),
    fg_sse (1-D 2-means SSE), part_inertia (k-means inertia on the normalised foreground
    features), part_sizes [n_ids, K-1] (pixels per part, top to bottom), n_iter.

    ``options``: see :class:`~hspreid.parsing.options.KMeansOptions` (the ``n_init`` k-means++ seedings are
    drawn and compared on at most min(init_sample, init_points_per_part x (num_parts-1)) foreground pixels
    per identity). Identities are processed ``ids_per_batch`` at a time (sorted by size); ``max_points``
    further caps a batch's padded pixel count (identities x largest identity's h*w*images). Computation runs
    on ``device`` (default: the features' device -- CUDA features are clustered on the GPU). An identity with
    a single image, with fewer foreground pixels than num_parts-1 or with constant features gets valid labels
    and a warning on the ``hspreid.parsing`` logger.
    """
    K = check_parts(num_parts)
    pid_np, = per_map_arrays(features, "cascaded_part_labels", pids=pids)
    N, _, h, w = features.shape
    dev = torch.device(device) if device is not None else features.device
    out = torch.zeros(N, h, w, dtype=torch.uint8, device=features.device)
    uniq, groups, order = identity_groups(pid_np)
    all_stats = []
    ws = Workspace()
    for batch in _plan([len(groups[u]) * h * w for u in order], options.ids_per_batch, options.max_points):
        us = [order[b] for b in batch]
        items = [(int(uniq[u]), take_rows(features, groups[u])) for u in us]
        labels, stats = _label_batch(items, K, options, seed=seed, device=dev, ws=ws)
        for u, lab in zip(us, labels):
            out[torch.from_numpy(groups[u]).to(out.device)] = lab.to(out.device)
        all_stats += stats
        del items, labels
    if return_stats:
        return out, stats_table(all_stats, K)
    return out


def label_identities(chunks: Iterable[tuple], num_parts: int, options: KMeansOptions = KMeansOptions(), *,
                     seed: int = 0, device: torch.device | str | None = None,
                     on_stats: Callable[[dict], None] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streaming ISP pseudo labels. ``chunks`` yields ``(features [n, C, h, w], pids [n], rows [n])``
    with every identity's rows contiguous in the stream (a chunk may hold several identities or
    part of one; an identity may span chunks). Yields ``(rows int64 [m], labels uint8 [m, h, w])``
    numpy pairs, one per processed batch of identities, rows ascending -- write each straight into
    the label array (``array.oindex[rows] = labels``, or :func:`~hspreid.parsing.identities.write_rows` for
    contiguous runs).

    Only the current batch (<= ids_per_batch complete identities, <= max_points padded pixels) and
    the identity being received are held, so memory does not grow with the number of identities.
    An identity that reappears after another one started raises UserError. ``on_stats`` is called
    with each identity's stats dict (see :func:`cascaded_part_labels`). Same labels as
    :func:`cascaded_part_labels` for the same arguments.
    """
    K = check_parts(num_parts)
    ws = Workspace()

    def fits(pending: list, item: tuple) -> bool:
        if len(pending) >= options.ids_per_batch:
            return False
        if options.max_points is not None:
            big = max(t[1].shape[0] for t in pending + [item]) * item[1].shape[2] * item[1].shape[3]
            return (len(pending) + 1) * big <= options.max_points
        return True

    for batch in batched(stream_identities(chunks, "label_identities"), fits):
        dev = torch.device(device) if device is not None else batch[0][1].device
        batch = sorted(batch, key=lambda t: (t[1].shape[0], t[0]))
        labels, stats = _label_batch([(p, f) for p, f, _ in batch], K, options, seed=seed, device=dev, ws=ws)
        if on_stats is not None:
            for st in stats:
                on_stats(st)
        yield sorted_rows([r for _, _, r in batch], labels)
