"""``batch_cutmix`` (docs/methods/index.md): one box per batch pastes ``b`` into ``a``."""

from __future__ import annotations

import math

import torch


def cutmix_box(height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, int, int, int, float]:
    """λ₀ ~ Beta(2, 2); a box with sides sqrt(1 - λ₀)·H and sqrt(1 - λ₀)·W around a uniform centre, clipped to the
    image. Returns (top, bottom, left, right, λ) with λ = 1 - box area / (H W) after clipping (share of ``a``)."""
    lam0 = _beta22(generator)
    side = math.sqrt(1.0 - lam0)
    box_h, box_w = int(height * side), int(width * side)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return top, bottom, left, right, lam


def _beta22(generator: torch.Generator | None) -> float:
    # Beta(2, 2) as the median of three uniforms (its order-statistic form), so a generator controls it
    return float(torch.rand(3, generator=generator).median())


def batch_cutmix(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"cutmix needs two [B, C, H, W] batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    top, bottom, left, right, lam = cutmix_box(a.shape[2], a.shape[3], generator)
    mixed = a.clone()
    mixed[:, :, top:bottom, left:right] = b[:, :, top:bottom, left:right]
    return mixed, lam
