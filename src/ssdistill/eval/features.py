"""Frozen-feature extraction: model in eval mode, no gradient, one pass in dataset order.

``model_outputs`` is the package's one loop that runs a frozen model over a dataset of images: the features here, the
teacher cache and bank fills (``cache.fill.teacher_compute``) and the provider's mean teacher output
(``TeacherProvider.mean_output``) all go through it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ssdistill.data.datasets import ImageSource


class ViewedImages(Dataset):
    """``view(image)`` of every image of ``source``, in order: one [3, r, r] tensor per item."""

    def __init__(self, source: ImageSource, view: Callable) -> None:
        self.source, self.view = source, view

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.view(self.source.load(index))


@torch.no_grad()
def model_outputs(
    model: Callable, images: Dataset, batch_size: int, num_workers: int, device: torch.device | str, desc: str
) -> Iterator[torch.Tensor]:
    """``model`` (moved to ``device``) over ``images``, a dataset of image tensors, in order, without gradient: yields each
    batch's outputs, on ``device``, with a progress bar showing images/s and the time left. The caller sets the
    model's mode (a ``FrozenTeacher`` is always in eval mode)."""
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    model.to(device)
    with tqdm(total=len(images), desc=desc, unit="img", dynamic_ncols=True, leave=False, disable=None) as bar:
        for batch in loader:
            yield model(batch.to(device, non_blocking=True))
            bar.update(len(batch))


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
    """fp32 features [N, D], row i = sample i (``model`` in eval mode for the pass, its mode restored after)."""
    was_training = model.training
    model.eval()
    try:
        rows = [out.float().cpu() for out in model_outputs(model, ViewedImages(source, view), batch_size, num_workers, device, desc)]
    finally:
        model.train(was_training)
    return torch.cat(rows)


@torch.no_grad()
def model_throughput(
    model: nn.Module,
    resolution: int,
    batch_size: int = 64,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    enough_seconds: float = 1.0,
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
