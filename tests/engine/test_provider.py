"""The teacher provider fulfils needs as declared: a need over a data subset covers that subset's images, in its
order, from the cache; the cases it cannot serve are one-line errors."""

from __future__ import annotations

import pytest
import torch

from ssdistill.engine.contract import TeacherNeed
from ssdistill.engine.provider import TeacherProvider
from ssdistill.errors import ConfigError
from ssdistill.eval.features import extract_features
from ssdistill.recipe import build_config
from ssdistill.runs.assemble import train_source

from integration.common import tiny_config


def test_a_need_over_a_subset_covers_that_subset_from_the_cache(tmp_path, demo_data):
    cfg = build_config(tiny_config(tmp_path))
    ctx = TeacherProvider(cfg, train_source(cfg))
    val = tmp_path / "subset"  # a few real images of two classes
    for folder in sorted((demo_data / "val").iterdir())[:2]:
        (val / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:6]:
            (val / folder.name / image.name).write_bytes(image.read_bytes())
    val = str(val)
    fulfilment = ctx.fulfil({"whole": TeacherNeed(), "val": TeacherNeed(subset=val)})
    signals = fulfilment.signals
    source = ctx.open(val)
    table = signals["val"].table
    assert table.shape == (len(source), signals["whole"].dim) and len(signals["whole"].table) == len(ctx.source)
    teacher = ctx.teacher()
    direct = extract_features(teacher, source, teacher.original_view(), 64, 0, "cpu", "teacher")
    assert torch.allclose(table.float(), direct, atol=2e-2 * direct.abs().max().item())  # fp16 cache
    assert fulfilment.records["val"]["subset"] == val and fulfilment.records["val"]["from"] == "cache"


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
    fulfilment = ctx.fulfil({"logits": TeacherNeed(tap="logits"), "pooled": TeacherNeed(tap="pooled")})
    signals = fulfilment.signals
    teacher = ctx.teacher(tap="logits")
    direct = extract_features(teacher, ctx.source, teacher.original_view(), 64, 0, "cpu", "teacher")
    assert signals["logits"].table.shape == direct.shape == (len(ctx.source), 1000)
    assert torch.allclose(signals["logits"].table.float(), direct, atol=2e-2 * direct.abs().max().item())
    assert fulfilment.records["logits"]["from"] == "cache (pooled outputs, through the teacher's classifier)"
    assert fulfilment.records["pooled"]["from"] == "cache"
    off = build_config(tiny_config(tmp_path, cache={"enabled": False}))
    ctx_off = TeacherProvider(off, train_source(off))
    computed = ctx_off.fulfil({"logits": TeacherNeed(tap="logits")})
    assert torch.allclose(computed.signals["logits"].table, direct, atol=1e-5)
    assert computed.records["logits"]["from"] == "computed once"


def test_fulfil_returns_one_fulfilment_and_leaves_no_state_on_the_provider(tmp_path):
    """Everything fulfil makes comes back in one frozen Fulfilment (signals, records, approximations, the bank with its
    crops' parameters, seconds); the provider's public attributes are those it was built with, before and after."""
    import dataclasses

    from ssdistill.cache.signals import OnlineSignal, TableSignal
    from ssdistill.engine.contract import Fulfilment

    cfg = build_config(tiny_config(tmp_path, teacher={"precompute": False}))
    ctx = TeacherProvider(cfg, train_source(cfg))
    public = {key: value for key, value in vars(ctx).items() if not key.startswith("_")}
    assert sorted(public) == ["cfg", "device", "source"]
    online = ctx.fulfil({"t": TeacherNeed()})
    assert isinstance(online.signals["t"], OnlineSignal) and online.records["t"]["from"] == "online"
    assert online.seconds is None and online.bank is None and online.approximations == ()
    assert sorted(online.batch_views()) == ["t:original"]  # the view the dataset adds for the online original view
    banked = ctx.fulfil({"b": TeacherNeed("bank", repeats=2)})
    assert {key: value for key, value in vars(ctx).items() if not key.startswith("_")} == public
    assert isinstance(banked, Fulfilment) and isinstance(banked.signals["b"], TableSignal) and banked.batch_views() == {}
    assert banked.approximations == ("teacher_bank(2)",) and banked.records["b"]["from"] == "cache (bank)"
    assert banked.bank.repeats == 2 and banked.bank.params.shape[0] == 2 * len(ctx.source) and banked.seconds > 0
    table, params = ctx.bank(2)  # the same bank, read once by the provider: the very tensors the fulfilment holds
    assert table is banked.signals["b"].table and params is banked.bank.params
    with pytest.raises(dataclasses.FrozenInstanceError):
        banked.seconds = 0.0
    with pytest.raises(ConfigError, match="one augmentation bank per run"):
        ctx.fulfil({"b": TeacherNeed("bank", repeats=2), "c": TeacherNeed("bank", repeats=3)})


def test_mean_output_is_one_seeded_pass_of_the_teacher(tmp_path):
    """ctx.mean_output(view, transform): the mean of transform(teacher(view(image))) over the training images, by the
    package's one teacher loop; on a deterministic view it is the mean of the extracted features; a random view is drawn
    per image from (seed, image), so the mean is the same with 0 and 2 data workers and after the global RNG moved."""
    from ssdistill.data.views import augmented_view

    cfg = build_config(tiny_config(tmp_path, data={"train_subset": 24, "eval_batch_size": 8}))
    ctx = TeacherProvider(cfg, train_source(cfg))
    teacher = ctx.teacher()
    direct = extract_features(teacher, ctx.source, teacher.original_view(), 64, 0, "cpu", "teacher")
    assert torch.allclose(ctx.mean_output(teacher.original_view()), direct.mean(0), atol=1e-5)
    assert torch.allclose(ctx.mean_output(teacher.original_view(), lambda out: out.square()), direct.square().mean(0), atol=1e-5)
    crop = augmented_view(32, cfg.aug)
    first = ctx.mean_output(crop)
    torch.manual_seed(123), torch.rand(5)
    assert torch.equal(ctx.mean_output(crop), first), "the global RNG moved the mean"
    workers = build_config(tiny_config(tmp_path, data={"train_subset": 24, "eval_batch_size": 8, "num_workers": 2}))
    assert torch.allclose(TeacherProvider(workers, train_source(workers)).mean_output(crop), first, atol=1e-6)
    assert not torch.allclose(first, direct.mean(0), atol=1e-3)  # the crops are random: the comparison means something


def test_every_frozen_pass_goes_through_the_one_loop():
    """No method builds a DataLoader (the provider runs every teacher pass): besides the training loader
    (data/sampling.ResumableLoader, a DataLoader subclass) the package's only loader is the frozen-model loop
    (eval/features.model_outputs)."""
    from pathlib import Path

    import ssdistill

    root = Path(ssdistill.__file__).parent
    building = sorted(str(path.relative_to(root)) for path in root.rglob("*.py") if "DataLoader(" in path.read_text())
    assert building == ["eval/features.py"]
