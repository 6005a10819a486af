"""L-MCL end to end on real images (the demo's): a supervised cohort trains with its meta step every 2 steps, every
member and every stage head is scored, the weighting network and its optimiser are checkpointed, a killed run resumes
to the uninterrupted run's weights bitwise (the weighting network's included), and each member exports."""

import csv
import json

import pytest
import torch
from methods.test_mcl import OFFICIAL_OPTIM_DEPARTURES

from ssdistill import distill
from ssdistill.export import export_run

from integration.common import tiny_config
from integration.test_distill import Interrupt


def _config(tmp_path, name):
    config = tiny_config(
        tmp_path, run={"name": name}, aug={"recipe": "cifar_basic"}, eval={"random_init": True}, trainer={"epochs": 2, "log_every_n_steps": 1}
    )
    config["method"] = {"name": "lmcl", "mode": "supervised", "meta_every": 2}
    return config


@pytest.fixture(scope="module")
def lmcl_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lmcl")
    return tmp_path, distill(_config(tmp_path, "whole"), quiet=True)


def test_a_supervised_lmcl_cohort_trains_with_its_meta_steps_and_scores_every_member_and_stage_head(lmcl_run):
    tmp_path, results = lmcl_run
    run = tmp_path / "runs" / "whole"
    assert list(results["knn"]) == ["random_init", "random_init_peer1", "student", "student_peer1", "student_ensemble"]
    for label in ("student", "student_peer1"):
        assert 0 <= results["knn"][label]["classifier"]["top1"] <= 100
    assert results["deviations"] == ["meta_every: 2 (official: 50)", *OFFICIAL_OPTIM_DEPARTURES]
    heads = results["stage_heads"]
    assert list(heads) == [f"{m}/stage{k}" for m in ("student", "peer1") for k in (1, 2, 3)]  # test_resnet: 4 stages
    assert all(h["branch"] == "copy" and 0 <= h["knn"]["top1"] <= 100 and 0 <= h["classifier"]["top1"] <= 100 for h in heads.values())
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    meta_steps = [int(r["step"]) for r in rows if r.get("train/meta_step") == "1.0"]
    assert meta_steps == [0, 2, 4, 6] and results["steps"] == 8  # 64 images, batch 16, 2 epochs: a meta step every 2 steps
    norms = [float(r["train/meta_grad_norm"]) for r in rows if r.get("train/meta_step") == "1.0"]
    # the virtual steps take the run's learning rate: 0 at step 0 of the tiny config's warm-up, so nothing depends on ω there
    assert norms[0] == 0 and all(n > 0 for n in norms[1:])
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["lmcl_weighting_optimizer"]["state"] and any(k.startswith("weighting.") for k in checkpoint["state_dict"])


def test_a_killed_lmcl_run_resumes_to_the_uninterrupted_weights_bitwise(lmcl_run):
    tmp_path, _ = lmcl_run
    with pytest.raises(RuntimeError, match="simulated kill"):
        distill(_config(tmp_path, "killed"), callbacks=[Interrupt(at=1)], quiet=True)
    distill(resume=tmp_path / "runs" / "killed", quiet=True)
    a, b = (torch.load(tmp_path / "runs" / name / "checkpoints" / "last.ckpt", weights_only=False) for name in ("whole", "killed"))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    momentum = [
        (a["lmcl_weighting_optimizer"]["state"][i]["momentum_buffer"], b["lmcl_weighting_optimizer"]["state"][i]["momentum_buffer"])
        for i in a["lmcl_weighting_optimizer"]["state"]
    ]
    assert momentum and all(torch.equal(x, y) for x, y in momentum)


def test_each_lmcl_member_exports_without_its_branches_and_eval_scores_the_classifiers_again(lmcl_run):
    from ssdistill.api import evaluate

    tmp_path, results = lmcl_run
    run = tmp_path / "runs" / "whole"
    written = export_run(run, member="peer1")
    assert json.loads(written["config"].read_text())["ssdistill"]["member"] == "peer1"
    again = evaluate(run, full=False, num_workers=0)["knn"]
    for label in ("student", "student_peer1"):
        assert again[label]["classifier"]["top1"] == results["knn"][label]["classifier"]["top1"]
