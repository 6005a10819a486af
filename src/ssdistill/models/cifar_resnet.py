"""CIFAR ResNets (He et al. 2016) with option-A shortcuts: resnet20/32/44/56/110.

Key names follow the widely used CIFAR-10 checkpoints (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``) so they load strictly once the
``module.`` prefix is stripped. The API mirrors timm: ``forward_features``, ``forward_head``; ``num_classes=0`` gives pooled features. The depths are
registered with timm as ``cifar_resnet20`` … ``cifar_resnet110`` (random init; the CIFAR students of MCL's recipes), so
``student.arch: cifar_resnet32`` works wherever a timm name does once ssdistill is imported.
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn
from torch.nn import functional as F


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pad = c_out - c_in if (stride != 1 or c_in != c_out) else 0
        self.stride = stride

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        # option A: take every second pixel, zero-pad the new channels (half on each side)
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 56, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(_Block(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = 64
        self.num_classes = num_classes
        self.linear = nn.Linear(64, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = {
            "architecture": f"cifar_resnet{depth}",  # timm's config.json names the model by it (export)
            "input_size": (3, 32, 32),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.linear(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _registered(depth: int):
    def build(pretrained: bool = False, **kwargs) -> CifarResNet:
        if pretrained:
            raise ValueError(f"cifar_resnet{depth} has no timm weights; load a checkpoint (teacher.weights) instead")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return CifarResNet(depth, **kwargs)

    build.__name__ = build.__qualname__ = f"cifar_resnet{depth}"
    build.__module__ = __name__
    return register_model(build)


for _depth in (20, 32, 44, 56, 110):
    globals()[f"cifar_resnet{_depth}"] = _registered(_depth)
