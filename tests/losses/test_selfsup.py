"""RoB's target-branch losses (docs/methods/rob.md) against values computed by hand and against an established
implementation of the same losses (the ``lightly`` package, a test-only dependency)."""

import math

import pytest
import torch
from torch.nn import functional as F

from ssdistill.losses.selfsup import (
    dino_cross_entropy,
    memax,
    msn_cross_entropy,
    prototype_probabilities,
    regression_loss,
    sharpen,
    sinkhorn,
    sinkhorn_scores,
)


def _ce_two(target_logits, student_logits, t_teacher, t_student):
    """H(softmax(t / τ_t), s / τ_s) of two-column logits, with scalar arithmetic."""
    q0 = 1 / (1 + math.exp(-(target_logits[0] - target_logits[1]) / t_teacher))
    p0 = 1 / (1 + math.exp(-(student_logits[0] - student_logits[1]) / t_student))
    return -(q0 * math.log(p0) + (1 - q0) * math.log(1 - p0))


def test_dino_pairs_every_teacher_view_with_every_other_student_view_by_hand():
    """Two global crops (student views 0 and 1, also seen by the teacher) and one local crop (view 2), one image."""
    student = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[0.5, 0.5]])]
    teacher = [torch.tensor([[0.3, 0.0]]), torch.tensor([[0.0, 0.1]])]
    center = torch.tensor([0.1, 0.0])
    t = [[0.2, 0.0], [-0.1, 0.1]]  # teacher minus centre
    s = [[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]]
    cross = [(0, 1), (0, 2), (1, 0), (1, 2)]
    expected = sum(_ce_two(t[g], s[v], 0.04, 0.1) for g, v in cross) / 4
    got = dino_cross_entropy(student, teacher, [0, 1], center, 0.1, 0.04)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    with_same = sum(_ce_two(t[g], s[v], 0.04, 0.1) for g, v in [*cross, (0, 0), (1, 1)]) / 6
    assert dino_cross_entropy(student, teacher, [0, 1], center, 0.1, 0.04, same_view_pairs=True).item() == pytest.approx(with_same, rel=1e-5)
    with pytest.raises(ValueError, match="no \\(teacher view, student view\\) pair"):
        dino_cross_entropy(student[:1], teacher[:1], [0], center)


def test_dino_matches_lightly_and_sends_no_gradient_to_the_teacher():
    from lightly.loss import DINOLoss

    torch.manual_seed(0)
    student = [torch.randn(6, 16, requires_grad=True) for _ in range(4)]  # 2 global + 2 local crops
    teacher = [torch.randn(6, 16, requires_grad=True) for _ in range(2)]
    center = torch.randn(16) * 0.1
    reference = DINOLoss(output_dim=16, teacher_temp=0.04, student_temp=0.1, warmup_teacher_temp_epochs=0)
    reference.center.copy_(center.view(1, 1, -1))
    expected = reference([t.detach() for t in teacher], student)
    ours = dino_cross_entropy(student, teacher, [0, 1], center, 0.1, 0.04)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    ours.backward()
    assert all(t.grad is None for t in teacher) and all(s.grad is not None for s in student)


def test_sinkhorn_equipartitions_and_matches_lightly():
    from lightly.loss.msn_loss import sinkhorn as lightly_sinkhorn

    torch.manual_seed(1)
    probabilities = torch.softmax(torch.randn(8, 4) * 3, dim=1)
    q = sinkhorn(probabilities, iterations=3)
    assert torch.allclose(q.sum(1), torch.ones(8), atol=1e-5)  # every image: a distribution over the prototypes
    assert torch.allclose(q, lightly_sinkhorn(probabilities, iterations=3), atol=1e-6)
    many = sinkhorn(probabilities, iterations=200)
    assert torch.allclose(many.sum(0), torch.full((4,), 8 / 4), atol=1e-3)  # converged: every prototype gets B/K
    scores = torch.randn(8, 4)
    assert torch.allclose(sinkhorn_scores(scores, 0.05), sinkhorn(torch.exp(scores / 0.05)), atol=1e-5)
    assert torch.equal(sinkhorn(probabilities, iterations=0), probabilities)


def test_msn_cross_entropy_sharpening_and_memax_match_lightly():
    from lightly.loss import MSNLoss

    torch.manual_seed(2)
    anchors, targets, prototypes = torch.randn(3 * 5, 8), torch.randn(5, 8), torch.randn(6, 8)  # 3 anchor views of 5 images
    expected = MSNLoss(temperature=0.1, sinkhorn_iterations=3, regularization_weight=1.0)(anchors, targets, prototypes, 0.25)
    anchor_p = prototype_probabilities(anchors, prototypes, 0.1)
    target_p = sinkhorn(sharpen(prototype_probabilities(targets, prototypes, 0.1), 0.25), 3)
    ours = msn_cross_entropy(anchor_p, target_p) + memax(anchor_p)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


def test_memax_is_zero_for_a_uniform_mean_and_log_k_for_a_collapsed_one():
    uniform = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert memax(uniform).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4)
    assert memax(collapsed).item() == pytest.approx(math.log(4), rel=1e-5)
    # minimising it spreads the mean prediction: the gradient lowers the logit of the over-used prototype
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]], requires_grad=True)
    memax(torch.softmax(logits, dim=1)).backward()
    assert (logits.grad[:, 0] > 0).all() and (logits.grad[:, 1:] < 0).all()


def test_sharpen_and_regression_by_hand():
    p = torch.tensor([[0.75, 0.25]])
    assert sharpen(p, 0.5).tolist()[0] == pytest.approx([0.9, 0.1], rel=1e-6)  # 0.5625 / 0.625, 0.0625 / 0.625
    prediction = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0], [0.0, -1.0]], requires_grad=True)
    loss = regression_loss(prediction, target)
    assert loss.item() == pytest.approx(((2 - 2 * math.cos(math.pi / 4)) + 4) / 2, rel=1e-6)
    loss.backward()
    assert target.grad is None and prediction.grad is not None
    assert regression_loss(F.normalize(target.detach(), dim=1) * 3, target).item() == pytest.approx(0.0, abs=1e-6)
