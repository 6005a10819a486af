"""Non-learnable representations of an image batch for MV-MR (docs/methods/mvmr.md), computed without gradient.

Every function takes student-normalised images [B, 3, H, W] and returns [B, ...] (flattened by the
dependence measures). ``build_representations`` checks the names and optional dependencies up front.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from ssdistill.errors import ConfigError

HOG_BINS = 24  # unsigned orientations over pi
HOG_CELL = 8


@torch.no_grad()
def raw_pixels(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


@torch.no_grad()
def hog(images: torch.Tensor, binning: str = "fractional") -> torch.Tensor:
    """Per-channel histogram of oriented gradients: Sobel gradients, 24 unsigned orientation bins, 8x8 average
    pooling -> [B, 3 * 24, H/8, W/8]. ``fractional`` splits the magnitude m between the two nearest bins by
    distance; ``released`` votes m and (1 - m) as the official code does (docs/methods/mvmr.md, pitfall 9)."""
    b, c, h, w = images.shape
    # float32 whatever the default dtype (trainer.precision=bf16-true sets it to bfloat16 during training steps)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device, dtype=torch.float32)
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)  # [2, 1, 3, 3]: g_x, g_y
    gradients = F.conv2d(images.reshape(b * c, 1, h, w).float(), kernels, padding=1)
    gx, gy = gradients[:, 0], gradients[:, 1]
    magnitude = torch.sqrt(gx**2 + gy**2)
    position = torch.remainder(HOG_BINS * torch.atan2(gx, gy) / math.pi, HOG_BINS)
    lower = position.floor()
    fraction = position - lower
    lower_bin = lower.long() % HOG_BINS
    upper_bin = (lower_bin + 1) % HOG_BINS
    if binning == "fractional":
        lower_vote, upper_vote = magnitude * (1 - fraction), magnitude * fraction
    elif binning == "released":
        lower_vote, upper_vote = magnitude, 1 - magnitude
    else:
        raise ValueError(f"unknown HOG binning '{binning}' (fractional, released)")
    histogram = torch.zeros(b * c, HOG_BINS, h, w, device=images.device, dtype=torch.float32)
    histogram.scatter_add_(1, lower_bin.unsqueeze(1), lower_vote.unsqueeze(1))
    histogram.scatter_add_(1, upper_bin.unsqueeze(1), upper_vote.unsqueeze(1))
    pooled = F.avg_pool2d(histogram, HOG_CELL)
    return pooled.reshape(b, c * HOG_BINS, h // HOG_CELL, w // HOG_CELL)


@torch.no_grad()
def local_std(images: torch.Tensor) -> torch.Tensor:
    """sqrt(box3(x²) - box3(x)² + 1e-8) per pixel and channel (3x3 box, borders averaged over the pixels inside)."""
    x = images.float()
    mean = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    mean_square = F.avg_pool2d(x * x, 3, stride=1, padding=1, count_include_pad=False)
    return torch.nan_to_num(torch.sqrt((mean_square - mean**2).clamp_min(0) + 1e-8))


def _scattering(resolution: int) -> Callable[[torch.Tensor], torch.Tensor]:
    try:  # the 2-D frontend alone: ``kymatio.torch`` also imports the 3-D one, which fails with scipy >= 1.15
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D as Scattering2D
    except ImportError:
        raise ConfigError("representation 'scattering' needs kymatio: pip install kymatio (or drop it from method.representations)") from None
    transform = Scattering2D(J=2, shape=(resolution, resolution), L=8)

    @torch.no_grad()
    def scattering(images: torch.Tensor) -> torch.Tensor:
        return transform.to(images.device)(images.float().contiguous())

    return scattering


def _reaugmented(resolution: int, normalize: Callable, aug) -> Callable[[torch.Tensor], torch.Tensor]:
    from ssdistill.data.views import tensor_augmentation

    transform = tensor_augmentation(resolution, aug)

    @torch.no_grad()
    def reaugmented(images_01: torch.Tensor) -> torch.Tensor:
        # a fresh augmentation per sample (the official code shares one draw across the batch)
        return normalize(torch.stack([transform(image) for image in images_01]))

    return reaugmented


HANDCRAFTED = ("raw", "hog", "local_std", "scattering", "reaugmented")


def build_representations(names: list[str], resolution: int, normalize: Callable, aug, hog_binning: str) -> dict[str, Callable]:
    """name -> function(images in [0, 1]) for each requested representation (the student's normalisation applied)."""
    built: dict[str, Callable] = {}

    def frozen(fn: Callable) -> Callable:
        def represent(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return fn(images).detach()  # views of tensors that require grad would otherwise keep it

        return represent

    for name in names:
        if name == "raw":
            built[name] = lambda x: raw_pixels(normalize(x))
        elif name == "hog":
            built[name] = lambda x: hog(normalize(x), hog_binning)
        elif name == "local_std":
            built[name] = lambda x: local_std(normalize(x))
        elif name == "scattering":
            transform = _scattering(resolution)
            built[name] = lambda x, t=transform: t(normalize(x))
        elif name == "reaugmented":
            built[name] = _reaugmented(resolution, normalize, aug)
        else:
            raise ConfigError(f"unknown representation '{name}'; choose from {', '.join(HANDCRAFTED)}")
    return {name: frozen(fn) for name, fn in built.items()}
