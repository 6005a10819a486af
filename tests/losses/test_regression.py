import math

import pytest
import torch

from ssdistill.losses.regression import center_batch, feature_regression_loss, standardize_batch


def test_cosine_loss_hand_computed():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    # row 1: orthogonal -> 1 - 0; row 2: parallel -> 1 - 1
    assert feature_regression_loss(p, t, "cosine").item() == pytest.approx(0.5)
    q = torch.tensor([[1.0, 0.0]])
    r = torch.tensor([[1.0, 1.0]])
    assert feature_regression_loss(q, r, "cosine").item() == pytest.approx(1 - 1 / math.sqrt(2))


def test_mse_and_smooth_l1_hand_computed():
    p = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    t = torch.tensor([[0.5, 1.0], [0.0, 0.0]])
    # errors 0.5, 0, 2, 0
    assert feature_regression_loss(p, t, "mse").item() == pytest.approx((0.25 + 4) / 4)
    # smooth L1 (beta 1): 0.5*0.5^2 = 0.125 ; |2| - 0.5 = 1.5
    assert feature_regression_loss(p, t, "smooth_l1").item() == pytest.approx((0.125 + 1.5) / 4)


def test_gradient_reaches_the_prediction_only():
    p = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    feature_regression_loss(p, t, "cosine").backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert t.grad is None


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="head's output width"):
        feature_regression_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_standardize_batch():
    x = torch.randn(64, 5) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]) + 10
    z = standardize_batch(x)
    assert torch.allclose(z.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(5), atol=1e-3)


def test_center_batch():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert torch.equal(center_batch(x), torch.tensor([[-1.0, -2.0], [1.0, 2.0]]))
