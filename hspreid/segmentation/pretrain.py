"""First training stage of SS-HSP (section 3.4): the segmentation network learns to predict I_{t+1}
from I_t on consecutive frames of training tracklets.

``consecutive_pairs`` lists the (t, t+1) row pairs of a frame store (frames of a tracklet are contiguous
rows, see hspreid/data/index.py), ``FramePairSampler`` draws random batches of them, and
``pretrain_segmenter`` runs Adam on ``CoPartSegmenter.loss``. ``split_params`` / ``pretrain_from_store`` are
the pretrain_segmentation stage's: a method's ``segmentation:`` block (``CoPartSegmenter`` options over
``STAGE_MODEL_DEFAULTS``, training options over ``TRAIN_DEFAULTS``) -> a trained segmenter.
"""
from __future__ import annotations

import inspect
import logging
import math
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from hspreid.config import block_values, check_keys, typed_config
from hspreid.data.frames import FrameStore
from hspreid.distributed import World, data_parallel
from hspreid.data.index import tracklet_table
from hspreid.errors import UserError
from hspreid.io import atomic_file
from hspreid.segmentation.model import CoPartSegmenter, frames_to_tensor

log = logging.getLogger("hspreid.segmentation")

FixedMasks = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]
"""Ground-truth part maps of I_t and I_{t+1} (uint8 [B, H, W] each) -> fixed segmentation maps (M_t, M_{t+1})."""
Evaluate = Callable[[CoPartSegmenter], dict[str, Any]]
"""A reading of the segmenter during training (e.g. its part scores on held-out frames) -> JSON-able values."""


def consecutive_pairs(index: pd.DataFrame, subset: str | None = "train", gap: int = 1) -> np.ndarray:
    """Row pairs (t, t + gap) inside every tracklet of the frame index -> int64 [P, 2].

    ``index`` is the frame index (or an already computed ``tracklet_table``); ``subset`` keeps "train" or
    "test" tracklets (None: all). Tracklets shorter than gap + 1 frames give no pair.
    """
    if gap < 1:
        raise UserError(f"segmentation pairs: gap must be >= 1 frame, got {gap}")
    table = index if {"start", "length"} <= set(index.columns) else tracklet_table(index)
    if subset is not None:
        table = table[table["subset"] == subset]
    n = np.maximum(table["length"].to_numpy(np.int64) - gap, 0)
    starts = np.repeat(table["start"].to_numpy(np.int64), n)
    offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    first = starts + offsets
    return np.stack([first, first + gap], axis=1)


class FramePairSampler:
    """Endless random batches ``(I_t, I_{t+1})`` of float [B, 3, H, W] in [0, 1] from a frame store.

    Pairs are drawn uniformly with replacement; the draw order depends only on ``seed`` (each
    ``iter()`` starts over). ``masks``: a function of the two frames' ground-truth part maps (uint8
    [B, H, W] each, from the store's ``truth`` array: "masks", or "limbs" for the pieces that move rigidly)
    returning fixed segmentation maps (M_t, M_{t+1}), which
    each batch then carries as its third element (see ``CoPartSegmenter.forward``).

    Pair augmentation (not in the paper; off by default): ``flip``, the probability that a pair is mirrored,
    and ``shift``, the most pixels by which a pair is translated in each direction (edge pixels repeated). Both
    frames of a pair (and their ground truth) move together, so the motion between them is kept while the
    prediction module sees fewer repeats of the same pair (the demo's 3,287 training pairs are otherwise
    memorised within a few epochs). Their draws come from a stream of their own: the pairs drawn are the same.
    """

    def __init__(self, store: FrameStore | str | Path, pairs: np.ndarray, batch_size: int = 16, seed: int = 0,
                 masks: FixedMasks | None = None, truth: str = "masks", flip: float = 0.0, shift: int = 0):
        self.store = store if isinstance(store, FrameStore) else FrameStore(store)
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(self.pairs) == 0:
            raise UserError(f"{self.store.path}: no tracklet has two consecutive frames to pre-train the segmenter")
        if batch_size < 1:
            raise UserError(f"segmentation batch_size must be >= 1, got {batch_size}")
        if masks is not None and getattr(self.store, truth, None) is None:
            raise UserError(f"{self.store.path}: fixed segmentation maps need the ground-truth {truth!r}, "
                            f"and this frame store has none")
        if not 0 <= flip <= 1 or shift < 0:
            raise UserError(f"segmentation pair augmentation: expected pair_flip in [0, 1] and pair_shift >= 0, "
                            f"got {flip!r} and {shift!r}")
        self.batch_size, self.seed, self.masks, self.truth = batch_size, seed, masks, truth
        self.flip, self.shift = flip, int(shift)

    @classmethod
    def from_index(cls, store: FrameStore | str | Path, index: pd.DataFrame, subset: str | None = "train",
                   gap: int = 1, batch_size: int = 16, seed: int = 0,
                   masks: FixedMasks | None = None, truth: str = "masks", flip: float = 0.0,
                   shift: int = 0) -> "FramePairSampler":
        return cls(store, consecutive_pairs(index, subset, gap), batch_size, seed, masks, truth, flip, shift)

    def __iter__(self) -> Iterator[tuple]:
        rng = np.random.default_rng(self.seed)
        moves = np.random.default_rng([self.seed, 1])                  # the augmentation's own stream
        augment = bool(self.flip or self.shift)
        while True:
            rows = self.pairs[rng.integers(0, len(self.pairs), self.batch_size)].reshape(-1)
            if augment:                     # one draw per pair, for its two frames and their ground truth
                flips = moves.random(self.batch_size) < self.flip
                offsets = moves.integers(-self.shift, self.shift + 1, (self.batch_size, 2))
            images = self.store.read(rows)
            images = images.reshape(self.batch_size, 2, *images.shape[1:])
            if augment:
                images = move_pairs(images, flips, offsets)
            frames = frames_to_tensor(images.reshape(-1, *images.shape[2:]))
            frames = frames.view(self.batch_size, 2, *frames.shape[1:])
            if self.masks is None:
                yield frames[:, 0], frames[:, 1]
            else:
                truth = self.store.read(rows, self.truth).reshape(self.batch_size, 2, *frames.shape[-2:])
                if augment:
                    truth = move_pairs(truth, flips, offsets)
                yield frames[:, 0], frames[:, 1], self.masks(truth[:, 0], truth[:, 1])


