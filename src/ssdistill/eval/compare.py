"""Side-by-side k-NN evaluation: student, teacher and random-init student on the same data and protocol, with each
model's label-free alignment with the teacher (linear CKA, dCor² on the query split) when the teacher is evaluated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ssdistill.data.datasets import ImageSource
from ssdistill.eval.alignment import teacher_alignment
from ssdistill.eval.features import extract_features, model_flops, model_throughput
from ssdistill.eval.knn import knn_accuracy


@dataclass
class Candidate:
    """A model to evaluate, the view it sees, and (optionally) its features on the memory set, already computed."""

    label: str
    model: nn.Module
    view: Callable
    resolution: int
    memory_features: torch.Tensor | None = None
    query_features: torch.Tensor | None = None


def knn_side_by_side(
    candidates: list[Candidate],
    memory: ImageSource,
    query: ImageSource,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 256,
    num_workers: int = 2,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """k-NN top-1/top-5 of every candidate with ``memory`` as the labelled bank and ``query`` as the test split, and
    ``teacher_alignment`` of every other candidate when one is labelled ``teacher``."""
    if memory.labels is None or query.labels is None:
        raise ValueError("k-NN needs labelled memory and query sets (class sub-folders)")
    memory_labels = torch.tensor(memory.labels)
    query_labels = torch.tensor(query.labels)
    results: dict[str, dict[str, float]] = {}
    query_features: dict[str, torch.Tensor] = {}
    for candidate in candidates:
        bank = candidate.memory_features
        if bank is None:
            bank = extract_features(candidate.model, memory, candidate.view, batch_size, num_workers, device, f"{candidate.label} train")
        queries = candidate.query_features
        if queries is None:
            queries = extract_features(candidate.model, query, candidate.view, batch_size, num_workers, device, f"{candidate.label} val")
        scores = knn_accuracy(bank, memory_labels, queries, query_labels, k, temperature, device=device)
        scores["images_per_s"] = model_throughput(candidate.model, candidate.resolution, device=device)
        scores["gflops"] = model_flops(candidate.model.to(device), candidate.resolution)
        scores["params_m"] = sum(p.numel() for p in candidate.model.parameters()) / 1e6
        results[candidate.label] = scores
        query_features[candidate.label] = queries
    if "teacher" in query_features:
        for label, features in query_features.items():
            if label != "teacher":
                results[label]["teacher_alignment"] = teacher_alignment(features, query_features["teacher"])
    return results
