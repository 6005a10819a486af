"""MLP heads (projectors, predictors) from one builder (docs/methods/index.md)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F


class L2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


def mlp(
    dims: list[int],
    bn: Literal["none", "hidden", "all"] = "hidden",
    bias: bool = True,
    act: Literal["relu", "gelu"] = "relu",
    out_l2norm: bool = False,
) -> nn.Sequential:
    """Linear layers through ``dims`` = [d_in, h_1, ..., d_out]; BN and activation after every hidden layer
    (BN also after the output when ``bn='all'``). ``dims=[d]`` is the identity."""
    if len(dims) < 1 or any(d <= 0 for d in dims):
        raise ValueError(f"head dims must be positive, got {dims}")
    layers: list[nn.Module] = []
    activation = nn.ReLU if act == "relu" else nn.GELU
    for position, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = position == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if (not last and bn in ("hidden", "all")) or (last and bn == "all"):
            layers.append(nn.BatchNorm1d(d_out))
        if not last:
            layers.append(activation())
    if out_l2norm:
        layers.append(L2Norm())
    return nn.Sequential(*layers)