def move_pairs(pairs: np.ndarray, flips: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Pairs [B, 2, H, W, ...] with pair i mirrored where ``flips[i]``, then translated by ``offsets[i]`` = (dy,
    dx) pixels, both of its frames alike (edge pixels repeated) -> a new array of the same shape."""
    out = pairs.copy()
    out[flips] = out[flips][:, :, :, ::-1]
    s = int(np.abs(offsets).max(initial=0))
    if s:
        padded = np.pad(out, [(0, 0), (0, 0), (s, s), (s, s)] + [(0, 0)] * (pairs.ndim - 4), mode="edge")
        h, w = pairs.shape[2:4]
        for i, (dy, dx) in enumerate(offsets):
            out[i] = padded[i, :, s - dy:s - dy + h, s - dx:s - dx + w]
    return out


def split_batch(batch: Sequence, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, Any]:
    """A batch ``(I_t, I_{t+1})`` or ``(I_t, I_{t+1}, (M_t, M_{t+1}))`` -> (source, driving, fixed maps or None)
    on ``device``: the arguments of ``CoPartSegmenter.forward``."""
    source, driving = (x.to(device, non_blocking=True) for x in batch[:2])
    fixed = tuple(m.to(device) for m in batch[2]) if len(batch) > 2 else None
    return source, driving, fixed


def _batches(pairs: Iterable[Sequence[torch.Tensor]]) -> Iterator[Sequence[torch.Tensor]]:
    """Cycle over ``pairs`` (re-iterating a finite loader at each epoch)."""
    while True:
        empty = True
        for batch in pairs:
            empty = False
            yield batch
        if empty:
            raise UserError("segmentation pre-training: the pair loader yielded no batch")


def save_checkpoint(model: CoPartSegmenter, path: str | Path, **extra: Any) -> None:
    """{"config", "state_dict", **extra} written atomically (read back with ``load_segmenter``)."""
    with atomic_file(path) as tmp:
        torch.save({"config": model.config, "state_dict": model.state_dict(), **extra}, tmp)


@dataclass(frozen=True)
class SegmenterTraining:
    """The training options of a ``segmentation`` block (the rest are ``CoPartSegmenter``'s)."""

    epochs: int | float = 120       # section 4.1: 120 epochs (one epoch = every training pair once)
    steps: int | None = None        # optimiser steps instead of epochs (wins when set)
    batch_size: int = 16            # frame pairs per step
    gap: int = 3                    # frames between I_t and the frame to predict (1 in the paper: consecutive)
    lr: float = 3e-4                # Adam, section 4.1
    weight_decay: float = 5e-4
    lr_step: int | float | None = 40   # lr x lr_gamma every lr_step epochs (also when ``steps`` is set); null: never
    lr_gamma: float = 0.1
    log_every: int = 50             # steps between progress lines
    checkpoint_every: int | None = None  # steps between intermediate checkpoints (null: only the final one)
    geo_warmup: float = 0.0         # fraction of the steps over which lambda_geo ramps up from 0
    part_warmup: float = 0.0        # fraction of the steps during which the K parts move as one (their union)
    grad_clip: float | None = None  # the gradients' global L2 norm is clipped to this (null: never; not in the paper)
    labels: Literal["argmax", "foreground"] = "argmax"   # part maps: argmax | foreground (parts > background first)
    infer_batch_size: int = 256     # frames per batch when segmenting the store
    quality_frames: int = 4000      # about this many frames are scored against ground-truth masks (0: none)
    quality_every: int | None = None  # steps between readings of those scores during training (null: none)
    nproc_per_node: int = 1         # training processes (torchrun); each draws its own batch_size pairs per step
    pair_flip: float = 0.0          # probability that a training pair is mirrored (both frames; not in the paper)
    pair_shift: int = 0             # most pixels a training pair is translated by (both frames; not in the paper)

    def __post_init__(self) -> None:
        for key in ("batch_size", "gap", "log_every", "infer_batch_size"):
            if getattr(self, key) < 1:
                raise UserError(f"segmentation.{key}: expected an integer >= 1, got {getattr(self, key)!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise UserError(f"segmentation.grad_clip: expected a norm > 0 or null, got {self.grad_clip!r}")
        if self.quality_every is not None and self.quality_every < 1:
            raise UserError(f"segmentation.quality_every: expected an integer >= 1 or null, got {self.quality_every!r}")
        if self.steps is None and self.epochs <= 0:
            raise UserError(f"segmentation: set steps (>= 1) or epochs (> 0), got epochs {self.epochs!r}")


TRAIN_DEFAULTS: dict[str, Any] = block_values(SegmenterTraining())
""":class:`SegmenterTraining`'s defaults as a mapping (what ``pretrain_from_store`` fills in)."""


STAGE_MODEL_DEFAULTS: dict[str, Any] = {
    # What the pretrain_segmentation stage changes from ``CoPartSegmenter``'s paper-literal defaults, so that
    # the parts do not collapse (see the module docstring of hspreid/segmentation/model.py, "Collapse"):
    "background_motion": "affine",   # tracked crops: the background moves (detector jitter, camera following)
    "geo_isotropic": True,           # eq. 8 on the paper's pixel grid, not on [-1, 1] x [-1, 1]
    "lambda_geo": 0.03,              # eq. 8 against our per-element-mean eq. 6 (the paper's lambdas weigh sums)
    "reconstruction": "l1_ssim",
}


def model_defaults() -> dict[str, Any]:
    """The ``CoPartSegmenter`` constructor options and their defaults for the stage (``STAGE_MODEL_DEFAULTS``
    over the class's own)."""
    sig = inspect.signature(CoPartSegmenter.__init__)
    return {**{k: p.default for k, p in sig.parameters.items() if k != "self"}, **STAGE_MODEL_DEFAULTS}


def split_params(params: dict[str, Any], where: str = "segmentation") -> tuple[dict[str, Any], dict[str, Any]]:
    """A method's ``segmentation:`` block -> (``CoPartSegmenter`` options: ``STAGE_MODEL_DEFAULTS`` and those
    given, training options: :class:`SegmenterTraining` with its defaults filled in); an unknown key or a
    training option of the wrong type is named."""
    model_keys = model_defaults()
    check_keys(params, {*model_keys, *TRAIN_DEFAULTS}, where)
    model = {**STAGE_MODEL_DEFAULTS, **{k: v for k, v in params.items() if k in model_keys}}
    train = typed_config(SegmenterTraining, {k: v for k, v in params.items() if k in TRAIN_DEFAULTS}, where)
    return model, block_values(train)


def pretrain_from_store(store: FrameStore | str | Path, index: pd.DataFrame, model_params: dict[str, Any],
                        train: dict[str, Any], *, device: str | torch.device = "cpu", seed: int = 0,
                        checkpoint: str | Path | None = None, masks: FixedMasks | None = None,
                        truth: str = "masks", world: World = World(),
                        evaluate: Evaluate | None = None) -> tuple[CoPartSegmenter, dict[str, Any]]:
    """Build a ``CoPartSegmenter(**model_params)`` and pre-train it on the (t, t + gap) pairs of the training
    tracklets of ``store`` with the options ``train`` (see ``TRAIN_DEFAULTS``); ``masks``: fixed segmentation
    maps (see ``FramePairSampler``); ``evaluate``: read every ``train["quality_every"]`` steps (see
    ``pretrain_segmenter``). Returns (model, result of ``pretrain_segmenter`` plus "pairs",
    "pairs_per_s", "epochs"). In a ``world`` of N processes each draws its own ``batch_size`` pairs per step,
    so an epoch takes N times fewer steps."""
    train = {**TRAIN_DEFAULTS, **train}
    torch.manual_seed(seed)
    model = CoPartSegmenter(**model_params)
    sampler = FramePairSampler.from_index(store, index, subset="train", gap=train["gap"],
                                          batch_size=train["batch_size"], seed=rank_seed(seed, world.rank),
                                          masks=masks, truth=truth, flip=train["pair_flip"],
                                          shift=train["pair_shift"])
    per_epoch = math.ceil(len(sampler.pairs) / (train["batch_size"] * world.size))
    if train["steps"] is not None:
        steps, epochs = int(train["steps"]), None
    else:
        steps, epochs = max(1, round(train["epochs"] * per_epoch)), train["epochs"]
    lr_step = None if not train["lr_step"] else max(1, round(train["lr_step"] * per_epoch))
    log.info("segmenter: %d training pairs (gap %d), %d steps of %d pairs (%.1f epochs), on %s",
             len(sampler.pairs), train["gap"], steps, train["batch_size"], steps / per_epoch, device)
    result = pretrain_segmenter(model, sampler, steps=steps, lr=train["lr"], weight_decay=train["weight_decay"],
                                lr_step=lr_step, lr_gamma=train["lr_gamma"], device=device, seed=seed,
                                log_every=train["log_every"], checkpoint=checkpoint,
                                checkpoint_every=train["checkpoint_every"], geo_warmup=train["geo_warmup"],
                                part_warmup=train["part_warmup"], grad_clip=train["grad_clip"], world=world,
                                evaluate=evaluate,
                                evaluate_every=train["quality_every"])
    result.update(pairs=int(len(sampler.pairs)), epochs=epochs,
                  pairs_per_s=steps * train["batch_size"] * world.size / max(result["seconds"], 1e-9))
    return model, result


class _StepLoss(torch.nn.Module):
    """One pre-training step's loss terms as a module's forward (eqs. 6-8 from a frame pair), so that
    DistributedDataParallel sees every use of the parameters, the equivariance pass of eq. 7 included."""

    def __init__(self, model: CoPartSegmenter):
        super().__init__()
        self.model = model

    def forward(self, source: torch.Tensor, driving: torch.Tensor, fixed: Any, generator: torch.Generator,
                scale: dict[str, float] | None, merge_parts: bool = False) -> dict[str, torch.Tensor]:
        return self.model.loss(self.model(source, driving, fixed, merge_parts), source, driving, generator, scale)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream: ``seed`` itself on rank 0 (a world of one is unchanged)."""
    return seed if rank == 0 else seed + 104729 * rank


def pretrain_segmenter(model: CoPartSegmenter, pairs: Iterable[Sequence[torch.Tensor]], *, steps: int | None = None,
                       epochs: int | None = None, lr: float = 3e-4, weight_decay: float = 5e-4,
                       betas: tuple[float, float] = (0.9, 0.999), lr_step: int | None = None, lr_gamma: float = 0.1,
                       device: str | torch.device = "cpu", seed: int = 0, log_every: int = 50,
                       checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
                       geo_warmup: float = 0.0, part_warmup: float = 0.0, grad_clip: float | None = None,
                       world: World = World(),
                       evaluate: Evaluate | None = None, evaluate_every: int | None = None) -> dict[str, Any]:
    """Train ``model`` on batches ``(I_t, I_{t+1})`` (or ``(I_t, I_{t+1}, (M_t, M_{t+1}))`` with fixed
    segmentation maps, see ``FramePairSampler``) from ``pairs`` for ``steps`` optimiser steps (or ``epochs``
    passes over a finite loader with ``len``). Adam with the paper's lr 3e-4 and weight decay 5e-4; the lr is
    multiplied by ``lr_gamma`` every ``lr_step`` steps (the paper: x0.1 every 40 epochs).

    Logs the mean loss terms every ``log_every`` steps and saves ``checkpoint`` every ``checkpoint_every``
    steps and at the end. ``geo_warmup`` (a fraction of ``steps``) ramps lambda_geo linearly from 0 to its value
    over the first steps, so that parts learn to move before they are pulled together. During the first
    ``part_warmup`` (a fraction of ``steps``) the K parts move as one (``CoPartSegmenter.forward``'s
    ``merge_parts``): the maps learn where the person is, whose motion eq. 6 pays for most, before the parts
    split it (with K separate motions from the start they lose their mass to the background). The equivariance
    transforms are drawn from a generator seeded with ``seed``; batches come in ``pairs``' own (seeded) order.
    ``grad_clip``: the gradients' global L2 norm is clipped to it before each step (logged as ``grad_norm``,
    the norm before clipping).
    ``evaluate(model)`` is read before the first step, every ``evaluate_every`` steps and after the last (on
    rank 0, the model in eval mode without gradients, then back in training mode): it must not draw random
    numbers, so the training is the same with or without it. Its seconds are left out of ``seconds``.
    Returns {"history": [per-log-window means], "steps", "seconds", "final": last window,
    "curve": [{"step", **evaluate(model)}] (empty without ``evaluate``), "curve_seconds"}.

    In a ``world`` of several processes each rank feeds its own ``pairs`` (seed them per rank), the gradients
    are averaged over the ranks (DistributedDataParallel over the whole step, losses included), the logged means
    are the ranks' means, and only rank 0 writes the checkpoint.
    """
    if epochs is not None:
        if not hasattr(pairs, "__len__"):
            raise UserError("segmentation pre-training: epochs needs a loader with a length; give steps instead")
        steps = epochs * len(pairs)  # type: ignore[arg-type]
    if steps is None or steps < 1:
        raise UserError(f"segmentation pre-training: steps must be >= 1, got {steps}")
    for key, value in (("geo_warmup", geo_warmup), ("part_warmup", part_warmup)):
        if not 0 <= value <= 1:
            raise UserError(f"segmentation {key}: expected a fraction of the steps in [0, 1], got {value}")
    warm_steps, merged_steps = geo_warmup * steps, part_warmup * steps
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(rank_seed(seed, world.rank))
    model.to(device).train()
    step_loss = data_parallel(_StepLoss(model), world, torch.device(device))
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, lr_step, lr_gamma) if lr_step else None
    history: list[dict[str, float]] = []
    window: dict[str, float] = {}
    curve: list[dict[str, Any]] = []
    curve_seconds = 0.0

    reading = evaluate is not None and bool(evaluate_every) and world.main

    def read_curve(step: int) -> None:
        nonlocal curve_seconds
        if not reading or (step % evaluate_every and step != steps):
            return
        t = time.monotonic()
        model.eval()
        with torch.no_grad():
            curve.append({"step": step, **evaluate(model)})
        model.train()
        curve_seconds += time.monotonic() - t

    read_curve(0)
    t0 = time.monotonic()
    batches = _batches(pairs)
    for step in range(1, steps + 1):
        source, driving, fixed = split_batch(next(batches), device)
        scale = {"lambda_geo": min(1.0, (step - 1) / warm_steps)} if warm_steps > 0 else None
        terms = step_loss(source, driving, fixed, generator, scale, step <= merged_steps)
        if not torch.isfinite(terms["total"]):
            raise FloatingPointError(f"segmentation pre-training: non-finite loss at step {step}: "
                                     f"{ {k: float(v) for k, v in terms.items()} }")
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        if grad_clip is not None:
            terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        for k, v in terms.items():
            window[k] = window.get(k, 0.0) + float(v.detach())
        window["n"] = window.get("n", 0.0) + 1
        if step % log_every == 0 or step == steps:
            n = window.pop("n")
            row = {"step": step, "lr": opt.param_groups[0]["lr"], **world.mean({k: v / n for k, v in window.items()})}
            history.append(row)
            window = {}
            elapsed = time.monotonic() - t0 - curve_seconds
            log.info("segmenter step %d/%d: loss %.4f (rec %.4f, equ %.4f, geo %.4f), %.2f steps/s, ETA %.0f s",
                     step, steps, row["total"], row["rec"], row["equ"], row["geo"], step / elapsed,
                     (steps - step) * elapsed / step)
        if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps and world.main:
            save_checkpoint(model, checkpoint, step=step, history=history)
        read_curve(step)
    seconds = time.monotonic() - t0 - curve_seconds
    if checkpoint is not None and world.main:
        save_checkpoint(model, checkpoint, step=steps, history=history, seconds=seconds)
    return {"history": history, "steps": steps, "seconds": round(seconds, 2),
            "final": history[-1] if history else {"total": math.nan},
            "curve": curve, "curve_seconds": round(curve_seconds, 2)}
