"""BINGO: neighbour pairs, loss forms, warm-up and queue behaviour on tiny models."""

import pytest
import torch

from ssdistill.cache.signals import TeacherSignal
from ssdistill.data.datasets import FolderImages
from ssdistill.data.pairs import NeighbourPairViews
from ssdistill.errors import ConfigError
from ssdistill.losses.infonce import queue_nce
from ssdistill.methods.registry import METHODS
from ssdistill.models.students import Student
from ssdistill.recipe import build_config

from conftest import write_images


class Keys(TeacherSignal):
    """Teacher keys standing in for the online teacher: one fixed random vector per sample id."""

    dim = 6

    def __call__(self, index, images=None):
        return torch.stack([torch.randn(6, generator=torch.Generator().manual_seed(int(i))) for i in index])


def test_neighbour_pairs_draw_bag_members_only(tmp_path):
    write_images(tmp_path / "imgs", 6, size=16)
    source = FolderImages(tmp_path / "imgs")
    bags = torch.tensor([[1, 2], [0, 2], [3, 4], [4, 5], [5, 0], [0, 1]])
    pairs = NeighbourPairViews(source, bags, {"q": lambda image: torch.zeros(3, 4, 4)}, bank_repeats=3)
    torch.manual_seed(0)
    seen = {i: set() for i in range(6)}
    for _ in range(30):
        for i in range(6):
            item = pairs[i]
            assert item["neighbour"] != i and item["neighbour"] in bags[i].tolist()
            assert set(item["views"]) == {"qa", "qp"}
            assert item["bank_row"] // 3 == i and item["bank_row_neighbour"] // 3 == item["neighbour"]
            seen[i].add(item["neighbour"])
    assert all(seen[i] == set(bags[i].tolist()) for i in range(6))  # every member of a K=2 bag gets drawn
    with pytest.raises(ValueError, match="bags must be"):
        NeighbourPairViews(source, bags[:3], {})


def _module(**method):
    cfg = build_config(
        {"method": {"name": "bingo", "head_hidden": [16], "queue_size": 32, **method}, "student": {"arch": "test_resnet", "resolution": 32}}
    )
    torch.manual_seed(0)
    module = METHODS["bingo"](cfg, Student("test_resnet"), {"teacher": Keys()}, dataset_size=100)
    module.log_loss = lambda loss, **terms: (setattr(module, "terms", terms), loss)[1]
    return module


def _batch(n=8):
    views = {name: torch.rand(n, 3, 32, 32) for name in ("qa", "qp", "ka", "kp")}
    return {"index": torch.arange(n), "neighbour": torch.arange(n) + 50, "views": views}


@pytest.mark.parametrize("warm_epochs", [0, 2, 10])
def test_official_form_is_intra_only_while_epoch_is_at_most_warm_epochs(monkeypatch, warm_epochs):
    """The official code mixes in the inter terms when ``epoch > 10`` (epochs from 0): epochs 0..E_w are intra-only."""
    module = _module(warm_epochs=warm_epochs)
    batch = _batch()
    for epoch, warm in [(0, True), (warm_epochs, True), (warm_epochs + 1, False)]:
        monkeypatch.setattr(type(module), "current_epoch", property(lambda self, e=epoch: e))
        torch.manual_seed(1)  # the same CutMix box every time
        loss = module.training_step(batch, 0)
        t = module.terms
        assert set(t) == {"intra", "inter", "cutmix"}
        expected = (t["intra"] + t["cutmix"]) / 3 if warm else (0.5 * t["intra"] + 0.5 * t["inter"] + t["cutmix"]) / 3
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5), f"epoch {epoch}, warm_epochs {warm_epochs}"
        assert (t["inter"] - t["intra"]).abs().item() > 1e-3  # the two forms differ, so the check above can fail


def test_own_and_neighbour_keys_are_negatives_unless_mask_same_id(monkeypatch):
    """With the official default the queue's older keys of the anchor and its neighbour stay negatives; with
    mask_same_id they leave the denominator (hand-checked against queue_nce with the same mask)."""
    batch = _batch()
    losses = {}
    for mask in (False, True):
        module = _module(loss_form="paper", mask_same_id=mask)
        module.queue.ids[:8] = torch.arange(8)  # older keys of anchors 0..7
        module.queue.ids[8:16] = torch.arange(50, 58)  # older keys of their neighbours
        queue = module.queue.keys.clone()
        losses[mask] = module.training_step(batch, 0)
        ta = torch.nn.functional.normalize(Keys()(batch["index"]), dim=1)
        sa = module._embed(batch["views"]["qa"])
        exclude = module.queue.same_image(batch["index"]) | module.queue.same_image(batch["neighbour"])
        assert exclude.sum() == 16
        expected = queue_nce(sa, ta, queue, 0.2, exclude=exclude if mask else None)
        assert module.terms["intra"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses[True].item() < losses[False].item()  # fewer negatives, lower loss
    assert any("mask_same_id: True" in d for d in METHODS["bingo"].deviations(_module(mask_same_id=True).cfg))


def test_paper_form_and_only_anchor_keys_enter_the_queue():
    module = _module(loss_form="paper")
    batch = _batch()
    queue_before = module.queue.keys.clone()
    loss = module.training_step(batch, 0)
    ta = torch.nn.functional.normalize(Keys()(batch["index"]), dim=1)
    sa = module._embed(batch["views"]["qa"])
    assert module.terms["intra"].item() == pytest.approx(queue_nce(sa, ta, queue_before, 0.2).item(), rel=1e-4)
    assert loss.item() == pytest.approx((module.terms["intra"] + module.terms["inter"]).item(), rel=1e-6)
    assert torch.equal(module.queue.keys, queue_before)  # staged until the step is over
    module.after_optimiser_step()
    assert torch.allclose(module.queue.keys[:8], ta, atol=1e-6) and module.queue.ids[:8].tolist() == list(range(8))
    assert "loss_form: paper (official: official)" in METHODS["bingo"].deviations(module.cfg)


def test_teacher_batch_statistics_need_online_keys_and_reach_the_signal():
    from ssdistill.cache.signals import OnlineSignal

    with pytest.raises(ConfigError, match="teacher_bn=train needs method.teacher_keys=online"):
        build_config({"method": {"name": "bingo", "teacher_bn": "train", "teacher_keys": "bank"}})

    class Teacher:
        dim, fingerprint = 6, "t"

        def __call__(self, images, bn_groups=None):
            self.groups = bn_groups
            return torch.randn(len(images), 6)

    cfg = build_config(
        {"method": {"name": "bingo", "teacher_bn": "train", "teacher_bn_groups": 3}, "student": {"arch": "test_resnet", "resolution": 32}}
    )
    teacher = Teacher()
    module = METHODS["bingo"](cfg, Student("test_resnet"), {"teacher": OnlineSignal(teacher)}, dataset_size=100)
    module.log_loss = lambda loss, **terms: loss
    module.training_step(_batch(), 0)
    assert teacher.groups == 3
