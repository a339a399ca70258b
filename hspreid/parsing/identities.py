"""Identities, the unit of ISP's and HCGA's pseudo labels: grouping maps by identity, streaming them in
identity by identity, batching identities together, and each identity's seed."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from hspreid.errors import UserError

T = TypeVar("T")


def identity_seed(seed: int, pid: int) -> int:
    """The k-means seed of identity ``pid``: a fixed mix of the run seed and the pid."""
    return (int(seed) * 0x9E3779B1 + int(pid) * 0x85EBCA6B + 0x27D4EB2F) % (2 ** 63 - 1)


def check_parts(num_parts: int) -> int:
    """``num_parts`` (the background and K-1 parts) as an int in [2, 256], or a UserError."""
    if not isinstance(num_parts, (int, np.integer)) or not 2 <= int(num_parts) <= 256:
        raise UserError(f"num_parts must be an int in [2, 256] (background + K-1 parts), got {num_parts!r}")
    return int(num_parts)


def pixel_major(f: torch.Tensor) -> torch.Tensor | None:
    """A [n*h*w, C] view of f [n, C, h, w] when f is channels_last-contiguous, else None."""
    n, C, h, w = f.shape
    v = f.permute(0, 2, 3, 1)
    return v.view(n * h * w, C) if v.is_contiguous() else None


def identity_groups(pids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """(distinct pids, each one's row positions, identity order by image count then pid)."""
    uniq, inv = np.unique(pids, return_inverse=True)
    groups = [np.flatnonzero(inv == u) for u in range(len(uniq))]
    return uniq, groups, sorted(range(len(uniq)), key=lambda u: (len(groups[u]), u))


def per_map_arrays(features: torch.Tensor, where: str, allow_empty: bool = True, **arrays) -> list[np.ndarray]:
    """Check that ``features`` is a [N, C, h, w] tensor (non-empty unless ``allow_empty``) and that every
    keyword array (pids, camids, ...) has one entry per map; return those arrays flat, as numpy."""
    if not isinstance(features, torch.Tensor) or features.dim() != 4 or (not allow_empty and features.shape[0] == 0):
        raise UserError(f"{where}: features must be a {'' if allow_empty else 'non-empty '}[N, C, h, w] tensor, "
                        f"got {getattr(features, 'shape', type(features))}")
    flat = [np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a).reshape(-1) for a in arrays.values()]
    for name, a in zip(arrays, flat):
        if a.shape[0] != features.shape[0]:
            raise UserError(f"{where}: {a.shape[0]} {name} for {features.shape[0]} feature maps")
    return flat


