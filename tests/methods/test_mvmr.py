import pytest
import torch

from integration.common import tiny_config
from ssdistill.config import build_config
from ssdistill.errors import ConfigError
from ssdistill.methods.mvmr import MVMR
from ssdistill.models.students import Student


class Table:
    """A stand-in teacher table whose rows ask for gradient, to prove the loss never sends any back."""

    def __init__(self, dim: int = 5) -> None:
        self.dim = dim

    def __call__(self, index, images=None):
        self.last = torch.randn(len(index), self.dim, generator=torch.Generator().manual_seed(int(index.sum())), requires_grad=True)
        return self.last


def _method(mode: str, extra_teachers: int = 0, **method):
    cfg = build_config({"method": {"name": "mvmr", "mode": mode, "projector": [16, 8], **method}, "student": {"arch": "test_resnet", "resolution": 32}})
    student = Student("test_resnet")
    extra = [Table(3 + i) for i in range(extra_teachers)]
    return MVMR(cfg, student, Table() if mode == "kd" else None, extra_signals=extra), cfg


def test_config_defaults_and_unknown_terms():
    ssl = build_config({"method": {"name": "mvmr", "mode": "ssl"}}).method
    assert ssl.chosen_representations() == ["raw", "hog", "local_std"] and ssl.handcrafted_sign == "paper"
    assert build_config({"method": {"name": "mvmr"}}).method.chosen_representations() == []
    with pytest.raises(ConfigError, match="unknown loss term"):
        build_config({"method": {"name": "mvmr", "weights": {"techer": 2}}})
    assert MVMR.teacher_signal(build_config({"method": {"name": "mvmr", "mode": "ssl"}})) == "none"


def test_gradients_reach_the_student_only():
    method, _ = _method("kd", representations=["raw", "hog"])
    method.log_loss = lambda loss, **terms: (setattr(method, "terms", terms), loss)[1]
    batch = {"index": torch.arange(6), "views": {"aug": torch.rand(6, 3, 32, 32), "original": torch.rand(6, 3, 32, 32, requires_grad=True)}}
    loss = method.training_step(batch, 0)
    loss.backward()
    assert set(method.terms) == {"mse", "std", "views", "raw", "hog", "teacher"}
    assert all(p.grad is not None for p in method.projector.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    # the images reach the loss only through the student: hand-crafted features and the teacher carry no gradient
    raw_only = method.representations["raw"](batch["views"]["original"])
    assert not raw_only.requires_grad
    assert method.signal.last.grad is None  # the teacher's rows asked for gradient and received none


def test_each_term_reaches_only_its_own_pass():
    """Per-term gradients: representation and teacher terms see the augmented pass only (z̃), the view terms both."""
    method, _ = _method("kd", representations=["hog"])
    method.log_loss = lambda loss, **terms: (setattr(method, "terms", terms), loss)[1]
    aug = torch.rand(6, 3, 32, 32, requires_grad=True)
    original = torch.rand(6, 3, 32, 32, requires_grad=True)
    method.training_step({"index": torch.arange(6), "views": {"aug": aug, "original": original}}, 0)
    for name, reaches_original in [("teacher", False), ("hog", False), ("views", True), ("mse", True)]:
        grads = torch.autograd.grad(method.terms[name], [aug, original], retain_graph=True, allow_unused=True)
        assert grads[0] is not None and grads[0].abs().sum() > 0, name
        assert (grads[1] is not None and grads[1].abs().sum() > 0) == reaches_original, name


def test_sign_switch():
    paper, _ = _method("ssl", representations=["raw"])
    released, _ = _method("ssl", representations=["raw"], handcrafted_sign="released")
    for m in (paper, released):
        m.log_loss = lambda loss, m=m, **terms: (setattr(m, "terms", terms), loss)[1]
    torch.manual_seed(0)
    batch = {"index": torch.arange(6), "views": {"aug": torch.rand(6, 3, 32, 32), "original": torch.rand(6, 3, 32, 32)}}
    released.load_state_dict(paper.state_dict())
    paper.training_step(batch, 0)
    released.training_step(batch, 0)
    assert paper.terms["raw"].item() == pytest.approx(1 - released.terms["raw"].item(), abs=1e-5)
    assert "handcrafted_sign: paper (official: released)" in MVMR.deviations(paper.cfg)
    assert not any(d.startswith("handcrafted_sign") for d in MVMR.deviations(released.cfg))


def test_every_teacher_gets_its_own_weighted_term():
    method, _ = _method("kd", extra_teachers=2, weights={"teacher3": 0.0, "mse": 0.0, "std": 0.0, "views": 0.0})
    method.log_loss = lambda loss, **terms: (setattr(method, "terms", terms), loss)[1]
    batch = {"index": torch.arange(8), "views": {"aug": torch.rand(8, 3, 32, 32), "original": torch.rand(8, 3, 32, 32)}}
    loss = method.training_step(batch, 0)
    terms = method.terms
    assert {"teacher", "teacher2", "teacher3"} <= set(terms)
    # teacher3 is weighted 0, the SSL terms too: the loss is the sum of the first two teacher terms
    assert loss.item() == pytest.approx((terms["teacher"] + terms["teacher2"]).item(), abs=1e-6)
    with pytest.raises(ConfigError, match="weights.teacher4 names no teacher: this run has 3"):
        _method("kd", extra_teachers=2, weights={"teacher4": 1.0})
