"""Temperature-scaled distillation KL (docs/methods/mcl.md), in float32:

    KL_T(s ‖ t) = T² · (1/B) Σ_i Σ_c p^t_ic (log p^t_ic − log p^s_ic),   p^s = softmax(s / T),   p^t = softmax(sg(t) / T)

Gradient reaches ``student_logits`` only. Entries at -inf in both (columns a contrastive loss excluded) carry no
probability and contribute nothing (never NaN).
"""

from __future__ import annotations

import torch


def distill_kl(
    student_logits: torch.Tensor,
    target_logits: torch.Tensor,
    temperature: float,
    row_weights: torch.Tensor | None = None,
    t_squared: bool = True,
) -> torch.Tensor:
    """KL_T(student ‖ sg target) averaged over rows (``row_weights`` ω_i replace 1/B by ω_i/B); ``t_squared``: the
    T² factor that keeps gradient magnitudes independent of T (Hinton et al.)."""
    if student_logits.shape != target_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"student and target logits must both be [B, C], got {tuple(student_logits.shape)} and {tuple(target_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"the distillation temperature must be positive, got {temperature}")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p_student = torch.log_softmax(student_logits.float() / temperature, dim=1)
        log_p_target = torch.log_softmax(target_logits.detach().float() / temperature, dim=1)
        p_target = log_p_target.exp()
        empty = p_target == 0  # an excluded column (or an underflow): 0 · log 0 = 0
        per_row = (p_target * (log_p_target.masked_fill(empty, 0.0) - log_p_student.masked_fill(empty, 0.0))).sum(1)
        if row_weights is not None:
            per_row = per_row * row_weights.float()
        return per_row.mean() * (temperature**2 if t_squared else 1.0)
