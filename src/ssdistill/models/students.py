"""Students: any timm architecture by name, random init, classifier removed, own normalisation."""

from __future__ import annotations

import difflib
from contextlib import contextmanager

import timm
import torch
from timm.layers import PatchDropout
from torch import nn

from ssdistill.errors import ModelError
from ssdistill.models import cifar_resnet  # noqa: F401  (registers the CIFAR ResNets with timm, as student architectures)


def create_timm(arch: str, **kwargs) -> nn.Module:
    """``timm.create_model`` with a one-line error (and a close name) for unknown architectures."""
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else "; `timm.list_models()` lists the names"
        raise ModelError(f"unknown timm architecture '{arch}'{hint}")
    return timm.create_model(arch, **kwargs)


class Normalize(nn.Module):
    """(x - mean) / std with non-persistent buffers (checkpoints stay plain backbone weights)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class Student(nn.Module):
    """Images in [0, 1] at the student's resolution -> pooled features [B, dim]."""

    def __init__(
        self, arch: str, mean=None, std=None, channels_last: bool = False, model_args: dict | None = None, resolution: int | None = None
    ) -> None:
        super().__init__()
        self.arch, self.model_args = arch, dict(model_args or {})
        self.backbone = create_timm(arch, pretrained=False, num_classes=0, **self.model_args)
        fixed = fixed_input_size(self.backbone)
        if resolution is not None and "img_size" not in self.model_args and fixed not in (None, (resolution, resolution)):
            self.model_args["img_size"] = resolution  # a ViT built for 224 px trained at the student's resolution
            self.backbone = create_timm(arch, pretrained=False, num_classes=0, **self.model_args)
        cfg = self.backbone.pretrained_cfg
        self.mean = tuple(mean or cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(std or cfg.get("std", (0.229, 0.224, 0.225)))
        self.normalize = Normalize(self.mean, self.std)
        # models with a head block after pooling (MobileNetV3) report the pre-head width in num_features
        self.dim = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)
        self.channels_last = channels_last
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The input size a patch-embedding model (ViT family) was built for, when it cannot take another (else None)."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or getattr(model, "dynamic_img_size", False) or getattr(patch_embed, "img_size", None) is None:
        return None
    return tuple(patch_embed.img_size)


@contextmanager
def patch_dropout(student: Student, rate: float):
    """While active, a ViT-family student in training mode keeps a random (1 - rate) share of each image's patch tokens
    (timm's PatchDropout; class / register tokens kept), as MSN masks its anchor views; no effect on a student without
    patch tokens, in eval mode, or with rate 0."""
    backbone = student.backbone
    if rate <= 0 or not hasattr(backbone, "patch_drop"):
        yield
        return
    original = backbone.patch_drop
    backbone.patch_drop = PatchDropout(rate, num_prefix_tokens=getattr(backbone, "num_prefix_tokens", 1)).train(backbone.training)
    try:
        yield
    finally:
        backbone.patch_drop = original


class CohortEnsemble(nn.Module):
    """A cohort's members as one model: the concatenation of each member's L2-normalised pooled features (every member
    sees the same images, so they share one resolution)."""

    def __init__(self, members: dict[str, nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleDict(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([nn.functional.normalize(member(images), dim=1) for member in self.members.values()], dim=1)
