"""Students: any timm architecture by name, random init, classifier removed, own normalisation."""

from __future__ import annotations

import difflib

import timm
import torch
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

    def __init__(self, arch: str, mean=None, std=None, channels_last: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = create_timm(arch, pretrained=False, num_classes=0)
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


class CohortEnsemble(nn.Module):
    """A cohort's members as one model: the concatenation of each member's L2-normalised pooled features (every member
    sees the same images, so they share one resolution)."""

    def __init__(self, members: dict[str, nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleDict(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([nn.functional.normalize(member(images), dim=1) for member in self.members.values()], dim=1)
