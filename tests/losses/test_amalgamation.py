"""CKA's loss terms (docs/methods/cka.md, the project's reconstruction) against values computed by hand on tiny inputs, the
positive masks (same task and pseudo-class; the diagonal as specified) and which side each term sends gradient to."""

import math

import pytest
import torch
from hand import kl_two, nce_row, unit

from ssdistill.losses.amalgamation import (
    alignment,
    inter_contrast,
    intra_contrast,
    mean_pairwise_cosine,
    mmd2,
    reconstruction,
    same_pseudo_class,
    task_distillation,
)


def test_task_distillation_by_hand_on_own_and_all_rows():
    task = torch.tensor([0, 1, 0])
    student = [torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]), torch.tensor([[5.0, 5.0], [0.5, 0.0], [9.0, 9.0]])]
    teacher = [torch.tensor([[0.0, 1.0], [3.0, 3.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0], [2.0, 0.0]])]
    own = (kl_two([0, 1], [1, 0], 4) + kl_two([1, 1], [0, 2], 4)) / 2 + kl_two([0, 2], [0.5, 0], 4)
    assert task_distillation(student, teacher, task, 4.0).item() == pytest.approx(own, rel=1e-5)
    every = sum(kl_two(teacher[t][i].tolist(), student[t][i].tolist(), 4) for i in range(3) for t in range(2)) / 3
    assert task_distillation(student, teacher, task, 4.0, targets_on="all").item() == pytest.approx(every, rel=1e-5)
    alone = task_distillation(student, teacher, torch.tensor([0, 0, 0]), 4.0)  # task 1 absent from the batch: adds 0
    assert alone.item() == pytest.approx(sum(kl_two(teacher[0][i].tolist(), student[0][i].tolist(), 4) for i in range(3)) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="own or all"):
        task_distillation(student, teacher, task, targets_on="some")


def test_positives_share_the_task_and_the_pseudo_class():
    task, pseudo = torch.tensor([0, 0, 1, 1, 0]), torch.tensor([2, 2, 2, 0, 1])
    mask = same_pseudo_class(task, pseudo)
    assert mask.tolist()[0] == [True, True, False, False, False]  # image 2 has pseudo-class 2 too, but of task 1
    assert mask.diagonal().all() and torch.equal(mask, mask.T)


def test_intra_contrast_by_hand_excludes_the_image_itself_and_skips_rows_without_positive():
    angles = [0.0, 0.4, 1.5, 3.0]
    student = torch.tensor([unit(a) for a in angles])
    task, pseudo = torch.tensor([0, 0, 0, 1]), torch.tensor([1, 1, 0, 1])
    # rows 0 and 1 are each other's positive; rows 2 (alone in its pseudo-class) and 3 (alone in task 1) are skipped
    expected = (nce_row(angles[0], angles, [1], {0}, 0.5) + nce_row(angles[1], angles, [0], {1}, 0.5)) / 2
    assert intra_contrast(student, task, pseudo, 0.5).item() == pytest.approx(expected, rel=1e-5)


def test_inter_contrast_by_hand_counts_the_same_image_and_only_the_task_s_images():
    s_angles, t0_angles, t1_angles = [0.0, 0.4, 1.5], [0.1, 0.5, 2.0], [1.0, 2.0, 3.0]
    student = torch.tensor([unit(a) for a in s_angles])
    teachers = [torch.tensor([unit(a) for a in t0_angles]), torch.tensor([unit(a) for a in t1_angles])]
    task = torch.tensor([0, 0, 1])
    pseudo = [torch.tensor([0, 1, 0]), torch.tensor([1, 1, 1])]
    # task 0: anchors 0 and 1 against teacher 0's three embeddings; positives: task-0 images of the same pseudo-class
    # (image 2 has pseudo-class 0 under teacher 0 but belongs to task 1); task 1: anchor 2, positive itself only
    expected = (nce_row(s_angles[0], t0_angles, [0], set(), 0.2) + nce_row(s_angles[1], t0_angles, [1], set(), 0.2)) / 2
    expected += nce_row(s_angles[2], t1_angles, [2], set(), 0.2)
    assert inter_contrast(student, teachers, task, pseudo, 0.2).item() == pytest.approx(expected, rel=1e-5)


def test_alignment_cosine_mmd_and_relational_by_hand():
    student = torch.tensor([unit(0.0), unit(1.0)])
    teachers = [torch.tensor([unit(0.5), unit(9.9)]), torch.tensor([unit(8.8), unit(1.2)])]
    task = torch.tensor([0, 1])
    # ‖u(a) − u(b)‖² = 2 − 2 cos(a − b)
    assert alignment(student, teachers, task).item() == pytest.approx((2 - 2 * math.cos(0.5)) + (2 - 2 * math.cos(0.2)), rel=1e-5)
    # one point per set, one bandwidth: k(x, x) = k(y, y) = 1, k(x, y) = exp(-d² / 2σ²)
    x, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert mmd2(x, y, bandwidths=(1.0,)).item() == pytest.approx(2 - 2 * math.exp(-2 / 2), rel=1e-6)
    assert mmd2(x, x).item() == pytest.approx(0.0, abs=1e-7)
    # relational, two images of one task: rows [1, cos]/τ of the teacher are the targets of the student's rows
    pair = torch.tensor([0, 0])
    s2, t2 = torch.tensor([unit(0.0), unit(1.0)]), [torch.tensor([unit(0.0), unit(2.0)])]
    rows = [([1 / 0.5, math.cos(2.0) / 0.5], [1 / 0.5, math.cos(1.0) / 0.5]), ([math.cos(2.0) / 0.5, 1 / 0.5], [math.cos(1.0) / 0.5, 1 / 0.5])]
    expected = sum(kl_two(target, student_row, 1.0) for target, student_row in rows) / 2
    assert alignment(s2, t2, pair, "relational", temperature=0.5).item() == pytest.approx(expected, rel=1e-5)


def test_gradients_reach_what_each_term_trains():
    torch.manual_seed(0)
    student = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    teacher = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    task, pseudo = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 1, 0, 0])
    teachers = [teacher, teacher]
    inter = inter_contrast(student, teachers, task, [pseudo, pseudo])
    grads = torch.autograd.grad(inter, [student, teacher])
    assert all(g.abs().sum() > 0 for g in grads)  # the teacher side's projectors learn from the inter term
    relational = alignment(student, teachers, task, "relational")
    assert torch.autograd.grad(relational, teacher, allow_unused=True)[0] is None  # the teacher's distribution is a target
    cosine = alignment(student, teachers, task, "cosine")
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(cosine, [student, teacher]))


def test_reconstruction_and_the_collapse_guard_by_hand():
    decoded = [torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0]])]
    features = [torch.tensor([[0.0, 2.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0, 4.0]])]
    # teacher 0: (1 + 0 + 0 + 4) / 2 rows / 2 dims; teacher 1: 9 / 1 row / 3 dims
    assert reconstruction(decoded, features).item() == pytest.approx(5 / 2 / 2 + 9 / 3, rel=1e-6)
    assert mean_pairwise_cosine(torch.tensor([unit(0.3)] * 4)).item() == pytest.approx(1.0, rel=1e-6)
    assert mean_pairwise_cosine(torch.tensor([unit(0.0), unit(math.pi / 2)])).item() == pytest.approx(0.0, abs=1e-7)
