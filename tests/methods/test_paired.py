"""methods/paired.py: ``teacher_view`` decoded once into a ``Pairing``, from which the teacher need, the dataset's views,
the student's images and the teacher's target of a batch all follow."""

import torch
from torch.nn import functional as F

from ssdistill.cache.signals import TableSignal
from ssdistill.engine.contract import TeacherNeed
from ssdistill.engine.provider import TeacherProvider
from ssdistill.methods.paired import paired_need
from ssdistill.recipe import build_config
from ssdistill.runs.assemble import train_source

from integration.common import tiny_config


class _Online:
    """An online signal: the row sums of the images it is given."""

    online, batch_view, dim = True, None, 3

    def __call__(self, index, images):
        return images.sum(dim=(2, 3))


def test_each_teacher_view_decodes_to_its_need_views_images_and_target(tmp_path):
    configs = {
        view: build_config(tiny_config(tmp_path, method={"name": "feature", "teacher_view": view, "bank_repeats": 3}, teacher={"resolution": 48}))
        for view in ("original", "same", "bank")
    }
    needs = {view: paired_need(cfg.method, "t") for view, cfg in configs.items()}
    assert needs == {"original": TeacherNeed("original", "t"), "same": TeacherNeed("augmented", "t"), "bank": TeacherNeed("bank", "t", repeats=3)}
    assert [view for view, cfg in configs.items() if cfg.method.pairing.shared] == ["same"]
    assert {view: cfg.method.inactive() & {"bank_repeats"} for view, cfg in configs.items()} == {
        "original": {"bank_repeats"},
        "same": {"bank_repeats"},
        "bank": set(),
    }
    ctx = TeacherProvider(configs["same"], train_source(configs["same"]))
    views = {view: cfg.method.pairing.views(cfg, ctx) for view, cfg in configs.items()}
    assert {view: {name: v.resolution for name, v in found.items()} for view, found in views.items()} == {
        "original": {"student": 32},
        "same": {"shared": 48},
        "bank": {},
    }  # the shared crop at the teacher's resolution

    shared, own = torch.rand(4, 3, 48, 48), torch.rand(4, 3, 32, 32)
    same = configs["same"].method.pairing
    batch = {"index": torch.arange(4), "views": {"shared": shared}}
    resized = F.interpolate(shared, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(same.student_images(batch, 32), resized)
    assert torch.equal(same.target(batch, _Online()), shared.sum(dim=(2, 3)))  # online on the very crop
    table = TableSignal(torch.arange(20.0).reshape(10, 2), "fp", index_key="bank_row")
    bank = configs["bank"].method.pairing
    batch = {"index": torch.arange(4), "bank_row": torch.tensor([9, 0, 3, 3]), "views": {"student": own}}
    assert torch.equal(bank.student_images(batch, 32), own)
    assert torch.equal(bank.target(batch, table), torch.tensor([[18.0, 19.0], [0.0, 1.0], [6.0, 7.0], [6.0, 7.0]]))
