import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from ssdistill.losses.dependence import distance_correlation, double_center, hsic, linear_cka
from ssdistill.losses.regularisers import std_hinge


def textbook_dcor(x: np.ndarray, y: np.ndarray) -> float:
    """Székely's V-statistic distance correlation with exact distances."""

    def centred(m):
        d = cdist(m, m)
        return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()

    a, b = centred(x), centred(y)
    return float(np.sqrt((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean())))


def _pair(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = np.column_stack([x[:, 0] ** 2, np.sin(x[:, 1]), rng.normal(size=n)])
    return x, y


def test_matches_the_textbook_value():
    x, y = _pair()
    reference = textbook_dcor(x, y)
    exact = distance_correlation(torch.tensor(x), torch.tensor(y), clamp=1e-12).item()
    assert exact == pytest.approx(reference, abs=1e-4)
    clamped = distance_correlation(torch.tensor(x), torch.tensor(y)).item()  # default clamp 1e-4 moves it a little
    assert clamped == pytest.approx(reference, abs=5e-3)


def test_symmetry_and_invariances():
    x, y = (torch.tensor(a, dtype=torch.float32) for a in _pair(seed=1))
    value = distance_correlation(x, y, clamp=1e-12)
    assert distance_correlation(y, x, clamp=1e-12) == pytest.approx(value.item(), abs=1e-6)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(2)))
    assert distance_correlation(7.0 * x + 3.0, y, clamp=1e-12).item() == pytest.approx(value.item(), abs=1e-4)
    assert distance_correlation(x @ rotation, y, clamp=1e-12).item() == pytest.approx(value.item(), abs=1e-4)


def test_identical_inputs_give_one_and_independent_samples_near_zero():
    x, _ = _pair(seed=3)
    t = torch.tensor(x, dtype=torch.float32)
    assert distance_correlation(t, t).item() == pytest.approx(1.0, abs=1e-5)
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(1500, 4, generator=g), torch.randn(1500, 4, generator=g)
    assert distance_correlation(a, b).item() < 0.1
    assert distance_correlation(a, a[:, :2] ** 2).item() > 0.3


def test_batch_checks_gradients_and_autocast():
    with pytest.raises(ValueError, match="same samples"):
        distance_correlation(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 2"):
        distance_correlation(torch.zeros(1, 2), torch.zeros(1, 2))
    x = torch.randn(8, 3, requires_grad=True)
    duplicate_rows = torch.cat([x[:4], x[:4]])  # zero distances: the clamp keeps the gradient finite
    distance_correlation(duplicate_rows, torch.randn(8, 2)).backward()
    assert torch.isfinite(x.grad).all()
    a, b = torch.randn(16, 4), torch.randn(16, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = distance_correlation(a, b)
    assert inside.dtype == torch.float32 and inside.item() == pytest.approx(distance_correlation(a, b).item(), abs=1e-6)
    images = torch.randn(16, 3, 4, 4)  # any trailing shape is flattened per sample
    assert distance_correlation(images, images).item() == pytest.approx(1.0, abs=1e-5)


def test_double_center_is_h_a_h():
    m = torch.randn(6, 6, dtype=torch.float64)
    h = torch.eye(6, dtype=torch.float64) - 1.0 / 6
    assert torch.allclose(double_center(m), h @ m @ h)


def test_hsic_and_linear_cka():
    x, y = (torch.tensor(a, dtype=torch.float64) for a in _pair(n=40, seed=5))
    n = 40
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    expected = torch.trace((x @ x.T) @ h @ (y @ y.T) @ h) / (n - 1) ** 2
    assert hsic(x, y).item() == pytest.approx(expected.item(), rel=1e-4)
    xc, yc = x - x.mean(0), y - y.mean(0)
    feature_space = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y).item() == pytest.approx(feature_space.item(), rel=1e-4)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6)))
    assert linear_cka(3 * x @ rotation, y).item() == pytest.approx(linear_cka(x, y).item(), rel=1e-4)
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert hsic(x, y, kernel="gaussian").item() > 0


def test_std_hinge_hand_computed():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.2]])
    # unbiased variances 2 and 0.02: relu(1 - sqrt(2.0001)) = 0, relu(1 - sqrt(0.0201)) = 0.85823
    assert std_hinge(z).item() == pytest.approx((0.0 + 1 - np.sqrt(0.0201)) / 2, abs=1e-6)
    assert std_hinge(z, eps=0.0).item() == pytest.approx((1 - np.sqrt(0.02)) / 2, abs=1e-6)


def textbook_unbiased_dcor2(x: np.ndarray, y: np.ndarray) -> float:
    """Bias-corrected squared distance correlation with explicit U-centring loops (Székely & Rizzo 2014)."""

    def u_centred(m):
        d = cdist(m, m)
        n = len(d)
        out = np.zeros_like(d)
        for i in range(n):
            for j in range(n):
                if i != j:
                    out[i, j] = d[i, j] - d[i].sum() / (n - 2) - d[:, j].sum() / (n - 2) + d.sum() / ((n - 1) * (n - 2))
        return out

    a, b = u_centred(x), u_centred(y)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_unbiased_estimator_matches_its_reference_and_is_not_inflated_by_width():
    x, y = _pair(n=30, seed=7)
    got = distance_correlation(torch.tensor(x), torch.tensor(y), clamp=1e-12, estimator="unbiased").item()
    assert got == pytest.approx(textbook_unbiased_dcor2(x, y), abs=1e-4)
    g = torch.Generator().manual_seed(8)
    wide_a, wide_b = torch.randn(64, 1280, generator=g), torch.randn(64, 1024, generator=g)
    assert distance_correlation(wide_a, wide_b).item() > 0.95  # the biased V-statistic saturates
    assert abs(distance_correlation(wide_a, wide_b, estimator="unbiased").item()) < 0.05
    assert distance_correlation(wide_a, wide_a, estimator="unbiased").item() == pytest.approx(1.0, abs=1e-5)


def test_both_estimators_match_the_dcor_package():
    """Cross-check with the independent `dcor` package (test-only dependency): its V-statistic distance correlation
    (the paper's and official MV-MR code's estimator) and its bias-corrected squared distance correlation."""
    import dcor  # test-only dependency (the dev extra)

    for seed in range(3):
        x, y = _pair(n=40, seed=seed)
        ours_v = distance_correlation(torch.tensor(x), torch.tensor(y), clamp=1e-12, estimator="biased").item()
        ours_u = distance_correlation(torch.tensor(x), torch.tensor(y), clamp=1e-12, estimator="unbiased").item()
        assert ours_v == pytest.approx(dcor.distance_correlation(x, y, method="naive"), abs=1e-5)
        assert ours_u == pytest.approx(dcor.u_distance_correlation_sqr(x, y, method="naive"), abs=1e-5)
