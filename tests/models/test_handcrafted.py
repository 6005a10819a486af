import math

import pytest
import torch

from ssdistill.config import AugConfig
from ssdistill.errors import ConfigError
from ssdistill.models.handcrafted import build_representations, hog, local_std


def test_hog_of_a_vertical_edge_votes_one_orientation():
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:] = 1.0  # dark left half, bright right half: g_x > 0, g_y = 0 in the middle columns
    h = hog(image)
    assert h.shape == (1, 72, 2, 2)
    per_channel = h.view(1, 3, 24, 2, 2)
    # atan2(g_x, 0) = pi/2 -> bin 12 with no split. In cell (row 0, col 0) only column 7 sees the edge:
    # Sobel g_x = 4 on rows 1-7; row 0 touches the zero padding (g_x = 3, g_y = 1) and votes elsewhere.
    assert per_channel[0, 0, 12, 0, 0].item() == pytest.approx(7 * 4 / 64)
    assert per_channel[0, 0, :, 0, 0].argmax().item() == 12
    # the right-hand cell also sees the zero padding beyond column 15 as a second edge (same unsigned orientation)
    assert per_channel[0, 0, 12, 0, 1].item() == pytest.approx(2 * 7 * 4 / 64)


def test_hog_splits_the_magnitude_between_neighbouring_bins():
    image = torch.zeros(1, 1, 8, 8)
    for i in range(8):
        for j in range(8):
            image[0, 0, i, j] = j + 0.5 * i  # constant gradient g_x = 8, g_y = 4 inside
    h = hog(image).view(24)
    u = 24 * math.atan2(8, 4) / math.pi  # orientation coordinate between two bins
    lower, fraction = int(u), u - int(u)
    assert h[lower] > 0 and h[lower + 1] > 0
    assert (h[lower] / h[lower + 1]).item() == pytest.approx((1 - fraction) / fraction, rel=0.05)
    released = hog(image, binning="released").view(24)
    assert not torch.allclose(released, h)


def test_local_std_of_flat_and_checkerboard_images():
    flat = torch.full((1, 3, 6, 6), 0.3)
    assert local_std(flat).max() < 5e-4  # sqrt(0 + 1e-8) up to fp32 cancellation in box(x²) - box(x)²
    checker = (torch.arange(6).view(-1, 1) + torch.arange(6).view(1, -1)) % 2
    image = checker.float().expand(1, 3, 6, 6)
    centre = local_std(image)[0, 0, 2, 2].item()
    # 3x3 window of a checkerboard: 5 of one value and 4 of the other -> std sqrt(20/81)
    assert centre == pytest.approx(math.sqrt(20 / 81), abs=1e-4)


def test_representations_are_built_by_name_and_scattering_needs_kymatio():
    normalize = lambda x: (x - 0.5) / 0.25  # noqa: E731
    reps = build_representations(["raw", "hog", "local_std", "reaugmented"], 32, normalize, AugConfig(), "fractional")
    x = torch.rand(4, 3, 32, 32)
    shapes = {name: fn(x).shape for name, fn in reps.items()}
    assert shapes == {"raw": (4, 3072), "hog": (4, 72, 4, 4), "local_std": (4, 3, 32, 32), "reaugmented": (4, 3, 32, 32)}
    # kymatio (a dev dependency): J = 2, L = 8 gives 1 + 16 + 64 = 81 channels per colour at a quarter of the side
    scattering = build_representations(["scattering"], 32, normalize, AugConfig(), "fractional")["scattering"]
    assert scattering(x).shape == (4, 3, 81, 8, 8) and not scattering(x.requires_grad_()).requires_grad


def test_scattering_without_kymatio_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kymatio.scattering2d.frontend.torch_frontend", None)  # import fails as if absent
    with pytest.raises(ConfigError, match="pip install kymatio"):
        build_representations(["scattering"], 32, lambda x: x, AugConfig(), "fractional")
