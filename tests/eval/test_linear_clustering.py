"""Linear probe, few-shot and clustering metrics against scikit-learn and hand-computed references."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ssdistill.eval import clustering, linear


def _blobs(n_per_class=40, classes=4, dim=8, seed=0, spread=1.0):
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(100)) * 3  # same classes for every split
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_logistic_fit_matches_scikit_learn():
    x, y = _blobs(spread=3.0)
    wd = 1e-2
    probe = linear.fit_logistic(x, y, 4, wd)
    standardised = ((x - x.mean(0)) / x.std(0, unbiased=False)).numpy()
    # sklearn minimises ½‖W‖² + C Σ CE, i.e. mean CE + ‖W‖² / (2 C n): C = 1 / (wd n)
    reference = LogisticRegression(C=1 / (wd * len(x)), max_iter=5000, tol=1e-10).fit(standardised, y.numpy())
    ours = probe.logits(x).softmax(1).numpy()
    assert np.abs(ours - reference.predict_proba(standardised)).max() < 2e-3
    assert np.allclose(probe.weight.T.numpy() - probe.weight.T.numpy().mean(0), reference.coef_ - reference.coef_.mean(0), atol=2e-2)


def test_the_hand_written_gradient_is_autograd_s():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(50, 7, generator=g), torch.randint(0, 4, (50,), generator=g)
    weight = torch.randn(4, 7, generator=g, requires_grad=True)
    bias = torch.randn(4, generator=g, requires_grad=True)
    loss, grad_weight, grad_bias = linear.logistic_objective(weight.detach(), bias.detach(), x.T.contiguous(), x, y, 0.3)
    reference = torch.nn.functional.cross_entropy(x @ weight.T + bias, y) + 0.15 * weight.pow(2).sum()
    reference.backward()
    assert torch.allclose(loss, reference, atol=1e-6)
    assert torch.allclose(grad_weight, weight.grad, atol=1e-6) and torch.allclose(grad_bias, bias.grad, atol=1e-6)


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0, 0, 0, 0], [0.9, 0.1, 0, 0, 0, 0.5]])
    assert linear.topk_accuracy(logits, torch.tensor([1, 5])) == {"top1": 50.0, "top5": 100.0}


def test_the_probe_chooses_its_strength_without_the_evaluation_split(monkeypatch):
    x, y = _blobs(seed=1, spread=2.0)
    ex, ey = _blobs(n_per_class=10, seed=2, spread=2.0)
    seen = []
    original = linear.fit_logistic

    def recording_fit(features, labels, num_classes, weight_decay, max_iter=300):
        seen.append(features)
        return original(features, labels, num_classes, weight_decay, max_iter)

    monkeypatch.setattr(linear, "fit_logistic", recording_fit)
    train_rows = {tuple(row.tolist()) for row in x}
    result = linear.linear_probe(x, y, ex, ey, grid=(1e-4, 1e-1))
    assert len(seen) == 3  # two grid values on the hold-out split, one refit
    for features in seen:  # every fit saw training rows only
        assert all(tuple(row.tolist()) in train_rows for row in features)
    assert len(seen[0]) == 128 and len(seen[-1]) == 160  # 80 % of train, then all of it
    assert result["top1"] > 90 and result["selected_on"] == "20% of train" and set(result["selection"]) == {"0.0001", "0.1"}


def test_stratified_hold_out_and_class_balanced_subsets_are_seeded():
    y = torch.arange(3).repeat_interleave(10)
    fit, hold = linear.stratified_split(y, 0.2, seed=0)
    assert len(hold) == 6 and torch.bincount(y[hold]).tolist() == [2, 2, 2]
    assert set(fit.tolist()) | set(hold.tolist()) == set(range(30)) and not set(fit.tolist()) & set(hold.tolist())
    assert torch.equal(linear.stratified_split(y, 0.2, seed=0)[1], hold)
    subset = linear.class_balanced_subset(y, 0.1, seed=3)
    assert torch.bincount(y[subset]).tolist() == [2, 2, 2]  # 10 % of 10 is 1: raised to two per class
    assert torch.equal(linear.class_balanced_subset(y, 0.1, seed=3), subset)
    assert not torch.equal(linear.class_balanced_subset(y, 0.5, seed=3), linear.class_balanced_subset(y, 0.5, seed=4))


def test_few_shot_uses_the_labelled_fractions():
    x, y = _blobs(n_per_class=100, seed=3)
    ex, ey = _blobs(n_per_class=20, seed=4)
    results = linear.few_shot(x, y, ex, ey)
    assert results["0.01"]["labelled_images"] == 8 and results["0.1"]["labelled_images"] == 40
    assert results["0.1"]["top1"] > 90


def test_hungarian_accuracy_by_hand_and_nmi_ari_from_scikit_learn():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    clusters = np.array([2, 2, 1, 0, 0, 1, 1, 1])  # best map 2->0, 0->1, 1->2: 2 + 2 + 3 = 7 of 8
    assert clustering.hungarian_accuracy(truth, clusters) == pytest.approx(87.5)
    metrics = clustering.cluster_metrics(truth, clusters)
    assert metrics["nmi"] == pytest.approx(100 * normalized_mutual_info_score(truth, clusters))
    assert metrics["ari"] == pytest.approx(100 * adjusted_rand_score(truth, clusters))
    assert clustering.hungarian_accuracy(truth, (truth + 1) % 3) == 100.0  # a relabelling is perfect
    with pytest.raises(ValueError, match="8 labels but 7"):
        clustering.hungarian_accuracy(truth, clusters[:7])


def test_kmeans_recovers_separated_classes():
    x, y = _blobs(n_per_class=30, classes=3, spread=0.2, seed=5)
    metrics = clustering.kmeans_clustering(x, y)
    assert metrics["accuracy"] == 100.0 and metrics["nmi"] == pytest.approx(100.0) and metrics["ari"] == pytest.approx(100.0)
