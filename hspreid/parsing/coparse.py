"""HCGA human co-parsing pseudo labels (HCGA §III.B, Algorithm 1), batched over identities.

Per identity: a decoder trained from scratch on the identity's frozen encoder maps with the co-parsing losses
(:mod:`~hspreid.parsing.coparse_losses`, eqs. 2-5) until fewer than ``min_labels`` labels remain
(:mod:`~hspreid.parsing.coparse_engine`, Algorithm 1 lines 1-8), then CPLR sends its labels to background and
parts (:mod:`~hspreid.parsing.cplr`, lines 9-17). The point of this module: one Python loop per *batch* of
identities, not per identity -- all identities of a batch take their SGD steps together, and each stops on
its own. Options: :class:`~hspreid.parsing.options.CoparseOptions` (HCGA's defaults).

Entry points: :func:`coparse_part_labels` (all maps in one tensor) and :func:`coparse_identities`
(streaming, same contract as :func:`~hspreid.parsing.pseudo_labels.label_identities`).
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from hspreid.errors import UserError

from .coparse_engine import DecoderGroup, init_decoder, plan_mode, sub_batches, train_group
from .coparse_losses import camera_pairs
from .cplr import cplr_identity
from .identities import (batched, check_parts, identity_groups, per_map_arrays, sorted_rows, stats_table,
                         stream_identities, take_rows)
from .options import CoparseOptions

log = logging.getLogger("hspreid.parsing")

FALLBACKS = ("single_image", "no_camera_pair", "few_pixels", "constant_features", "no_background",
             "all_background", "few_foreground_labels", "flat_heights", "max_steps")
STAT_KEYS = ("pid", "num_images", "num_pairs", "layer1", "grouped", "steps", "num_labels", "converged",
             "num_background_labels", "num_foreground_labels")


def _coparse_batch(items: list[tuple[int, torch.Tensor, np.ndarray]], num_parts: int, opt: CoparseOptions,
                   seed: int, device: torch.device) -> tuple[list[torch.Tensor], list[dict]]:
    """Co-parse identities ``[(pid, maps [n, C, h, w], camids [n]), ...]``: returns (uint8 part
    labels [n_i, h, w] on ``device`` per item, per-identity stats dicts)."""
    split = opt.split_for(num_parts)
    feats, stats, constant = [], [], []
    for pid, f, cam in items:
        f = f.to(device, non_blocking=True)
        f = f if f.dtype == torch.float64 else f.float()
        hi, lo = f.amax((0, 2, 3)), f.amin((0, 2, 3))                # NaN and inf propagate
        if not bool(torch.isfinite(hi).all() & torch.isfinite(lo).all()):
            raise UserError(f"co-parsing: non-finite feature values for identity {pid}")
        feats.append(f)
        constant.append(bool((hi == lo).all()))
    C, h, w = feats[0].shape[1:]
    dtype = feats[0].dtype
    out: list = [None] * len(items)
    raw: list = [None] * len(items)
    todo: dict[tuple[str, bool], list[int]] = {}
    for i, ((pid, f, cam), x) in enumerate(zip(items, feats)):
        n = x.shape[0]
        pairs = camera_pairs(cam)
        fb = (["single_image"] if n == 1 else []) + (["no_camera_pair"] if len(pairs) == 0 else [])
        fb += ["few_pixels"] if n * h * w < opt.min_labels else []
        mode = ("none", False) if constant[i] else plan_mode(n, C, h, w, opt, device)
        stats.append({"pid": int(pid), "num_images": int(n), "num_pairs": int(len(pairs)), "layer1": mode[0],
                      "grouped": mode[1], "steps": 0, "num_labels": 1, "converged": False, "fallbacks": fb})
        if constant[i]:
            fb.append("constant_features")
            raw[i] = torch.zeros(n, h, w, dtype=torch.long, device=device)
        else:
            todo.setdefault(mode, []).append(i)
    for mode, ids in todo.items():
        ids = sorted(ids, key=lambda i: (feats[i].shape[0], stats[i]["pid"]))
        for run in sub_batches([feats[i].shape[0] for i in ids], mode, h * w, feats[0].element_size()):
            sub = [ids[r] for r in run]
            inits = [init_decoder(stats[i]["pid"], C, hidden=opt.hidden, out_channels=opt.out_channels,
                                  seed=seed, dtype=dtype) for i in sub]
            group = DecoderGroup([feats[i] for i in sub], [camera_pairs(items[i][2]) for i in sub], inits,
                                 *mode, opt, dtype, device)
            labs, steps, nlab = train_group(group, opt)
            del group
            for i, lab, s, k in zip(sub, labs, steps, nlab):
                raw[i] = lab
                stats[i].update(steps=s, num_labels=k, converged=k < opt.min_labels)
                if k >= opt.min_labels:
                    stats[i]["fallbacks"].append("max_steps")
    for i, lab in enumerate(raw):
        if stats[i]["layer1"] == "none":                     # constant features: not trained
            out[i] = lab.to(torch.uint8)
            stats[i].update(num_background_labels=1, num_foreground_labels=0,
                            part_sizes=np.zeros(num_parts - 1, np.int64))
            continue
        out[i], info = cplr_identity(lab, num_parts, opt.rule, split)
        stats[i].update(num_background_labels=len(info["background_labels"]),
                        num_foreground_labels=len(info["foreground_labels"]), part_sizes=info["part_sizes"])
        stats[i]["fallbacks"] += info["fallbacks"]
    for st in stats:
        if st["fallbacks"]:
            log.info("co-parsing: identity %s fallbacks: %s", st["pid"], ", ".join(st["fallbacks"]))
    return out, stats


def _stats_table(stats: list[dict], num_parts: int) -> dict:
    """Per-identity stats dicts -> arrays sorted by pid, plus ``fallbacks`` {name: count} and
    ``fallback_pids`` {name: pids}."""
    tab = stats_table(stats, num_parts, STAT_KEYS)
    tab["fallback_pids"] = {f: np.array([s["pid"] for s in sorted(stats, key=lambda s: s["pid"])
                                         if f in s["fallbacks"]], np.int64) for f in FALLBACKS}
    tab["fallbacks"] = {f: int(len(v)) for f, v in tab["fallback_pids"].items()}
    return tab


def coparse_part_labels(features: torch.Tensor, pids, camids, num_parts: int = 4,
                        options: CoparseOptions = CoparseOptions(), *, seed: int = 0,
                        device: torch.device | str | None = None) -> tuple[torch.Tensor, dict]:
    """HCGA co-parsing part labels of N maps: features float [N, C, h, w], pids [N], camids [N].

    Returns ``(labels, stats)``: labels uint8 [N, h, w] on the features' device (0 background,
    1..num_parts-1 parts top to bottom); stats a dict of per-identity arrays sorted by pid -- pid,
    num_images, num_pairs (L_back pairs), layer1 (form used; "none" = not trained), grouped, steps
    (forwards), num_labels (distinct labels at the stop), converged (num_labels < min_labels),
    num_background_labels, num_foreground_labels, part_sizes [n_ids, num_parts-1] -- plus
    ``fallbacks`` {name: count} and ``fallback_pids`` {name: pids} over :data:`FALLBACKS`.
    An identity's images are taken in input order (it defines the adjacent same-camera pairs of
    L_back). Identities are processed ``options.ids_per_batch`` at a time, sorted by image count;
    computation runs on ``device`` (default: the features' device).
    """
    K = check_parts(num_parts)
    options.split_for(K)
    pid_np, cam_np = per_map_arrays(features, "coparse_part_labels", allow_empty=False, pids=pids, camids=camids)
    N, _, h, w = features.shape
    dev = torch.device(device) if device is not None else features.device
    out = torch.zeros(N, h, w, dtype=torch.uint8, device=features.device)
    uniq, groups, order = identity_groups(pid_np)
    all_stats = []
    for s in range(0, len(order), options.ids_per_batch):
        us = order[s: s + options.ids_per_batch]
        items = [(int(uniq[u]), take_rows(features, groups[u]), cam_np[groups[u]]) for u in us]
        labels, stats = _coparse_batch(items, K, options, seed, dev)
        for u, lab in zip(us, labels):
            out[torch.from_numpy(groups[u]).to(out.device)] = lab.to(out.device)
        all_stats += stats
    return out, _stats_table(all_stats, K)


def coparse_identities(chunks: Iterable[tuple], num_parts: int = 4, options: CoparseOptions = CoparseOptions(), *,
                       seed: int = 0, device: torch.device | str | None = None,
                       on_stats: Callable[[dict], None] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streaming HCGA co-parsing. ``chunks`` yields ``(maps [n, C, h, w], pids [n], rows [n],
    camids [n])`` with every identity's rows contiguous in the stream (a chunk may hold several
    identities or part of one). Yields ``(rows int64 [m], labels uint8 [m, h, w])`` numpy pairs,
    one per batch of ``options.ids_per_batch`` identities, rows ascending. Only the pending batch and the
    identity being received are held. ``on_stats`` gets each identity's stats dict (the keys of
    :func:`coparse_part_labels`' table, ``fallbacks`` a list of names). Same labels as
    :func:`coparse_part_labels` for the same arguments. An identity that reappears after another one
    started raises UserError.
    """
    K = check_parts(num_parts)
    options.split_for(K)
    identities = stream_identities(chunks, "coparse_identities", ("pids", "rows", "camids"))
    for batch in batched(identities, lambda pending, item: len(pending) < options.ids_per_batch):
        dev = torch.device(device) if device is not None else batch[0][1].device
        labels, stats = _coparse_batch([(pid, f, c) for pid, f, _, c in batch], K, options, seed, dev)
        if on_stats is not None:
            for st in stats:
                on_stats(st)
        yield sorted_rows([r for _, _, r, _ in batch], labels)
