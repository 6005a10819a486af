"""BatchNorm helpers for keys computed with batch statistics (docs/distributed.md).

* ``grouped_forward`` runs a network on random sub-batches and restores the order: a single-process
  stand-in for shuffle-BN, so batch statistics cannot tell which key belongs to which query.
* ``batch_statistics`` lets a frozen network's BatchNorm layers normalise with the statistics of the
  batch (BINGO's official teacher runs in training mode) without touching their running statistics,
  which the teacher's evaluation still needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def grouped_forward(network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, groups: int) -> torch.Tensor:
    """``network`` applied to ``groups`` random sub-batches (at least 2 images each); rows in input order."""
    groups = max(1, min(groups, len(images) // 2))
    order = torch.randperm(len(images), device=images.device)
    # tensor_split: sizes differ by at most one, so every group has >= 2 images (chunk would leave 7 images in groups of
    # 3, 3 and 1, and BatchNorm cannot normalise one image)
    outputs = torch.cat([network(chunk) for chunk in images[order].tensor_split(groups)])
    return outputs[torch.argsort(order)]


@contextmanager
def batch_statistics(network: nn.Module) -> Iterator[None]:
    """Inside the block every BatchNorm layer of ``network`` normalises with batch statistics; its running
    statistics, counters and mode are exactly as before afterwards."""
    layers = [m for m in network.modules() if isinstance(m, _BatchNorm)]
    saved = [(m.training, {k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None}) for m in layers]
    try:
        for m in layers:
            m.training = True
        yield
    finally:
        for m, (training, buffers) in zip(layers, saved):
            m.training = training
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
