"""Regularisers on a batch of embeddings (docs/methods/rob.md)."""

from __future__ import annotations

import torch


def std_hinge(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """(1/D) Σ_d relu(γ - sqrt(Var_d(z) + ε)) with the unbiased variance over the batch (VICReg convention;
    ``eps=0`` reproduces the official MV-MR code)."""
    if len(z) < 2:
        raise ValueError("the std hinge needs a batch of at least 2 samples")
    z = z.float()
    return torch.relu(gamma - torch.sqrt(z.var(0, unbiased=True) + eps)).mean()
