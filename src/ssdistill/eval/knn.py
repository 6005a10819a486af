"""Weighted k-NN classifier on L2-normalised features (Wu et al. 2018; docs/evaluation.md)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

SIMILARITY_BLOCK = 1 << 27


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores [M, C]: each of the k most cosine-similar training samples votes exp(sim / T) for its class.

    Queries are processed in chunks, so memory stays at chunk x N similarities."""
    if train_features.shape[1] != query_features.shape[1]:
        raise ValueError(f"feature widths differ: train {train_features.shape[1]}, query {query_features.shape[1]}")
    if len(train_features) != len(train_labels):
        raise ValueError(f"{len(train_features)} train features but {len(train_labels)} labels")
    k = min(k, len(train_features))
    bank = F.normalize(train_features.float(), dim=1)
    chunk = max(1, min(chunk, SIMILARITY_BLOCK // len(bank)))  # a block of similarities stays ≤ 128M floats (1M memory: 128 queries)
    labels = train_labels.to(bank.device).long()
    scores = []
    for start in range(0, len(query_features), chunk):
        query = F.normalize(query_features[start : start + chunk].float().to(bank.device), dim=1)
        similarity, neighbour = (query @ bank.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(query), num_classes, device=bank.device)
        votes.scatter_add_(1, labels[neighbour], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Top-1 (and top-5 when there are at least 5 classes) accuracy in percent; ``device``: where the
    similarities are computed (a GPU when available; queries stream through it in chunks)."""
    num_classes = int(max(train_labels.max(), query_labels.max())) + 1
    if device is not None:
        train_features = train_features.to(device)
    scores = knn_scores(train_features, train_labels, query_features, num_classes, k, temperature)
    ranked = scores.argsort(dim=1, descending=True)
    truth = query_labels.to(ranked.device).view(-1, 1)
    result = {"top1": 100.0 * (ranked[:, :1] == truth).any(1).float().mean().item()}
    if num_classes >= 5:
        result["top5"] = 100.0 * (ranked[:, :5] == truth).any(1).float().mean().item()
    return result
