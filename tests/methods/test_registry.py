"""Every registered method, from its default config, through the real run assembly on tiny data: the teacher
provider fulfils its needs, its dataset yields the batch layout it declares, and one training step on a batch of
that layout (and on a real collated batch) gives a finite loss whose gradient reaches the student. A new method is
checked here without new test code."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssdistill.engine.datasets import layout
from ssdistill.methods.registry import METHODS
from ssdistill.recipe import build_config

from integration.common import assembled_run, cka_tasks, tiny_config


def _assembled(tmp_path, name):
    raw = tiny_config(tmp_path)
    raw["method"] = {"name": name}
    if name == "rob":  # its default k-means projection has more columns (1,024) than the 64 tiny training images
        raw["method"]["projection_dim"] = 16
    if name == "cka":  # a method whose data are its tasks: two folders, two teachers
        raw.pop("teacher")
        raw.update({section: {**raw.get(section, {}), **values} for section, values in cka_tasks(tmp_path).items()})
    cfg = build_config(raw)
    run = assembled_run(cfg)
    return cfg, METHODS[name], run, run.prepared.dataset, run.module


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_one_step_on_the_batch_it_describes(tmp_path, name):
    cfg, method, run, dataset, module = _assembled(tmp_path, name)
    described = layout(method, cfg, run.ctx, run.fulfilment)
    item = dataset[0]
    assert set(item["views"]) == set(described.views), "the dataset's views are the declared ones"
    for view, resolution in described.views.items():
        assert tuple(item["views"][view].shape) == (3, resolution, resolution)
    assert set(described.keys) <= set(item) and {"index", "label"} <= set(item)
    batches = [described.example(8, len(dataset)), next(iter(DataLoader(dataset, batch_size=8, shuffle=False)))]
    for batch in batches:
        module.zero_grad(set_to_none=True)
        loss = module.training_step(batch, 0)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        assert module.students(), f"{name}: no student members"
        for member, student in module.students().items():
            grads = [p.grad for p in student.parameters() if p.grad is not None]
            assert grads and any(g.abs().sum() > 0 for g in grads), f"{name}: no gradient reached the student '{member}'"
        module.after_optimiser_step()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_declares_its_teachers_by_name(tmp_path, name):
    cfg, method, run, _, module = _assembled(tmp_path, name)
    needs = method.teacher_needs(cfg)
    assert set(module.signals) == set(needs)
    assert all((need.teacher or cfg.primary_teacher) in cfg.teachers for need in needs.values())
    records = run.fulfilment.records
    assert set(records) == set(needs) and all(len(r["fingerprint"]) == 16 for r in records.values())
    assert module.member_names == list(method.student_members(cfg)) and module.member_names
