import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from ssdistill.cache.neighbours import cached_kmeans, cached_neighbours, spherical_kmeans, topk_neighbours
from ssdistill.cache.store import Entry, EntryKey, open_or_fill


def brute_force(features: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: full similarity matrix, self excluded, sorted by (-similarity, id)."""
    f = torch.nn.functional.normalize(features.double(), dim=1)
    sims = (f @ f.T).numpy()
    out = []
    for i, row in enumerate(sims):
        order = sorted((j for j in range(len(row)) if j != i), key=lambda j: (-round(row[j], 9), j))
        out.append(order[:k])
    return torch.tensor(out)


def test_matches_brute_force_with_blocks_that_do_not_divide_n():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(103, 16, generator=g)
    for block in (7, 32, 1000):
        assert torch.equal(topk_neighbours(features, 5, block=block), brute_force(features, 5))


def test_ties_go_to_the_lower_id_and_duplicates_are_neighbours_but_never_self():
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # rows 0, 3, 6 are identical; rows 1, 4 identical; 2, 5 identical
    features = torch.cat([base, base, base[:1]])
    got = topk_neighbours(features, 2, block=2)
    assert torch.equal(got, brute_force(features, 2))
    assert got[0].tolist() == [3, 6] and got[6].tolist() == [0, 3] and got[3].tolist() == [0, 6]
    assert all(i not in got[i].tolist() for i in range(len(features)))


def test_k_must_leave_room():
    with pytest.raises(ValueError, match="k must be"):
        topk_neighbours(torch.randn(4, 3), 4)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    g = torch.Generator().manual_seed(1)
    centres = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1) * 10
    truth = torch.arange(4).repeat_interleave(30)
    features = centres[truth] + torch.randn(120, 8, generator=g)
    labels, centroids = spherical_kmeans(features, 4, seed=3, block=17)
    assert adjusted_rand_score(truth.numpy(), labels.numpy()) == 1.0
    assert centroids.shape == (4, 8) and torch.allclose(centroids.norm(dim=1), torch.ones(4))
    again, _ = spherical_kmeans(features, 4, seed=3)
    assert torch.equal(labels, again)


def test_bags_and_labels_are_stored_with_the_entry(tmp_path, monkeypatch):
    key = EntryKey("t", "fp", "pooled", "v", "d", n=50, dtype="float32")
    g = torch.Generator().manual_seed(2)
    table = torch.randn(50, 6, generator=g)
    entry = Entry(tmp_path, key, 6, chunk_rows=16)
    open_or_fill(entry, lambda rows: iter([table[rows]]))
    bags = cached_neighbours(entry, 4)
    assert torch.equal(bags, brute_force(table, 4))
    assert (entry.dir / "neighbours-k4.npz").is_file()
    import ssdistill.cache.neighbours as module

    monkeypatch.setattr(module, "topk_neighbours", lambda *a, **k: pytest.fail("recomputed instead of read back"))
    assert torch.equal(cached_neighbours(entry, 4), bags)
    labels, _ = cached_kmeans(entry, 3, seed=0)
    stored = np.load(entry.dir / "kmeans-k3-seed0.npz")
    assert np.array_equal(stored["labels"], labels.numpy())


def test_faiss_backend_gives_the_same_bags_without_ties():
    pytest.importorskip("faiss", reason="faiss-cpu is in the dev extra; without it the backend is optional")
    g = torch.Generator().manual_seed(4)
    features = torch.randn(211, 12, generator=g)
    assert torch.equal(topk_neighbours(features, 6, block=50, backend="faiss"), brute_force(features, 6))
    with pytest.raises(ValueError, match="unknown neighbour backend"):
        topk_neighbours(features, 6, backend="annoy")


def test_bingo_selects_the_faiss_backend_for_its_cached_bags(tmp_path, monkeypatch):
    pytest.importorskip("faiss", reason="faiss-cpu is in the dev extra; without it the backend is optional")
    from ssdistill.engine.provider import TeacherProvider
    from ssdistill.methods.registry import METHODS
    from ssdistill.recipe import build_config
    from ssdistill.runs.assemble import train_source

    from integration.common import tiny_config

    raw = tiny_config(tmp_path)
    raw["method"] = {"name": "bingo", "neighbour_backend": "faiss"}
    cfg = build_config(raw)
    assert not any("neighbour" in d for d in cfg.method.deviations())  # a search backend is not a departure from the method
    ctx = TeacherProvider(cfg, train_source(cfg))
    ctx.fulfil(METHODS["bingo"].teacher_needs(cfg))
    import ssdistill.cache.neighbours as module

    searched = []
    real = module._faiss_neighbours
    monkeypatch.setattr(module, "_faiss_neighbours", lambda *a, **k: searched.append(1) or real(*a, **k))
    METHODS["bingo"].prepare(cfg, ctx)
    assert searched == [1], "the bags were not searched by faiss"
    entry = ctx.entry()
    stored = np.load(entry.dir / f"neighbours-k{cfg.method.bag_size}.npz")["ids"]
    assert np.array_equal(stored, brute_force(entry.read(), cfg.method.bag_size).numpy())


def test_bingo_without_faiss_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    from ssdistill.errors import ConfigError
    from ssdistill.methods.registry import METHODS
    from ssdistill.recipe import build_config

    from integration.common import tiny_config

    raw = tiny_config(tmp_path)
    raw["method"] = {"name": "bingo", "neighbour_backend": "faiss"}
    cfg = build_config(raw)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else find_spec(name, *a))
    with pytest.raises(ConfigError, match="pip install faiss-cpu"):
        METHODS["bingo"].prepare(cfg, ctx=None)  # before any cache is read or filled
