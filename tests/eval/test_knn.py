import math

import pytest
import torch

from ssdistill.eval.knn import knn_accuracy, knn_scores


def test_weighted_votes_hand_computed():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 0.0]])
    # cosine similarities: 1, 0, 1/sqrt(2); k = 2 keeps samples 0 and 2
    scores = knn_scores(bank, labels, query, num_classes=2, k=2, temperature=0.5)
    assert scores[0, 0].item() == pytest.approx(math.exp(1 / 0.5))
    assert scores[0, 1].item() == pytest.approx(math.exp((1 / math.sqrt(2)) / 0.5))


def test_k_decides_and_chunking_does_not_matter():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([1, 0, 0, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    # k=1: the nearest (label 1) wins; k=3: two label-0 neighbours outvote it
    assert knn_scores(bank, labels, query, 2, k=1).argmax().item() == 1
    assert knn_scores(bank, labels, query, 2, k=3, temperature=10.0).argmax().item() == 0
    g = torch.Generator().manual_seed(0)
    big_bank, big_query = torch.randn(300, 8, generator=g), torch.randn(70, 8, generator=g)
    big_labels = torch.randint(0, 4, (300,), generator=g)
    a = knn_scores(big_bank, big_labels, big_query, 4, k=7, chunk=16)
    b = knn_scores(big_bank, big_labels, big_query, 4, k=7, chunk=1000)
    assert torch.allclose(a, b)


def test_accuracy_on_separable_clusters_and_k_larger_than_bank():
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(5) * 10
    bank = torch.cat([c + torch.randn(20, 5, generator=g) for c in centres])
    labels = torch.arange(5).repeat_interleave(20)
    query = torch.cat([c + torch.randn(4, 5, generator=g) for c in centres])
    truth = torch.arange(5).repeat_interleave(4)
    result = knn_accuracy(bank, labels, query, truth, k=20)
    assert result["top1"] == 100.0 and result["top5"] == 100.0
    wrong = knn_accuracy(bank, (labels + 1) % 5, query, truth, k=20)
    assert wrong["top1"] == 0.0
    assert knn_accuracy(bank[:3], labels[:3], query[:2], truth[:2], k=50)["top1"] == 100.0


def test_small_similarity_blocks_give_the_same_scores(monkeypatch):
    import ssdistill.eval.knn as knn_module

    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(300, 8, generator=g), torch.randn(50, 8, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    whole = knn_module.knn_scores(bank, labels, queries, 4, k=7)
    monkeypatch.setattr(knn_module, "SIMILARITY_BLOCK", 300 * 3)  # three queries per block
    assert torch.allclose(knn_module.knn_scores(bank, labels, queries, 4, k=7), whole)
