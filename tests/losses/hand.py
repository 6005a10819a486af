"""Loss values written out with scalar arithmetic, independently of the tensor code under test."""

import math


def kl_two(target, student, temperature):
    """T² · KL(p_t ‖ p_s) of two-column logits, from the sigmoid form of a two-way softmax."""
    p = 1 / (1 + math.exp(-(target[0] - target[1]) / temperature))
    s = 1 / (1 + math.exp(-(student[0] - student[1]) / temperature))
    return temperature**2 * (p * math.log(p / s) + (1 - p) * math.log((1 - p) / (1 - s)))


def nce_row(anchor_angle, contrast_angles, positives, excluded, tau):
    """-(1/|P|) Σ_{p ∈ P} (s_p - log Σ_{k ∉ E} exp s_k) with s_j = cos(θ_anchor - θ_j) / τ, for unit 2-d vectors given
    by their angles."""
    s = [math.cos(anchor_angle - c) / tau for c in contrast_angles]
    log_z = math.log(sum(math.exp(s[k]) for k in range(len(s)) if k not in excluded))
    return -sum(s[p] - log_z for p in positives) / len(positives)


def unit(angle):
    return [math.cos(angle), math.sin(angle)]
