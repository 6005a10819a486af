"""Feature distillation from several named teachers (docs/methods/multi-teacher.md): one adaptor head per teacher, per-teacher
targets and weights, teacher dropping, standardisation with the teachers' cached statistics; one teacher is plain
feature regression, unchanged."""

from __future__ import annotations

import pytest
import torch

from ssdistill.cache.signals import TableSignal
from ssdistill.errors import ConfigError
from ssdistill.losses.regression import center_batch, feature_regression_loss
from ssdistill.methods.registry import METHODS
from ssdistill.models.students import Student
from ssdistill.recipe import build_config

N = 40


def _config(**method):
    teachers = {"wide": {"name": "efficientnet_lite0"}, "narrow": {"name": "efficientnet_lite2"}}
    return build_config(
        {
            "method": {"name": "feature", "projector_hidden": [16], **method},
            "teachers": teachers,
            "student": {"arch": "test_resnet", "resolution": 32},
        }
    )


def _module(cfg, widths=(12, 5)):
    g = torch.Generator().manual_seed(0)
    tables = {name: torch.randn(N, width, generator=g) * (1 + 9 * i) + 3 * i for i, (name, width) in enumerate(zip(cfg.teachers, widths))}
    signals = {f"teacher_{name}": TableSignal(table, name) for name, table in tables.items()}
    torch.manual_seed(0)
    module = METHODS["feature"](cfg, Student("test_resnet"), signals, dataset_size=N)
    module.log_loss = lambda loss, **terms: (setattr(module, "terms", terms), loss)[1]
    return module, tables


def _batch(n=8):
    return {"index": torch.arange(n), "views": {"student": torch.rand(n, 3, 32, 32)}}


def _by_hand(module, tables, batch, names, loss="cosine"):
    features = module.student(batch["views"]["student"])
    return {name: feature_regression_loss(module.projectors[name](features), center_batch(tables[name][batch["index"]]), loss) for name in names}


def test_needs_one_signal_per_named_teacher():
    needs = METHODS["feature"].teacher_needs(_config())
    assert {name: (n.teacher, n.view) for name, n in needs.items()} == {
        "teacher_wide": ("wide", "original"),
        "teacher_narrow": ("narrow", "original"),
    }
    same = METHODS["feature"].teacher_needs(_config(teacher_view="same"))
    assert {n.view for n in same.values()} == {"augmented"}
    with pytest.raises(ConfigError, match="one augmentation bank is replayed per run"):
        METHODS["feature"].teacher_needs(_config(teacher_view="bank"))


def test_one_head_per_teacher_of_its_width_and_the_loss_is_their_mean():
    module, tables = _module(_config())
    assert {name: head[-1].out_features for name, head in module.projectors.items()} == {"wide": 12, "narrow": 5}
    module.train()
    batch = _batch()
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    expected = _by_hand(module, tables, batch, ["wide", "narrow"])
    assert module.terms["loss_wide"].item() == pytest.approx(expected["wide"].item(), rel=1e-5)
    assert module.terms["loss_narrow"].item() == pytest.approx(expected["narrow"].item(), rel=1e-5)
    assert loss.item() == pytest.approx((expected["wide"] + expected["narrow"]).item() / 2, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for head in module.projectors.values() for p in head.parameters())


def test_teacher_weights_scale_each_term_and_must_name_a_teacher():
    module, tables = _module(_config(teacher_weights={"wide": 3.0}))
    batch = _batch()
    loss = module.training_step(batch, 0)
    expected = _by_hand(module, tables, batch, ["wide", "narrow"])
    assert loss.item() == pytest.approx((3 * expected["wide"] + expected["narrow"]).item() / 2, rel=1e-5)
    with pytest.raises(ConfigError, match="teacher_weights names no teacher: wdie"):
        _module(_config(teacher_weights={"wdie": 1.0}))


def test_teacher_drop_keeps_at_least_one_teacher_and_the_total_weight():
    module, tables = _module(_config(teacher_drop=0.9, teacher_weights={"wide": 3.0}))
    torch.manual_seed(0)
    kept_sets = set()
    for step in range(40):
        batch = _batch()
        torch.manual_seed(step)
        kept = module._kept()
        torch.manual_seed(step)
        loss = module.training_step(batch, 0)
        assert kept and set(module.terms) == {f"loss_{name}" for name in kept}
        weights = {"wide": 3.0, "narrow": 1.0}
        expected = _by_hand(module, tables, batch, kept)
        scale = 4.0 / sum(weights[name] for name in kept)
        assert loss.item() == pytest.approx(sum(scale * weights[n] * expected[n] for n in kept).item() / 2, rel=1e-5)
        kept_sets.add(tuple(kept))
    assert len(kept_sets) >= 2  # teachers are dropped at random, not always the same one


def test_teacher_standardisation_uses_each_teachers_cached_statistics(tmp_path):
    cfg = _config(target_norm="teacher")
    module, tables = _module(cfg)

    class Context:  # the provider's cache-backed features, here the tables themselves
        def features(self, name):
            return tables[name].half()

    prepared = METHODS["feature"].prepare(cfg, Context())
    assert prepared.dataset is None
    for name, table in tables.items():
        assert torch.allclose(prepared.tensors[f"{name}:mean"], table.half().float().mean(0))
        assert torch.allclose(prepared.tensors[f"{name}:std"], table.half().float().std(0, unbiased=False))
    module.prepared = prepared.tensors
    target = tables["narrow"][:8]
    normalised = module._normalise("narrow", target)
    by_hand = (target - prepared.tensors["narrow:mean"]) / (prepared.tensors["narrow:std"] + 1e-5)
    assert torch.allclose(normalised, by_hand)
    # the narrow teacher's scale (x10, +3) is gone: both teachers' targets have unit spread over the training set
    assert module._normalise("narrow", tables["narrow"]).std(0).mean().item() == pytest.approx(1.0, abs=0.02)


