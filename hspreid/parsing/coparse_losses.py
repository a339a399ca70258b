"""HCGA's co-parsing losses (HCGA eqs. 2-5) on decoder responses y, batched over identities.

Each is a mean over the identity's elements as in the reference (``CrossEntropyLoss`` / ``L1Loss`` /
``MSELoss`` with ``reduction='mean'``; the paper writes sums). ``p`` = 1 or 2 is the paper's p-norm; as in the
reference the elementwise ``|d|^p`` is averaged, i.e. ``||d||_p^p / C'`` per pixel pair.

* L_sem (eq. 3): cross-entropy of every pixel's response against its own argmax.
* L_local (eq. 2): ``|y_c - y_s|^p`` between each pixel and its neighbours in an R x R window, each unordered
  pair once: one mean per offset, summed over offsets; ``local_diagonals=False`` keeps only (1,0) and (0,1),
  what the reference ran. Pairs never cross the image border.
* L_back (eq. 4): ``|y_k1 - y_k2|^p`` between adjacent images of the same camera (the identity's images of one
  camera in row order, paired consecutively). No pair: 0.
* eq. 5: ``L_sem + lambda_local L_local + lambda_back L_back``.

The ``*_batched`` forms take y [G, n, C', h, w] for G identities padded to n images (m [G, n] marks the real
ones) and return [G]; the ``*_loss`` forms are the same on one identity's y [n, C', h, w].
"""
from __future__ import annotations

import numpy as np
import torch

from hspreid.errors import UserError

from .options import CoparseOptions


def local_offsets(window: int, diagonals: bool) -> list[tuple[int, int]]:
    """Half of the R x R window's offsets (dy, dx), each unordered neighbour pair once (HCGA eq. 2)."""
    r = window // 2
    offs = [(dy, dx) for dy in range(0, r + 1) for dx in range(-r, r + 1) if dy > 0 or dx > 0]
    return offs if diagonals else [(dy, dx) for dy, dx in offs if dy == 0 or dx == 0]


def _pow(d: torch.Tensor, p: int) -> torch.Tensor:
    """Elementwise |d|^p (p = 1 or 2)."""
    return d.abs() if p == 1 else d.square()


