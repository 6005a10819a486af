"""A run whose method owns two students (a cohort, as MCL will): every place that used to assume one student iterates
over the members: evaluation rows, the k-NN monitor, checkpoint loading, export (one folder per member), the tables
and the report. The method here is a test-only two-member variant of feature regression, registered for the test."""

from __future__ import annotations

import csv
import json
from typing import Literal

import pytest
import torch

from ssdistill import distill
from ssdistill.eval.tables import comparison_rows
from ssdistill.export import export_run
from ssdistill.losses.regression import center_batch, feature_regression_loss
from ssdistill.methods.feature import FeatureConfig, FeatureDistillation
from ssdistill.methods.registry import METHODS
from ssdistill.report.html import build_report, load_run, markdown_report
from ssdistill.runs.load import load_student_from_run

from integration.common import tiny_config


class PairConfig(FeatureConfig):
    name: Literal["pair_feature"] = "pair_feature"


class PairFeature(FeatureDistillation):
    """Both members regress the teacher's embedding through the one adaptor head (the members have the same width)."""

    name = "pair_feature"
    config_class = PairConfig

    @classmethod
    def student_members(cls, cfg):
        return {"student": cfg.student, "peer": cfg.student}

    def training_step(self, batch, batch_idx):
        pairing = self.cfg.method.pairing
        target = center_batch(pairing.target(batch, self.signals["teacher"]))
        images = pairing.student_images(batch, self.cfg.student.resolution)
        terms = {m: feature_regression_loss(self.projector(s(images)), target, "cosine") for m, s in self.students().items()}
        return self.log_loss(sum(terms.values()), **{f"loss_{m}": t.detach() for m, t in terms.items()})


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cohort")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(METHODS, "pair_feature", PairFeature)
        config = tiny_config(
            tmp_path,
            method={"name": "pair_feature", "projector_hidden": [32]},
            run={"name": "pair"},
            eval={"teacher": True, "random_init": True, "monitor_every": 1, "suite": "full"},
            trainer={"epochs": 2},
        )
        results = distill(config, quiet=True)
        yield tmp_path / "runs" / "pair", results


@pytest.fixture
def registered():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(METHODS, "pair_feature", PairFeature)
        yield


def test_every_member_is_evaluated_and_monitored(cohort_run):
    run, results = cohort_run
    assert list(results["students"]) == ["student", "peer"]
    assert list(results["knn"]) == ["teacher", "random_init", "random_init_peer", "student", "student_peer", "student_ensemble"]
    assert set(results["evaluation"]["models"]) == set(results["knn"])  # the full suite too
    models = results["evaluation"]["models"]
    # the ensemble row: both members' normalised features side by side
    assert models["student_ensemble"]["feature_dim"] == models["student"]["feature_dim"] + models["student_peer"]["feature_dim"]
    assert models["student_ensemble"]["params_m"] == pytest.approx(models["student"]["params_m"] + models["student_peer"]["params_m"])
    columns = next(csv.reader((run / "metrics.csv").open()))
    assert {"monitor/knn_top1", "monitor/peer/knn_top1", "train/loss_peer_epoch"} <= set(columns)


def test_members_start_from_their_own_seeds(cohort_run, registered):
    run, _ = cohort_run
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    first = next(k for k in state if k.startswith("student.") and k.endswith("weight"))
    assert not torch.equal(state[first], state["peer." + first[len("student.") :]])


def test_each_member_loads_and_exports_on_its_own(cohort_run, registered):
    run, _ = cohort_run
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for member in ("student", "peer"):
        _, student = load_student_from_run(run, member=member)
        key = next(k for k in student.state_dict() if k.endswith("weight"))
        assert torch.equal(student.state_dict()[key], state[f"{member}.{key}"])
        written = export_run(run, member=member)
        assert written["weights"] == run / "export" / member / "model.safetensors"
        assert json.loads(written["config"].read_text())["ssdistill"]["member"] == member


def test_tables_and_report_show_every_member(cohort_run, registered, tmp_path):
    run, _ = cohort_run
    loaded = load_run(run)
    _, rows = comparison_rows([loaded["record"], loaded["record"]])
    labels = [row[:2] for row in rows]
    assert labels[0][0].startswith("teacher") and sum(r[0].startswith("teacher") for r in labels) == 1  # shared: once
    assert [r[0] for r in labels if r[0].startswith("random-init")] == ["random-init test_resnet", "random-init test_resnet [peer]"]
    assert labels[-6:] == [["pair", "pair_feature"], ["pair", "pair_feature [peer]"], ["pair", "pair_feature [ensemble]"]] * 2
    table = markdown_report([run])
    assert "[peer]" in table and "random-init test_resnet [peer]" in table
    html = tmp_path / "report.html"
    build_report([run], html)
    page = html.read_text()
    assert "map-student-pair" in page and "map-student_peer-pair" in page  # a feature map per member
    monitor = page.split('id="knn-pair"', 1)[1].split("</svg>", 1)[0]
    assert ">student<" in monitor and ">peer<" in monitor  # a k-NN monitor curve per member, in one chart
