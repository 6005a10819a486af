"""Feature regression: the student's projected embedding regresses the teacher's embedding."""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F


def feature_regression_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    kind: Literal["cosine", "mse", "smooth_l1", "cosine_smooth_l1"] = "cosine",
    beta: float = 1.0,
) -> torch.Tensor:
    """Mean over the batch of 1 - cos(p, t) (``cosine``), or the mean over all B x D entries of the
    squared (``mse``) or smooth-L1 (``smooth_l1``, threshold ``beta``) error, or the sum of the cosine and smooth-L1
    terms (``cosine_smooth_l1``: direction and magnitude, the multi-teacher recipes' loss). No gradient reaches
    ``target``."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"student head gives {tuple(prediction.shape)} but the teacher signal is {tuple(target.shape)}; "
            f"the head's output width must equal the teacher's"
        )
    prediction, target = prediction.float(), target.detach().float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(prediction, target, dim=1)).mean()
    if kind == "mse":
        return F.mse_loss(prediction, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=beta)
    if kind == "cosine_smooth_l1":
        return (1.0 - F.cosine_similarity(prediction, target, dim=1)).mean() + F.smooth_l1_loss(prediction, target, beta=beta)
    raise ValueError(f"unknown regression loss '{kind}' (cosine, mse, smooth_l1, cosine_smooth_l1)")


def center_batch(features: torch.Tensor) -> torch.Tensor:
    """Subtract the batch mean (keeps the teacher's variance spectrum, removes its shared mean direction)."""
    features = features.float()
    return features - features.mean(0, keepdim=True)


def standardize_batch(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension (x - batch mean) / batch std, like a BatchNorm without affine parameters.

    Teacher embeddings after ReLU/SiLU pooling are all positive and share one dominant direction;
    regressing them raw lets a student reach a low cosine loss by predicting that mean direction.
    Standardising the targets removes the shortcut so the loss is about what tells images apart."""
    features = features.float()
    return (features - features.mean(0, keepdim=True)) / torch.sqrt(features.var(0, unbiased=False, keepdim=True) + eps)


def standardize_with(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension (x - mean) / std with fixed statistics (for example a teacher's, over its cached features)."""
    return (features.float() - mean) / (std + eps)
