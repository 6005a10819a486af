import pytest
import torch

from ssdistill.cache.signals import TeacherSignal
from ssdistill.errors import ConfigError
from ssdistill.methods.mvmr import MVMR
from ssdistill.models.students import Student
from ssdistill.recipe import build_config


class Table(TeacherSignal):
    """A stand-in teacher table whose rows ask for gradient, to prove the loss never sends any back."""

    def __init__(self, dim: int = 5) -> None:
        self.dim = dim

    def __call__(self, index, images=None):
        self.last = torch.randn(len(index), self.dim, generator=torch.Generator().manual_seed(int(index.sum())), requires_grad=True)
        return self.last


def _method(mode: str, extra_teachers: int = 0, **method):
    cfg = build_config(
        {"method": {"name": "mvmr", "mode": mode, "projector": [16, 8], **method}, "student": {"arch": "test_resnet", "resolution": 32}}
    )
    student = Student("test_resnet")
    signals = {"teacher": Table(), **{f"teacher_t{i + 2}": Table(3 + i) for i in range(extra_teachers)}} if mode == "kd" else {}
    return MVMR(cfg, student, signals), cfg


def test_config_defaults_and_unknown_terms():
    ssl = build_config({"method": {"name": "mvmr", "mode": "ssl"}}).method
    assert ssl.chosen_representations() == ["raw", "hog", "local_std"] and ssl.handcrafted_sign == "paper"
    assert build_config({"method": {"name": "mvmr"}}).method.chosen_representations() == []
    with pytest.raises(ConfigError, match="unknown loss term"):
        build_config({"method": {"name": "mvmr", "weights": {"techer": 2}}})
    assert MVMR.teacher_needs(build_config({"method": {"name": "mvmr", "mode": "ssl"}})) == {}
    two = build_config({"method": "mvmr", "teacher": {"name": "efficientnet_lite0"}, "teachers": {"lite2": {"name": "efficientnet_lite2"}}})
    needs = MVMR.teacher_needs(two)
    assert list(needs) == ["teacher", "teacher_lite2"] and needs["teacher_lite2"].teacher == "lite2" and needs["teacher"].view == "original"


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
    assert method.signals["teacher"].last.grad is None  # the teacher's rows asked for gradient and received none


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
    method, _ = _method("kd", extra_teachers=2, weights={"teacher_t3": 0.0, "mse": 0.0, "std": 0.0, "views": 0.0})
    method.log_loss = lambda loss, **terms: (setattr(method, "terms", terms), loss)[1]
    batch = {"index": torch.arange(8), "views": {"aug": torch.rand(8, 3, 32, 32), "original": torch.rand(8, 3, 32, 32)}}
    loss = method.training_step(batch, 0)
    terms = method.terms
    assert {"teacher", "teacher_t2", "teacher_t3"} <= set(terms)
    # teacher t3 is weighted 0, the SSL terms too: the loss is the sum of the first two teacher terms
    assert loss.item() == pytest.approx((terms["teacher"] + terms["teacher_t2"]).item(), abs=1e-6)
    with pytest.raises(ConfigError, match="weights.teacher_t4 names no teacher: this run's teacher terms are teacher, teacher_t2, teacher_t3"):
        _method("kd", extra_teachers=2, weights={"teacher_t4": 1.0})


def _released_dcor(x, y):
    """The released code's distance correlation, written out from its formulas (docs/methods/mvmr.md): distances from the
    raw Gram form, squared distances clamped at 1e-4, double centring, sqrt(mean(AB)/n²) / sqrt(dVarX dVarY)."""

    def centred(a):
        r = (a * a).sum(1, keepdim=True)
        d = (r - 2 * a @ a.T + r.T).clamp(min=1e-4).sqrt()
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b, n = centred(x.flatten(1).double()), centred(y.flatten(1).double()), len(x)
    covariance = torch.sqrt((a * b).mean() / n**2)
    return covariance / torch.sqrt(torch.sqrt((a * a).mean() / n**2) * torch.sqrt((b * b).mean() / n**2))


