"""MCL (docs/methods/mcl.md): the cohort's members and their declarations, a label-free step (column-aligned queues, each
member's keys, gradients), a supervised step, the two-images-per-class sampler, config errors, and a supervised cohort
run end to end (classifier top-1 per member, the ensemble row, per-member export)."""

import json
from collections import Counter

import pytest
import torch
from torch.nn import functional as F

from ssdistill import distill
from ssdistill.data.sampling import ClassPairBatchSampler
from ssdistill.errors import ConfigError, DataError
from ssdistill.export import export_run
from ssdistill.losses.distill import distill_kl
from ssdistill.methods.mcl import MCL
from ssdistill.recipe import build_config
from ssdistill.runs.load import build_students

from integration.common import tiny_config

OFFICIAL_OPTIM_DEPARTURES = [
    "optim.lr: 0.05 (official: 0.1)",
    "optim.nesterov: false (official: true)",
    "optim.weight_decay: 0.0001 (official: 0.0005)",
    "optim.warmup_epochs: 1.0 (official: 0.0)",
]


def _module(dataset_size=40, classes=None, **method):
    cfg = build_config({"method": {"name": "mcl", **method}, "student": {"arch": "test_resnet", "resolution": 32}})
    torch.manual_seed(0)
    prepared = {"classes": torch.tensor(classes)} if classes else {}
    module = MCL(cfg, build_students(MCL, cfg), {}, dataset_size=dataset_size, prepared=prepared)
    module.log_loss = lambda loss, **terms: (setattr(module, "terms", terms), loss)[1]
    return module


def _views(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"query": torch.rand(n, 3, 32, 32, generator=g), "key": torch.rand(n, 3, 32, 32, generator=g)}


def test_the_cohort_is_a_list_of_architectures_and_members_are_named_and_seeded():
    cfg = build_config({"method": {"name": "mcl", "cohort": ["test_resnet", "test_efficientnet", "test_resnet"]}})
    members = MCL.student_members(cfg)
    assert list(members) == ["student", "peer1", "peer2"]
    assert [m.arch for m in members.values()] == ["test_resnet", "test_efficientnet", "test_resnet"]
    students = build_students(MCL, cfg)
    first, third = (next(iter(students[m].state_dict().values())) for m in ("student", "peer2"))
    assert not torch.equal(first, third)  # same architecture, own seed
    default = build_config({"method": {"name": "mcl"}, "student": {"arch": "test_vit"}})
    assert [m.arch for m in MCL.student_members(default).values()] == ["test_vit", "test_vit"]
    with pytest.raises(ConfigError, match="M >= 2"):
        build_config({"method": {"name": "mcl", "cohort": ["test_resnet"]}})


def test_label_free_step_trains_every_member_and_writes_their_keys_in_lockstep():
    module = _module(out_dim=8, queue_size=1000, momentum=0.5, bn_groups=1, cohort=["test_resnet", "test_efficientnet"])
    assert module.queue.keys.shape == (40, 2, 8)  # one queue per member, capped at the data, one pointer
    views, ids = _views(), torch.arange(10, 18)
    loss = module.training_step({"index": ids, "views": views}, 0)
    assert torch.isfinite(loss) and set(module.terms) == {"vcl", "icl", "soft_vcl", "soft_icl"}
    loss.backward()
    for member, student in module.students().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters()), member
    assert all(p.grad is None for encoder in module.key_encoders for p in encoder.parameters())
    module.after_optimiser_step()
    assert module.queue.ids[:8].tolist() == ids.tolist() and int(module.queue.pointer) == 8
    with torch.no_grad():  # column j of member m's queue: member m's key (its own key encoder) of image ids[j]
        for m, encoder in enumerate(module.key_encoders):
            assert torch.allclose(module.queue.member_keys(m)[:8], encoder(views["key"]), atol=1e-5)
    assert not torch.allclose(module.queue.member_keys(0)[:8], module.queue.member_keys(1)[:8])


