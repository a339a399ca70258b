"""Synthetic ISP feature maps of several structures, the per-identity scikit-learn reference of
ISP's cascaded clustering, and one float64 evaluator -- shared by ``test_kmeans.py`` (pytest's
default "prepend" import mode puts this folder on ``sys.path``) and ``bench/bench_kmeans.py``
(which puts it there itself), so that the benchmark measures against exactly what the tests trust.

Structures (:data:`STRUCTURES`), one identity at a time from a generator seeded by ``(seed, pid,
structure)``, so an identity's maps do not depend on how many identities are generated:

* ``blend`` -- ``bench/bench_kmeans.py``'s Market-like maps: inside a jittered person box a feature
  that blends smoothly from one identity-specific part vector to the next down the rows (fuzzy
  part boundaries), over low-norm noise;
* ``rows`` -- K-1 horizontal bands with sharp edges, one part vector each plus noise, over a *weak*
  background: background pixels are nearly as bright as the person (norm ~0.94x), so the 1-D
  activation split lets a share of them -- isotropic, far from every part -- into the foreground;
* ``patches`` -- the person box cut into K-1 Voronoi cells around random centres (parts of very
  unequal size, in no row order), plus noise, over low-norm noise;
* ``camera`` -- ``rows`` over a low-norm background, but every image adds its own appearance offset
  to all its person pixels (a camera / lighting change), so images compete with parts as clusters.

On all of them one k-means++ run lands in a seed-dependent local optimum: the part SSE summed over
120 identities of 16 maps varies by up to 3.3 % between scikit-learn's random states 0-4, and the
best of 10 runs is 0.6 % (blend) to 5.3 % (patches) below a single one.
"""
from __future__ import annotations

import numpy as np
import torch

STRUCTURES = ("blend", "rows", "patches", "camera")


