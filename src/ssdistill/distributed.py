"""Collectives that are no-ops in a single process (docs/distributed.md): with no process group, or a group of one, each
returns its input itself (a batch mean is ``rows.mean(0)``), so single-process numbers do not depend on them."""

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


def process_count(devices: int | str, num_nodes: int, accelerator: str) -> int:
    """The DDP processes a run's trainer starts: devices per node times nodes, ``devices="auto"`` resolved as Lightning
    resolves it (every visible GPU when the accelerator is a CUDA one, or ``auto`` on a machine with CUDA; else 1)."""
    if devices == "auto":
        cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        devices = torch.cuda.device_count() if cuda else 1
    return int(devices) * num_nodes


def is_global_zero() -> bool:
    """Whether this is the first process of its launch (DDP's global rank 0): the process group's rank once it exists,
    before that the launcher's (torchrun's or SLURM's rank, Lightning's LOCAL_RANK and NODE_RANK)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return launch_rank_world()[0] == 0 and all(os.environ.get(key, "0") in ("", "0") for key in ("LOCAL_RANK", "NODE_RANK"))


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


@torch.no_grad()
def all_reduce_sum_nograd(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over every rank (a new tensor; ``tensor`` itself in a single process)."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone().contiguous()
    dist.all_reduce(total)
    return total


@torch.no_grad()
def global_mean_nograd(rows: torch.Tensor) -> torch.Tensor:
    """The mean over dim 0 of every rank's ``rows`` (equal row counts on every rank, as the engine's samplers give), as
    the official DINO centres: the all-reduced sum / (rows · world size), in float32; ``rows.mean(0)`` in a single
    process."""
    if world_size() == 1:
        return rows.mean(0)
    return all_reduce_sum_nograd(rows.float().sum(0)) / (len(rows) * world_size())


class _AllReduceMean(torch.autograd.Function):
    """MSN's ``AllReduce``: forward, the mean over ranks; backward, the gradient passed through unchanged. DDP then
    averages each parameter's gradient over the ranks, which supplies the 1 / world size of the mean: the result is
    the gradient of the same loss computed on the global batch in one process."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.contiguous() / world_size()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``tensor`` over every rank, differentiable as MSN's ``AllReduce`` (see
    ``_AllReduceMean``); ``tensor`` itself in a single process."""
    if world_size() == 1:
        return tensor
    return _AllReduceMean.apply(tensor)


def compute_device(accelerator: str) -> torch.device:
    """Where a run's models compute: this process's GPU (``LOCAL_RANK``) when the accelerator allows CUDA and there is
    one, else the CPU."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
