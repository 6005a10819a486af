"""The teacher provider fulfils needs as declared: a need over a data subset covers that subset's images, in its
order, from the cache; the cases it cannot serve are one-line errors."""

from __future__ import annotations

import pytest
import torch

from integration.common import tiny_config
from ssdistill.engine.contract import TeacherNeed
from ssdistill.engine.provider import TeacherProvider
from ssdistill.runs.assemble import train_source
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


def test_a_logits_need_reads_the_pooled_entry_through_the_teacher_s_classifier(tmp_path):
    """With the cache on, the teacher's logits on the original view are its classifier applied to the pooled entry
    (one fill serves both taps), equal to the teacher's own logits up to the cache's fp16, and the record says so; with
    the cache off they are computed directly."""
    cfg = build_config(tiny_config(tmp_path))
    ctx = TeacherProvider(cfg, train_source(cfg))
    signals = ctx.fulfil({"logits": TeacherNeed(tap="logits"), "pooled": TeacherNeed(tap="pooled")})
    teacher = ctx.teacher(tap="logits")
    direct = extract_features(teacher, ctx.source, teacher.original_view(), 64, 0, "cpu", "teacher")
    assert signals["logits"].table.shape == direct.shape == (len(ctx.source), 1000)
    assert torch.allclose(signals["logits"].table.float(), direct, atol=2e-2 * direct.abs().max().item())
    assert ctx.records["logits"]["from"] == "cache (pooled outputs, through the teacher's classifier)"
    assert ctx.records["pooled"]["from"] == "cache"
    off = build_config(tiny_config(tmp_path, cache={"enabled": False}))
    ctx_off = TeacherProvider(off, train_source(off))
    assert torch.allclose(ctx_off.fulfil({"logits": TeacherNeed(tap="logits")})["logits"].table, direct, atol=1e-5)
    assert ctx_off.records["logits"]["from"] == "computed once"
