"""The RoB target diagnostic (benchmarks/rob_targets.py): its statistics on hand-made targets, and its recipes."""

import math

import pytest
import torch

from benchmarks import rob_targets


def test_statistics_of_one_hot_and_uniform_targets():
    one_hot = torch.eye(4)[[0, 1, 1, 2]]  # three of four columns are someone's top; mean target (1/4, 1/2, 1/4, 0)
    stats = rob_targets.target_statistics(one_hot)
    assert stats["image_perplexity"] == pytest.approx(1.0) and stats["top_probability"] == pytest.approx(1.0)
    assert stats["usage_perplexity"] == pytest.approx(math.exp(-(0.5 * math.log(0.25) + 0.5 * math.log(0.5))))  # 2^1.5
    assert stats["top_columns"] == 3 and stats["columns"] == 4
    uniform = rob_targets.target_statistics(torch.full((3, 5), 0.2))
    assert uniform["image_perplexity"] == pytest.approx(5.0) and uniform["usage_perplexity"] == pytest.approx(5.0)
    assert uniform["top_probability"] == pytest.approx(0.2)


def test_recipes_centre_sharpen_and_balance_over_full_batches_only():
    torch.manual_seed(0)
    scores = torch.rand(10, 6) * 2 - 1
    center = scores.mean(0)
    rows = rob_targets.recipes(scores, center, {"temperature": 0.04}, {"temperature": 0.1, "sharpen": 0.25}, batch_size=4, seed=0)
    dino, raw, sharpened, balanced = rows.values()
    assert torch.allclose(dino, torch.softmax((scores - center) / 0.04, dim=1))
    assert torch.allclose(raw, torch.softmax(scores / 0.04, dim=1))
    # sharpening with T = 0.25 is softmax at temperature 0.1 * 0.25
    assert torch.allclose(sharpened, torch.softmax(scores / 0.025, dim=1), atol=1e-6)
    assert balanced.shape == (8, 6)  # two full batches of 4; the last 2 images are dropped as the training loader does
    assert torch.allclose(balanced.sum(1), torch.ones(8), atol=1e-5)
    # Sinkhorn spreads the columns' mass more evenly than the sharpened targets it starts from
    assert rob_targets.target_statistics(balanced)["usage_perplexity"] > rob_targets.target_statistics(sharpened)["usage_perplexity"]
