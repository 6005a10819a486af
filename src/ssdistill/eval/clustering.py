"""Clustering metrics on frozen features: k-means with as many clusters as classes, then accuracy under the
best one-to-one cluster-to-class matching (Hungarian), NMI and ARI."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch.nn import functional as F

if TYPE_CHECKING:
    from ssdistill.data.datasets import ImageSource


def hungarian_accuracy(truth: np.ndarray, clusters: np.ndarray) -> float:
    """Percent of samples whose cluster maps to their class under the best one-to-one assignment."""
    truth, clusters = np.asarray(truth), np.asarray(clusters)
    if truth.shape != clusters.shape:
        raise ValueError(f"{truth.shape[0]} labels but {clusters.shape[0]} cluster assignments")
    size = max(truth.max(), clusters.max()) + 1
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (clusters, truth), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return 100.0 * counts[rows, cols].sum() / len(truth)


def cluster_metrics(truth: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": hungarian_accuracy(truth, clusters),
        "nmi": 100.0 * normalized_mutual_info_score(truth, clusters),
        "ari": 100.0 * adjusted_rand_score(truth, clusters),
    }


def kmeans_clustering(features: torch.Tensor, labels: torch.Tensor, seed: int = 0, n_init: int = 10) -> dict[str, float]:
    """k-means (k = number of classes, ``n_init`` seeded restarts) on L2-normalised features; labels only score."""
    x = F.normalize(features.float(), dim=1).numpy()
    truth = labels.numpy()
    k = len(np.unique(truth))
    clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
    return cluster_metrics(truth, clusters)


def task_clustering(
    model: torch.nn.Module, view, splits: dict[str, ImageSource], batch_size: int, num_workers: int, device, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{task: k-means clustering scores} of ``model``'s features on each task's labelled evaluation split (k = the
    task's number of classes): how well the features separate each task's classes, for any model (CKA's student and
    random-init student, or a row without task heads)."""
    from ssdistill.eval.features import extract_features

    scores = {}
    for name, source in splits.items():
        if source.labels is None:
            raise ValueError(f"the evaluation split of task {name} has no class folders")
        features = extract_features(model, source, view, batch_size, num_workers, device, f"k-means {name}")
        scores[name] = kmeans_clustering(features, torch.tensor(source.labels), seed=seed)
    return scores
