"""The one training engine every method uses: identity-balanced batches, Adam with warm-up and
step decay, AMP on CUDA, a checkpoint every epoch and resumption of an interrupted run."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hspreid.data.sampling import IdentityBatchSampler
from hspreid.distributed import World, data_parallel
from hspreid.errors import UserError
from hspreid.io import atomic_file
from hspreid.losses import Criterion
from hspreid.models import ReIDModel

log = logging.getLogger("hspreid.train")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the ``train`` block of a method config)."""

    epochs: int = 120
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    num_ids: int = 16          # P
    num_instances: int = 4     # K
    num_frames: int = 4        # T (video); 1 for images
    num_workers: int = 2
    amp: bool = True           # only on CUDA
    log_every: int = 20
    start_epoch: int = 0       # position in the LR schedule of the first epoch (rounds continue one schedule)
    nproc_per_node: int = 1    # training processes (torchrun, one GPU each; gloo on the CPU); P x K per process
    sync_bn: bool = False      # SyncBatchNorm across the processes (CUDA only); default: each its own batch
    lr_mult: dict[str, float] = field(default_factory=dict)   # submodule -> lr multiplier; 0 freezes it (param_groups)


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up from ``warmup_factor`` then step decay by ``gamma`` at each milestone."""
    decay = cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if epoch < cfg.warmup_epochs:
        alpha = epoch / cfg.warmup_epochs
        return decay * (cfg.warmup_factor * (1 - alpha) + alpha)
    return decay


def param_groups(model: torch.nn.Module, lr_mult: dict[str, float]) -> tuple[list[dict], list[torch.nn.Module]]:
    """Adam's parameter groups and the frozen submodules of ``model``.

    ``lr_mult`` maps a submodule's dotted name (e.g. ``segmenter``) to a multiplier of the learning rate; a
    parameter takes the multiplier of the longest name that contains it, and 1 otherwise. The first group
    holds the parameters at 1. A multiplier of 0 freezes the submodule: its parameters stop requiring
    gradients and stay out of the optimizer, and :func:`train` keeps it in eval mode (BatchNorm statistics
    included). A name whose attribute is ``None`` (a branch the configuration switched off) has no parameters.
    """
    frozen: list[torch.nn.Module] = []
    for name, mult in lr_mult.items():
        if not isinstance(mult, (int, float)) or mult < 0:
            raise UserError(f"train.lr_mult.{name}: expected a multiplier >= 0, got {mult!r}")
        module: Any = model
        for part in name.split("."):
            if not hasattr(module, part):
                children = sorted(n for n, _ in model.named_children())
                raise UserError(f"train.lr_mult: {type(model).__name__} has no submodule {name!r}; "
                                f"expected one of {children} (or a dotted path below them)")
            module = getattr(module, part)
        if module is not None and mult == 0:
            frozen.append(module)
    groups: dict[float, list[torch.nn.Parameter]] = {1.0: []}
    for pname, param in model.named_parameters():
        owners = [n for n in lr_mult if pname.startswith(n + ".")]
        mult = float(lr_mult[max(owners, key=len)]) if owners else 1.0
        if mult == 0:
            param.requires_grad_(False)
        elif param.requires_grad:
            groups.setdefault(mult, []).append(param)
    return [{"params": ps, "lr_mult": m} for m, ps in groups.items() if ps or m == 1.0], frozen


STACKED = ("part_labels", "parsing", "keypoints")
"""Optional per-clip tensors a dataset item may carry; batched by stacking."""


def _collate(items: list[dict]) -> dict:
    batch = {"frames": torch.stack([it["frames"] for it in items]),
             "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
             "camid": torch.tensor([it["camid"] for it in items], dtype=torch.long)}
    for key in STACKED:
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch


def train(model: ReIDModel, dataset: Any, criterion: Criterion, cfg: TrainConfig, *, device: torch.device,
          seed: int, checkpoint: Path, resume_key: str = "", world: World = World()) -> list[dict]:
    """Train ``model`` on ``dataset`` (a :class:`hspreid.data.datasets.TrainClips`-like dataset).

    ``checkpoint`` is rewritten atomically after every epoch; if it exists when training starts,
    training resumes after its last finished epoch, provided it was written for the same
    ``resume_key`` (a hash of the configuration). Returns the per-epoch history (loss terms and accuracy
    averaged over the ranks).

    In a ``world`` of several processes (:mod:`hspreid.distributed`) each rank trains on its block of every
    global batch (:class:`~hspreid.data.sampling.IdentityBatchSampler`), gradients are averaged over the ranks
    (DistributedDataParallel), and only rank 0 writes the checkpoint and logs.
    """
    sampler = IdentityBatchSampler(dataset.labels, cfg.num_ids, cfg.num_instances, seed=seed, rank=world.rank,
                                   world_size=world.size)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=_collate,
                        persistent_workers=cfg.num_workers > 0, pin_memory=device.type == "cuda")
    model.to(device)
    groups, frozen = param_groups(model, cfg.lr_mult)
    net = data_parallel(model, world, device, cfg.sync_bn)
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    start = 0
    state = torch.load(checkpoint, map_location=device, weights_only=False) if checkpoint.is_file() else None
    if state is not None and state.get("resume_key") != resume_key:
        log.warning("ignoring %s: written for another configuration", checkpoint)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history, start = state["history"], state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming from %s after epoch %d", checkpoint, start)
    for epoch in range(start, cfg.epochs):
        t0 = time.monotonic()
        for group, built in zip(optimizer.param_groups, groups):    # a resumed state keeps its own group keys
            group["lr"] = cfg.lr * built["lr_mult"] * lr_factor(cfg.start_epoch + epoch, cfg)
        sampler.set_epoch(cfg.start_epoch + epoch)
        model.train()
        for module in frozen:
            module.eval()
        sums: dict[str, float] = {}
        n = 0
        for it, batch in enumerate(loader):
            frames = batch["frames"].to(device, non_blocking=True)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, enabled=use_amp):
                out = net(frames, **model.extras(batch))
            loss, parts = criterion(out, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n += 1
            parts["loss"] = float(loss.detach())
            parts["acc"] = float((out["logits"]["global"].argmax(1) == batch["label"]).float().mean())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if cfg.log_every and (it + 1) % cfg.log_every == 0:
                log.info("epoch %d it %d/%d loss %.4f", epoch + 1, it + 1, len(sampler), parts["loss"])
        means = world.mean({k: v / max(n, 1) for k, v in sums.items()})
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.monotonic() - t0, 2),
                  **{k: round(v, 5) for k, v in means.items()}}
        history.append(record)
        log.info("epoch %d/%d %s", epoch + 1, cfg.epochs,
                 " ".join(f"{k}={v}" for k, v in record.items() if k != "epoch"))
        if world.main:
            with atomic_file(checkpoint) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scaler": scaler.state_dict(), "history": history, "epoch": epoch,
                            "torch_rng": torch.get_rng_state(), "resume_key": resume_key}, tmp)
        world.barrier()                    # every rank sees the checkpoint of the epoch it finished
    return history
