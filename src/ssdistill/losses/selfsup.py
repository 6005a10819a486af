"""The target-branch losses of the joint-embedding methods RoB wraps (docs/methods/rob.md), in float32:

* ``dino_cross_entropy``: H(softmax((t − c)/τ_t), s/τ_s) averaged over the (teacher view, student view) pairs and the
  images; a teacher view is one of the student's views (the global crops) and is not paired with itself unless
  ``same_view_pairs``;
* ``sinkhorn``: Sinkhorn–Knopp equipartition of a positive [B, K] matrix (SwAV / MSN targets), rows of the result
  summing to 1; ``sinkhorn_scores`` starts from exp(scores / ε);
* ``sharpen``, ``prototype_probabilities``, ``msn_cross_entropy`` and ``memax`` (mean-entropy maximisation: log K −
  H(mean_i p_i), minimised, so the average prediction spreads over the prototypes);

``sinkhorn`` and ``memax`` with ``all_ranks=True`` work on the global batch under DDP as the official MSN code does
(its ``distributed_sinkhorn`` all-reduces Q's total and row sums with B = local batch × world size; ME-MAX all-reduces
the mean prediction); in a single process they give the same numbers as without it.
* ``regression_loss``: BYOL / SimSiam's mean (2 − 2 cos(p, sg t)).

Targets never receive gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from ssdistill.distributed import all_reduce_mean, all_reduce_sum_nograd, world_size


def dino_targets(teacher: torch.Tensor, center: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """softmax((t − c) / τ_t) without gradient; ``center`` None: no centring."""
    with torch.no_grad():
        t = teacher.float() - (0.0 if center is None else center.float())
        return torch.softmax(t / temperature, dim=-1)


def dino_cross_entropy(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    teacher_views: Sequence[int],
    center: torch.Tensor | None,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    same_view_pairs: bool = False,
) -> torch.Tensor:
    """mean over pairs (g, v) and images of H(q_g, s_v / τ_s), q_g = softmax((t_g − c)/τ_t); ``student[v]``: [B, K] for
    every student view v, ``teacher[g]``: [B, K] for teacher view g, which is the student's view ``teacher_views[g]``."""
    if len(teacher) != len(teacher_views) or not student:
        raise ValueError(f"{len(teacher)} teacher outputs for {len(teacher_views)} teacher views; and at least one student view")
    pairs = [(g, v) for g, own in enumerate(teacher_views) for v in range(len(student)) if same_view_pairs or v != own]
    if not pairs:
        raise ValueError("no (teacher view, student view) pair: add student views or set same_view_pairs")
    with torch.autocast(device_type=student[0].device.type, enabled=False):
        targets = [dino_targets(t, center, teacher_temperature) for t in teacher]
        log_probs = [torch.log_softmax(s.float() / student_temperature, dim=-1) for s in student]
        return sum(-(targets[g] * log_probs[v]).sum(-1).mean() for g, v in pairs) / len(pairs)


@torch.no_grad()
def sinkhorn(matrix: torch.Tensor, iterations: int = 3, all_ranks: bool = False) -> torch.Tensor:
    """Sinkhorn–Knopp on a positive [B, K] matrix (as SwAV and MSN): scale to unit total mass, then ``iterations`` times
    give every prototype (column) the mass 1/K and every image (row) 1/B; returned ×B, so each row sums to 1 (and each
    column to about B/K). ``all_ranks``: the masses are those of every rank's rows together (the total and the column
    sums all-reduced, B the global batch); each rank gets its own rows of the global result."""
    if iterations <= 0:
        return matrix
    reduce = all_reduce_sum_nograd if all_ranks else (lambda tensor: tensor)
    q = matrix.float().T  # [K, B]
    q = q / reduce(q.sum())
    prototypes, images = q.shape[0], q.shape[1] * (world_size() if all_ranks else 1)
    for _ in range(iterations):
        q = q / reduce(q.sum(dim=1, keepdim=True)) / prototypes
        q = q / q.sum(dim=0, keepdim=True) / images
    return (q * images).T


def sinkhorn_scores(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV codes: ``sinkhorn`` of exp(scores / ε) (docs/methods/rob.md)."""
    with torch.no_grad():
        scores = scores.float() / epsilon
        return sinkhorn(torch.exp(scores - scores.max()), iterations)


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T) renormalised per row (MSN's target sharpening, T = 0.25)."""
    sharpened = probabilities.float() ** (1.0 / temperature)
    return sharpened / sharpened.sum(dim=1, keepdim=True)


def prototype_probabilities(embeddings: torch.Tensor, prototypes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """softmax(⟨n(z), n(prototypes)⟩ / τ): [B, K]."""
    return torch.softmax(F.normalize(embeddings.float(), dim=1) @ F.normalize(prototypes.float(), dim=1).T / temperature, dim=1)


def msn_cross_entropy(anchor_probabilities: torch.Tensor, target_probabilities: torch.Tensor) -> torch.Tensor:
    """mean_i −Σ_k target_ik log anchor_ik; the targets [B, K] are repeated for the ``views`` anchors of each image, laid
    out view by view ([views · B, K])."""
    views = len(anchor_probabilities) // len(target_probabilities)
    targets = target_probabilities.detach().float().repeat(views, 1)
    return -(targets * torch.log(anchor_probabilities.float().clamp_min(1e-12))).sum(1).mean()


def memax(probabilities: torch.Tensor, all_ranks: bool = False) -> torch.Tensor:
    """ME-MAX: log K − H(mean_i p_i) ≥ 0, zero when the mean prediction is uniform over the K prototypes. ``all_ranks``:
    the mean over every rank's rows (MSN's ``AllReduce``: the gradient reaches this rank's rows, DDP averages it)."""
    mean = probabilities.float().mean(0)
    if all_ranks:
        mean = all_reduce_mean(mean)
    return (mean * torch.log(mean.clamp_min(1e-12))).sum() + math.log(len(mean))


def regression_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_i (2 − 2 cos(p_i, sg t_i)) (BYOL / SimSiam)."""
    return (2 - 2 * F.cosine_similarity(predictions.float(), targets.detach().float(), dim=1)).mean()
