"""FIFO queue of L2-normalised keys with their sample ids (docs/methods/baselines.md), shared by MoCo-v2, SEED, DisCo and BINGO.

Keys are all-gathered across DDP ranks before they are written, so every rank holds the same queue; the write
wraps around the end (no divisibility requirement). The queue is a buffer: it is saved in checkpoints and a
resumed run continues with the same negatives.

A cohort (MCL) keeps its members' queues column-aligned: ``members=M`` holds keys [size, M, dim] under one pointer
and one id per column, so column j holds a key of the same image for every member (``member_keys(m)``: [size, dim]).

A training step ``stage``s its keys; the engine ``commit``s them right after the optimiser step
(``DistillMethod.after_optimiser_step``), so the step's loss never sees its own keys and the queue it read is
not overwritten while autograd still needs it. With gradient accumulation every batch of a step stages its keys and
they enter together: all batches of one optimiser step read the same queue.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssdistill.distributed import all_gather_nograd


def capped_queue_size(requested: int, dataset_size: int) -> int:
    """A queue never holds more keys than there are images (older copies of the same image would repeat);
    even at that size it holds one older key of every image, which the losses leave out of the negatives only
    when ``mask_same_id`` is on (``same_image``; off in the official codes)."""
    return max(1, min(requested, dataset_size))


class KeyQueue(nn.Module):
    def __init__(self, size: int, dim: int, seed: int = 0, members: int | None = None) -> None:
        super().__init__()
        if size < 1 or dim < 1 or (members is not None and members < 1):
            raise ValueError(f"a queue needs a positive size, dimension and member count, got {size} x {dim} x {members}")
        generator = torch.Generator().manual_seed(seed)
        shape = (size, dim) if members is None else (size, members, dim)
        self.register_buffer("keys", F.normalize(torch.randn(*shape, generator=generator), dim=-1))  # random unit keys, as MoCo
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))  # -1: never written
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self._staged: list[tuple[torch.Tensor, torch.Tensor]] = []

    def member_keys(self, member: int) -> torch.Tensor:
        """[size, dim]: the keys of one member of a column-aligned cohort queue."""
        if self.keys.ndim != 3:
            raise ValueError("member_keys is for a cohort queue (built with members=M)")
        return self.keys[:, member]

    def stage(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Keys [B, dim] (a cohort queue: [B, M, dim]) and ids to enqueue at ``commit`` (after the optimiser step; with
        gradient accumulation every batch of the step stages its keys, and they enter together)."""
        self._staged.append((keys.detach(), ids.detach()))

    def commit(self) -> None:
        if self._staged:
            staged, self._staged = self._staged, []
            self.enqueue(torch.cat([keys for keys, _ in staged]), torch.cat([ids for _, ids in staged]))

    def same_image(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, size] mask of the queue entries written for each of ``ids``: older keys of a query's own image,
        which a contrastive loss must not count as negatives (the queue is as large as the dataset on small data)."""
        return self.ids.unsqueeze(0) == ids.to(self.ids.device).unsqueeze(1)

    @property
    def size(self) -> int:
        return len(self.keys)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        keys, ids = all_gather_nograd(keys.detach()), all_gather_nograd(ids.detach())
        if keys.shape[1:] != self.keys.shape[1:]:
            raise ValueError(f"queue keys are {'x'.join(map(str, self.keys.shape[1:]))}-d per image, got a batch of shape {tuple(keys.shape)}")
        if len(keys) > self.size:
            raise ValueError(
                f"the queue holds {self.size} keys but one optimiser step enqueues {len(keys)} (the global batch: data.batch_size "
                f"x processes x trainer.accumulate_grad_batches); raise method.queue_size (at most the number of training "
                f"images) or lower one of those"
            )
        positions = (self.pointer + torch.arange(len(keys), device=self.keys.device)) % self.size
        self.keys[positions] = keys.to(self.keys.dtype)
        self.ids[positions] = ids.to(self.ids.device)
        self.pointer.copy_((self.pointer + len(keys)) % self.size)
