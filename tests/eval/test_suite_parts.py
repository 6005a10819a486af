import pytest
import torch
from torch import nn

from ssdistill.eval.features import model_flops
from ssdistill.eval.suite import headline_metrics, pca_map, retained
from ssdistill.eval.tables import markdown_table, text_table


def test_flops_of_a_one_by_one_convolution_by_hand():
    conv = nn.Conv2d(3, 4, kernel_size=1, bias=False)
    # 3 x 4 multiply-adds per pixel, 8 x 8 pixels, 2 FLOPs each
    assert model_flops(conv, 8) == pytest.approx(2 * 3 * 4 * 64 / 1e9)


def test_pca_map_is_seeded_scaled_and_ordered_by_variance():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(300, 5, generator=g) * torch.tensor([5.0, 2.0, 0.1, 0.1, 0.1]) + 10
    labels = torch.arange(300) % 3
    first, again = pca_map(features, labels, 200, seed=1), pca_map(features, labels, 200, seed=1)
    assert first == again and len(first["x"]) == 200 and first["method"] == "pca"
    x, y = torch.tensor(first["x"]), torch.tensor(first["y"])
    assert max(x.abs().max(), y.abs().max()) == pytest.approx(1.0) and x.var() > y.var()


def test_retained_is_the_student_share_of_each_teacher_metric():
    teacher = {"knn": {"k20_t0.07": {"top1": 80.0}}, "linear": {"top1": 90.0}, "clustering": {"accuracy": 50.0, "nmi": 40.0, "ari": 0.0}}
    student = {"knn": {"k20_t0.07": {"top1": 40.0}}, "linear": {"top1": 45.0}, "clustering": {"accuracy": 25.0, "nmi": 30.0, "ari": 5.0}}
    assert headline_metrics(student) == {"knn_k20_t0.07": 40.0, "linear": 45.0, "cluster_accuracy": 25.0, "cluster_nmi": 30.0, "cluster_ari": 5.0}
    assert retained({"teacher": teacher, "student": student}) == {
        "knn_k20_t0.07": 50.0,
        "linear": 50.0,
        "cluster_accuracy": 50.0,
        "cluster_nmi": 75.0,
    }  # ARI: the teacher's 0 has no share


def test_tables_align_and_render_markdown():
    header, rows = ["model", "top-1"], [["teacher", "90.0%"], ["student", "5.5%"]]
    assert text_table(header, rows).splitlines() == ["model    top-1", "teacher  90.0%", "student   5.5%"]
    assert markdown_table(header, rows).splitlines()[1] == "| --- | ---: |"
