"""The teacher provider fulfils needs as declared: a need over a data subset covers that subset's images, in its
order, from the cache; the cases it cannot serve are one-line errors."""

from __future__ import annotations

import pytest
import torch

from integration.common import tiny_config
from ssdistill.engine.contract import TeacherNeed
from ssdistill.engine.provider import TeacherProvider
from ssdistill.engine.run import train_source
from ssdistill.errors import ConfigError
from ssdistill.eval.features import extract_features
from ssdistill.recipe import build_config


def test_a_need_over_a_subset_covers_that_subset_from_the_cache(tmp_path, demo_data):
    cfg = build_config(tiny_config(tmp_path))
    ctx = TeacherProvider(cfg, train_source(cfg))
    val = tmp_path / "subset"  # a few real images of two classes
    for folder in sorted((demo_data / "val").iterdir())[:2]:
        (val / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:6]:
            (val / folder.name / image.name).write_bytes(image.read_bytes())
    val = str(val)
    signals = ctx.fulfil({"whole": TeacherNeed(), "val": TeacherNeed(subset=val)})
    source = ctx.open(val)
    table = signals["val"].table
    assert table.shape == (len(source), signals["whole"].dim) and len(signals["whole"].table) == len(ctx.source)
    teacher = ctx.teacher()
    direct = extract_features(teacher, source, teacher.original_view(), 64, 0, "cpu", "teacher")
    assert torch.allclose(table.float(), direct, atol=2e-2 * direct.abs().max().item())  # fp16 cache
    assert ctx.records["val"]["subset"] == val and ctx.records["val"]["from"] == "cache"


def test_needs_the_provider_cannot_serve_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="only possible for the original view"):
        TeacherNeed(view="augmented", subset="somewhere")
    with pytest.raises(ValueError, match="gives its repeats"):
        TeacherNeed(view="bank")
    cfg = build_config(tiny_config(tmp_path, teacher={"precompute": False}))
    ctx = TeacherProvider(cfg, train_source(cfg))
    with pytest.raises(ConfigError, match="needs teacher.precompute=true"):
        ctx.fulfil({"val": TeacherNeed(subset="elsewhere")})
    with pytest.raises(ConfigError, match="no teacher named 'ghost'"):
        ctx.fulfil({"x": TeacherNeed(teacher="ghost")})
