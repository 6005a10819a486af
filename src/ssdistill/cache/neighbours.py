"""Neighbour bags and k-means pseudo-labels over cached teacher embeddings (docs/methods/bingo.md, CKA).

Both are exact and memory-bounded: similarities are computed block by block (``block`` x ``block``),
never as an N x N matrix, so 1M x 2048 features work on one GPU or on a CPU with patience.
Results are stored next to the embedding entry they were computed from, keyed by K (and the seed).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ssdistill.cache.store import Entry
from ssdistill.files import NOT_WRITABLE, atomic_output

log = logging.getLogger(__name__)


def _normalised(features: torch.Tensor, start: int, stop: int, device: torch.device | str) -> torch.Tensor:
    return F.normalize(features[start:stop].to(device).float(), dim=1)


@torch.no_grad()
def topk_neighbours(features: torch.Tensor, k: int, block: int = 4096, device: torch.device | str = "cpu", backend: str = "torch") -> torch.Tensor:
    """Ids [N, k] of each row's k most cosine-similar other rows, most similar first.

    A row never lists itself (excluded by id, so duplicate images still count as neighbours);
    equal similarities go to the lower id. ``backend="faiss"`` uses faiss's exact inner-product index
    instead (same bags up to the order of ties; needs ``pip install faiss-cpu`` or ``faiss-gpu``)."""
    n = len(features)
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and N-1 = {n - 1}, got {k}")
    if backend == "faiss":
        return _faiss_neighbours(features, k, block)
    if backend != "torch":
        raise ValueError(f"unknown neighbour backend '{backend}' (torch, faiss)")
    result = torch.empty(n, k, dtype=torch.long)
    for row_start in range(0, n, block):
        row_stop = min(n, row_start + block)
        queries = _normalised(features, row_start, row_stop, device)
        row_ids = torch.arange(row_start, row_stop, device=device).view(-1, 1)
        best_values = torch.full((len(queries), 0), float("-inf"), device=device)
        best_ids = torch.empty((len(queries), 0), dtype=torch.long, device=device)
        for col_start in range(0, n, block):
            col_stop = min(n, col_start + block)
            similarity = queries @ _normalised(features, col_start, col_stop, device).T
            col_ids = torch.arange(col_start, col_stop, device=device).expand(len(queries), -1)
            similarity = similarity.masked_fill(col_ids == row_ids, float("-inf"))
            # columns come in ascending id order, so a stable sort keeps the lower id first among ties
            values, order = similarity.sort(dim=1, descending=True, stable=True)
            values, ids = values[:, :k], col_ids.gather(1, order[:, :k])
            # earlier blocks hold lower ids: putting them first keeps the tie rule across blocks
            values, ids = torch.cat([best_values, values], 1), torch.cat([best_ids, ids], 1)
            values, order = values.sort(dim=1, descending=True, stable=True)
            best_values, best_ids = values[:, :k], ids.gather(1, order[:, :k])
        result[row_start:row_stop] = best_ids.cpu()
    return result


def _faiss_neighbours(features: torch.Tensor, k: int, block: int) -> torch.Tensor:
    try:
        import faiss
    except ImportError:
        raise ImportError("the faiss neighbour backend needs faiss: pip install faiss-cpu (or use backend='torch')") from None
    n = len(features)
    index = faiss.IndexFlatIP(features.shape[1])
    for start in range(0, n, block):
        index.add(_normalised(features, start, min(n, start + block), "cpu").numpy())
    result = torch.empty(n, k, dtype=torch.long)
    for start in range(0, n, block):
        stop = min(n, start + block)
        _, found = index.search(_normalised(features, start, stop, "cpu").numpy(), k + 1)
        for offset, ids in enumerate(found):
            others = [int(i) for i in ids if i != start + offset]  # drop the row itself, wherever it ranked
            result[start + offset] = torch.tensor(others[:k])
    return result


@torch.no_grad()
def spherical_kmeans(
    features: torch.Tensor, k: int, iterations: int = 50, seed: int = 0, block: int = 8192, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on L2-normalised features with cosine similarity and k-means++ seeding.

    Returns (labels [N] int64, centroids [k, D] unit-norm). Deterministic for a given seed."""
    n = len(features)
    if not 0 < k <= n:
        raise ValueError(f"k must be between 1 and N = {n}, got {k}")
    generator = torch.Generator().manual_seed(seed)

    def assign(centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels, best = torch.empty(n, dtype=torch.long), torch.empty(n)
        for start in range(0, n, block):
            similarity = _normalised(features, start, min(n, start + block), device) @ centroids.T
            values, ids = similarity.max(dim=1)
            labels[start : start + len(ids)], best[start : start + len(ids)] = ids.cpu(), values.cpu()
        return labels, best

    first = int(torch.randint(n, (1,), generator=generator))
    centroids = _normalised(features, first, first + 1, device)
    for _ in range(1, k):  # k-means++: next centre drawn with probability ~ squared distance to the nearest centre
        _, nearest = assign(centroids)
        weights = (2.0 - 2.0 * nearest).clamp_min(0) + 1e-12
        choice = int(torch.multinomial(weights, 1, generator=generator))
        centroids = torch.cat([centroids, _normalised(features, choice, choice + 1, device)])
    labels = None
    for _ in range(iterations):
        new_labels, _ = assign(centroids)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        sums = torch.zeros(k, features.shape[1], device=device)
        for start in range(0, n, block):
            stop = min(n, start + block)
            sums.index_add_(0, labels[start:stop].to(device), _normalised(features, start, stop, device))
        empty = sums.norm(dim=1) == 0
        centroids = torch.where(empty.view(-1, 1), centroids, F.normalize(sums, dim=1))
    return labels, centroids.cpu()


def _save_atomic(entry: Entry, path: Path, **arrays: np.ndarray) -> None:
    """Store a result beside its entry. In a read-only cache (a shared, complete one) it is only not kept (a warning:
    the next run computes it again); a full disk is one line (``StorageError``)."""
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as exc:
        if exc.errno in NOT_WRITABLE:
            log.warning("cache %s is not writable (%s): %s is not kept, the next run computes it again", entry.dir, exc.strerror, path.name)
            return
        raise entry.storage_error(exc, "writing") from None


def cached_neighbours(entry: Entry, k: int, block: int = 4096, device: torch.device | str = "cpu", backend: str = "torch") -> torch.Tensor:
    """Neighbour bags of a complete entry, computed once (by ``backend``, torch or faiss: the same bags up to the
    order of ties) and stored beside it (``neighbours-k{K}.npz``)."""
    path = entry.dir / f"neighbours-k{k}.npz"
    if path.is_file():
        stored = np.load(path)
        if str(stored["digest"]) == entry.key.digest():
            return torch.from_numpy(stored["ids"])
    ids = topk_neighbours(entry.read(), k, block, device, backend)
    _save_atomic(entry, path, ids=ids.numpy(), digest=np.array(entry.key.digest()))
    return ids


def best_of_restarts(
    features: torch.Tensor, k: int, seed: int, restarts: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means from ``restarts`` seeds (seed, seed + 1, ...): the run with the highest total cosine of the
    points to their centroids."""
    best = None
    for restart in range(restarts):
        labels, centroids = spherical_kmeans(features, k, seed=seed + restart, device=device)
        score = float((F.normalize(features.float(), dim=1) * centroids[labels]).sum())
        if best is None or score > best[0]:
            best = (score, labels, centroids)
    return best[1], best[2]


def cached_subset_kmeans(
    entry: Entry, rows: torch.Tensor, k: int, seed: int = 0, restarts: int = 10, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Centroids [k, D] of spherical k-means (best of ``restarts``) on the rows ``rows`` of a complete entry (one task's
    images of a union), stored beside it under a digest of the rows (``kmeans-k{K}-seed{S}-r{R}-<rows>.npz``)."""
    digest = hashlib.sha1(np.asarray(rows.cpu(), dtype=np.int64).tobytes()).hexdigest()[:12]
    path = entry.dir / f"kmeans-k{k}-seed{seed}-r{restarts}-{digest}.npz"
    if path.is_file():
        stored = np.load(path)
        if str(stored["digest"]) == entry.key.digest():
            return torch.from_numpy(stored["centroids"])
    _, centroids = best_of_restarts(entry.read()[rows], k, seed, restarts, device)
    _save_atomic(entry, path, centroids=centroids.numpy(), digest=np.array(entry.key.digest()))
    return centroids


def cached_kmeans(entry: Entry, k: int, seed: int = 0, iterations: int = 50, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """k-means pseudo-labels and centroids of a complete entry, stored beside it (``kmeans-k{K}-seed{S}.npz``)."""
    path = entry.dir / f"kmeans-k{k}-seed{seed}.npz"
    if path.is_file():
        stored = np.load(path)
        if str(stored["digest"]) == entry.key.digest():
            return torch.from_numpy(stored["labels"]), torch.from_numpy(stored["centroids"])
    labels, centroids = spherical_kmeans(entry.read(), k, iterations, seed, device=device)
    _save_atomic(entry, path, labels=labels.numpy(), centroids=centroids.numpy(), digest=np.array(entry.key.digest()))
    return labels, centroids