def test_the_released_code_divides_exactly_these_dcor_inputs_by_32():
    """vkinakh/mv-mr: z / 32 and z_orig / 32, the CLIP embedding / 32, and in _step_dc full_img, full_img_scatnet and
    full_img_augment / 32, while full_img_hog and full_img_std are left unscaled."""
    official = build_config({"method": {"name": "mvmr", "preset": "official"}}).method
    ours = build_config({"method": {"name": "mvmr"}}).method
    expected = {"embedding": 32, "teacher": 32, "raw": 32, "scattering": 32, "reaugmented": 32, "hog": 1, "local_std": 1}
    assert {name: official.dcor_divisor(name) for name in expected} == expected
    assert {ours.dcor_divisor(name) for name in expected} == {1.0}


def test_official_preset_reproduces_the_released_objective_term_by_term():
    """preset=official: V-statistic dCor, std ε = 0, released sign, and /32 on the embeddings, the teacher and raw
    pixels but not HOG or local std; every term equals the released formula on the same tensors (1e-5), and the
    one-sided /32 is not neutral (the clamp), so leaving it out changes the hand-crafted terms."""
    official, cfg = _method("kd", preset="official", projector=[16, 8], representations=["raw", "hog", "local_std"])
    unscaled, _ = _method("kd", preset="official", projector=[16, 8], representations=["raw", "hog", "local_std"], dcor_input_scaling="none")
    assert cfg.method.deviations() == ["projector: [16, 8] (official: [8192, 8192, 8192])", "representations: [raw, hog, local_std] (official: [])"]
    unscaled.load_state_dict(official.state_dict())
    for m in (official, unscaled):
        m.log_loss = lambda loss, m=m, **terms: (setattr(m, "terms", terms), loss)[1]
    torch.manual_seed(0)
    batch = {"index": torch.arange(16), "views": {"aug": torch.rand(16, 3, 32, 32), "original": torch.rand(16, 3, 32, 32)}}
    official.training_step(batch, 0)
    unscaled.training_step(batch, 0)
    with torch.no_grad():  # train mode: the same batch statistics as the step
        z_aug = official.projector(official.student(batch["views"]["aug"]))
        z_orig = official.projector(official.student(batch["views"]["original"]))
    t = official.signals["teacher"].last
    norm = official.student.normalize
    from ssdistill.models.handcrafted import hog, local_std

    expected = {
        "views": 1 - _released_dcor(z_orig / 32, z_aug / 32),
        "teacher": 1 - _released_dcor(t / 32, z_aug / 32),
        "raw": _released_dcor(norm(batch["views"]["original"]) / 32, z_aug / 32),  # released sign: +dCor
        "hog": _released_dcor(hog(norm(batch["views"]["original"]), "released"), z_aug / 32),
        "local_std": _released_dcor(local_std(norm(batch["views"]["original"])), z_aug / 32),
        "std": torch.relu(1 - z_aug.std(0)).mean() + torch.relu(1 - z_orig.std(0)).mean(),
    }
    for name, value in expected.items():
        assert official.terms[name].item() == pytest.approx(value.item(), abs=1e-5), name
    changed = {name: abs(official.terms[name].item() - unscaled.terms[name].item()) for name in ("raw", "hog", "local_std", "views")}
    assert changed["hog"] > 1e-4 and changed["local_std"] > 1e-4, changed  # only z̃ is scaled in these: not neutral


def test_gradient_accumulation_is_recorded_as_not_enlarging_the_dcor_batch():
    """dCor is a batch statistic: accumulating 4 batches of 128 sums four dCor gradients, it is not one dCor over 512."""
    base = {"data": {"train": "x", "batch_size": 128}, "method": {"name": "mvmr"}}
    plain = build_config(base)
    accumulated = build_config(base, ["trainer.accumulate_grad_batches=4"])
    assert not any(d.startswith("dcor_batch") for d in MVMR.deviations(plain))
    (line,) = [d for d in MVMR.deviations(accumulated) if d.startswith("dcor_batch")]
    assert "4 dCor values, each over one batch of 128" in line and "not one dCor over 512" in line and "data.batch_size" in line


