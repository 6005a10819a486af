"""The four loss terms of Mutual Contrastive Learning (docs/methods/mcl.md) for a cohort of M networks, from the
contrastive logits of every (anchor network, contrast network) pair:

    VCL      = Σ_m C(ℓ_mm)                          vanilla: each network against its own contrast set
    ICL      = Σ_{a≠b} C(ℓ_ab)                      interactive: anchors of a against the contrast set of b
    soft VCL = Σ_{a≠b} KL_T(ℓ_aa ‖ sg ℓ_bb)         each network matches its peers' vanilla distributions
    soft ICL = Σ_{a≠b} KL_T(ℓ_ab ‖ sg ℓ_ba)         = Σ_{a<b} [KL_T(ℓ_ab ‖ sg ℓ_ba) + KL_T(ℓ_ba ‖ sg ℓ_ab)]

C is the contrastive loss of one block of logits: CE(ℓ, 0) with the positive key first (label-free cohort with
queues) or multi-positive InfoNCE with class positives (supervised, in-batch). Row i of every block is image i and
column j of every contrast set is the same image (lockstep queues / the batch), which is what makes the soft terms
compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ssdistill.losses.distill import distill_kl

TERMS = ("vcl", "icl", "soft_vcl", "soft_icl")


def mutual_contrastive_terms(
    logits: Sequence[Sequence[torch.Tensor]],
    contrastive: Callable[[torch.Tensor, bool], torch.Tensor],
    kl_temperature: float,
) -> dict[str, torch.Tensor]:
    """{vcl, icl, soft_vcl, soft_icl} from ``logits[a][b]`` = ℓ_ab [B, C] (anchors of network a, contrast set of
    network b); ``contrastive(ℓ, within)`` is C, ``within`` telling a vanilla block (a == b) from an interactive one."""
    members = len(logits)
    if members < 2 or any(len(row) != members for row in logits):
        raise ValueError(f"mutual contrastive terms need an M x M grid of logits with M >= 2, got {[len(row) for row in logits]}")
    pairs = [(a, b) for a in range(members) for b in range(members) if a != b]
    return {
        "vcl": sum(contrastive(logits[m][m], True) for m in range(members)),
        "icl": sum(contrastive(logits[a][b], False) for a, b in pairs),
        "soft_vcl": sum(distill_kl(logits[a][a], logits[b][b], kl_temperature) for a, b in pairs),
        "soft_icl": sum(distill_kl(logits[a][b], logits[b][a], kl_temperature) for a, b in pairs),
    }


def class_positive_masks(labels: torch.Tensor, include_self_pair: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_within, W_across, E) of the supervised in-batch terms (docs/methods/mcl.md): W_within = same class, not self;
    E = the diagonal, left out of every vanilla denominator. Across networks the same image is left out too (the
    official code reuses the diagonal mask, ``include_self_pair`` off) or counts as one more positive (on), in which
    case nothing is excluded; the caller passes ``E`` for the across blocks only when ``include_self_pair`` is off."""
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    within = (same & ~eye).float()
    across = same.float() if include_self_pair else within
    return within, across, eye
