"""The recipe-validation benchmark (benchmarks/recipe_validation.py): Fashion-MNIST read from IDX files into image
folders, each row's config, and the table from records made by hand."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import recipe_validation as rv
from benchmarks.datasets import FASHION_CLASSES, fashion_mnist_folders


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_becomes_class_folders_of_the_first_images_of_each_class(tmp_path):
    source = tmp_path / "idx"
    source.mkdir()
    labels = np.array([3, 0, 3, 9, 0, 3, 1, 0])
    images = np.stack([np.full((28, 28), 10 * i) for i in range(len(labels))])
    for split in ("train", "t10k"):
        write_idx(source / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(source / f"{split}-labels-idx1-ubyte.gz", labels)
    folder = fashion_mnist_folders({"train": 2, "test": 1}, tmp_path / "out", source)
    dress = sorted(p.name for p in (folder / "train" / FASHION_CLASSES[3]).iterdir())
    assert dress == ["00000.png", "00002.png"]  # the first two of class 3, by their index in the file
    assert sorted(p.name for p in (folder / "test" / FASHION_CLASSES[0]).iterdir()) == ["00001.png"]
    assert not any((folder / "train" / FASHION_CLASSES[2]).iterdir())  # a class without images: an empty folder
    with Image.open(folder / "train" / FASHION_CLASSES[9] / "00003.png") as image:
        assert image.mode == "RGB" and image.size == (28, 28) and image.getpixel((5, 5)) == (30, 30, 30)
    (source / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + bytes(8)))
    with pytest.raises(SystemExit, match="not an IDX file of unsigned bytes"):
        fashion_mnist_folders({"train": 1}, tmp_path / "other", source)
    with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist_folders({"train": 1}, tmp_path / "third", tmp_path / "missing")


def test_each_row_changes_only_what_it_names(tmp_path, monkeypatch):
    from ssdistill.recipe import build_config

    monkeypatch.setitem(
        rv.DATASETS, "fake", ("fake", lambda: {"data": {"train": "t", "val": "v"}, "student": {"arch": "resnet18", "resolution": 28}})
    )
    cfgs = {row: build_config(*rv.row_config("fake", row, tmp_path)) for row in rv.ROWS}
    assert cfgs["feature"].method.relational == "none" and not cfgs["feature"].trainer.ema
    assert cfgs["recipe"].method.relational == "seed" and cfgs["recipe"].trainer.ema_horizon == 0.05
    assert (
        (cfgs["recipe"].aug.crop_scale_min, cfgs["recipe"].aug.blur_p)
        == (0.5, 0.0)
        == (cfgs["feature"].aug.crop_scale_min, cfgs["feature"].aug.blur_p)
    )
    assert (cfgs["recipe_typed"].aug.crop_scale_min, cfgs["recipe_typed"].aug.blur_p) == (0.2, 0.5)  # the defaults
    assert (cfgs["recipe_noblur"].aug.crop_scale_min, cfgs["recipe_noblur"].aug.blur_p) == (0.2, 0.0)
    assert cfgs["recipe_ema999"].trainer.ema_momentum == 0.999 and cfgs["recipe_ema999"].trainer.ema_horizon is None
    assert {c.trainer.epochs for c in cfgs.values()} == {60} and {c.student.resolution for c in cfgs.values()} == {28}
    assert cfgs["recipe"].run.name == "validation-fake-recipe" and cfgs["recipe"].run.dir == str(tmp_path)


def test_the_table_gives_each_rows_student_and_ema_copy(tmp_path, monkeypatch):
    monkeypatch.setitem(rv.DATASETS, "fake", ("Fake data", None))

    def record(k20, ema=None, momentum=None):
        knn = {"student": {"top1": k20}, "teacher": {"top1": 80.0}, "random_init": {"top1": 10.0}}
        if ema is not None:
            knn["student_ema"] = {"top1": ema}
        return {"knn": knn, "training": {"ema_momentum": momentum}, "timing": {"train_seconds": 300.0}}

    (tmp_path / "fake").mkdir()
    for row, rec in {"feature": record(40.0), "recipe": record(44.0, 44.5, 0.9893), "recipe_ema999": record(44.0, 36.0, 0.999)}.items():
        (tmp_path / "fake" / f"{row}-cpu.json").write_text(json.dumps(rec))
    markdown = rv.table("fake", tmp_path)
    assert "Teacher k-NN 80.0" in markdown and "random-init student 10.0" in markdown
    assert "| the recommended recipe with the Q1 config's augmentation | 44.0 | – | 55 | 44.5 | 0.9893 | 300 s |" in markdown
    assert "| 36.0 | 0.9990 |" in markdown and "as typed" not in markdown  # rows not on record are left out
    assert rv.table("nothing", tmp_path) is None
