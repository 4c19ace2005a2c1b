"""Process group setup from torchrun's environment, and the few collectives the trainer needs.

One process runs without a process group; every helper then degrades to the identity, so the training
loop has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when there is one; `cuda` without one is an error, not a silent CPU run."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda, but torch sees no CUDA device")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(device_preference: str) -> DistEnv:
    """Join the process group described by RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        # NCCL for GPUs; gloo is the CPU backend (and what the tests use).
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Element-wise sum over ranks, in float64 so token counts stay exact."""
    if not env.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def sum_dicts_over_ranks(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Sum dicts whose keys may differ by rank (multitask batches log different losses)."""
    if not env.distributed:
        return dict(values)
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, values)
    total: dict[str, float] = {}
    for part in gathered:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    if not env.distributed:
        return [obj]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_from_main(obj: Any, env: DistEnv) -> Any:
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
