import torch

from ssdistill.data.mixing import batch_cutmix, cutmix_box


def test_cutmix_lambda_is_the_share_of_anchor_pixels():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        a, b = torch.zeros(2, 1, 12, 16), torch.ones(2, 1, 12, 16)
        mixed, lam = batch_cutmix(a, b, generator)
        assert 0.0 <= lam <= 1.0
        assert abs((mixed == 0).double().mean().item() - lam) < 1e-9  # one box, the same for every image of the batch
        assert torch.equal(mixed[0], mixed[1])


def test_cutmix_box_is_clipped_and_its_area_matches_beta_2_2_on_average():
    generator = torch.Generator().manual_seed(1)
    boxes = [cutmix_box(32, 32, generator) for _ in range(4000)]
    assert all(0 <= t <= b <= 32 and 0 <= l <= r <= 32 for t, b, l, r, _ in boxes)
    # before clipping the box covers 1 - λ₀ of the image with E[λ₀] = 0.5; clipping only removes area
    assert 0.5 < sum(lam for *_, lam in boxes) / len(boxes) < 0.75
