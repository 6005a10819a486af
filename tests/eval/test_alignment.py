"""Teacher alignment: linear CKA and bias-corrected dCor² of a model's features against the teacher's."""

import pytest
import torch

from ssdistill.eval.alignment import teacher_alignment
from ssdistill.eval.suite import headline_metrics, retained
from ssdistill.eval.tables import model_rows


def _rotation(dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)))
    return q


def test_a_rotated_rescaled_copy_of_the_teacher_is_fully_aligned():
    teacher = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    student = 3.0 * teacher @ _rotation(16, 1) + 5.0  # rotation, isotropic scale and a shift keep the geometry
    scores = teacher_alignment(student, teacher)
    assert scores["linear_cka"] == pytest.approx(1.0, abs=1e-4)
    assert scores["dcor2"] == pytest.approx(1.0, abs=1e-4)
    assert scores["samples"] == 300


def test_unrelated_features_score_near_zero_and_partial_copies_in_between():
    g = torch.Generator().manual_seed(2)
    teacher = torch.randn(1000, 32, generator=g)
    unrelated = torch.randn(1000, 24, generator=g)
    half = torch.cat([teacher[:, :16], torch.randn(1000, 16, generator=g)], dim=1)  # keeps half of the teacher's dimensions
    none, part = teacher_alignment(unrelated, teacher), teacher_alignment(half, teacher)
    assert abs(none["dcor2"]) < 0.02 and none["linear_cka"] < 0.05
    assert 0.2 < part["dcor2"] < 0.8 and 0.2 < part["linear_cka"] < 0.8


def test_large_splits_are_scored_on_a_seeded_subset_of_rows():
    g = torch.Generator().manual_seed(3)
    teacher, student = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    first = teacher_alignment(student, teacher, max_samples=100, seed=7)
    assert first["samples"] == 100
    assert first == teacher_alignment(student, teacher, max_samples=100, seed=7)
    assert first != teacher_alignment(student, teacher, max_samples=100, seed=8)


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="same images"):
        teacher_alignment(torch.randn(10, 4), torch.randn(11, 4))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        teacher_alignment(torch.randn(10), torch.randn(10, 4))


def test_alignment_is_a_headline_metric_but_not_a_retained_share():
    models = {
        "teacher": {"knn": {"k20_t0.07": {"top1": 90.0}}},
        "student": {"knn": {"k20_t0.07": {"top1": 45.0}}, "teacher_alignment": {"linear_cka": 0.61, "dcor2": 0.58, "samples": 9}},
    }
    assert headline_metrics(models["student"])["teacher_cka"] == 0.61
    assert retained(models) == {"knn_k20_t0.07": 50.0}  # the teacher has no alignment with itself to divide by
    header, rows = model_rows(
        {
            "evaluation": {
                "protocols": {"knn": ["k20_t0.07"]},
                "models": {k: {**v, "params_m": 1.0, "gflops": 0.1, "images_per_s": 10} for k, v in models.items()},
                "retained_pct": {},
            }
        }
    )
    assert "CKA with teacher" in header and "dCor² with teacher" in header
    student = next(r for r in rows if r[0] == "student")
    assert student[header.index("CKA with teacher")] == "0.61" and student[header.index("dCor² with teacher")] == "0.58"
