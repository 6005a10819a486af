"""View recipes. Every recipe maps a PIL image to an un-normalised float tensor in [0, 1];
each model normalises (and if needed resizes) for itself, so the same crop can feed a teacher and
a student with different statistics."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ssdistill.config import AugConfig

INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def blur_kernel(resolution: int) -> int:
    """Gaussian-blur kernel side of a view at ``resolution`` (odd, about a tenth of the side)."""
    return max(3, 2 * int(0.05 * resolution) + 1)


_TO_FLOAT = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]

# Images this small (CIFAR, STL-10) are never centre-cropped: they are resized straight to the model's side.
NATIVE_MAX_SIDE = 96


def original_view(resolution: int, crop_pct: float = 0.875, interpolation: str = "bicubic") -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic view: resize the shorter side to resolution / crop_pct and centre-crop (docs/methods/index.md)."""
    mode = INTERPOLATION[interpolation]
    direct = v2.Compose([v2.Resize((resolution, resolution), interpolation=mode, antialias=True), *_TO_FLOAT])
    cropped = v2.Compose(
        [
            v2.Resize(int(round(resolution / crop_pct)), interpolation=mode, antialias=True),
            v2.CenterCrop(resolution),
            *_TO_FLOAT,
        ]
    )

    def view(image: Image.Image) -> torch.Tensor:
        return direct(image) if max(image.size) <= NATIVE_MAX_SIDE else cropped(image)

    view.description = f"original_view({resolution}, {crop_pct}, {interpolation})"  # stable key for cached features
    view.resolution = resolution
    return view


def augmented_view(resolution: int, aug: AugConfig, interpolation: str = "bilinear") -> Callable[[Image.Image], torch.Tensor]:
    """MoCo-v2 style view: random resized crop, colour jitter, grayscale, blur, flip (strengths from ``aug``); or the
    supervised CIFAR view (``aug.recipe: cifar_basic``): padded random crop and flip."""
    if aug.recipe == "none":
        return original_view(resolution, interpolation=interpolation)
    view = v2.Compose([*_augmentations(resolution, aug, interpolation), *_TO_FLOAT])
    view.resolution = resolution  # the side of the tensors it renders (batch layouts read it)
    return view


def tensor_augmentation(resolution: int, aug: AugConfig, interpolation: str = "bilinear") -> Callable[[torch.Tensor], torch.Tensor]:
    """The same augmentation for an image that is already a float tensor [3, H, W] in [0, 1]."""
    if aug.recipe == "none":
        return v2.Resize((resolution, resolution), interpolation=INTERPOLATION[interpolation], antialias=True)
    return v2.Compose(_augmentations(resolution, aug, interpolation))


def _augmentations(resolution: int, aug: AugConfig, interpolation: str) -> list:
    if aug.recipe == "cifar_basic":
        return [
            v2.Resize((resolution, resolution), interpolation=INTERPOLATION[interpolation], antialias=True),
            v2.RandomCrop(resolution, padding=4),
            v2.RandomHorizontalFlip(p=aug.flip_p),
        ]
    strength = aug.color_jitter
    kernel = blur_kernel(resolution)
    return [
        v2.RandomResizedCrop(resolution, scale=(aug.crop_scale_min, aug.crop_scale_max), interpolation=INTERPOLATION[interpolation], antialias=True),
        v2.RandomApply([v2.ColorJitter(strength, strength, strength, strength / 4)], p=aug.color_jitter_p),
        v2.RandomGrayscale(p=aug.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=aug.blur_p),
        v2.RandomHorizontalFlip(p=aug.flip_p),
    ]
