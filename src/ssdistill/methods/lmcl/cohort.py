"""The cohort as the virtual steps see it (members with their branches, embedding heads, stage classifiers), the
stage heads' evaluation module, and the label-free outer loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssdistill.losses.infonce import logits_nce
from ssdistill.models.stages import StagePlan, stage_maps

Features = list[list[torch.Tensor]]  # [member][stage] -> [B, d]


class Cohort(nn.Module):
    """What the virtual steps move, the official's target parameters: the members with their branches, the
    embedding heads and the stage classifiers (not the aggregators, not the weighting network). Built on demand
    around the method's own modules (no copies, never registered, so nothing is saved twice)."""

    def __init__(
        self, members: list[nn.Module], plans: list[StagePlan], branches: nn.ModuleList, embeds: nn.ModuleList, classifiers: nn.ModuleList | None
    ):
        super().__init__()
        self.members, self.branches, self.embeds, self.classifiers = nn.ModuleList(members), branches, embeds, classifiers
        self.plans = plans

    def forward(self, images: torch.Tensor) -> tuple[Features, Features, Features | None]:
        """(stage features, normalised embeddings, stage logits or None), each [member][stage], shallow -> deep."""
        features, embeddings, logits = [], [], []
        for i, plan in enumerate(self.plans):
            maps, final = stage_maps(plan, images)
            member = [branch(maps[branch.stage]) for branch in self.branches[i]] + [final]
            features.append(member)
            embeddings.append([F.normalize(head(f), dim=1) for head, f in zip(self.embeds[i], member)])
            if self.classifiers is not None:
                logits.append([classifier(f) for classifier, f in zip(self.classifiers[i], member)])
        return features, embeddings, logits if self.classifiers is not None else None


def nodes(per_member: Features) -> dict[tuple[int, int], torch.Tensor]:
    return {(i, k): t for i, stages in enumerate(per_member) for k, t in enumerate(stages)}


class StageHead(nn.Module):
    """Images -> the pooled output of one auxiliary branch (for the stage heads' evaluation). It holds the student as
    a submodule, so that ``eval()`` and ``.to()`` reach the stages the branch reads (BatchNorm with its running
    statistics, not the batch's)."""

    def __init__(self, plan: StagePlan, branch: nn.Module):
        super().__init__()
        self.student, self.branch, self.plan = plan.student, branch, plan

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.branch(stage_maps(self.plan, images)[0][self.branch.stage])


def final_instance_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """½ [InfoNCE(q → k) + InfoNCE(k → q)] in-batch, row n's positive the other view of image n, unweighted: the
    label-free outer loss of the meta step (one member's final stage)."""
    own = torch.eye(len(queries), device=queries.device)
    return (
        logits_nce(queries.float() @ keys.float().T / temperature, own).loss + logits_nce(keys.float() @ queries.float().T / temperature, own).loss
    ) / 2


def stage_cross_entropy(logits: Features, labels: torch.Tensor) -> torch.Tensor:
    """Σ over members and stages of CE(z, y): the supervised stage classifiers' loss, and the meta step's outer loss."""
    return torch.stack([F.cross_entropy(z.float(), labels) for member in logits for z in member]).sum()
