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


def pca_whitening(features: torch.Tensor, shrinkage: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], matrix [D, D]) of a PCA whitening with shrinkage fitted on ``features`` [N, D]: over those rows,
    ``(x - mean) @ matrix`` has uncorrelated coordinates, one per principal direction, of variance λ / (λ + s · λ̄)
    (λ the direction's variance, λ̄ the mean of all D, s = ``shrinkage``). The directions that carry the variance end
    at about 1 each, whatever their share of it; the near-empty ones stay small instead of being blown up to 1.

    Distance-based dependence measures (dCor) are dominated by a representation's leading direction (on Q2's
    ResNet-56 teacher its first principal direction alone has dCor² 0.59 with the whole embedding); whitening the target
    makes each direction count (docs/methods/mvmr.md)."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"PCA whitening is fitted on [N, D] features with N >= 2, got {tuple(features.shape)}")
    if shrinkage <= 0:
        raise ValueError(f"whitening shrinkage must be > 0 (it keeps near-empty directions from being amplified), got {shrinkage}")
    x = features.double()
    mean = x.mean(0)
    centred = x - mean
    variances, directions = torch.linalg.eigh(centred.T @ centred / len(x))
    variances = variances.clamp_min(0)
    matrix = directions * (variances + shrinkage * variances.mean()).rsqrt()
    return mean.float(), matrix.float()


def whiten_with(features: torch.Tensor, mean: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``(features - mean) @ matrix`` with fixed statistics (``pca_whitening``'s)."""
    return (features.float() - mean) @ matrix