def test_label_free_loss_is_the_weighted_sum_and_mask_same_id_hides_older_keys_of_the_image():
    module = _module(out_dim=8, momentum=0.0, vcl_weight=2.0, icl_weight=0.5, soft_vcl_weight=0.25, soft_icl_weight=3.0)
    batch = {"index": torch.arange(8), "views": _views()}
    loss = module.training_step(batch, 0)
    t = module.terms
    assert loss.item() == pytest.approx((2 * t["vcl"] + 0.5 * t["icl"] + 0.25 * t["soft_vcl"] + 3 * t["soft_icl"]).item(), rel=1e-6)
    module.after_optimiser_step()
    masked = _module(out_dim=8, momentum=0.0, mask_same_id=True)
    masked.load_state_dict(module.state_dict())
    plain_again = module.training_step(batch, 1)
    hidden = masked.training_step(batch, 1)
    assert hidden.item() != pytest.approx(plain_again.item())  # the queue now holds a key of each image: masked out


def test_supervised_step_adds_cross_entropy_and_every_member_logit_kd():
    module = _module(mode="supervised", classes=4, logit_kd_weight=1.0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    loss = module.training_step({"index": torch.arange(8), "label": labels, "views": {"student": images}}, 0)
    t = module.terms
    assert set(t) == {"vcl", "icl", "soft_vcl", "soft_icl", "ce", "logit_kd"}
    expected = 0.1 * t["vcl"] + 0.1 * t["icl"] + t["soft_vcl"] + t["soft_icl"] + t["ce"] + t["logit_kd"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.no_grad():
        logits = [c(s(images)) for c, s in zip(module.classifiers, module.students().values())]
        mean = torch.stack(logits).mean(0)
        assert t["ce"].item() == pytest.approx(sum(F.cross_entropy(z, labels) for z in logits).item(), rel=1e-5)
        assert t["logit_kd"].item() == pytest.approx(sum(distill_kl(z, mean, 3.0) for z in logits).item(), rel=1e-5)
    loss.backward()
    assert all(c.weight.grad is not None for c in module.classifiers)
    assert module.member_classifiers().keys() == {"student", "peer1"}


def test_two_per_class_sampler_gives_every_row_a_positive_and_is_reproducible():
    labels = [0] * 30 + [1] * 25 + [2] * 20 + [3] * 1  # class 3 has one image: it can never have a partner
    sampler = ClassPairBatchSampler(labels, batch_size=8, seed=4)
    assert len(sampler) == 76 // 8
    batches = list(sampler)
    for batch in batches:
        assert len(batch) == 8 and len(set(batch)) == 8
        counts = Counter(labels[i] for i in batch)
        assert all(counts[labels[i]] >= 2 for i in batch) and 3 not in counts
    assert batches == list(sampler)  # same epoch, same batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    wide = ClassPairBatchSampler(list(range(10)) * 5, batch_size=12)  # more classes than pairs: all distinct
    assert all(len({i % 10 for i in batch}) == 6 for batch in wide)
    with pytest.raises(DataError, match="even data.batch_size"):
        ClassPairBatchSampler(labels, batch_size=7)
    with pytest.raises(DataError, match="every training image labelled"):
        ClassPairBatchSampler([0, 1, -1], batch_size=2)


def test_supervised_mode_needs_labels_and_mode_specific_settings_are_not_deviations():
    label_free = build_config({"method": {"name": "mcl"}}).method
    assert label_free.deviations() == ["head: mlp (official: linear)", "temperature: 0.2 (official: 0.07)"]
    supervised = build_config({"method": {"name": "mcl", "mode": "supervised", "queue_size": 10}}).method
    assert supervised.deviations() == []  # the supervised defaults are the official CIFAR values; a queue is not used
    assert build_config({"method": {"name": "mcl", "preset": "official"}}).method.effective("temperature") == 0.07
    # the official supervised code trains on padded crops and flips with SGD-Nesterov: another view or optimiser is a
    # recorded departure
    moco_views = build_config({"method": {"name": "mcl", "mode": "supervised"}})
    assert MCL.deviations(moco_views) == ["aug.recipe: moco_v2 (official: cifar_basic)", *OFFICIAL_OPTIM_DEPARTURES]
    official = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "warmup_epochs": 0}
    assert MCL.deviations(build_config({"method": {"name": "mcl", "mode": "supervised"}, "aug": {"recipe": "cifar_basic"}, "optim": official})) == []
    adam = build_config(
        {"method": {"name": "mcl", "mode": "supervised"}, "aug": {"recipe": "cifar_basic"}, "optim": {**official, "optimizer": "adam"}}
    )
    assert MCL.deviations(adam) == ["optim.optimizer: adam (official: sgd)"]


def test_supervised_mode_on_unlabelled_images_is_a_one_line_error(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    from conftest import DEMO_DATA

    for i, path in enumerate(sorted((DEMO_DATA / "train").rglob("*.*"))[:20]):
        (flat / f"{i}{path.suffix}").write_bytes(path.read_bytes())
    config = tiny_config(tmp_path, data={"train": str(flat), "train_subset": None})
    config["method"] = {"name": "mcl", "mode": "supervised"}
    with pytest.raises(ConfigError, match="mode=supervised needs labelled training images"):
        distill(config, quiet=True)


@pytest.fixture(scope="module")
def supervised_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mcl")
    config = tiny_config(tmp_path, run={"name": "mcl"}, aug={"recipe": "cifar_basic"}, eval={"random_init": True}, trainer={"epochs": 2})
    config["method"] = {"name": "mcl", "mode": "supervised"}
    return tmp_path / "runs" / "mcl", distill(config, quiet=True)


def test_a_supervised_cohort_trains_end_to_end_with_a_row_per_member_and_the_ensemble(supervised_run):
    run, results = supervised_run
    assert list(results["knn"]) == ["random_init", "random_init_peer1", "student", "student_peer1", "student_ensemble"]
    for label in ("student", "student_peer1"):
        assert 0 <= results["knn"][label]["classifier"]["top1"] <= 100
    assert "classifier" not in results["knn"]["student_ensemble"] and "classifier" not in results["knn"]["random_init"]
    # the tiny config trains with ssdistill's optimiser defaults, not the official CIFAR recipe: each is recorded
    assert results["deviations"] == OFFICIAL_OPTIM_DEPARTURES
    from ssdistill.eval.tables import format_summary

    summary = format_summary(results)
    assert "classifier top-1" in summary and "ensemble of the 2 members" in summary


def test_each_member_of_the_cohort_exports(supervised_run):
    run, _ = supervised_run
    written = export_run(run, member="peer1")
    config = json.loads(written["config"].read_text())
    assert written["config"].parent == run / "export" / "peer1" and config["ssdistill"]["member"] == "peer1"


def test_ssdistill_eval_scores_the_members_classifiers_again(supervised_run):
    """`ssdistill eval` rebuilds each member's classifier from the checkpoint and scores it: the same top-1 as the run."""
    from ssdistill.api import evaluate

    run, results = supervised_run
    again = evaluate(run, full=False, num_workers=0)["knn"]
    for label in ("student", "student_peer1"):
        assert again[label]["classifier"]["top1"] == results["knn"][label]["classifier"]["top1"]


def test_classifiers_are_not_scored_against_a_memory_of_other_classes(supervised_run, tmp_path):
    """The members' classifiers output data.train's class ids: with a k-NN memory (and val) of other classes, every
    evaluation reads val in the memory's ids, so the classifiers are left out rather than scored in the wrong ids."""
    from ssdistill.api import evaluate

    from conftest import DEMO_DATA

    run, _ = supervised_run
    for split in ("train", "val"):
        for folder in sorted(p for p in (DEMO_DATA / split).iterdir() if p.is_dir())[1:]:
            (tmp_path / split).mkdir(exist_ok=True)
            (tmp_path / split / folder.name).symlink_to(folder)
    knn = evaluate(run, train=str(tmp_path / "train"), val=str(tmp_path / "val"), full=False, num_workers=0)["knn"]
    assert all("classifier" not in row for row in knn.values()) and "student" in knn