def test_whitened_teacher_term_is_dcor_with_the_whitened_embedding():
    """teacher_whitening=pca: prepare fits the whitening on the teacher's table of the training images, and the teacher
    term is 1 - dCor with (t - mean) @ W instead of t; recorded as a departure from the official code."""
    from ssdistill.losses.dependence import distance_correlation
    from ssdistill.losses.regression import pca_whitening, whiten_with

    table = torch.randn(50, 5, generator=torch.Generator().manual_seed(1)) * torch.tensor([4.0, 1.0, 1.0, 0.5, 0.1])

    class Provider:
        def features(self, name=None, spec=None, source=None, tap=None):
            return table

    method, cfg = _method("kd", teacher_whitening="pca", whitening_shrinkage=0.2)
    prepared = MVMR.prepare(cfg, Provider()).tensors
    mean, matrix = pca_whitening(table, 0.2)
    assert torch.equal(prepared["teacher:mean"], mean) and torch.equal(prepared["teacher:whitening"], matrix)
    method.prepared = prepared
    batch = {"index": torch.arange(8), "views": {"aug": torch.rand(8, 3, 32, 32), "original": torch.rand(8, 3, 32, 32)}}
    torch.manual_seed(0)
    terms = method.loss_terms(batch)
    torch.manual_seed(0)
    z = method.projector(method.student(batch["views"]["aug"]))
    target = whiten_with(method.signals["teacher"].last.detach(), mean, matrix)
    expected = 1 - distance_correlation(target, z, clamp=cfg.method.dcor_clamp, estimator="unbiased")
    plain = 1 - distance_correlation(method.signals["teacher"].last.detach(), z, clamp=cfg.method.dcor_clamp, estimator="unbiased")
    assert terms["teacher"].item() == pytest.approx(expected.item(), abs=1e-5)
    assert abs(terms["teacher"].item() - plain.item()) > 1e-3  # the whitening changes the term
    assert any(d.startswith("teacher_whitening") for d in MVMR.deviations(cfg))
    assert MVMR.prepare(_method("kd")[1], Provider()) is None  # off by default: nothing fitted
    assert "whitening_shrinkage" in _method("kd")[1].method.inactive()


def test_teacher_on_backbone_ties_the_pooled_features_not_the_projector():
    """teacher_on=backbone: the teacher term is 1 - dCor between the teacher's rows and the student's pooled backbone
    features of the augmented view, so its gradient reaches the backbone and none of the projector; recorded."""
    from ssdistill.losses.dependence import distance_correlation

    method, cfg = _method("kd", teacher_on="backbone")
    batch = {"index": torch.arange(8), "views": {"aug": torch.rand(8, 3, 32, 32), "original": torch.rand(8, 3, 32, 32)}}
    torch.manual_seed(0)
    terms = method.loss_terms(batch)
    torch.manual_seed(0)
    h = method.student(batch["views"]["aug"])
    target = method.signals["teacher"].last.detach()
    expected = 1 - distance_correlation(target, h, clamp=cfg.method.dcor_clamp, estimator="unbiased")
    on_projector = 1 - distance_correlation(target, method.projector(h), clamp=cfg.method.dcor_clamp, estimator="unbiased")
    assert terms["teacher"].item() == pytest.approx(expected.item(), abs=1e-5)
    assert abs(terms["teacher"].item() - on_projector.item()) > 1e-3
    terms["teacher"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in method.projector.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    assert any(d.startswith("teacher_on") for d in MVMR.deviations(cfg))
    assert "teacher_on" in _method("ssl")[1].method.inactive() and "teacher_on" not in cfg.method.inactive()
