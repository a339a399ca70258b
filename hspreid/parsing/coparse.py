"""HCGA human co-parsing pseudo labels (HCGA §III.B, Algorithm 1), batched over identities.

For the images of one identity, frozen encoder maps V [n, C, h, w] go through a decoder trained
from scratch for that identity (Algorithm 1 lines 1-8). The layout is the reference's ``MyNet``
(methods.md §2): conv3x3 C->hidden, BN, ReLU; conv1x1 hidden->C', BN, ReLU; conv3x3 C'->hidden,
BN, ReLU; conv1x1 hidden->C', BN (hidden 64, C' 32). BN runs in training mode (batch statistics
of the identity's images) as in the reference. The convs have no bias: in front of a training-mode
BN a bias cancels exactly (its gradient is 0), so leaving it out changes nothing. Weights are
Kaiming-uniform (PyTorch's conv default, bound 1/sqrt(fan_in); HCGA Algorithm 1 line 2), drawn from
a generator seeded with ``identity_seed(seed, pid)``; BN weight 1, bias 0.

Loss (HCGA eq. 5): ``L_sem + lambda_local L_local + lambda_back L_back``, each a mean over the
identity's elements as in the reference (``CrossEntropyLoss`` / ``L1Loss`` / ``MSELoss`` with
``reduction='mean'``; the paper writes sums). ``p`` = 1 or 2 is the paper's p-norm; as in the
reference the elementwise ``|d|^p`` is averaged, i.e. ``||d||_p^p / C'`` per pixel pair.

* L_sem (HCGA eq. 3): cross-entropy of every pixel's response against its own argmax.
* L_local (HCGA eq. 2): ``|y_c - y_s|^p`` between each pixel and its neighbours in an R x R window
  (R = ``window`` = 3), each unordered pair once: one mean per offset (0,1), (1,-1), (1,0), (1,1),
  summed over offsets. ``local_diagonals=False`` keeps only (1,0) and (0,1), what the reference
  ran (``DIAG_WEIGHT = 0``). Pairs never cross the image border (no padding).
* L_back (HCGA eq. 4): ``|y_k1 - y_k2|^p`` between *adjacent images of the same camera*: the
  identity's images of one camera, in input (row) order, paired consecutively (the paper's
  definition; the reference pairs consecutive images regardless of camera). One mean over all
  pairs. No pair (one image, or no camera with two images): L_back = 0 for that identity.

SGD (lr 0.1, momentum 0.9, PyTorch's update) runs until the number of distinct argmax labels over
the identity's images is below ``min_labels`` (Algorithm 1 line 8, strict "<"; the reference
stops at "<=", so its MIN_LABEL_NUM 18 is ``min_labels=19`` here) or ``max_steps`` forwards were
done; the labels are those of the last forward (as the reference, whose last update is unused).

CPLR (Algorithm 1 lines 9-17, :func:`cplr`):

* background (``rule``). Algorithm 1 lines 9-13 ("labels on the image boundaries ... hist >
  image_perimeter/2") leave open which pixels form the boundary and what the histogram is compared
  with; it summarises the reference code, whose rule is the default ``"reference"``: a label is
  background if it has more than n*w/2 of the entries of rows {0, 3, h-1, h-4} or more than n*h/3
  of columns {0, w-1} (counts over the identity's n images; the inner rows 3 and h-4 catch the
  background when the decoder's zero padding gives the outermost ring labels of its own).
  ``"border_half"`` is the literal reading "more than half of the border pixels": the outer ring
  of every image, counted over the identity (at most one label passes; weak when the background
  splits into several labels, e.g. one per camera -- L_back only ties images of one camera).
  Fallbacks (counted): *no_background* -- no label passes: labels by decreasing ring count are
  background until together they hold more than half of the ring pixels; *all_background* --
  every present label passes (the reference crashes): only the label with most ring pixels stays
  background, or, when it is the only label, the maps are all background.
* parts (``split``), from each foreground label's mean row over the identity's images:
  ``"structure"`` (the reference's ``DFC.LR`` default, C = 4 only): with m = min, r = max - min of
  the means and s = r / 3: head if mean < m + s/2, upper if < m + 2s, else lower; all means equal
  (one label) -> the middle part (fallback *flat_heights*; the reference puts them in "legs").
  ``"mean"``: labels sorted by mean row, split into C-1 consecutive groups of (near) equal count
  (the reference's ``split_n``, boundaries floor(j * n_fg / (C-1))). Default: "structure" for
  C = 4, else "mean". Fewer foreground labels than parts (*few_foreground_labels*) leaves parts
  empty.

Batching (the point: one Python loop per *batch* of identities, not per identity). All
identities of a batch take their SGD steps together; two layouts (``grouping``):

* ``"grouped"`` (default on CUDA): the G decoders are one grouped network (``groups=G``; each
  identity owns a block of channels; vmap over stacked weights lowers to the same grouped conv),
  images padded to the sub-batch's largest count. Identities are bucketed by image count so that
  padding stays <= ~25 %. BatchNorm is a masked BN over the G*c channels (hand-written backward):
  each channel's statistics come from its identity's real images only, and padded images are
  masked out of every loss, so their gradients are exactly zero. One kernel launch per layer for
  all G identities.
* ``"split"`` (default on the CPU): per-identity convs and native BN on each identity's own
  images, stepped together. oneDNN runs a plain conv faster than a grouped one (measured 1.5-3x on
  these shapes) and G calls cost nothing next to their FLOPs, so on the CPU batching pays only
  through the first layer's form below.

Identities that stop (fewer than min_labels labels) are dropped from the group (parameters,
momentum buffers and inputs are compacted) and the rest go on. The loss is the sum of the
per-identity means, so each identity's gradient is its own.

The first conv (C -> hidden, ~90 % of the FLOPs) runs in one of two exact forms (``layer1``):
``"conv"`` and ``"kernel"``, the dual form: the input is fixed and there is no weight decay, so
every SGD update of W1 lies in the span of the input patches U [P, 9C] (P = n*h*w pixels),
W1(t) = W1(0) - U^T A(t), and the layer's output is ``Y1(t) = Y1(0) - lr * K @ B(t)`` with the
patch Gram matrix ``K = U U^T`` [P, P] and B the momentum buffer of dL/dY1 (batched ``bmm`` over
the identities, padded). Each step then costs a [P, P] x [P, hidden] product instead of a forward
and a weight-gradient convolution over 9C inputs -- ~16x fewer FLOPs for ResNet-50 maps
(C = 2048, 16 x 8) -- after a one-off Gram (~P^2 C, the upper block triangle). ``"auto"`` takes
"kernel" where its estimated FLOPs over max_steps steps are under half of the convolutions' and K
fits the memory cap (e.g. ResNet maps, not HRNet's 256 x 64 x 32 where P is 16x larger).
Results do not depend on the batching, the layout, the layer-1 form or the device except through
float rounding (the argmax self-labelling can amplify rounding in float32; float64 features give
identical labels).

Entry points: :func:`coparse_part_labels` (all maps in one tensor) and :func:`coparse_identities`
(streaming, same contract as :func:`~hspreid.parsing.pseudo_labels.label_identities`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from hspreid.errors import UserError

from .pseudo_labels import _check_parts, _take, identity_groups, identity_seed, per_map_arrays, stream_identities

log = logging.getLogger("hspreid.parsing")

LAYER1_MODES = ("auto", "conv", "kernel")
GROUPINGS = ("auto", "grouped", "split")
BORDER_RULES = ("reference", "border_half")
SPLITS = ("structure", "mean")
FALLBACKS = ("single_image", "no_camera_pair", "few_pixels", "constant_features", "no_background",
             "all_background", "few_foreground_labels", "flat_heights", "max_steps")

_BN_EPS = 1e-5             # nn.BatchNorm2d's
_PAD_WASTE = 1.25          # padded images <= 1.25 x real images in a sub-batch
_KERNEL_MAX_PIXELS = 8192  # "kernel" layer 1 only for identities with <= this many pixels (K: P^2)
_KERNEL_BYTES = 1 << 30    # K matrices of one sub-batch <= 1 GiB


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class _Options:
    num_parts: int
    min_labels: int
    max_steps: int
    lambda_local: float
    lambda_back: float
    lr: float
    momentum: float
    hidden: int
    out_channels: int
    p: int
    window: int
    local_diagonals: bool
    rule: str
    split: str
    ids_per_batch: int
    layer1: str
    grouping: str
    seed: int


def _options(num_parts: int, *, min_labels: int = 18, max_steps: int = 32, lambda_local: float = 2.0,
             lambda_back: float = 1.0, lr: float = 0.1, momentum: float = 0.9, hidden: int = 64,
             out_channels: int = 32, p: int = 1, window: int = 3, local_diagonals: bool = True,
             rule: str = "reference", split: str | None = None, ids_per_batch: int = 16, layer1: str = "auto",
             grouping: str = "auto", seed: int = 0) -> _Options:
    """Validated options (UserError naming the bad key and value)."""
    K = _check_parts(num_parts)
    for key, val, lo in (("min_labels", min_labels, 1), ("max_steps", max_steps, 1), ("hidden", hidden, 1),
                         ("out_channels", out_channels, 2), ("ids_per_batch", ids_per_batch, 1)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or int(val) < lo:
            raise UserError(f"co-parsing: {key} must be an int >= {lo}, got {val!r}")
    if int(out_channels) > 256:
        raise UserError(f"co-parsing: out_channels must be <= 256 (labels are stored as uint8), got {out_channels!r}")
    for key, val in (("lambda_local", lambda_local), ("lambda_back", lambda_back), ("lr", lr)):
        if not isinstance(val, (int, float)) or not math.isfinite(val) or val < 0:
            raise UserError(f"co-parsing: {key} must be a finite number >= 0, got {val!r}")
    if not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise UserError(f"co-parsing: momentum must be in [0, 1), got {momentum!r}")
    if p not in (1, 2):
        raise UserError(f"co-parsing: p must be 1 or 2 (the p-norm of HCGA eqs. 2 and 4), got {p!r}")
    if not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise UserError(f"co-parsing: window (R of HCGA eq. 2) must be an odd int >= 1, got {window!r}")
    if rule not in BORDER_RULES:
        raise UserError(f"co-parsing: rule must be one of {BORDER_RULES}, got {rule!r}")
    split = _check_split(split, K)
    if layer1 not in LAYER1_MODES:
        raise UserError(f"co-parsing: layer1 must be one of {LAYER1_MODES}, got {layer1!r}")
    if grouping not in GROUPINGS:
        raise UserError(f"co-parsing: grouping must be one of {GROUPINGS}, got {grouping!r}")
    return _Options(K, int(min_labels), int(max_steps), float(lambda_local), float(lambda_back), float(lr),
                    float(momentum), int(hidden), int(out_channels), int(p), int(window), bool(local_diagonals),
                    rule, split, int(ids_per_batch), layer1, grouping, int(seed))


def _check_split(split: str | None, num_parts: int) -> str:
    """The part split rule: None -> "structure" for 4 parts, else "mean"."""
    if split is None:
        return "structure" if num_parts == 4 else "mean"
    if split not in SPLITS:
        raise UserError(f"co-parsing: split must be one of {SPLITS} or None, got {split!r}")
    if split == "structure" and num_parts != 4:
        raise UserError(f"co-parsing: split='structure' (head/upper/lower) needs num_parts=4, got "
                        f"num_parts={num_parts}; use split='mean'")
    return split


# ----------------------------------------------------------------------------- losses
def _local_offsets(window: int, diagonals: bool) -> list[tuple[int, int]]:
    """Half of the R x R window's offsets (dy, dx), each unordered neighbour pair once (HCGA eq. 2)."""
    r = window // 2
    offs = [(dy, dx) for dy in range(0, r + 1) for dx in range(-r, r + 1) if dy > 0 or dx > 0]
    return offs if diagonals else [(dy, dx) for dy, dx in offs if dy == 0 or dx == 0]


