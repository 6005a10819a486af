"""Augmentations with recorded parameters that can be replayed at any resolution.

``sample_params`` draws one MoCo-v2 style augmentation (crop box in relative coordinates, flip, colour
jitter factors and order, grayscale, blur sigma relative to the view side) from a seeded generator;
``render`` applies it to an image at a given resolution. The same parameters rendered at the teacher's
224 px and at the student's 96 px give the same crop with the same colours, which is what the
augmentation bank of the teacher cache stores (docs/teacher-cache.md).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ssdistill.config import AugConfig
from ssdistill.data.views import INTERPOLATION, blur_kernel


@dataclass(frozen=True)
class AugParams:
    top: float  # crop box as fractions of the image height / width
    left: float
    height: float
    width: float
    flip: bool
    jitter: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_order: tuple[int, int, int, int]
    grayscale: bool
    blur_sigma: float  # in units of the view side (0 = no blur)

    def as_row(self) -> list[float]:
        values = asdict(self)
        order = values.pop("jitter_order")
        return [float(v) for v in values.values()] + [float(o) for o in order]

    @classmethod
    def from_row(cls, row) -> AugParams:
        row = [float(v) for v in row]
        (top, left, height, width, flip, jitter, b, c, s, h, gray, sigma), order = row[:12], row[12:]
        return cls(top, left, height, width, bool(flip), bool(jitter), b, c, s, h, tuple(int(o) for o in order), bool(gray), sigma)


def sample_params(width: int, height: int, aug: AugConfig, rng: random.Random, resolution: int) -> AugParams:
    """Draw one augmentation like torchvision's RandomResizedCrop + ColorJitter + grayscale + blur + flip."""
    area = width * height
    box = None
    for _ in range(10):
        target = area * rng.uniform(aug.crop_scale_min, aug.crop_scale_max)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            box = (rng.randint(0, height - h), rng.randint(0, width - w), h, w)
            break
    if box is None:  # fall back to the whole image, as torchvision does
        box = (0, 0, height, width)
    top, left, h, w = box
    s = aug.color_jitter
    jitter = rng.random() < aug.color_jitter_p
    order = list(range(4))
    rng.shuffle(order)
    grayscale = rng.random() < aug.grayscale_p
    blur = rng.random() < aug.blur_p
    sigma = rng.uniform(0.1, 2.0) / resolution if blur else 0.0
    return AugParams(
        top=top / height,
        left=left / width,
        height=h / height,
        width=w / width,
        flip=rng.random() < aug.flip_p,
        jitter=jitter,
        brightness=rng.uniform(max(0, 1 - s), 1 + s),
        contrast=rng.uniform(max(0, 1 - s), 1 + s),
        saturation=rng.uniform(max(0, 1 - s), 1 + s),
        hue=rng.uniform(-s / 4, s / 4),
        jitter_order=tuple(order),
        grayscale=grayscale,
        blur_sigma=sigma,
    )


def render(image: Image.Image, params: AugParams, resolution: int, interpolation: str = "bilinear") -> torch.Tensor:
    """The augmented view [3, resolution, resolution] in [0, 1] described by ``params``."""
    width, height = image.size
    top, left = int(round(params.top * height)), int(round(params.left * width))
    h, w = max(1, int(round(params.height * height))), max(1, int(round(params.width * width)))
    x = TF.to_tensor(image)
    x = TF.resized_crop(x, top, left, h, w, [resolution, resolution], interpolation=INTERPOLATION[interpolation], antialias=True)
    x = x.clamp(0, 1)  # bicubic overshoot: the hue adjustment of values outside [0, 1] gives NaN
    if params.jitter:
        adjust = [
            lambda t: TF.adjust_brightness(t, params.brightness),
            lambda t: TF.adjust_contrast(t, params.contrast),
            lambda t: TF.adjust_saturation(t, params.saturation),
            lambda t: TF.adjust_hue(t, params.hue),
        ]
        for which in params.jitter_order:
            x = adjust[which](x)
    if params.grayscale:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if params.blur_sigma > 0:
        sigma = params.blur_sigma * resolution
        kernel = blur_kernel(resolution)
        x = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    if params.flip:
        x = TF.hflip(x)
    return x.clamp(0, 1)