def sem_batched(y: torch.Tensor, lab: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """HCGA eq. 3 per identity: mean over real pixels of CE(response, own argmax).
    y [G, n, c, h, w], lab [G, n, h, w] (argmax of y), m [G, n] image mask -> [G]."""
    G, n, c, h, w = y.shape
    ce = torch.logsumexp(y, 2) - y.gather(2, lab[:, :, None]).squeeze(2)
    return (ce.sum((2, 3)) * m).sum(1) / (m.sum(1).clamp(min=1) * h * w)


def local_batched(y: torch.Tensor, m: torch.Tensor, p: int, offsets: list[tuple[int, int]]) -> torch.Tensor:
    """HCGA eq. 2 per identity: sum over window offsets of the mean |y(i,j) - y(i+dy,j+dx)|^p over
    in-image pixel pairs, channels and real images. y [G, n, c, h, w], m [G, n] -> [G]."""
    G, n, c, h, w = y.shape
    out = y.new_zeros(G)
    cnt = m.sum(1).clamp(min=1)
    for dy, dx in offsets:
        if dy >= h or abs(dx) >= w:
            continue
        a = y[..., : h - dy, max(0, -dx): w - max(0, dx)]
        b = y[..., dy:, max(0, dx): w - max(0, -dx)]
        s = _pow(a - b, p).sum((2, 3, 4))
        out = out + (s * m).sum(1) / (cnt * c * (h - dy) * (w - abs(dx)))
    return out


def camera_pairs(camids: np.ndarray) -> np.ndarray:
    """[m, 2] image index pairs (k1, k2): consecutive images of the same camera, in index order
    (the adjacent same-camera images of HCGA eq. 4)."""
    camids = np.asarray(camids).reshape(-1)
    order = np.argsort(camids, kind="stable")
    same = camids[order[1:]] == camids[order[:-1]]
    return np.stack([order[:-1][same], order[1:][same]], 1).astype(np.int64)


def back_batched(y: torch.Tensor, pairs: list[np.ndarray], p: int) -> torch.Tensor:
    """HCGA eq. 4 per identity: mean over its same-camera adjacent pairs, pixels and channels of
    |y_k1 - y_k2|^p (0 for an identity without pairs). y [G, n, c, h, w] -> [G]."""
    G, n, c, h, w = y.shape
    npairs = [len(q) for q in pairs]
    if sum(npairs) == 0:
        return y.new_zeros(G)
    gi = torch.from_numpy(np.repeat(np.arange(G), npairs)).to(y.device)
    ab = torch.from_numpy(np.concatenate([q for q in pairs if len(q)])).to(y.device)
    wt = torch.from_numpy(np.repeat([1.0 / max(k, 1) for k in npairs], npairs)).to(y)
    s = _pow(y[gi, ab[:, 0]] - y[gi, ab[:, 1]], p).sum((1, 2, 3)) * wt / (c * h * w)
    return y.new_zeros(G).index_add_(0, gi, s)


def _as_response(y: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.dim() != 4 or not y.is_floating_point():
        raise UserError(f"{name}: y must be a float [n, C', h, w] tensor, got {getattr(y, 'shape', type(y))}")
    return y[None]


def semantic_consistency_loss(y: torch.Tensor) -> torch.Tensor:
    """HCGA eq. 3 (mean over pixels, as the reference): cross-entropy of each pixel's response
    y [n, C', h, w] against its own argmax label (the target carries no gradient)."""
    y5 = _as_response(y, "semantic_consistency_loss")
    lab = y5.detach().argmax(2)
    return sem_batched(y5, lab, y5.new_ones(1, y.shape[0]))[0]


def local_consistency_loss(y: torch.Tensor, *, p: int = 1, window: int = 3, diagonals: bool = True) -> torch.Tensor:
    """HCGA eq. 2: for each offset of half the R x R window (``window`` = R; each unordered pair
    once; ``diagonals=False``: only the 4-neighbourhood, as the reference), the mean of
    |y_c - y_s|^p over in-image pixel pairs and channels of y [n, C', h, w]; summed over offsets."""
    CoparseOptions(p=p, window=window)                       # validates p and R
    y5 = _as_response(y, "local_consistency_loss")
    return local_batched(y5, y5.new_ones(1, y.shape[0]), p, local_offsets(window, diagonals))[0]


def background_consistency_loss(y: torch.Tensor, camids, *, p: int = 1) -> torch.Tensor:
    """HCGA eq. 4: mean |y_k1 - y_k2|^p over the adjacent same-camera image pairs (consecutive
    images of one camera in index order), pixels and channels of y [n, C', h, w]; 0 without pairs."""
    CoparseOptions(p=p)
    y5 = _as_response(y, "background_consistency_loss")
    cam = np.asarray(camids.cpu() if isinstance(camids, torch.Tensor) else camids).reshape(-1)
    if cam.shape[0] != y.shape[0]:
        raise UserError(f"background_consistency_loss: {cam.shape[0]} camids for {y.shape[0]} images")
    return back_batched(y5, [camera_pairs(cam)], p)[0]


def hcga_loss(y: torch.Tensor, lab: torch.Tensor, m: torch.Tensor, pairs: list[np.ndarray],
               opt: CoparseOptions) -> torch.Tensor:
    """HCGA eq. 5 per identity: L_sem + lambda_L L_local + lambda_B L_back of y [G, n, C', h, w]
    (labels lab [G, n, h, w], image mask m [G, n]), [G]."""
    total = sem_batched(y, lab, m)
    if opt.lambda_local:
        total = total + opt.lambda_local * local_batched(y, m, opt.p, local_offsets(opt.window, opt.local_diagonals))
    if opt.lambda_back:
        total = total + opt.lambda_back * back_batched(y, pairs, opt.p)
    return total