def _pow(d: torch.Tensor, p: int) -> torch.Tensor:
    """Elementwise |d|^p (p = 1 or 2)."""
    return d.abs() if p == 1 else d.square()


def _sem_batched(y: torch.Tensor, lab: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """HCGA eq. 3 per identity: mean over real pixels of CE(response, own argmax).
    y [G, n, c, h, w], lab [G, n, h, w] (argmax of y), m [G, n] image mask -> [G]."""
    G, n, c, h, w = y.shape
    ce = torch.logsumexp(y, 2) - y.gather(2, lab[:, :, None]).squeeze(2)
    return (ce.sum((2, 3)) * m).sum(1) / (m.sum(1).clamp(min=1) * h * w)


def _local_batched(y: torch.Tensor, m: torch.Tensor, p: int, offsets: list[tuple[int, int]]) -> torch.Tensor:
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


def _camera_pairs(camids: np.ndarray) -> np.ndarray:
    """[m, 2] image index pairs (k1, k2): consecutive images of the same camera, in index order
    (the adjacent same-camera images of HCGA eq. 4)."""
    camids = np.asarray(camids).reshape(-1)
    order = np.argsort(camids, kind="stable")
    same = camids[order[1:]] == camids[order[:-1]]
    return np.stack([order[:-1][same], order[1:][same]], 1).astype(np.int64)


def _back_batched(y: torch.Tensor, pairs: list[np.ndarray], p: int) -> torch.Tensor:
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
    return _sem_batched(y5, lab, y5.new_ones(1, y.shape[0]))[0]


def local_consistency_loss(y: torch.Tensor, *, p: int = 1, window: int = 3, diagonals: bool = True) -> torch.Tensor:
    """HCGA eq. 2: for each offset of half the R x R window (``window`` = R; each unordered pair
    once; ``diagonals=False``: only the 4-neighbourhood, as the reference), the mean of
    |y_c - y_s|^p over in-image pixel pairs and channels of y [n, C', h, w]; summed over offsets."""
    _options(4, p=p, window=window)
    y5 = _as_response(y, "local_consistency_loss")
    return _local_batched(y5, y5.new_ones(1, y.shape[0]), p, _local_offsets(window, diagonals))[0]


def background_consistency_loss(y: torch.Tensor, camids, *, p: int = 1) -> torch.Tensor:
    """HCGA eq. 4: mean |y_k1 - y_k2|^p over the adjacent same-camera image pairs (consecutive
    images of one camera in index order), pixels and channels of y [n, C', h, w]; 0 without pairs."""
    _options(4, p=p)
    y5 = _as_response(y, "background_consistency_loss")
    cam = np.asarray(camids.cpu() if isinstance(camids, torch.Tensor) else camids).reshape(-1)
    if cam.shape[0] != y.shape[0]:
        raise UserError(f"background_consistency_loss: {cam.shape[0]} camids for {y.shape[0]} images")
    return _back_batched(y5, [_camera_pairs(cam)], p)[0]


# ----------------------------------------------------------------------------- CPLR
def _ring(h: int, w: int, device: torch.device) -> torch.Tensor:
    """bool [h, w]: the outer ring of an image (its border pixels)."""
    r = torch.zeros(h, w, dtype=torch.bool, device=device)
    r[0], r[-1], r[:, 0], r[:, -1] = True, True, True, True
    return r


def _background(lab: torch.Tensor, L: int, rule: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Algorithm 1 lines 9-15: (background flags [L] by ``rule``, ring border counts [L], half of
    the identity's ring pixels)."""
    n, h, w = lab.shape
    ring = _ring(h, w, lab.device)
    bc = torch.bincount(lab[:, ring].reshape(-1), minlength=L).cpu().numpy()
    half = 0.5 * n * int(ring.sum())
    if rule == "border_half":
        return bc > half, bc, half
    rows = torch.tensor(np.clip([0, 3, h - 1, h - 4], 0, h - 1), device=lab.device)
    tb = torch.bincount(lab.index_select(1, rows).reshape(-1), minlength=L).cpu().numpy()
    cols = torch.tensor([0, w - 1], device=lab.device)
    lr = torch.bincount(lab.index_select(2, cols).reshape(-1), minlength=L).cpu().numpy()
    return (tb > n * w / 2) | (lr > n * h / 3), bc, half


def _split_parts(fg: np.ndarray, mean_row: np.ndarray, K1: int, split: str) -> tuple[np.ndarray, bool]:
    """Algorithm 1 line 17: part 1..K1 of each foreground label (by mean row); flag = all means equal."""
    means = mean_row[fg]
    if split == "mean":
        order = np.argsort(means, kind="stable")
        bounds = (np.arange(K1 + 1) * len(fg)) // K1            # floor(j * n_fg / K1)
        part = np.empty(len(fg), np.int64)
        part[order] = np.searchsorted(bounds, np.arange(len(fg)), side="right")
        return part, False
    lo, rng = means.min(), means.max() - means.min()
    if rng == 0:
        return np.full(len(fg), (K1 + 1) // 2), True
    s = rng / K1
    return np.where(means < lo + s / 2, 1, np.where(means < lo + 2 * s, 2, 3)), False


def _cplr_one(lab: torch.Tensor, num_parts: int, rule: str, split: str) -> tuple[torch.Tensor, dict]:
    """CPLR (Algorithm 1 lines 9-17) of one identity's labels lab int64 [n, h, w] ->
    (uint8 [n, h, w] with 0 background, 1..num_parts-1 parts top to bottom, info dict)."""
    n, h, w = lab.shape
    K1 = num_parts - 1
    L = int(lab.max()) + 1 if lab.numel() else 1
    flat = lab.reshape(-1)
    cnt = torch.bincount(flat, minlength=L)
    rows = torch.arange(h, device=lab.device, dtype=torch.float64).view(1, h, 1).expand(n, h, w).reshape(-1)
    rsum = torch.bincount(flat, weights=rows, minlength=L).cpu().numpy()
    cnt = cnt.cpu().numpy()
    present = cnt > 0
    bg, bc, half = _background(lab, L, rule)
    bg &= present
    fallbacks = []
    by_border = np.lexsort((np.arange(L), -np.where(present, bc, -1)))   # most border pixels first
    if not bg.any():                                         # no label passes: greedy by border count
        fallbacks.append("no_background")
        acc = 0
        for lbl in by_border:
            if acc > half:
                break
            bg[lbl] = True
            acc += bc[lbl]
    if not (present & ~bg).any():                            # all background (the reference crashes)
        fallbacks.append("all_background")
        if present.sum() > 1:                                # keep only the top border label
            bg[:] = False
            bg[by_border[0]] = True
    fg = np.flatnonzero(present & ~bg)
    lut = np.zeros(L, np.uint8)
    if len(fg):
        part, flat_h = _split_parts(fg, rsum / np.maximum(cnt, 1), K1, split)
        lut[fg] = part
        if flat_h:
            fallbacks.append("flat_heights")
    if len(fg) < K1:
        fallbacks.append("few_foreground_labels")
    out = torch.from_numpy(lut).to(lab.device)[lab]
    sizes = np.bincount(lut[flat.cpu().numpy()], minlength=num_parts)[1:]
    info = {"background_labels": np.flatnonzero(bg), "foreground_labels": fg, "part_of_label": lut,
            "part_sizes": sizes.astype(np.int64), "fallbacks": fallbacks}
    return out, info


def cplr(labels, num_parts: int = 4, *, rule: str = "reference", split: str | None = None, return_info: bool = False):
    """Center prior label reassignment (HCGA Algorithm 1 lines 9-17) of one identity's predicted
    labels [n, h, w] (ints >= 0, a tensor or array): returns uint8 [n, h, w] (same kind) with 0 =
    background and 1..num_parts-1 = parts top to bottom. ``rule`` and ``split``: see the module
    docstring. With ``return_info=True`` returns ``(parts, info)``: background_labels,
    foreground_labels, part_of_label [max label + 1], part_sizes [num_parts-1], fallbacks (names)."""
    K = _check_parts(num_parts)
    if rule not in BORDER_RULES:
        raise UserError(f"cplr: rule must be one of {BORDER_RULES}, got {rule!r}")
    split = _check_split(split, K)
    is_np = not isinstance(labels, torch.Tensor)
    lab = torch.from_numpy(np.asarray(labels)) if is_np else labels
    if lab.dim() != 3 or lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        raise UserError(f"cplr: labels must be an integer [n, h, w] map, got {tuple(lab.shape)} {lab.dtype}")
    if lab.numel() == 0:
        raise UserError(f"cplr: labels must not be empty, got shape {tuple(lab.shape)}")
    if int(lab.min()) < 0:
        raise UserError(f"cplr: labels must be >= 0, found {int(lab.min())}")
    out, info = _cplr_one(lab.long(), K, rule, split)
    out = out.cpu().numpy() if is_np else out
    return (out, info) if return_info else out


# ----------------------------------------------------------------------------- decoder
def init_decoder(pid: int, in_channels: int, *, hidden: int = 64, out_channels: int = 32, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Initial decoder parameters of identity ``pid`` (HCGA Algorithm 1 line 2): conv weights w1
    [hidden, C, 3, 3], w2 [C', hidden, 1, 1], w3 [hidden, C', 3, 3], w4 [C', hidden, 1, 1] drawn
    Kaiming-uniform (bound 1/sqrt(fan_in), PyTorch's conv default) in float64 from a generator
    seeded with ``identity_seed(seed, pid)`` and cast to ``dtype`` (same draws for any dtype,
    device or batch); BN weights g1..g4 = 1 and biases b1..b4 = 0. CPU tensors."""
    g = torch.Generator().manual_seed(identity_seed(seed, pid))
    shapes = {"w1": (hidden, in_channels, 3, 3), "w2": (out_channels, hidden, 1, 1),
              "w3": (hidden, out_channels, 3, 3), "w4": (out_channels, hidden, 1, 1)}
    out = {}
    for i, (name, shp) in enumerate(shapes.items(), 1):
        bound = 1.0 / math.sqrt(math.prod(shp[1:]))
        out[name] = ((torch.rand(shp, generator=g, dtype=torch.float64) * 2 - 1) * bound).to(dtype)
        out[f"g{i}"] = torch.ones(shp[0], dtype=dtype)
        out[f"b{i}"] = torch.zeros(shp[0], dtype=dtype)
    return out


class _MaskedBN(torch.autograd.Function):
    """Training-mode BatchNorm of a grouped activation x [n, G*c, h, w] (any memory format) with
    the statistics of each identity's real images only (m [G, n] image mask); gamma, beta [G, c].
    Hand-written backward (the BN gradient with masked sums; padded images get 0): a third of
    the elementwise passes autograd makes of the same formula."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, m: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        G, c = gamma.shape
        xv = x.unflatten(1, (G, c))                                   # a view in any layout
        mt = m.t().to(x.dtype)[:, :, None]                            # [n, G, 1]
        cnt = (m.sum(1) * (x.shape[2] * x.shape[3])).clamp(min=1)[:, None]
        mean = (xv.sum((3, 4)) * mt).sum(0) / cnt
        xhat = xv - mean[None, :, :, None, None]
        var = (xhat.square().sum((3, 4)) * mt).sum(0) / cnt         # biased, as BN training
        rstd = torch.rsqrt(var + _BN_EPS)
        xhat.mul_(rstd[None, :, :, None, None])
        ctx.save_for_backward(xhat, rstd, gamma, mt, cnt)
        return torch.addcmul(beta[None, :, :, None, None], xhat, gamma[None, :, :, None, None]).flatten(1, 2)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        xhat, rstd, gamma, mt, cnt = ctx.saved_tensors
        gv = gy.unflatten(1, gamma.shape)
        dbeta = (gv.sum((3, 4)) * mt).sum(0)
        dgamma = ((gv * xhat).sum((3, 4)) * mt).sum(0)
        e = lambda t: t[None, :, :, None, None]                       # noqa: E731 -- [G, c] -> broadcast
        dx = gv - e(dbeta / cnt)
        dx.sub_(xhat * e(dgamma / cnt)).mul_(e(gamma * rstd)).mul_(mt[..., None, None])
        return dx.flatten(1, 2), None, dgamma, dbeta


def _masked_bn(x: torch.Tensor, m: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Training-mode BN of grouped x [n, G*c, h, w] over each identity's real images (m [G, n])."""
    return _MaskedBN.apply(x, m, gamma, beta)


def _gram(X: torch.Tensor) -> torch.Tensor:
    """X X^T [P, P] of X [P, C]: row blocks times the columns from their diagonal on, mirrored
    (P^2 (b+1)/(2b) products for b blocks instead of P^2)."""
    P = X.shape[0]
    nb = max(1, min(8, P // 512))
    if nb == 1:
        return X @ X.t()
    cuts = [P * i // nb for i in range(nb + 1)]
    out = X.new_empty(P, P)
    for a, b in zip(cuts[:-1], cuts[1:]):
        blk = X[a:b] @ X[a:].t()
        out[a:b, a:] = blk
        out[b:, a:b] = blk[:, b - a:].t()
    return out


def _shift_sum(G: torch.Tensor, dim: int) -> torch.Tensor:
    """sum over d in {-1, 0, 1} of G shifted by d along spatial axis ``dim`` *and* its partner
    ``dim + 3`` of a [n, h, w, n, h, w] pair tensor (entries shifted out of the image are 0)."""
    K = G.clone()
    L = G.shape[dim]
    for d in (-1, 1):
        t, s = slice(max(0, -d), L - max(0, d)), slice(max(0, d), L - max(0, -d))
        it, is_ = [slice(None)] * 6, [slice(None)] * 6
        it[dim], it[dim + 3], is_[dim], is_[dim + 3] = t, t, s, s
        K[tuple(it)] += G[tuple(is_)]
    return K


def _patch_gram(f: torch.Tensor) -> torch.Tensor:
    """K = U U^T [P, P] for the 3x3 zero-padded patches U [P, 9C] of f [n, C, h, w]:
    K[p, q] = sum over the 9 offsets o of <f(p+o), f(q+o)> (0 outside the image); the offsets
    are separable, so the row shifts and then the column shifts are summed."""
    n, C, h, w = f.shape
    Gx = _gram(f.permute(0, 2, 3, 1).reshape(n * h * w, C)).view(n, h, w, n, h, w)
    return _shift_sum(_shift_sum(Gx, 2), 1).view(n * h * w, n * h * w)


_STACKED = ("g1", "b1", "w2", "g2", "b2", "w3", "g3", "b3", "w4", "g4", "b4")


def _hcga_loss(y: torch.Tensor, lab: torch.Tensor, m: torch.Tensor, pairs: list[np.ndarray],
               opt: _Options) -> torch.Tensor:
    """HCGA eq. 5 per identity: L_sem + lambda_L L_local + lambda_B L_back of y [G, n, C', h, w]
    (labels lab [G, n, h, w], image mask m [G, n]), [G]."""
    total = _sem_batched(y, lab, m)
    if opt.lambda_local:
        total = total + opt.lambda_local * _local_batched(y, m, opt.p, _local_offsets(opt.window, opt.local_diagonals))
    if opt.lambda_back:
        total = total + opt.lambda_back * _back_batched(y, pairs, opt.p)
    return total


class _DecoderGroup:
    """G identities' decoders stepped together (see the module docstring). ``layer1``: "conv" or
    "kernel"; ``grouped``: one grouped network with masked BN over padded images, else
    per-identity convs and BN on each identity's own images."""

    def __init__(self, feats: list[torch.Tensor], pairs: list[np.ndarray], inits: list[dict], layer1: str,
                 grouped: bool, opt: _Options, dtype: torch.dtype, device: torch.device) -> None:
        self.layer1, self.grouped, self.opt = layer1, grouped, opt
        self.ns = [f.shape[0] for f in feats]
        self.pairs = pairs
        n, (C, h, w) = max(self.ns), feats[0].shape[1:]
        self.hw = (h, w)
        G = len(feats)
        self.Y1_leaf: torch.Tensor | None = None
        self.padded_labels: torch.Tensor | None = None
        self.w1: list[torch.Tensor] = []
        self.w1_bufs: list[torch.Tensor | None] = []
        with torch.no_grad():
            self.params = {k: torch.stack([it[k] for it in inits]).to(device).requires_grad_() for k in _STACKED}
            self.bufs: dict[str, torch.Tensor | None] = dict.fromkeys(self.params)
            if layer1 == "kernel":                                  # dual form: Gram K and Y1(0)
                P = n * h * w
                self.K = torch.zeros(G, P, P, dtype=dtype, device=device)
                self.Y1 = torch.zeros(G, n, h, w, opt.hidden, dtype=dtype, device=device)
                for g, f in enumerate(feats):
                    k = f.shape[0] * h * w
                    self.K[g, :k, :k] = _patch_gram(f)
                    self.Y1[g, : f.shape[0]] = F.conv2d(f, inits[g]["w1"].to(device), padding=1).permute(0, 2, 3, 1)
                self.Y1_buf: torch.Tensor | None = None
            elif grouped:                                           # one [n, G*C, h, w] input
                self.params["w1"] = torch.stack([it["w1"] for it in inits]).to(device).requires_grad_()
                self.bufs["w1"] = None
                self.X = torch.zeros(n, G, C, h, w, dtype=dtype, device=device)
                for g, f in enumerate(feats):
                    self.X[: f.shape[0], g] = f
                self.X = self.X.view(n, G * C, h, w)
            else:
                self.feats = feats
                self.w1 = [it["w1"].to(device).requires_grad_() for it in inits]
                self.w1_bufs = [None] * G

    @property
    def G(self) -> int:
        return len(self.ns)

    def mask(self) -> torch.Tensor:
        """[G, n_max] float mask of real images."""
        n = max(self.ns)
        dev = self.params["g1"].device
        return (torch.arange(n, device=dev)[None] < torch.tensor(self.ns, device=dev)[:, None]).to(self.params["g1"])

    def _kernel_y1(self) -> torch.Tensor:
        """Layer-1 output of the dual form as a fresh leaf [G, n_max, h, w, hidden]."""
        self.Y1_leaf = self.Y1.detach().requires_grad_()
        return self.Y1_leaf

    def forward(self) -> torch.Tensor | list[torch.Tensor]:
        """Responses (the last BN's output): [G, n_max, C', h, w] grouped, else [n_g, C', h, w] each."""
        return self._forward_grouped() if self.grouped else self._forward_split()

    def _forward_grouped(self) -> torch.Tensor:
        P, G, m, hid = self.params, self.G, self.mask(), self.opt.hidden

        def bn(x, i):
            return _masked_bn(x, m, P[f"g{i}"], P[f"b{i}"])

        def conv(x, wk, pad):
            return F.conv2d(x, wk.reshape(-1, *wk.shape[2:]), padding=pad, groups=G)

        if self.layer1 == "kernel":
            x = self._kernel_y1().permute(1, 0, 4, 2, 3).reshape(max(self.ns), G * hid, *self.hw)
        else:
            x = conv(self.X, P["w1"], 1)
        if x.device.type == "cpu":          # oneDNN's grouped convs are 1.5-3x faster channels-last
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(bn(x, 1))
        x = F.relu(bn(conv(x, P["w2"], 0), 2))
        x = F.relu(bn(conv(x, P["w3"], 1), 3))
        x = bn(conv(x, P["w4"], 0), 4)
        return x.unflatten(1, (G, self.opt.out_channels)).transpose(0, 1)

    def _forward_split(self) -> list[torch.Tensor]:
        P = self.params
        if self.layer1 == "kernel":
            y1 = self._kernel_y1()
            x1 = [y1[g, :n].permute(0, 3, 1, 2) for g, n in enumerate(self.ns)]
        else:
            x1 = [F.conv2d(f, w, padding=1) for f, w in zip(self.feats, self.w1)]
        out = []
        for g, x in enumerate(x1):
            def bn(x, i):
                return F.batch_norm(x, None, None, P[f"g{i}"][g], P[f"b{i}"][g], training=True, eps=_BN_EPS)

            x = F.relu(bn(x, 1))
            x = F.relu(bn(F.conv2d(x, P["w2"][g]), 2))
            x = F.relu(bn(F.conv2d(x, P["w3"][g], padding=1), 3))
            out.append(bn(F.conv2d(x, P["w4"][g]), 4))
        return out

    @torch.no_grad()
    def labels(self, y: torch.Tensor | list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
        """Argmax labels [n_g, h, w] and the number of distinct labels of each identity."""
        c2 = self.opt.out_channels
        if not self.grouped:
            labs = [t.argmax(1) for t in y]
            cnt = torch.stack([torch.bincount(lab.reshape(-1), minlength=c2) for lab in labs])
            return labs, (cnt > 0).sum(1).tolist()
        lab = self.padded_labels = y.argmax(2)                              # [G, n, h, w]
        m, G = self.mask(), self.G
        pix = m[:, :, None].expand(G, m.shape[1], lab.shape[2] * lab.shape[3]).reshape(G, -1)
        cnt = torch.zeros(G, c2, dtype=pix.dtype, device=pix.device).scatter_add_(1, lab.reshape(G, -1), pix)
        return [lab[g, :n] for g, n in enumerate(self.ns)], (cnt > 0).sum(1).tolist()

    def backward(self, y: torch.Tensor | list[torch.Tensor], labs: list[torch.Tensor], live: list[bool]) -> None:
        """Backpropagate the HCGA eq. 5 loss of the identities still training (``live``); ``labs``
        from :meth:`labels` of the same forward."""
        if self.grouped:
            w = torch.tensor(live, dtype=y.dtype, device=y.device)
            (_hcga_loss(y, self.padded_labels, self.mask(), self.pairs, self.opt) * w).sum().backward()
            self.padded_labels = None
            return
        total = sum(_hcga_loss(t[None], lab[None], t.new_ones(1, t.shape[0]), [q], self.opt)[0]
                    for t, lab, q, keep in zip(y, labs, self.pairs, live) if keep)
        total.backward()

    @torch.no_grad()
    def step(self) -> None:
        """One SGD-with-momentum update (PyTorch's rule: buf = mu buf + grad, p -= lr buf) of every
        identity's parameters from the gradients of the last backward."""
        lr, mu = self.opt.lr, self.opt.momentum

        def upd(p: torch.Tensor, buf: torch.Tensor | None) -> torch.Tensor:
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            buf = grad.clone() if buf is None else buf.mul_(mu).add_(grad)
            p.sub_(lr * buf)
            p.grad = None
            return buf

        for k, p in self.params.items():
            self.bufs[k] = upd(p, self.bufs[k])
        self.w1_bufs = [upd(w, b) for w, b in zip(self.w1, self.w1_bufs)]
        if self.layer1 == "kernel":             # W1 -= lr U^T B  <=>  Y1 -= lr K B (B: dL/dY1 momentum)
            g = self.Y1_leaf.grad
            self.Y1_buf = g.clone() if self.Y1_buf is None else self.Y1_buf.mul_(mu).add_(g)
            G, n, h, w, hid = self.Y1.shape
            self.Y1 -= lr * torch.bmm(self.K, self.Y1_buf.view(G, n * h * w, hid)).view_as(self.Y1)
            self.Y1_leaf = None

    @torch.no_grad()
    def keep(self, idx: list[int]) -> None:
        """Drop every identity not in ``idx`` (positions) and the image slots no one uses any more."""
        ns = [self.ns[i] for i in idx]
        n, n_old, G = max(ns), max(self.ns), self.G
        ix = torch.tensor(idx, device=self.params["g1"].device)
        for k in list(self.params):
            self.params[k] = self.params[k].index_select(0, ix).requires_grad_()
            if self.bufs[k] is not None:
                self.bufs[k] = self.bufs[k].index_select(0, ix)
        if self.layer1 == "kernel":
            hw = self.hw[0] * self.hw[1]
            K = self.K.view(G, n_old, hw, n_old, hw)[:, :n, :, :n].index_select(0, ix)
            self.K = K.reshape(len(idx), n * hw, n * hw)
            self.Y1 = self.Y1[:, :n].index_select(0, ix)
            if self.Y1_buf is not None:
                self.Y1_buf = self.Y1_buf[:, :n].index_select(0, ix)
        elif self.grouped:
            self.X = self.X.view(n_old, G, -1, *self.hw)[:n].index_select(1, ix).flatten(1, 2)
        else:
            self.feats = [self.feats[i] for i in idx]
            self.w1 = [self.w1[i] for i in idx]
            self.w1_bufs = [self.w1_bufs[i] for i in idx]
        self.pairs = [self.pairs[i] for i in idx]
        self.ns = ns


def _train(group: _DecoderGroup, opt: _Options) -> tuple[list[torch.Tensor], list[int], list[int]]:
    """Algorithm 1 lines 4-8 for every identity of ``group``: returns per identity (in input order)
    the argmax labels of its last forward (int64 [n_i, h, w]), its step count and label count."""
    G0 = group.G
    alive = list(range(G0))                                  # input positions of the group's members
    labels: list = [None] * G0
    steps, nlab = [0] * G0, [0] * G0
    for t in range(1, opt.max_steps + 1):
        y = group.forward()
        labs, uniq = group.labels(y)
        done = [u < opt.min_labels or t == opt.max_steps for u in uniq]
        for b, i in enumerate(alive):
            if done[b]:
                labels[i] = labs[b].clone()
                steps[i], nlab[i] = t, int(uniq[b])
        if all(done):
            break
        group.backward(y, labs, [not d for d in done])
        del y
        group.step()
        if any(done):
            keep = [b for b in range(group.G) if not done[b]]
            group.keep(keep)
            alive = [alive[b] for b in keep]
    return labels, steps, nlab


# ----------------------------------------------------------------------------- batches
def _plan_mode(n: int, C: int, h: int, w: int, opt: _Options, device: torch.device) -> tuple[str, bool]:
    """(layer-1 form, grouped) for an identity of n images. layer1 "auto": "kernel" when its FLOPs
    estimate (Gram + max_steps products) is under half of the convolutions' and K fits, else
    "conv"; grouping "auto": grouped on CUDA, split on the CPU."""
    grouped = opt.grouping == "grouped" or (opt.grouping == "auto" and device.type == "cuda")
    if opt.layer1 != "auto":
        return opt.layer1, grouped
    P, S, hid = n * h * w, opt.max_steps, opt.hidden
    conv = S * 4.0 * P * 9 * C * hid                          # forward + weight-gradient convs
    kern = 2.0 * P * P * C + 2.0 * P * 9 * C * hid + S * 2.0 * P * P * hid
    return ("kernel" if P <= _KERNEL_MAX_PIXELS and kern < 0.5 * conv else "conv"), grouped


def _runs(ns: list[int], mode: tuple[str, bool], hw: int, itemsize: int) -> list[list[int]]:
    """Positions 0..len-1 (ns ascending) cut into sub-batches with padded images <= 1.25 x real
    ("kernel": padded squared pixel counts, and K matrices <= _KERNEL_BYTES); one identity
    always forms a run. Split convs pad nothing: one run."""
    layer1, grouped = mode
    if layer1 == "conv" and not grouped:
        return [list(range(len(ns)))]
    runs, cur, tot = [], [], 0
    e = 2 if layer1 == "kernel" else 1                 # "kernel" costs grow with pixels^2
    for i, n in enumerate(ns):
        pad = (len(cur) + 1) * n ** e
        big = layer1 == "kernel" and (len(cur) + 1) * (n * hw) ** 2 * itemsize > _KERNEL_BYTES
        if cur and (pad > _PAD_WASTE * (tot + n ** e) or big):
            runs.append(cur)
            cur, tot = [], 0
        cur.append(i)
        tot += n ** e
    if cur:
        runs.append(cur)
    return runs


def _coparse_batch(items: list[tuple[int, torch.Tensor, np.ndarray]], opt: _Options,
                   device: torch.device) -> tuple[list[torch.Tensor], list[dict]]:
    """Co-parse identities ``[(pid, maps [n, C, h, w], camids [n]), ...]``: returns (uint8 part
    labels [n_i, h, w] on ``device`` per item, per-identity stats dicts)."""
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
        pairs = _camera_pairs(cam)
        fb = (["single_image"] if n == 1 else []) + (["no_camera_pair"] if len(pairs) == 0 else [])
        fb += ["few_pixels"] if n * h * w < opt.min_labels else []
        mode = ("none", False) if constant[i] else _plan_mode(n, C, h, w, opt, device)
        stats.append({"pid": int(pid), "num_images": int(n), "num_pairs": int(len(pairs)), "layer1": mode[0],
                      "grouped": mode[1], "steps": 0, "num_labels": 1, "converged": False, "fallbacks": fb})
        if constant[i]:
            fb.append("constant_features")
            raw[i] = torch.zeros(n, h, w, dtype=torch.long, device=device)
        else:
            todo.setdefault(mode, []).append(i)
    for mode, ids in todo.items():
        ids = sorted(ids, key=lambda i: (feats[i].shape[0], stats[i]["pid"]))
        for run in _runs([feats[i].shape[0] for i in ids], mode, h * w, feats[0].element_size()):
            sub = [ids[r] for r in run]
            inits = [init_decoder(stats[i]["pid"], C, hidden=opt.hidden, out_channels=opt.out_channels,
                                  seed=opt.seed, dtype=dtype) for i in sub]
            group = _DecoderGroup([feats[i] for i in sub], [_camera_pairs(items[i][2]) for i in sub], inits,
                                  *mode, opt, dtype, device)
            labs, steps, nlab = _train(group, opt)
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
                            part_sizes=np.zeros(opt.num_parts - 1, np.int64))
            continue
        out[i], info = _cplr_one(lab, opt.num_parts, opt.rule, opt.split)
        stats[i].update(num_background_labels=len(info["background_labels"]),
                        num_foreground_labels=len(info["foreground_labels"]), part_sizes=info["part_sizes"])
        stats[i]["fallbacks"] += info["fallbacks"]
    for st in stats:
        if st["fallbacks"]:
            log.info("co-parsing: identity %s fallbacks: %s", st["pid"], ", ".join(st["fallbacks"]))
    return out, stats


def _stats_table(stats: list[dict], K1: int) -> dict:
    """Per-identity stats dicts -> arrays sorted by pid, plus ``fallbacks`` {name: count} and
    ``fallback_pids`` {name: pids}."""
    stats = sorted(stats, key=lambda s: s["pid"])
    keys = ("pid", "num_images", "num_pairs", "layer1", "grouped", "steps", "num_labels", "converged",
            "num_background_labels", "num_foreground_labels")
    tab = {k: np.array([s[k] for s in stats]) for k in keys}
    tab["part_sizes"] = np.stack([s["part_sizes"] for s in stats]) if stats else np.zeros((0, K1), np.int64)
    tab["fallback_pids"] = {f: np.array([s["pid"] for s in stats if f in s["fallbacks"]], np.int64) for f in FALLBACKS}
    tab["fallbacks"] = {f: int(len(v)) for f, v in tab["fallback_pids"].items()}
    return tab


# ----------------------------------------------------------------------------- entry points
def coparse_part_labels(features: torch.Tensor, pids, camids, num_parts: int = 4, *, min_labels: int = 18,
                        max_steps: int = 32, lambda_local: float = 2.0, lambda_back: float = 1.0, lr: float = 0.1,
                        momentum: float = 0.9, hidden: int = 64, out_channels: int = 32, p: int = 1,
                        window: int = 3, local_diagonals: bool = True, rule: str = "reference",
                        split: str | None = None, ids_per_batch: int = 16, layer1: str = "auto",
                        grouping: str = "auto", seed: int = 0,
                        device: torch.device | str | None = None) -> tuple[torch.Tensor, dict]:
    """HCGA co-parsing part labels of N maps: features float [N, C, h, w], pids [N], camids [N].

    Returns ``(labels, stats)``: labels uint8 [N, h, w] on the features' device (0 background,
    1..num_parts-1 parts top to bottom); stats a dict of per-identity arrays sorted by pid -- pid,
    num_images, num_pairs (L_back pairs), layer1 (form used; "none" = not trained), grouped, steps
    (forwards), num_labels (distinct labels at the stop), converged (num_labels < min_labels),
    num_background_labels, num_foreground_labels, part_sizes [n_ids, num_parts-1] -- plus
    ``fallbacks`` {name: count} and ``fallback_pids`` {name: pids} over :data:`FALLBACKS`.
    An identity's images are taken in input order (it defines the adjacent same-camera pairs of
    L_back). Identities are processed ``ids_per_batch`` at a time, sorted by image count;
    computation runs on ``device`` (default: the features' device). Options: see the module
    docstring (defaults: HCGA's).
    """
    opt = _options(num_parts, min_labels=min_labels, max_steps=max_steps, lambda_local=lambda_local,
                   lambda_back=lambda_back, lr=lr, momentum=momentum, hidden=hidden, out_channels=out_channels,
                   p=p, window=window, local_diagonals=local_diagonals, rule=rule, split=split,
                   ids_per_batch=ids_per_batch, layer1=layer1, grouping=grouping, seed=seed)
    pid_np, cam_np = per_map_arrays(features, "coparse_part_labels", allow_empty=False, pids=pids, camids=camids)
    N, _, h, w = features.shape
    dev = torch.device(device) if device is not None else features.device
    out = torch.zeros(N, h, w, dtype=torch.uint8, device=features.device)
    uniq, groups, order = identity_groups(pid_np)
    all_stats = []
    for s in range(0, len(order), opt.ids_per_batch):
        us = order[s: s + opt.ids_per_batch]
        items = [(int(uniq[u]), _take(features, groups[u]), cam_np[groups[u]]) for u in us]
        labels, stats = _coparse_batch(items, opt, dev)
        for u, lab in zip(us, labels):
            out[torch.from_numpy(groups[u]).to(out.device)] = lab.to(out.device)
        all_stats += stats
    return out, _stats_table(all_stats, opt.num_parts - 1)


def coparse_identities(chunks: Iterable[tuple], num_parts: int = 4, *, device: torch.device | str | None = None,
                       on_stats: Callable[[dict], None] | None = None,
                       **options) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streaming HCGA co-parsing. ``chunks`` yields ``(maps [n, C, h, w], pids [n], rows [n],
    camids [n])`` with every identity's rows contiguous in the stream (a chunk may hold several
    identities or part of one). Yields ``(rows int64 [m], labels uint8 [m, h, w])`` numpy pairs,
    one per batch of ``ids_per_batch`` identities, rows ascending (write them with
    :func:`~hspreid.parsing.pseudo_labels.write_rows`). Only the pending batch and the identity
    being received are held. ``on_stats`` gets each identity's stats dict (the keys of
    :func:`coparse_part_labels`' table, ``fallbacks`` a list of names). ``options``: those of
    :func:`coparse_part_labels`; same labels for the same arguments. An identity that reappears
    after another one started raises UserError.
    """
    unknown = set(options) - set(_Options.__dataclass_fields__)
    if unknown:
        raise UserError(f"coparse_identities: unknown option(s) {sorted(unknown)}")
    opt = _options(num_parts, **options)
    pending: list[tuple[int, torch.Tensor, np.ndarray, np.ndarray]] = []

    def run() -> tuple[np.ndarray, np.ndarray]:
        dev = torch.device(device) if device is not None else pending[0][1].device
        labels, stats = _coparse_batch([(pid, f, c) for pid, f, _, c in pending], opt, dev)
        if on_stats is not None:
            for st in stats:
                on_stats(st)
        rows = np.concatenate([r for _, _, r, _ in pending])
        lab = torch.cat([x.cpu() for x in labels]).numpy()
        pending.clear()
        o = np.argsort(rows, kind="stable")
        return rows[o], lab[o]

    for item in stream_identities(chunks, "coparse_identities", ("pids", "rows", "camids")):
        if len(pending) >= opt.ids_per_batch:
            yield run()
        pending.append(item)
    if pending:
        yield run()
