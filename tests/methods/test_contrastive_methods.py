"""MoCo-v2, SEED and DisCo training steps on tiny models: losses, gradients, queue and momentum behaviour."""

import pytest
import torch

from ssdistill.cache.signals import TeacherSignal
from ssdistill.errors import ConfigError
from ssdistill.methods.registry import METHODS
from ssdistill.models.students import Student
from ssdistill.recipe import build_config


class Table(TeacherSignal):
    def __init__(self, dim=6):
        self.dim = dim

    def __call__(self, index, images=None):
        return torch.randn(len(index), self.dim, generator=torch.Generator().manual_seed(int(index.sum())))


class Constant(TeacherSignal):
    """A teacher whose every row is ``value``."""

    def __init__(self, value):
        self.value, self.dim = value, value.shape[1]

    def __call__(self, index, images=None):
        return self.value[: len(index)]


def _build(name, dataset_size=100, **method):
    cfg = build_config({"method": {"name": name, **method}, "student": {"arch": "test_resnet", "resolution": 32}})
    torch.manual_seed(0)
    module = METHODS[name](cfg, Student("test_resnet"), {} if name == "moco" else {"teacher": Table()}, dataset_size=dataset_size)
    module.log_loss = lambda loss, **terms: (setattr(module, "terms", terms), loss)[1]
    return module


def _two_view_batch(n=8):
    return {"index": torch.arange(n), "views": {"query": torch.rand(n, 3, 32, 32), "key": torch.rand(n, 3, 32, 32)}}


def test_moco_step_trains_the_query_encoder_only_and_fills_the_queue():
    module = _build("moco", out_dim=16, queue_size=1000, momentum=0.5)
    assert module.queue.size == 100  # capped at the dataset size
    before = [p.clone() for p in module.key_encoder.parameters()]
    loss = module.training_step(_two_view_batch(), 0)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in module.key_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.student.parameters())
    assert (module.queue.ids == -1).all()  # staged: the keys enter the queue only after the optimiser step
    module.after_optimiser_step()
    assert module.queue.ids[:8].tolist() == list(range(8)) and int(module.queue.pointer) == 8
    # the key encoder moved halfway towards the query encoder (momentum 0.5); both started equal
    assert all(torch.allclose(b, p) for b, p in zip(before, module.key_encoder.parameters()))
    with torch.no_grad():
        for p in module.query.parameters():
            p.add_(1.0)
    module.training_step(_two_view_batch(), 1)
    assert all(torch.allclose(k, b + 0.5) for k, b in zip(module.key_encoder.parameters(), before))
    optimised = {id(p) for p in module.parameters() if p.requires_grad}
    assert not any(id(p) in optimised for p in module.key_encoder.parameters())


def test_moco_loss_is_log_of_queue_plus_one_for_uninformative_embeddings():
    module = _build("moco", out_dim=4, queue_size=50)
    q = torch.nn.functional.normalize(torch.ones(8, 4), dim=1)
    module.query.forward = lambda images, q=q: q
    module.keys = lambda images, q=q: q
    module.queue.keys.copy_(q[:1].expand(50, 4))
    loss = module.training_step(_two_view_batch(), 0)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(51.0)).item(), rel=1e-5)  # every logit equal


def test_seed_step_has_a_teacher_wide_head_and_enqueues_teacher_embeddings():
    module = _build("seed", teacher_view="original", queue_size=64)
    batch = {"index": torch.arange(8), "views": {"student": torch.rand(8, 3, 32, 32)}}
    loss = module.training_step(batch, 0)
    loss.backward()
    module.after_optimiser_step()
    assert module.head[-1].out_features == 6 and torch.isfinite(loss)
    expected = torch.nn.functional.normalize(Table()(torch.arange(8)), dim=1)
    assert torch.allclose(module.queue.keys[:8], expected, atol=1e-6)
    assert "teacher_view: original (official: same)" in METHODS["seed"].deviations(module.cfg)


def test_disco_adds_the_weighted_teacher_distance_to_the_contrastive_loss():
    module = _build("disco", teacher_view="original", queue_size=64, distill_weight=2.0)
    loss = module.training_step(_two_view_batch(), 0)
    terms = module.terms
    assert loss.item() == pytest.approx((terms["contrastive"] + terms["distill"]).item(), rel=1e-6)
    assert 0 < terms["distill"].item() <= 2.0 * 2 * 4  # two squared distances of unit vectors, weight 2
    assert module.queue.keys.shape == (64, 6)


def test_unknown_method_options_are_rejected():
    with pytest.raises(ConfigError, match="unknown config key 'method.temprature'"):
        build_config({"method": {"name": "moco", "temprature": 0.1}})


def test_disco_embedding_must_match_the_teacher_width():
    with pytest.raises(ConfigError, match="differs from the teacher's 6-d output"):
        _build("disco", teacher_view="original", out_dim=128)


@pytest.mark.parametrize("name", ["moco", "disco", "seed"])
def test_older_keys_of_the_same_image_are_negatives_unless_mask_same_id(name):
    """All queue keys equal the queries: with the official default all 50 (one of them an older key of the query's
    own image) are negatives, so MoCo / DisCo's InfoNCE is log(51); mask_same_id leaves each query's own older key
    out: log(50). SEED's target and prediction both spread evenly over [own, queue] or [own, queue minus own]:
    H = log(51) or log(50) at τ_s = τ_t."""
    losses = {}
    for mask in (False, True):
        options = {"out_dim": 6} if name == "moco" else {"teacher_view": "original"}
        if name == "seed":
            options.update(student_temperature=0.2, teacher_temperature=0.2)
        module = _build(name, queue_size=50, mask_same_id=mask, **options)
        dim = module.queue.keys.shape[1]
        q = torch.nn.functional.normalize(torch.ones(8, dim), dim=1)
        if name == "seed":
            module.head.forward = lambda h, q=q: q
            module.signal = Constant(q)
            batch = {"index": torch.arange(8), "views": {"student": torch.rand(8, 3, 32, 32)}}
        else:
            module.query.forward = lambda images, q=q: q
            module.keys = lambda images, q=q: q
            batch = _two_view_batch()
        if name == "disco":
            module.signal = Constant(q)  # the distance terms vanish
        module.queue.keys.copy_(q[:1].expand(50, dim))
        module.queue.ids[:8] = torch.arange(8)  # every query's own image already has an (identical) key in the queue
        losses[mask] = module.training_step(batch, 0).item()
    assert losses[False] == pytest.approx(torch.log(torch.tensor(51.0)).item(), rel=1e-5)
    assert losses[True] == pytest.approx(torch.log(torch.tensor(50.0)).item(), rel=1e-5)
    deviations = METHODS[name].deviations(build_config({"method": {"name": name, "mask_same_id": True}}))
    assert "mask_same_id: True (official: False)" in deviations
    assert not any("mask_same_id" in d for d in METHODS[name].deviations(build_config({"method": {"name": name}})))


def test_moco_monitoring_cosines_equal_their_definitions():
    module = _build("moco", out_dim=8, queue_size=40)
    q = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    k = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    cosines = module.key_agreement(q, k)
    assert torch.allclose(cosines["queue_cos"], (q @ module.queue.keys.T).mean(), atol=1e-6)
    assert torch.allclose(cosines["positive_cos"], (q * k).sum(1).mean())
