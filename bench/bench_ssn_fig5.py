"""SSN3D Fig. 5 ("Strong Learning Ability"): the SSN alone separates parts of random feature maps.

    python bench/bench_ssn_fig5.py [--parts 4 8 16] [--data gaussian uniform ones] [--iters 250]
                                   [--batch 32] [--samples 256] [--hidden 64] [--padding 0|1] [--lr 3e-3]
                                   [--threads 1] [--seed 0] [--out bench/results/ssn_fig5.png]

Setting (SSN3D "Study on SSN", "Random Generation"): no backbone; samples of 128 x 16 x 16 drawn
from a Gaussian N(0, 1), a uniform U(0, 1), or all ones, fed straight to the attention classifier
(3x3 sliding windows, eq. 1), eq. 2 softmax, eq. 3 part tensors, trained with the 2nd-round loss
(eq. 4) only, Adam with weight decay 5e-4 (the paper's optimiser for this study). One run per
(distribution, N): 3 x 3 = the paper's 9 experiments. A fixed data set of ``--samples`` maps per
distribution is drawn once and shuffled into batches.

Scaled down to run in under 3 minutes on 2 CPU cores: hidden width 64 instead of K = 512, batch
32 instead of 128, 250 iterations at lr 3e-3, one torch thread (on a shared 2-core machine two
OpenMP threads ran up to 10x slower than one). Reported per run: the loss over the last 10 iterations and the
chance level N log N (the value when all N part tensors are identical, as they must be for
all-ones maps when no window differs).

``--padding`` picks the windows: 0 = only full 3x3 windows (all windows of an all-ones map are
identical, so nothing can be separated: the paper's observation); 1 = zero-padded windows, the
model's default, where the border and corner windows of an all-ones map differ (9 window types),
so up to 9 parts become separable even there.

Output: the curves as a PNG (``--out``) and a table on stdout.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, runtime_line

from hspreid.io import atomic_file
from hspreid.losses import ssn_loss
from hspreid.models.ssn3d import AttentionClassifier, spatial_softmax, ssn_targets, window_pool

DISTRIBUTIONS = ("gaussian", "uniform", "ones")
SHAPE = (128, 16, 16)


def make_data(kind: str, samples: int, seed: int) -> torch.Tensor:
    """A fixed data set [samples, 128, 16, 16] of one distribution."""
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(samples, *SHAPE, generator=g)
    if kind == "uniform":
        return torch.rand(samples, *SHAPE, generator=g)
    return torch.ones(samples, *SHAPE)


def ssn_step_loss(clf: AttentionClassifier, maps: torch.Tensor) -> torch.Tensor:
    """SSN3D eqs. 1-4 on a batch of maps: 1st round, spatial softmax, part tensors, 2nd-round CE."""
    attention = spatial_softmax(clf.score_map(maps))                      # eqs. 1-2
    parts = window_pool(maps, attention, clf.padding)                     # eq. 3
    return ssn_loss(clf.score_windows(parts), ssn_targets(len(maps), attention.shape[1]))   # eq. 4


def train_curve(data: torch.Tensor, num_parts: int, args: argparse.Namespace) -> list[float]:
    """Loss per iteration of one SSN trained on ``data``."""
    torch.manual_seed(args.seed)
    clf = AttentionClassifier(SHAPE[0], num_parts, args.hidden, args.padding)
    opt = torch.optim.Adam(clf.parameters(), lr=args.lr, weight_decay=5e-4)
    g = torch.Generator().manual_seed(args.seed)
    order, pos, curve = torch.randperm(len(data), generator=g), 0, []
    for _ in range(args.iters):
        if pos + args.batch > len(order):
            order, pos = torch.randperm(len(data), generator=g), 0
        loss = ssn_step_loss(clf, data[order[pos:pos + args.batch]])
        pos += args.batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
    return curve


def plot_curves(curves: dict[tuple[str, int], list[float]], parts: list[int], path: Path, title: str) -> None:
    """One panel per N, one line per distribution, chance level N log N dashed (matplotlib Agg, as viz.plot_cmc)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(parts), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for j, n in enumerate(parts):
        ax = fig.add_subplot(1, len(parts), j + 1)
        for kind in sorted({k for k, _ in curves}, key=DISTRIBUTIONS.index):
            ax.plot(np.arange(1, len(curves[kind, n]) + 1), curves[kind, n], lw=1.5, label=kind)
        ax.axhline(n * math.log(n), ls="--", color="grey", lw=1, label="N log N (chance)")
        ax.set_title(f"N = {n} parts")
        ax.set_xlabel("iteration")
        ax.set_ylabel("L_SSN (eq. 4)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(str(tmp), format="png")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--data", nargs="+", choices=DISTRIBUTIONS, default=list(DISTRIBUTIONS))
    p.add_argument("--iters", type=int, default=250)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--padding", type=int, choices=(0, 1), default=0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ssn_fig5.png")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(runtime_line("cpu", args.threads))
    print(f"SSN3D Fig. 5: {args.iters} it, batch {args.batch}, {args.samples} fixed maps of 128x16x16, hidden "
          f"{args.hidden}, padding {args.padding}, Adam lr {args.lr} wd 5e-4")
    print(f"{'data':<9} {'N':>3} {'first':>8} {'final':>8} {'N logN':>8} {'final/chance':>12} {'s':>6}")
    curves = {}
    for kind in args.data:
        data = make_data(kind, args.samples, args.seed)
        for n in args.parts:
            t0 = time.perf_counter()
            curves[kind, n] = curve = train_curve(data, n, args)
            final = float(np.mean(curve[-10:]))
            print(f"{kind:<9} {n:>3} {curve[0]:>8.3f} {final:>8.3f} {n * math.log(n):>8.3f} "
                  f"{final / (n * math.log(n)):>12.3f} {time.perf_counter() - t0:>6.1f}", flush=True)
    plot_curves(curves, args.parts, args.out,
                f"SSN learning ability (SSN3D Fig. 5): padding {args.padding}, hidden {args.hidden}, "
                f"batch {args.batch}")
    print(f"curves: {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
