"""InfoNCE in the two forms the contrastive methods need (docs/methods/bingo.md), log-sum-exp in float32.

* ``info_nce``: the general multi-positive form over any contrast set with positive weights W, an
  exclusion mask E and per-anchor weights; rows without a positive are skipped, never NaN.
* ``logits_nce``: the same on logits the caller built (MCL reuses them for its soft terms).
* ``queue_nce``: the MoCo / BINGO / DisCo / MCL special case, one positive key per row in column 0 followed by
  a queue of negatives, computed as logits ``[<u, k>, u Qᵀ] / τ`` (``queue_logits``) without building W.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F


class NCEResult(NamedTuple):
    loss: torch.Tensor
    skipped_rows: int  # anchors without any positive (left out of the mean)


def info_nce(
    anchors: torch.Tensor,
    contrast: torch.Tensor,
    positive_weights: torch.Tensor,
    temperature: float,
    exclude: torch.Tensor | None = None,
    anchor_weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> NCEResult:
    """ℓ_i = -Σ_j W_ij (s_ij - log Σ_{k not excluded} exp s_ik) / Σ_j W_ij with s = u vᵀ / τ.

    ``reduction="mean"`` averages ω_i ℓ_i over the rows that have a positive; ``"weighted"`` divides by B."""
    if anchors.ndim != 2 or contrast.ndim != 2 or anchors.shape[1] != contrast.shape[1]:
        raise ValueError(f"anchors [B, D] and contrast [C, D] must share D, got {tuple(anchors.shape)} and {tuple(contrast.shape)}")
    expected = (len(anchors), len(contrast))
    if tuple(positive_weights.shape) != expected or (exclude is not None and tuple(exclude.shape) != expected):
        raise ValueError(f"positive weights and exclusion mask must be [B, C] = {list(expected)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        logits = anchors.float() @ contrast.float().T / temperature
        return logits_nce(logits, positive_weights, exclude, anchor_weights, reduction)


def logits_nce(
    logits: torch.Tensor,
    positive_weights: torch.Tensor,
    exclude: torch.Tensor | None = None,
    anchor_weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> NCEResult:
    """``info_nce`` on similarity logits s [B, C] (already divided by τ) that the caller built, for losses that also
    reuse the logits (MCL's soft terms)."""
    if tuple(positive_weights.shape) != tuple(logits.shape) or (exclude is not None and tuple(exclude.shape) != tuple(logits.shape)):
        raise ValueError(f"positive weights and exclusion mask must match the logits {list(logits.shape)}")
    if reduction not in ("mean", "weighted"):
        raise ValueError(f"unknown reduction '{reduction}' (mean, weighted)")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, weights = logits.float(), positive_weights.float()
        if exclude is not None:
            logits = logits.masked_fill(exclude.bool(), float("-inf"))
            weights = weights.masked_fill(exclude.bool(), 0.0)
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        log_prob = torch.where(weights > 0, log_prob, torch.zeros_like(log_prob))  # excluded -inf never meets a weight
        totals = weights.sum(1)
        valid = totals > 0
        per_row = -(weights * log_prob).sum(1) / totals.clamp_min(1e-12)
        if anchor_weights is not None:
            per_row = per_row * anchor_weights.float()
        per_row = per_row.masked_fill(~valid, 0.0)
        denominator = valid.sum().clamp_min(1) if reduction == "mean" else torch.tensor(len(logits))
        return NCEResult(per_row.sum() / denominator, int((~valid).sum()))


def _check_exclude(exclude: torch.Tensor | None, rows: int, queue: torch.Tensor) -> None:
    if exclude is not None and tuple(exclude.shape) != (rows, len(queue)):
        raise ValueError(f"the exclusion mask must be [B, queue] = [{rows}, {len(queue)}], got {tuple(exclude.shape)}")


def queue_logits(
    query: torch.Tensor, positive_key: torch.Tensor, queue: torch.Tensor, temperature: float, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, 1 + Q] logits ``[<q_i, k_i>, q_i Qᵀ] / τ`` in float32, the queue entries marked in ``exclude`` [B, Q] at -inf
    (e.g. older keys of the query's own image, which are not negatives). Inputs are expected L2-normalised;
    ``positive_key`` and ``queue`` carry no gradient here."""
    if query.shape != positive_key.shape or query.shape[1] != queue.shape[-1]:
        raise ValueError(f"query {tuple(query.shape)}, keys {tuple(positive_key.shape)} and queue {tuple(queue.shape)} disagree")
    _check_exclude(exclude, len(query), queue)
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = query.float()
        positive = (q * positive_key.detach().float()).sum(1, keepdim=True)
        negatives = q @ queue.detach().float().T
        if exclude is not None:
            negatives = negatives.masked_fill(exclude.bool(), float("-inf"))
        return torch.cat([positive, negatives], dim=1) / temperature


def queue_nce(
    query: torch.Tensor, positive_key: torch.Tensor, queue: torch.Tensor, temperature: float, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """mean_i CE([<q_i, k_i>, q_i Qᵀ] / τ, 0): one positive per row, the queue rows as negatives except those marked in
    ``exclude`` (``queue_logits``)."""
    return positive_first_ce(queue_logits(query, positive_key, queue, temperature, exclude))


def positive_first_ce(logits: torch.Tensor) -> torch.Tensor:
    """mean_i CE(ℓ_i, 0): the positive in column 0 of every row."""
    return F.cross_entropy(logits.float(), torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def similarity_distribution_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    queue: torch.Tensor,
    student_temperature: float,
    teacher_temperature: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """SEED: soft cross-entropy H(p_t, softmax(ℓ_s)) between the teacher's and the student's similarity
    distributions over [own teacher embedding, queue minus the ``exclude``d entries] (docs/methods/baselines.md).
    Gradient reaches ``student`` only."""
    if student.shape != teacher.shape or student.shape[1] != queue.shape[1]:
        raise ValueError(f"student {tuple(student.shape)}, teacher {tuple(teacher.shape)} and queue {tuple(queue.shape)} disagree")
    _check_exclude(exclude, len(student), queue)
    with torch.autocast(device_type=student.device.type, enabled=False):
        s, t, bank = student.float(), teacher.detach().float(), queue.detach().float()
        student_logits = torch.cat([(s * t).sum(1, keepdim=True), s @ bank.T], dim=1) / student_temperature
        teacher_logits = torch.cat([(t * t).sum(1, keepdim=True), t @ bank.T], dim=1) / teacher_temperature
        if exclude is not None:
            dropped = torch.cat([torch.zeros_like(exclude[:, :1]), exclude], dim=1).bool()
            student_logits = student_logits.masked_fill(dropped, float("-inf"))
            teacher_logits = teacher_logits.masked_fill(dropped, float("-inf"))
        target = teacher_logits.softmax(dim=1)
        log_prob = student_logits.log_softmax(dim=1).masked_fill(target == 0, 0.0)  # excluded: 0 · -inf would be NaN
        return -(target * log_prob).sum(1).mean()


def batch_similarity_distribution_loss(
    student: torch.Tensor, teacher: torch.Tensor, student_temperature: float, teacher_temperature: float
) -> torch.Tensor:
    """SEED's loss with the batch's own teacher embeddings as the keys instead of a queue, each row's own key left out
    of the key part (it is the first column already); inputs are L2-normalised here. A relational term over the batch
    (feature regression's ``method.relational=seed``). Gradient reaches ``student`` only."""
    s, t = F.normalize(student.float(), dim=1), F.normalize(teacher.detach().float(), dim=1)
    own = torch.eye(len(t), dtype=torch.bool, device=t.device)
    return similarity_distribution_loss(s, t, t, student_temperature, teacher_temperature, exclude=own)
