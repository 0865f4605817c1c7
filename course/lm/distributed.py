"""Data-parallel training across processes launched by `torchrun`.

Every process trains on its own random batches; DistributedDataParallel averages gradients, so
all replicas take the same optimizer step and stay identical. Only rank 0 logs, evaluates and
saves; the others wait at the next collective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we created the process group, so we tear it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group that torchrun describes in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistContext(rank, world_size, local_rank, owns), device


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flag(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """Rank 0's decision (stop now?) for every rank, so all leave the loop at the same step."""
    if not ctx.enabled:
        return flag
    # NCCL only moves GPU tensors.
    where = device if device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([1 if flag else 0], device=where)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_objects(ctx: DistContext, obj) -> list:
    """Every rank's `obj`, in rank order (a one-element list without DDP)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # Buffers (RoPE tables, masks) are constants, so no need to broadcast them every forward;
    # that also lets rank 0 evaluate alone without a collective.
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
