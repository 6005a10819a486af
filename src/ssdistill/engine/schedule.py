"""Learning-rate schedules as pure functions of the optimiser step (docs/methods/index.md)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, peak: float = 1.0, start: float = 0.0, end: float = 0.0) -> float:
    """Linear from ``start`` to ``peak`` over ``warmup_steps``, then cosine from ``peak`` to ``end`` at ``total_steps``."""
    if step < warmup_steps:
        return start + (peak - start) * step / warmup_steps
    if total_steps <= warmup_steps:
        return peak
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return end + 0.5 * (peak - end) * (1.0 + math.cos(math.pi * progress))
