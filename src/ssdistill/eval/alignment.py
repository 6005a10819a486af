"""How much of the teacher's representation geometry a model holds, measured on the evaluation split: linear CKA
and the bias-corrected squared distance correlation between the model's frozen features and the teacher's, row i
of both being the same image. Both are invariant to rotations and isotropic scaling of either side, and both are 1
for identical geometries and about 0 for unrelated ones; widths may differ.

This is a label-free diagnostic next to k-NN: a student can score well on k-NN with its own geometry, and a method
whose objective is a dependence measure (MV-MR) can be checked on the measure it optimises."""

from __future__ import annotations

import torch

from ssdistill.losses.dependence import distance_correlation, linear_cka


@torch.no_grad()
def teacher_alignment(features: torch.Tensor, teacher_features: torch.Tensor, max_samples: int = 2048, seed: int = 0) -> dict:
    """{"linear_cka", "dcor2", "samples"} of [N, D] features against the teacher's [N, D_t] features of the same N
    images, on a seeded subset of at most ``max_samples`` rows (both measures cost O(n²) memory)."""
    if features.ndim != 2 or teacher_features.ndim != 2:
        raise ValueError(f"teacher alignment takes [N, D] feature matrices, got {tuple(features.shape)} and {tuple(teacher_features.shape)}")
    if len(features) != len(teacher_features):
        raise ValueError(f"the model's and the teacher's features must describe the same images: {len(features)} vs {len(teacher_features)} rows")
    if max_samples < 4:
        raise ValueError("teacher alignment needs max_samples >= 4")
    rows = torch.arange(len(features))
    if len(rows) > max_samples:
        rows = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_samples].sort().values
    x, y = features[rows].float(), teacher_features[rows].float()
    return {
        "linear_cka": float(linear_cka(x, y)),
        "dcor2": float(distance_correlation(x, y, estimator="unbiased")),
        "samples": len(rows),
    }
