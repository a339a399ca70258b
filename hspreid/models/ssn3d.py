"""SSN3D (Jiang et al., AAAI 2021): a self-separated network aligns parts for 3D convolution.

Per frame (SSN3D "Self-Separated Network", Fig. 2):

* backbone = ResNet conv1..layer3 ("we only use the first four of [the 5 layers]": 1024 channels
  for ResNet-50), map X [C, H, W];
* attention classifier (eq. 1): a 3x3 conv to K = 512 channels, ReLU, a K x N linear map -- applied
  to every 3x3 sliding window X_{h,w} in R^{3x3xC}, i.e. a conv over the map -> scores A^i [H, W];
* spatial softmax per part (eq. 2): Â^i sums to one over the H x W positions;
* part tensors (eq. 3): Y^i = sum_{h,w} Â^i_{h,w} X_{h,w} -- the attention-weighted sum of the
  3x3xC *neighbourhood tensors*, so each Y^i is itself a 3x3xC tensor (not a C vector);
* 2nd-round classification (eq. 4): each Y^i goes through the same classifier (its 3x3 conv now
  sees exactly one window) and should be classified as part i; L_SSN is the cross-entropy.
* semi-supervised: in labelled frames Y^i is replaced by X_{h_i,w_i}, the window at the labelled
  key point of part i ("mix some features bypassing our SSN"), for the 2nd round and downstream.

Across the clip, the T part tensors of part i form a T x 3 x 3 x C tensor fed to its own 3D conv
block ("the 3D convolutional blocks do not share weights since they are distinct parts"); the N
block outputs are concatenated and a fusion layer maps them to the 1024-d video embedding. The
paper has no global branch and no identity loss: L = L_tri + lambda L_SSN (eq. 6, lambda = 0.1 on
iLIDS/MARS, 0.05 on Duke).

``share_classifier`` is SSN3D Table 2's "weight sharing": one attention classifier for all frames
(default) or, when False (the ``ssn3d_noshare`` ablation), one per frame position with "T
independent SSN losses" (frame t uses classifier t mod ``num_frames``). ``share_3d`` (not in the
paper, default False as the paper states) runs one 3D block for all parts.

Interpretations (the paper gives no code and Fig. 1's block layout is not in the text): a 3D block
is 1x1x1 conv C -> ``part_dim``, BN, ReLU, 3x3x3 conv (padding 1), BN, ReLU, average over
(T, 3, 3); windows are zero-padded (``padding=1``) so that the attention map is H x W as eqs. 2-3
index it (A^i in R^{H x W}); ``padding=0`` keeps only full windows -- the only reading under which
all-ones maps cannot be separated as in Fig. 5: with zero padding the border windows differ (see
bench/bench_ssn_fig5.py). The "global" classifier required by the trainer is a probe on the *detached* embedding
(``detach_id_head``), so an ``id`` loss in the config never changes the network, as the paper
"discard[s] the classification loss".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hspreid.errors import UserError
from hspreid.models.backbone import build_resnet
from hspreid.models.base import ReIDModel
from hspreid.models.heads import BNNeck, Normalize


# ----------------------------------------------------------------------------- the self-separated network
class AttentionClassifier(nn.Module):
    """SSN3D eq. 1: a_{h,w} = W2 ReLU(conv3x3(X_{h,w})), mapping a 3x3xC window to N part scores."""

    def __init__(self, channels: int, num_parts: int, hidden: int = 512, padding: int = 1):
        super().__init__()
        if padding not in (0, 1):
            raise UserError(f"model.padding: 1 (attention map H x W) or 0 (valid windows only), got {padding}")
        self.padding = padding
        self.conv = nn.Conv2d(channels, hidden, kernel_size=3)
        self.fc = nn.Linear(hidden, num_parts)

    def score_map(self, maps: torch.Tensor) -> torch.Tensor:
        """1st round: every sliding window of maps [M, C, H, W] -> scores A [M, N, H', W'] (no softmax)."""
        hidden = F.relu(F.conv2d(maps, self.conv.weight, self.conv.bias, padding=self.padding))
        return torch.einsum("mkhw,nk->mnhw", hidden, self.fc.weight) + self.fc.bias[None, :, None, None]

    def score_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """2nd round: part tensors [..., C, 3, 3] -> scores [..., N] (the conv sees exactly one window)."""
        lead = windows.shape[:-3]
        hidden = F.relu(F.conv2d(windows.flatten(0, -4), self.conv.weight, self.conv.bias)).flatten(1)
        return self.fc(hidden).view(*lead, -1)


def spatial_softmax(scores: torch.Tensor) -> torch.Tensor:
    """SSN3D eq. 2: Â^i_{h,w} = exp(A^i_{h,w}) / sum_{h,w} exp(A^i_{h,w}); [M, N, H, W], each map sums to 1."""
    return scores.flatten(2).float().softmax(dim=-1).view_as(scores).to(scores.dtype)


def window_pool(maps: torch.Tensor, attention: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """SSN3D eq. 3: Y^i = sum_{h,w} Â^i_{h,w} X_{h,w}, X_{h,w} the 3x3xC window at (h, w) of the map
    zero-padded by ``padding``: maps [M, C, H, W], attention [M, N, H', W'] -> [M, N, C, 3, 3].

    Y^i[c, dy, dx] = sum_{u,v} X[c, u, v] Â^i[u + p - dy, v + p - dx], so the 3x3 shifts are taken
    of the N attention maps (unfold with padding 2 - p, kernel flipped) instead of the C-channel map:
    one einsum, memory N*9*H*W instead of C*9*H*W.
    """
    m, c, h, w = maps.shape
    n = attention.shape[1]
    shifts = F.unfold(attention, kernel_size=3, padding=2 - padding).view(m, n, 9, h * w)
    pooled = torch.einsum("mnkp,mcp->mnck", shifts, maps.flatten(2).to(shifts.dtype))
    return pooled.flip(-1).reshape(m, n, c, 3, 3)


def keypoint_windows(maps: torch.Tensor, points: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """The 3x3xC windows X_{h_i,w_i} at grid cells ``points`` [M, N, 2] (long; row, col of the
    attention grid) of maps [M, C, H, W] zero-padded by ``padding`` -> [M, N, C, 3, 3]."""
    m, c = maps.shape[:2]
    padded = F.pad(maps, (padding,) * 4) if padding else maps
    wp = padded.shape[-1]
    offsets = torch.arange(3, device=maps.device)
    rows = points[..., 0, None, None] + offsets[:, None]                   # [M, N, 3, 1]
    cols = points[..., 1, None, None] + offsets[None, :]                   # [M, N, 1, 3]
    flat = (rows * wp + cols).flatten(1)                                   # [M, N*9]
    picked = torch.gather(padded.flatten(2), 2, flat[:, None].expand(m, c, -1))  # [M, C, N*9]
    return picked.view(m, c, -1, 3, 3).permute(0, 2, 1, 3, 4)


def keypoint_cells(keypoints: torch.Tensor, size: tuple[int, int],
                   padding: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised key points [..., N, 2 or 3] -> (attention-grid cells [..., N, 2] long (row, col), labelled [..., N]).

    (x, y) are fractions of the image width and height in [0, 1]; a point is labelled when both are
    finite and inside [0, 1] and, with a third column, its visibility flag is > 0 (NaN = missing).
    ``size`` is the feature map's (H, W): the point falls in feature cell (floor(y H), floor(x W)),
    and the window centred there is attention cell (row, col) - (1 - padding), clamped to the grid
    (with ``padding=0`` a point on the border row gets the nearest full window).
    """
    h, w = size
    x, y = keypoints[..., 0].float(), keypoints[..., 1].float()
    ok = torch.isfinite(x) & torch.isfinite(y) & (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
    if keypoints.shape[-1] >= 3:
        ok &= torch.nan_to_num(keypoints[..., 2].float(), nan=0.0) > 0
    shift = 1 - padding
    col = ((torch.nan_to_num(x, nan=0.0) * w).long().clamp(0, w - 1) - shift).clamp(0, w + 2 * padding - 3)
    row = ((torch.nan_to_num(y, nan=0.0) * h).long().clamp(0, h - 1) - shift).clamp(0, h + 2 * padding - 3)
    return torch.stack([row, col], dim=-1), ok


def ssn_targets(frames: int, num_parts: int, device: torch.device | None = None) -> torch.Tensor:
    """SSN3D eq. 4 targets: part feature i should be classified as part i; [M, N] long."""
    return torch.arange(num_parts, device=device).expand(frames, num_parts)


# ----------------------------------------------------------------------------- the 3D aggregator
class PartBlocks3D(nn.Module):
    """N 3D conv blocks (one per part, as grouped convs; or one shared): parts [B, N, C, T, 3, 3] -> [B, N*D].

    Block: 1x1x1 conv C -> D, BN, ReLU, 3x3x3 conv D -> D (padding 1), BN, ReLU, mean over (T, 3, 3).
    """

    def __init__(self, channels: int, num_parts: int, dim: int, shared: bool = False):
        super().__init__()
        self.num_parts, self.groups = num_parts, 1 if shared else num_parts
        cin, cout = (channels, dim) if shared else (channels * num_parts, dim * num_parts)
        self.body = nn.Sequential(
            nn.Conv3d(cin, cout, kernel_size=1, groups=self.groups, bias=False), nn.BatchNorm3d(cout), nn.ReLU(True),
            nn.Conv3d(cout, cout, kernel_size=3, padding=1, groups=self.groups, bias=False), nn.BatchNorm3d(cout),
            nn.ReLU(True))

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        b, n = parts.shape[:2]
        x = parts.flatten(0, 1) if self.groups == 1 else parts.flatten(1, 2)   # [B*N, C, ...] or [B, N*C, ...]
        return self.body(x).mean(dim=(2, 3, 4)).reshape(b, -1)                  # part i's D values contiguous


# ----------------------------------------------------------------------------- model
def _out_channels(layer: nn.Sequential) -> int:
    """Channels a ResNet stage outputs (Bottleneck: bn3, BasicBlock: bn2)."""
    block = layer[-1]
    return (block.bn3 if hasattr(block, "bn3") else block.bn2).num_features


class SSN3D(ReIDModel):
    """Clips [B, T, 3, H, W] (+ key points [B, T, N, 2|3]) -> SSN3D embedding and SSN outputs.

    Outputs: ``features["global"]`` / ``embedding["global"]`` the fused video feature [B, embed_dim]
    (triplet, retrieval); ``logits["global"]`` a classifier probe (see module doc); ``ssn_logits``
    [B*T, N, N] (row i: 2nd-round scores p_{i,.} of part tensor Y^i); ``ssn_targets`` [B*T, N];
    ``attention`` [B, T, N, H', W'] (eq. 2 maps); ``labelled`` [B, T, N] bool (key point used).
    """

    extra_inputs = ("keypoints",)

    def __init__(self, num_classes: int, num_parts: int = 9, backbone: str = "resnet50", pretrained: str | None = None,
                 layer3_stride: int = 2, hidden: int = 512, part_dim: int = 256, embed_dim: int = 1024,
                 share_classifier: bool = True, num_frames: int = 4, share_3d: bool = False, padding: int = 1,
                 detach_id_head: bool = True):
        super().__init__()
        for key, value in (("num_parts", num_parts), ("hidden", hidden), ("part_dim", part_dim),
                           ("embed_dim", embed_dim), ("num_frames", num_frames)):
            if int(value) < 1 or (key == "num_parts" and value < 2):
                raise UserError(f"model.{key}: must be a positive integer (num_parts >= 2), got {value!r}")
        self.num_parts, self.padding, self.detach_id_head = num_parts, padding, detach_id_head
        self.normalize = Normalize()
        trunk, _ = build_resnet(backbone, 2, pretrained, layer3_stride)
        self.trunk = trunk[:-1]                                          # conv1 .. layer3
        self.channels = _out_channels(trunk[-2])
        count = 1 if share_classifier else num_frames
        self.classifiers = nn.ModuleList(AttentionClassifier(self.channels, num_parts, hidden, padding)
                                         for _ in range(count))
        self.blocks = PartBlocks3D(self.channels, num_parts, part_dim, shared=share_3d)
        self.fusion = nn.Linear(num_parts * part_dim, embed_dim)
        self.neck = BNNeck(embed_dim, num_classes)

    def separate(self, maps: torch.Tensor, t: int, keypoints: torch.Tensor | None) -> dict:
        """SSN on every frame: maps [B*T, C, H, W] -> part tensors [B*T, N, C, 3, 3], eq. 2 maps, 2nd-round logits."""
        bt = maps.shape[0]
        if min(maps.shape[-2:]) < 3 - 2 * self.padding:
            raise ValueError(f"SSN3D: a {tuple(maps.shape[-2:])} feature map has no full 3x3 window (padding 0)")
        frame = torch.arange(bt, device=maps.device) % t
        scores = torch.empty(0, device=maps.device)
        for k, clf in enumerate(self.classifiers):                       # 1 classifier, or one per frame slot
            own = frame % len(self.classifiers) == k
            if not own.any():                                            # clips shorter than the slots
                continue
            s = clf.score_map(maps[own] if len(self.classifiers) > 1 else maps)
            scores = s if len(self.classifiers) == 1 else _scatter_rows(scores, own, s)
        attention = spatial_softmax(scores)                                       # eq. 2
        parts = window_pool(maps, attention, self.padding)                        # eq. 3
        labelled = torch.zeros(parts.shape[:2], dtype=torch.bool, device=maps.device)
        if keypoints is not None:
            cells, labelled = keypoint_cells(keypoints.flatten(0, 1).to(maps.device), maps.shape[-2:], self.padding)
            windows = keypoint_windows(maps, cells, self.padding)
            parts = torch.where(labelled[..., None, None, None], windows.to(parts.dtype), parts)
        logits = torch.empty(0, device=maps.device)
        for k, clf in enumerate(self.classifiers):                                # 2nd round, same classifier
            own = frame % len(self.classifiers) == k
            if not own.any():
                continue
            s = clf.score_windows(parts[own] if len(self.classifiers) > 1 else parts)
            logits = s if len(self.classifiers) == 1 else _scatter_rows(logits, own, s)
        return {"parts": parts, "attention": attention, "logits": logits, "labelled": labelled}

    def forward(self, clips: torch.Tensor, keypoints: torch.Tensor | None = None) -> dict:
        b, t = clips.shape[:2]
        if keypoints is not None and (tuple(keypoints.shape[:3]) != (b, t, self.num_parts)
                                      or keypoints.shape[-1] not in (2, 3)):
            raise ValueError(f"keypoints: expected [B, T, {self.num_parts}, 2|3] for clips {(b, t)}, "
                             f"got {tuple(keypoints.shape)}")
        maps = self.frame_maps(clips.flatten(0, 1))
        ssn = self.separate(maps, t, keypoints)
        parts = ssn["parts"].view(b, t, self.num_parts, self.channels, 3, 3).permute(0, 2, 3, 1, 4, 5)
        feat = self.fusion(self.blocks(parts))                                    # [B, embed_dim]
        _, logits = self.neck(feat.detach() if self.detach_id_head else feat)
        n = self.num_parts
        return {"features": {"global": feat}, "logits": {"global": logits}, "embedding": {"global": feat},
                "ssn_logits": ssn["logits"], "ssn_targets": ssn_targets(b * t, n, maps.device),
                "attention": ssn["attention"].view(b, t, n, *ssn["attention"].shape[-2:]),
                "labelled": ssn["labelled"].view(b, t, n)}


def _scatter_rows(acc: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Write ``values`` into the ``rows`` (bool mask) of ``acc``, allocating it at first use."""
    if acc.numel() == 0:
        acc = values.new_zeros((rows.shape[0], *values.shape[1:]))
    return acc.index_put((rows.nonzero()[:, 0],), values)