def test_one_teacher_is_the_plain_regression_head():
    cfg = build_config({"method": {"name": "feature", "projector_hidden": [16]}, "student": {"arch": "test_resnet", "resolution": 32}})
    torch.manual_seed(0)
    module = METHODS["feature"](cfg, Student("test_resnet"), {"teacher": TableSignal(torch.randn(N, 7), "t")}, dataset_size=N)
    assert {key.split(".")[0] for key in module.state_dict()} == {"student", "projector"}  # checkpoints as before
    module.log_loss = lambda loss, **terms: (setattr(module, "terms", terms), loss)[1]
    batch = _batch()
    loss = module.training_step(batch, 0)
    expected = feature_regression_loss(module.projector(module.student(batch["views"]["student"])), center_batch(module.signals["teacher"].table[:8]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and module.terms == {}


def test_cosine_smooth_l1_is_the_sum_of_both_terms():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # cosine: 1 - 0 and 1 - 1 -> mean 0.5; smooth-L1 (beta 1): |d| = 1, 1, 0, 1 -> 0.5, 0.5, 0, 0.5 -> mean 0.375
    assert feature_regression_loss(p, t, "cosine_smooth_l1").item() == pytest.approx(0.875)


class _OnlineTeacher:
    """An online teacher signal that records the images it is shown (its target: channel means, twice)."""

    online, batch_view, dim = True, None, 6

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, index, images):
        self.seen.append(images)
        return images.mean((2, 3)).repeat(1, 2)

    def to(self, device):
        return self


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixing_shows_the_teacher_and_the_student_the_same_mixed_crops(mix):
    """method.mix: the shared crop (teacher resolution) is mixed with a shuffled copy of the batch, and that mixed image
    is what the teacher embeds and what the student's view is resized from."""
    from ssdistill.data.mixing import batch_cutmix

    cfg = build_config(
        {
            "method": {"name": "feature", "projector_hidden": [16], "teacher_view": "same", "mix": mix, "mix_alpha": 0.4},
            "teacher": {"name": "efficientnet_lite0"},
            "student": {"arch": "test_resnet", "resolution": 32},
        }
    )
    teacher = _OnlineTeacher()
    torch.manual_seed(0)
    module = METHODS["feature"](cfg, Student("test_resnet"), {"teacher": teacher}, dataset_size=N)
    module.log_loss = lambda loss, **terms: loss
    shared = torch.rand(8, 3, 48, 48)
    batch = {"index": torch.arange(8), "views": {"shared": shared}}
    student_inputs = []
    module.student.register_forward_pre_hook(lambda _, args: student_inputs.append(args[0]))
    torch.manual_seed(5)
    module.training_step(batch, 0)
    torch.manual_seed(5)
    other = shared[torch.randperm(8)]
    if mix == "mixup":
        lam = float(torch.distributions.Beta(torch.tensor(0.4), torch.tensor(0.4)).sample())
        expected = lam * shared + (1 - lam) * other
    else:
        expected, lam = batch_cutmix(shared, other)
    assert 0.0 < lam < 1.0 and torch.allclose(teacher.seen[0], expected)
    assert torch.allclose(student_inputs[0], cfg.method.pairing.student_images({"views": {"shared": expected}}, 32))


def test_mixing_needs_the_teacher_online_and_is_one_line():
    for view in ("original", "bank"):
        cfg = build_config({"method": {"name": "feature", "teacher_view": view, "mix": "cutmix"}, "teacher": {"name": "efficientnet_lite0"}})
        with pytest.raises(ConfigError, match="method.mix=cutmix needs the teacher to see the mixed image: set method.teacher_view=same"):
            METHODS["feature"].teacher_needs(cfg)


def test_relational_term_adds_seed_over_the_batch_to_each_teachers_regression():
    """method.relational=seed (the recipe ablation): each teacher's term is its regression plus relational_weight
    times SEED's loss over the batch's own targets (tests/losses: by hand); off, the terms are the plain regression."""
    from ssdistill.losses.infonce import batch_similarity_distribution_loss

    cfg = _config(relational="seed", relational_weight=0.5, relational_student_temperature=0.3, relational_teacher_temperature=0.1)
    module, tables = _module(cfg)
    batch = _batch()
    loss = module.training_step(batch, 0)
    features = module.student(batch["views"]["student"])
    plain = _by_hand(module, tables, batch, ["wide", "narrow"])
    for name in ("wide", "narrow"):
        target = center_batch(tables[name][batch["index"]])
        relational = batch_similarity_distribution_loss(module.projectors[name](features), target, 0.3, 0.1)
        assert relational.item() > 0
        assert module.terms[f"loss_{name}"].item() == pytest.approx((plain[name] + 0.5 * relational).item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for head in module.projectors.values() for p in head.parameters())
    assert {"relational_weight", "relational_student_temperature"} <= _config().method.inactive()
    assert "relational_weight" not in cfg.method.inactive()
