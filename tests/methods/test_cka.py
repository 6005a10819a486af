"""CKA (docs/methods/cka.md, the project's reconstruction): tasks as data (the union of the tasks' folders, every image tagged with
its task through shuffling and DDP sharding), teacher task heads (k-means reproducible from a seed and cached, or the
teacher's classifier restricted to a class subset), which parameters each term moves, config errors, and a run end to
end with the per-task evaluation in results.json, the summary and the report."""

import json

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ssdistill import distill
from ssdistill.engine.contract import Fulfilment
from ssdistill.engine.datasets import build_dataset
from ssdistill.engine.provider import TeacherProvider
from ssdistill.errors import ConfigError
from ssdistill.methods.cka import CKA
from ssdistill.recipe import build_config
from ssdistill.runs.assemble import train_source

from integration.common import assembled, cka_tasks, tiny_config


def _raw(tmp_path, heads=("kmeans", "classifier"), **method):
    raw = tiny_config(tmp_path)
    raw.pop("teacher")
    for section, values in cka_tasks(tmp_path, heads).items():
        raw[section] = {**raw.get(section, {}), **values}
    raw["method"] = {**cka_tasks(tmp_path, heads)["method"], **method}
    return raw


def _assembled(tmp_path, **method):
    cfg = build_config(_raw(tmp_path, **method))
    return (cfg, *assembled(cfg))


