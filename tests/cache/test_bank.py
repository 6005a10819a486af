import json

import numpy as np
import torch

from ssdistill import distill
from ssdistill.cache.bank import cached_teacher_bank
from ssdistill.config import AugConfig, TeacherConfig
from ssdistill.data.datasets import open_images, seeded_subset
from ssdistill.data.replay import AugParams, render
from ssdistill.models.teachers import build_teacher

from integration.common import tiny_config


def test_bank_rows_are_the_teacher_on_the_replayed_views(tmp_path, demo_data):
    config = tiny_config(tmp_path)
    teacher = build_teacher(TeacherConfig(**config["teacher"]))
    source = seeded_subset(open_images(str(demo_data / "train")), 10, seed=0)
    table, params = cached_teacher_bank(teacher, source, "t", AugConfig(), 3, 0, 8, 0, "cpu", str(tmp_path / "c"), "float32")
    assert table.shape == (30, teacher.dim) and params.shape[0] == 30
    for row in (0, 4, 29):
        view = render(source.load(row // 3), AugParams.from_row(params[row]), teacher.preprocess.resolution)
        assert torch.allclose(table[row], teacher(view[None])[0], atol=1e-4)
    assert len({tuple(p) for p in params}) == 30  # every view has its own augmentation
    again, params_again = cached_teacher_bank(teacher, source, "t", AugConfig(), 3, 0, 8, 0, "cpu", str(tmp_path / "c"), "float32")
    assert torch.equal(again, table) and np.array_equal(params_again, params)


def test_a_bank_run_trains_and_is_flagged_as_an_approximation(tmp_path):
    results = distill(tiny_config(tmp_path, method={"teacher_view": "bank", "bank_repeats": 2}, trainer={"epochs": 1}), quiet=True)
    assert results["approximations"] == ["teacher_bank(2)"] and results["steps"] == 4
    saved = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())
    assert saved["approximations"] == ["teacher_bank(2)"]


def test_a_teacher_giving_nan_stops_the_fill_with_the_rows_named():
    import pytest as _pytest

    from ssdistill.cache.fill import teacher_compute
    from ssdistill.errors import DataError

    class NaNTeacher:
        def to(self, device):
            return self

        def __call__(self, images):
            out = torch.ones(len(images), 2)
            out[images[:, 0, 0, 0] > 0.5] = float("nan")
            return out

    images = [torch.zeros(3, 2, 2), torch.ones(3, 2, 2), torch.zeros(3, 2, 2)]
    compute = teacher_compute(NaNTeacher(), images, batch_size=2, num_workers=0, device="cpu", desc="toy")
    with _pytest.raises(DataError, match=r"non-finite outputs for rows \[1\] of toy"):
        list(compute([0, 1, 2]))
