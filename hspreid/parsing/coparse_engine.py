"""The batched co-parsing engine: G identities' decoders (HCGA Algorithm 1 lines 1-8) stepped together.

For the images of one identity, frozen encoder maps V [n, C, h, w] go through a decoder trained
from scratch for that identity. The layout is the reference's ``MyNet``: conv3x3 C->hidden, BN,
ReLU; conv1x1 hidden->C', BN, ReLU; conv3x3 C'->hidden, BN, ReLU; conv1x1 hidden->C', BN (hidden 64,
C' 32). BN runs in training mode (batch statistics of the identity's images) as in the reference.
The convs have no bias: in front of a training-mode BN a bias cancels exactly. Weights are
Kaiming-uniform (PyTorch's conv default, bound 1/sqrt(fan_in); Algorithm 1 line 2), drawn from a
generator seeded with ``identity_seed(seed, pid)``; BN weight 1, bias 0. SGD (lr 0.1, momentum 0.9,
PyTorch's update) runs until the number of distinct argmax labels over the identity's images is below
``min_labels`` (Algorithm 1 line 8, strict "<"; the reference stops at "<=", so its MIN_LABEL_NUM 18 is
``min_labels=19`` here) or ``max_steps`` forwards were done; the labels are those of the last forward.

Two layouts (``grouping``): ``"grouped"`` (default on CUDA): the G decoders are one grouped network
(``groups=G``), images padded to the sub-batch's largest count, BatchNorm a masked BN over the G*c channels
(hand-written backward) whose statistics come from each identity's real images only; ``"split"`` (default
on the CPU): per-identity convs and native BN on each identity's own images, stepped together (oneDNN runs a
plain conv 1.5-3x faster than a grouped one on these shapes). Identities that stop are dropped from the
group (parameters, momentum buffers and inputs compacted). The loss is the sum of the per-identity means,
so each identity's gradient is its own.

The first conv (C -> hidden, ~90 % of the FLOPs) runs in one of two exact forms (``layer1``): ``"conv"``,
or ``"kernel"``, the dual form: the input is fixed and there is no weight decay, so every SGD update of W1
lies in the span of the input patches U [P, 9C], W1(t) = W1(0) - U^T A(t), and the layer's output is
``Y1(t) = Y1(0) - lr * K @ B(t)`` with the patch Gram matrix ``K = U U^T`` [P, P] and B the momentum buffer
of dL/dY1. Each step then costs a [P, P] x [P, hidden] product instead of a forward and a weight-gradient
convolution over 9C inputs -- ~16x fewer FLOPs for ResNet-50 maps (C = 2048, 16 x 8). ``"auto"`` takes
"kernel" where its estimated FLOPs over max_steps steps are under half of the convolutions' and K fits the
memory cap. Results do not depend on the batching, the layout, the layer-1 form or the device except
through float rounding.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .coparse_losses import hcga_loss
from .identities import identity_seed
from .options import CoparseOptions

_BN_EPS = 1e-5             # nn.BatchNorm2d's
_PAD_WASTE = 1.25          # padded images <= 1.25 x real images in a sub-batch
_KERNEL_MAX_PIXELS = 8192  # "kernel" layer 1 only for identities with <= this many pixels (K: P^2)
_KERNEL_BYTES = 1 << 30    # K matrices of one sub-batch <= 1 GiB


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


def patch_gram(f: torch.Tensor) -> torch.Tensor:
    """K = U U^T [P, P] for the 3x3 zero-padded patches U [P, 9C] of f [n, C, h, w]:
    K[p, q] = sum over the 9 offsets o of <f(p+o), f(q+o)> (0 outside the image); the offsets
    are separable, so the row shifts and then the column shifts are summed."""
    n, C, h, w = f.shape
    Gx = _gram(f.permute(0, 2, 3, 1).reshape(n * h * w, C)).view(n, h, w, n, h, w)
    return _shift_sum(_shift_sum(Gx, 2), 1).view(n * h * w, n * h * w)


_STACKED = ("g1", "b1", "w2", "g2", "b2", "w3", "g3", "b3", "w4", "g4", "b4")


class DecoderGroup:
    """G identities' decoders stepped together (see the module docstring). ``layer1``: "conv" or
    "kernel"; ``grouped``: one grouped network with masked BN over padded images, else
    per-identity convs and BN on each identity's own images."""

    def __init__(self, feats: list[torch.Tensor], pairs: list[np.ndarray], inits: list[dict], layer1: str,
                 grouped: bool, opt: CoparseOptions, dtype: torch.dtype, device: torch.device) -> None:
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
                    self.K[g, :k, :k] = patch_gram(f)
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
            (hcga_loss(y, self.padded_labels, self.mask(), self.pairs, self.opt) * w).sum().backward()
            self.padded_labels = None
            return
        total = sum(hcga_loss(t[None], lab[None], t.new_ones(1, t.shape[0]), [q], self.opt)[0]
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


def train_group(group: DecoderGroup, opt: CoparseOptions) -> tuple[list[torch.Tensor], list[int], list[int]]:
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


def plan_mode(n: int, C: int, h: int, w: int, opt: CoparseOptions, device: torch.device) -> tuple[str, bool]:
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


def sub_batches(ns: list[int], mode: tuple[str, bool], hw: int, itemsize: int) -> list[list[int]]:
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