def identity_maps(structure: str, pid: int, n: int, *, C: int = 64, H: int = 32, W: int = 16, parts: int = 7,
                  seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """[n, C, H, W] float32 feature maps of identity ``pid`` with the given structure (see the module
    docstring); ``parts`` counts the background. The person box spans rows H/16..15H/16 and columns
    W/4..3W/4 (``blend``) or W/8..7W/8 (the others), each side jittered per image by up to 3/64 of
    the height / 3/32 of the width. ``blend`` at 256 x 64 x 32 is ``bench/bench_kmeans.py``'s
    Market-like data (the same draws as before the other structures were added)."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    g = torch.Generator(device=device).manual_seed(seed * 100003 + pid + 7919 * STRUCTURES.index(structure))
    K1 = parts - 1
    shared = torch.randn(C, generator=g, device=device)
    protos = 0.6 * shared + 0.8 * torch.randn(K1, C, generator=g, device=device)        # part vectors
    jit = torch.randint(-3, 4, (n, 4), generator=g, device=device).float()
    jit *= torch.tensor([H / 64, H / 64, W / 32, W / 32], device=device)
    rows = torch.arange(H, device=device, dtype=torch.float32)[None]
    cols = torch.arange(W, device=device, dtype=torch.float32)[None]
    top, bot = H / 16 + jit[:, :1], H - H / 16 + jit[:, 1:2]                           # [n, 1]
    side = W / 4 if structure == "blend" else W / 8
    left, right = side + jit[:, 2:3], W - side + jit[:, 3:4]
    inside_r = (rows >= top) & (rows < bot)                                            # [n, H]
    fgm = (inside_r[:, :, None] & ((cols >= left) & (cols < right))[:, None, :]).float()   # [n, H, W]
    if structure == "blend":
        pos = ((rows - top) / (bot - top) * K1 - 0.5).clamp(0, K1 - 1)                 # [n, H] in part units
        kk = torch.arange(K1, device=device, dtype=torch.float32)
        wgt = (1 - (pos[..., None] - kk).abs()).clamp(min=0) * inside_r[..., None]     # [n, H, K1]
        body = torch.einsum("nhk,kc->nch", wgt, protos)                                # [n, C, H]
        x = torch.randn(n, C, H, W, generator=g, device=device).mul_(0.45)
        return x.mul_(1 + 0.8 * fgm[:, None]).add_(body[..., None] * fgm[:, None])
    if structure == "patches":                                                         # Voronoi cells
        u = torch.rand(n, K1, 2, generator=g, device=device)
        cy = (top + u[..., 0] * (bot - top))[..., None, None]                          # [n, K1, 1, 1]
        cx = (left + u[..., 1] * (right - left))[..., None, None]
        part = ((rows[..., None] - cy) ** 2 + (2 * (cols[:, None, :] - cx)) ** 2).argmin(1)   # [n, H, W]
    else:                                                                              # rows, camera: bands
        part = ((rows - top) / (bot - top) * K1).floor().clamp(0, K1 - 1).long()[:, :, None].expand(n, H, W)
    person = protos[part].permute(0, 3, 1, 2) + 0.5 * torch.randn(n, C, H, W, generator=g, device=device)
    if structure == "camera":
        person += 0.7 * torch.randn(n, C, 1, 1, generator=g, device=device)         # per-image offset
    bg = (1.05 if structure == "rows" else 0.35) * torch.randn(n, C, H, W, generator=g, device=device)
    return torch.where(fgm[:, None] > 0, person, bg)


def activations(f: np.ndarray, sharpen: bool, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(eq. 3 activations [n*h*w], sharpened if asked; pixel norms [n*h*w]) of maps f [n, C, h, w],
    computed in ``dtype``."""
    n, C = f.shape[:2]
    nrm = np.linalg.norm(f.transpose(0, 2, 3, 1).reshape(n, -1, C).astype(dtype, copy=False), axis=2)
    a = nrm / np.maximum(nrm.max(1, keepdims=True), 1e-12)
    if sharpen:
        a = 1.0 / (1.0 + np.exp(-10.0 * a + 2.0))
    return a.reshape(-1), nrm.reshape(-1)


def reference_identity(f: np.ndarray, parts: int, iters: int, sharpen: bool, seed: int,
                       foreground: str = "kmeans") -> np.ndarray:
    """ISP's per-identity cascaded clustering with scikit-learn; f [n, C, h, w] float32 (CPU).
    Returns the uint8 label maps [n, h, w].

    Foreground: ``"kmeans"`` -- ``KMeans(2)`` on the 1-D activations (ISP's approach); ``"exact"``
    -- the exact 1-D 2-means (hspreid's :func:`~hspreid.parsing.kmeans.two_means_1d`), so that
    both methods cluster the same foreground pixels. Parts: ``KMeans(K-1, n_init=1,
    max_iter=iters, random_state=seed)`` (default k-means++ seeding and tolerance) on the
    L2-normalised foreground features, ranked top to bottom by mean row (numpy, vectorised)."""
    from sklearn.cluster import KMeans

    n, C, h, w = f.shape
    X = f.transpose(0, 2, 3, 1).reshape(n * h * w, C)          # (n, hw, C) as the reference keeps them
    a, nrm = activations(f, sharpen, np.float32)
    if foreground == "exact":
        from hspreid.parsing import two_means_1d

        fg = two_means_1d(torch.from_numpy(a)).numpy()
    else:
        km = KMeans(2, n_init=1, max_iter=iters, random_state=seed).fit(a.reshape(-1, 1))
        fg = km.labels_ == int(np.argmax(km.cluster_centers_[:, 0]))
    P = X[fg] / np.maximum(nrm[fg], 1e-12)[:, None]
    k = min(parts - 1, len(P))
    km2 = KMeans(k, n_init=1, max_iter=iters, random_state=seed).fit(P)
    rows = (np.flatnonzero(fg) % (h * w)) // w
    cnt = np.bincount(km2.labels_, minlength=k)
    mean_h = np.bincount(km2.labels_, rows, minlength=k) / np.maximum(cnt, 1)
    rank = np.argsort(np.argsort(mean_h, kind="stable"), kind="stable") + 1
    lab = np.zeros(n * h * w, np.uint8)
    lab[fg] = rank[km2.labels_]
    return lab.reshape(n, h, w)


def evaluate(f: np.ndarray, lab: np.ndarray, parts: int, sharpen: bool) -> tuple[float, float, int]:
    """The objective values of a labelling lab [n, h, w] of maps f [n, C, h, w], computed the same way
    (float64) for every method: (SSE of the 1-D fg/bg split of the activations, SSE of the
    normalised foreground features around their part means -- the k-means inertia of the partition
    at its optimal centroids, a lower bound of the inertia any k-means reports --, number of
    foreground pixels)."""
    C = f.shape[1]
    a, nrm = activations(f, sharpen)
    lab = np.asarray(lab).reshape(-1)
    fg = lab > 0
    sse1 = sum(float(((a[m] - a[m].mean()) ** 2).sum()) for m in (fg, ~fg) if m.any())
    P = f.transpose(0, 2, 3, 1).reshape(-1, C)[fg].astype(np.float64) / np.maximum(nrm[fg], 1e-12)[:, None]
    lp = lab[fg].astype(np.int64) - 1
    sse2 = sum(float(((Q - Q.mean(0)) ** 2).sum()) for Q in (P[lp == p] for p in range(parts - 1)) if len(Q))
    return sse1, sse2, int(fg.sum())
