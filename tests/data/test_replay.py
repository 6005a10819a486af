import random

import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms import functional as TF

from ssdistill.config import AugConfig
from ssdistill.data.replay import AugParams, render, sample_params


def _image() -> Image.Image:
    g = torch.Generator().manual_seed(0)
    low = torch.rand(3, 8, 8, generator=g)
    return TF.to_pil_image(F.interpolate(low[None], size=(160, 200), mode="bilinear", align_corners=False)[0])


def test_params_are_seeded_and_round_trip():
    aug = AugConfig(blur_p=1.0)
    a = sample_params(200, 160, aug, random.Random("s:1:0"), 224)
    b = sample_params(200, 160, aug, random.Random("s:1:0"), 224)
    c = sample_params(200, 160, aug, random.Random("s:1:1"), 224)
    assert a == b and a != c
    assert AugParams.from_row(a.as_row()) == a
    assert 0 <= a.top and a.top + a.height <= 1.0001 and 0 <= a.left and a.left + a.width <= 1.0001
    area = a.height * a.width
    assert aug.crop_scale_min - 0.01 <= area <= 1.0


def test_identity_params_are_a_plain_resize_and_flip_flips():
    image = _image()
    identity = AugParams(0, 0, 1, 1, False, False, 1, 1, 1, 0, (0, 1, 2, 3), False, 0.0)
    plain = TF.resize(TF.to_tensor(image), [64, 64], antialias=True)
    assert torch.allclose(render(image, identity, 64), plain.clamp(0, 1), atol=1e-6)
    flipped = AugParams(0, 0, 1, 1, True, False, 1, 1, 1, 0, (0, 1, 2, 3), False, 0.0)
    assert torch.allclose(render(image, flipped, 64), plain.flip(-1).clamp(0, 1), atol=1e-6)


def test_the_same_params_give_the_same_view_at_two_resolutions():
    image = _image()
    for seed in range(5):
        params = sample_params(200, 160, AugConfig(blur_p=1.0), random.Random(seed), 128)
        big, small = render(image, params, 128), render(image, params, 32)
        shrunk = F.interpolate(big[None], size=(32, 32), mode="bilinear", antialias=True, align_corners=False)[0]
        assert (shrunk - small).abs().mean() < 0.03, seed


def test_hue_after_a_bicubic_overshoot_stays_finite():
    """Bicubic resizing overshoots below 0 next to a hard edge. Where the brightest channel is exactly 0 and another
    one is negative (black next to green), the hue adjustment divides by that 0 and used to give NaN."""
    image = Image.new("RGB", (40, 40), (0, 0, 0))
    image.paste((0, 255, 0), (20, 0, 40, 40))
    params = AugParams(
        top=0.0,
        left=0.0,
        height=1.0,
        width=1.0,
        flip=0,
        jitter=1,
        brightness=1.2,
        contrast=1.3,
        saturation=1.2,
        hue=-0.09,
        grayscale=0,
        blur_sigma=0.0,
        jitter_order=(3, 0, 1, 2),
    )
    x = render(image, params, 224, "bicubic")
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