def take_rows(features: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """features[rows]: a view when rows are a contiguous range, else a copy that keeps a
    channels_last (pixel-major) layout if the input has one."""
    a, b = int(rows[0]), int(rows[-1]) + 1
    if b - a == len(rows) and np.array_equal(rows, np.arange(a, b)):
        return features[a:b]
    idx = torch.from_numpy(rows).to(features.device)
    if pixel_major(features) is not None:
        return features.permute(0, 2, 3, 1).index_select(0, idx).permute(0, 3, 1, 2)
    return features.index_select(0, idx)


def stream_identities(chunks: Iterable[tuple], what: str, names: tuple[str, ...] = ("pids", "rows")
                      ) -> Iterator[tuple]:
    """Regroup a stream of chunks ``(maps [n, C, h, w], pids [n], *arrays [n])`` into complete
    identities ``(pid, maps [m, C, h, w], *arrays [m])``, one at a time, as soon as each is complete.

    Every identity's rows must be contiguous in the stream (a chunk may hold several identities or
    part of one); an identity that reappears after another one started, chunks of mismatched
    lengths or maps that change shape raise :class:`UserError` naming ``what``. ``names`` names the
    1-D arrays after the maps, for the messages.
    """
    seen: set[int] = set()
    cur_pid, cur = None, []
    shape = None
    layout = f"(maps [n, C, h, w], {', '.join(f'{n} [n]' for n in names)})"

    def complete():
        maps = cur[0][0] if len(cur) == 1 else torch.cat([c[0] for c in cur])
        return (cur_pid, maps, *(np.concatenate([c[i] for c in cur]) for i in range(1, len(names))))

    for chunk in chunks:
        if not isinstance(chunk, (tuple, list)) or len(chunk) != len(names) + 1:
            raise UserError(f"{what}: each chunk must be {layout}")
        f, *arrays = chunk
        if not isinstance(f, torch.Tensor):
            f = torch.from_numpy(np.asarray(f))
        arrays = [np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a).reshape(-1).astype(np.int64)
                  for a in arrays]
        if f.dim() != 4 or any(a.shape[0] != f.shape[0] for a in arrays):
            raise UserError(f"{what}: chunk shapes {tuple(f.shape)}, {', '.join(str(a.shape) for a in arrays)} "
                            f"do not match {layout}")
        if shape is None:
            shape = tuple(f.shape[1:])
        elif tuple(f.shape[1:]) != shape:
            raise UserError(f"{what}: feature maps changed shape from {shape} to {tuple(f.shape[1:])}")
        pids = arrays[0]
        if pids.size == 0:
            continue
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(pids)) + 1, [pids.size]])
        for s, e in zip(cuts[:-1], cuts[1:]):
            pid = int(pids[s])
            if pid != cur_pid:
                if cur_pid is not None:
                    yield complete()
                if pid in seen:
                    raise UserError(f"{what}: identity {pid} appears again after other identities; "
                                    "the stream must be grouped by identity")
                seen.add(pid)
                cur_pid, cur = pid, []
            cur.append((f[s:e], *(a[s:e] for a in arrays[1:])))
    if cur_pid is not None:
        yield complete()


def batched(items: Iterable[T], fits: Callable[[list[T], T], bool]) -> Iterator[list[T]]:
    """Consecutive batches of ``items``: an item joins the pending batch while ``fits(pending, item)``, else the
    batch is yielded first (an item always starts an empty batch)."""
    pending: list[T] = []
    for item in items:
        if pending and not fits(pending, item):
            yield pending
            pending = []
        pending.append(item)
    if pending:
        yield pending


def sorted_rows(batch: Sequence[np.ndarray], labels: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a batch's identities and their label maps (one tensor per identity) as numpy, rows ascending."""
    rows = np.concatenate(list(batch))
    lab = torch.cat([x.cpu() for x in labels]).numpy()
    order = np.argsort(rows, kind="stable")
    return rows[order], lab[order]


def write_rows(array, rows: np.ndarray, labels: np.ndarray) -> None:
    """Write ``labels`` into ``array`` (zarr or numpy, first axis = row) at ``rows``, one slice
    assignment per contiguous run of rows (rows ascending, as :func:`label_identities` yields)."""
    rows = np.asarray(rows)
    if rows.size == 0:
        return
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(rows) != 1) + 1, [rows.size]])
    for s, e in zip(cuts[:-1], cuts[1:]):
        array[int(rows[s]):int(rows[s]) + int(e - s)] = labels[s:e]


def stats_table(stats: list[dict], num_parts: int, keys: Sequence[str] | None = None) -> dict:
    """Per-identity stats dicts -> arrays sorted by pid (``keys``, default all but part_sizes and fallbacks),
    ``part_sizes`` [n_ids, num_parts - 1]."""
    stats = sorted(stats, key=lambda s: s["pid"])
    if keys is None:
        keys = [k for k in stats[0] if k not in ("part_sizes", "fallbacks")] if stats else []
    tab = {k: np.array([s[k] for s in stats]) for k in keys}
    tab["part_sizes"] = (np.stack([s["part_sizes"] for s in stats]) if stats
                         else np.zeros((0, num_parts - 1), np.int64))
    return tab
