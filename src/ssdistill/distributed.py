"""Collectives that are no-ops in a single process (METHODS 1.14)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launch_rank_world() -> tuple[int, int]:
    """Rank and world size of a torchrun / SLURM launch, read from the environment before any process group exists
    (0, 1 otherwise)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    if "SLURM_NTASKS" in os.environ:
        return int(os.environ.get("SLURM_PROCID", "0")), int(os.environ["SLURM_NTASKS"])
    return 0, 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def all_gather_nograd(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (rank order); equal shapes on every rank."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
