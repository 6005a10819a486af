"""Frozen-feature extraction: model in eval mode, no gradient, one pass in dataset order."""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ssdistill.data.datasets import ImageSource, IndexedViews


@torch.no_grad()
def extract_features(
    model: nn.Module,
    source: ImageSource,
    view: Callable,
    batch_size: int = 256,
    num_workers: int = 2,
    device: torch.device | str = "cpu",
    desc: str = "features",
) -> torch.Tensor:
    """fp32 features [N, D], row i = sample i."""
    loader = DataLoader(IndexedViews(source, {"x": view}), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval().to(device)
    rows: list[torch.Tensor] = []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None):
        rows.append(model(batch["views"]["x"].to(device, non_blocking=True)).float().cpu())
    model.train(was_training)
    return torch.cat(rows)


@torch.no_grad()
def model_throughput(
    model: nn.Module, resolution: int, batch_size: int = 64, repeats: int = 3, device: torch.device | str = "cpu", enough_seconds: float = 1.0,
) -> float:
    """Images/s of the bare forward pass on an in-memory batch (after one warm-up pass): ``repeats`` timed passes, fewer
    once ``enough_seconds`` are timed (a large teacher on a CPU takes seconds a batch, and one such pass already times
    it to a few per cent)."""
    was_training = model.training
    model.eval().to(device)
    images = torch.rand(batch_size, 3, resolution, resolution, device=device)
    model(images)
    start = time.perf_counter()
    done = 0
    while done < repeats:
        out = model(images)
        if out.is_cuda:
            torch.cuda.synchronize()
        done += 1
        if time.perf_counter() - start >= enough_seconds:
            break
    seconds = time.perf_counter() - start
    model.train(was_training)
    return batch_size * done / seconds


@torch.no_grad()
def model_flops(model: nn.Module, resolution: int) -> float:
    """GFLOPs (2 x multiply-adds) of one forward pass on one image at ``resolution``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.rand(1, 3, resolution, resolution, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 1e9
