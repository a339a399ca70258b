"""Several processes, one training: torch's DistributedDataParallel as launched by ``torchrun``.

``torchrun --standalone --nproc_per_node N -m stages.train ...`` starts N copies of a stage with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`join` reads them, joins the process group (NCCL on CUDA, one GPU
per process; gloo on the CPU) and returns the :class:`World`. A plain ``python -m stages.train`` is a world of
one: nothing changes for it. Rank 0 writes every output; the others only train.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hspreid.errors import UserError
from hspreid.runtime import pick_device


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the outputs (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over the ranks (every rank gets it)."""
        if self.size == 1 or not values:
            return values
        keys = list(values)                         # every rank holds the same keys in the same order
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return {k: float(v) / self.size for k, v in zip(keys, t.cpu().tolist())}


def world_from_env() -> World:
    """The world torchrun describes in the environment (a world of one without torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def join(device_name: str = "auto") -> tuple[World, torch.device]:
    """Join the training processes (see the module doc): (the world, this process's device)."""
    world = world_from_env()
    device = pick_device(device_name)
    if world.size == 1:
        return world, device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"process {world.local_rank} of {world.size} on this node, but only "
                            f"{torch.cuda.device_count()} CUDA device(s): lower nproc_per_node")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def leave(world: World) -> None:
    """Leave the process group (the end of a distributed stage)."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(model: torch.nn.Module, world: World, device: torch.device,
                  sync_bn: bool = False) -> torch.nn.Module:
    """``model`` itself in a world of one, else wrapped in DistributedDataParallel (gradients averaged over the
    ranks). ``sync_bn`` turns BatchNorm into SyncBatchNorm (CUDA only); by default each rank normalises its own
    batch, as plain DDP does."""
    if sync_bn and device.type != "cuda":
        raise UserError("train.sync_bn: SyncBatchNorm needs CUDA (gloo on the CPU has no kernel for it)")
    if world.size == 1:
        return model
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a method's loss may leave heads unused (e.g. without the identity loss)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