def test_the_training_set_is_the_union_of_the_tasks_and_every_image_keeps_its_task(tmp_path):
    cfg, ctx, prepared, _ = _assembled(tmp_path)
    parts = ctx.source.parts
    assert len(ctx.source) == 64 and set(parts) == {0, 1}  # train_subset of the 1,000-image union
    # the task of an image is the folder it comes from: task a holds the first five classes of the demo data
    assert all((label < 5) == (part == 0) for label, part in zip(ctx.source.labels, parts))
    for batch in DataLoader(prepared.dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)):
        assert batch["task"].tolist() == [parts[i] for i in batch["index"].tolist()]
    for rank in (0, 1):  # DDP shards by index: every shard keeps each image's task
        sampler = DistributedSampler(prepared.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for batch in DataLoader(prepared.dataset, batch_size=8, sampler=sampler):
            assert batch["task"].tolist() == [parts[i] for i in batch["index"].tolist()]


def test_kmeans_heads_are_reproducible_from_a_seed_and_cached(tmp_path):
    cfg, ctx, prepared, _ = _assembled(tmp_path, kmeans_restarts=3)
    cached = sorted(ctx.entry("a").dir.glob("kmeans-k5-seed0-r3-*.npz"))
    assert len(cached) == 1  # fitted once on task a's images (seed method.kmeans_seed, not the run's), stored beside the entry
    logits = prepared.tensors["logits_0"]
    assert logits.shape == (64, 5) and torch.equal(prepared.tensors["pseudo_0"], logits.argmax(1))
    assert logits.abs().max() <= 1 / cfg.method.kmeans_temperature + 1e-4  # cosine / τ_km
    again = build_dataset(CKA, cfg, TeacherProvider(cfg, train_source(cfg)), Fulfilment())  # read back from the cache
    assert torch.equal(again.tensors["logits_0"], logits)
    cached[0].unlink()  # refitted from scratch: the same centroids
    assert torch.equal(build_dataset(CKA, cfg, TeacherProvider(cfg, train_source(cfg)), Fulfilment()).tensors["logits_0"], logits)
    other = build_config(_raw(tmp_path, kmeans_restarts=3, kmeans_seed=4))
    refit = build_dataset(CKA, other, TeacherProvider(other, train_source(other)), Fulfilment()).tensors["logits_0"]
    assert len(sorted(ctx.entry("a").dir.glob("kmeans-k5-seed4-r3-*.npz"))) == 1 and not torch.equal(refit, logits)


def test_a_classifier_head_is_the_teacher_s_logits_restricted_to_the_task_classes(tmp_path):
    """The task logits are the teacher's own logits on the task's classes; with the cache on they are its classifier
    applied to the pooled entry (one fill serves the k-means heads, the classifier heads and feature rows)."""
    from ssdistill.cache.store import cache_root

    cfg, ctx, prepared, _ = _assembled(tmp_path)
    logits = ctx.features("b", None, None, tap="logits")
    assert torch.allclose(prepared.tensors["logits_1"], logits[:, [3, 1, 4, 5, 9]].float())
    teacher = ctx.teacher("b", "logits")
    view = teacher.original_view()
    for index in (0, 17, len(ctx.source) - 1):
        with torch.no_grad():
            online = teacher(view(ctx.source.load(index)).unsqueeze(0))[0]
        assert torch.allclose(logits[index].float(), online, atol=2e-2, rtol=1e-2)  # the pooled entry is stored in fp16
    taps = {json.loads(path.read_text())["key"]["tap"] for path in cache_root().rglob("manifest.json")}
    assert "pooled" in taps and "logits" not in taps
    bad = _raw(tmp_path)
    bad["method"]["tasks"]["b"]["classes"] = [1, 5000]
    cfg_bad = build_config(bad)
    with pytest.raises(ConfigError, match="exceed teacher b's 1000 classes"):
        build_dataset(CKA, cfg_bad, TeacherProvider(cfg_bad, train_source(cfg_bad)), Fulfilment())


def test_each_term_moves_what_it_should(tmp_path):
    """A step gives every term; the alignment term moves the student, its adapter, the shared extractor and the
    teachers' adapters, and nothing of the task heads; the teachers themselves are not parameters of the module."""
    cfg, ctx, prepared, module = _assembled(tmp_path, weights={"rec": 1.0})
    batch = next(iter(DataLoader(prepared.dataset, batch_size=16, shuffle=False)))
    loss = module.training_step(batch, 0)
    assert set(module.terms) >= {"task", "intra", "inter", "align", "rec", "collapse_a", "collapse_b"}
    assert torch.isfinite(loss) and 0 <= module.terms["collapse_a"] <= 1
    module.zero_grad(set_to_none=True)
    module.terms["align"].backward()
    moved = {name.split(".")[0] for name, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == {"student", "student_adapter", "teacher_adapters", "extractor"}
    assert not any("teacher" in name and "adapter" not in name for name, _ in module.named_parameters())
    off = _assembled(tmp_path, weights={"inter": 0.0, "align": 0.0, "intra": 0.0})[3]
    loss = off.training_step(batch, 0)
    assert loss.item() == pytest.approx(off.terms["task"].item(), rel=1e-6) and not hasattr(off, "decoders")


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="method cka needs method.tasks"):
        train_source(build_config({"method": {"name": "cka"}}))
    raw = _raw(tmp_path)
    raw["method"]["tasks"]["a"]["teacher"] = "nobody"
    with pytest.raises(ConfigError, match="names teacher\\(s\\) nobody"):
        train_source(build_config(raw))
    with pytest.raises(ConfigError, match="number of pseudo-classes"):
        build_config({"method": {"name": "cka", "tasks": {"x": {"data": "d", "teacher": "t", "head": "kmeans", "classes": [1, 2]}}}})
    with pytest.raises(ConfigError, match="unknown loss term"):
        build_config({"method": {"name": "cka", "weights": {"kd": 1.0}}})
    with pytest.raises(ConfigError, match="no official code"):
        build_config({"method": {"name": "cka", "preset": "official"}})


def test_a_cka_run_reports_every_task(tmp_path):
    raw = _raw(tmp_path)
    raw.update(trainer={**raw["trainer"], "epochs": 1}, eval={"teacher": True, "random_init": True}, run={**raw["run"], "name": "cka"})
    results = distill(raw, quiet=True)
    assert set(results["tasks"]) == {"a", "b"} and list(results["knn"])[:2] == ["teacher_a", "teacher_b"]
    for task in results["tasks"].values():
        assert {"student_head", "teacher_head", "student_kmeans", "random_init_kmeans", "student_knn", "pseudo_label_purity"} <= set(task)
        assert 0 <= task["student_knn"]["top1"] <= 100
        assert 0 <= task["student_head"]["accuracy"] <= 100 and -100 <= task["student_head"]["ari"] <= 100
    saved = json.loads((tmp_path / "runs" / "cka" / "results.json").read_text())
    assert saved["tasks"] == results["tasks"] and saved["data"]["val"] == "cka evaluation split"
    from ssdistill.eval.tables import format_summary
    from ssdistill.report.html import build_report

    assert "per task, on its evaluation split" in format_summary(results)
    assert "<h2>Tasks: cka</h2>" in build_report([tmp_path / "runs" / "cka"]).read_text()


def test_teachers_must_be_precomputed(tmp_path):
    raw = _raw(tmp_path)
    raw["teachers"]["b"]["precompute"] = False
    cfg = build_config(raw)
    ctx = TeacherProvider(cfg, train_source(cfg))
    with pytest.raises(ConfigError, match="set teachers.b.precompute=true"):
        build_dataset(CKA, cfg, ctx, Fulfilment())


def test_two_unlabelled_folders_and_two_teachers_from_the_command_line(tmp_path, capsys):
    """No class folders anywhere: the run trains and says why there are no k-NN or per-task scores."""
    from ssdistill.cli import main

    from conftest import DEMO_DATA

    weights = tiny_config(tmp_path)["teacher"]["weights"]
    images = sorted((DEMO_DATA / "train").rglob("*.jpg"))
    for name, chunk in (("animals", images[:40]), ("objects", images[500:540])):
        (tmp_path / name).mkdir()
        for i, path in enumerate(chunk):
            (tmp_path / name / f"{i}.jpg").symlink_to(path)
    teacher = f"{{name: test_resnet, weights: {weights}, resolution: 32}}"
    main(
        [
            "distill",
            "method.name=cka",
            "student.arch=test_resnet",
            "student.resolution=32",
            "data.batch_size=16",
            "data.num_workers=0",
            "trainer.epochs=1",
            "trainer.progress_bar=false",
            f"run.dir={tmp_path / 'runs'}",
            "run.name=cli",
            f"teachers={{lite0: {teacher}, lite2: {teacher}}}",
            f"method.tasks={{animals: {{data: {tmp_path / 'animals'}, teacher: lite0, head: kmeans, classes: 3}}, "
            f"objects: {{data: {tmp_path / 'objects'}, teacher: lite2, head: kmeans, classes: 3}}}}",
        ]
    )
    results = json.loads((tmp_path / "runs" / "cli" / "results.json").read_text())
    assert results["knn"] is None and "data.val" in results["knn_note"]  # no task has a labelled val split
    assert results["data"]["train"].startswith("union of animals:") and results["steps"] == 5
    assert set(results["tasks"]) == {"animals", "objects"} and "pseudo_label_purity" not in results["tasks"]["animals"]
    assert "no k-NN numbers" in capsys.readouterr().out
