import math

import pytest
import torch

from ssdistill.losses.regression import center_batch, feature_regression_loss, pca_whitening, standardize_batch, whiten_with


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


def test_pca_whitening_hand_computed():
    # mean 0, covariance diag(0.5, 2): variances λ = 0.5 and 2, mean λ̄ = 1.25; with s = 0.1 the whitened variances are
    # λ / (λ + 0.125): 0.8 and 0.94118, and the coordinates stay uncorrelated
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    mean, matrix = pca_whitening(x, shrinkage=0.1)
    assert torch.allclose(mean, torch.zeros(2))
    white = whiten_with(x, mean, matrix)
    covariance = white.T @ white / len(white)
    assert torch.allclose(covariance, torch.diag(torch.tensor([0.8, 2 / 2.125])), atol=1e-6)
    # a rotated and shifted copy of the data whitens to the same geometry: distances between rows do not change
    angle = torch.tensor(0.7)
    rotation = torch.tensor([[angle.cos(), -angle.sin()], [angle.sin(), angle.cos()]])
    moved = x @ rotation + torch.tensor([3.0, -1.0])
    moved_white = whiten_with(moved, *pca_whitening(moved, 0.1))
    assert torch.allclose(torch.cdist(moved_white, moved_white), torch.cdist(white, white), atol=1e-5)


def test_pca_whitening_keeps_empty_directions_small_and_refuses_bad_input():
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([5.0, 1.0, 0.0])  # the third is empty
    white = whiten_with(x, *pca_whitening(x, 0.1))
    spread = white.var(0, unbiased=False).sort().values
    variances = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).clamp_min(0)
    assert torch.allclose(spread, (variances / (variances + 0.1 * variances.mean())).sort().values, atol=1e-5)
    assert spread[0] < 1e-6 and spread[2] > 0.95  # the empty direction is not blown up; the strong one ends near 1
    with pytest.raises(ValueError, match="shrinkage must be > 0"):
        pca_whitening(x, 0.0)
    with pytest.raises(ValueError, match=r"\[N, D\] features with N >= 2"):
        pca_whitening(torch.randn(1, 3))
