"""Data beyond folders: a text file listing image paths, and WebDataset tar shards (``wds:``) made from the demo data
with webdataset's own writer. Both give the folder's images and labels in a fixed order, train to the folder's k-NN,
and fingerprint their content, not their location."""

import shutil

import numpy as np
import pytest

from conftest import DEMO_DATA
from integration.common import tiny_config
from ssdistill import distill
from ssdistill.data.datasets import FolderImages, ListImages, ShardImages, open_images
from ssdistill.errors import DataError


def write_shards(folder: FolderImages, out, per_shard: int, name: str) -> str:
    """WebDataset shards of ``folder`` in its order: <key>.jpg (the file's bytes) and <key>.cls (its class)."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / f"{name}-%04d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i, path in enumerate(folder.paths):
            sink.write({"__key__": f"{folder.classes[folder.labels[i]]}_{path.stem}", "jpg": path.read_bytes(), "cls": folder.labels[i]})
    shards = sorted(out.glob(f"{name}-*.tar"))
    return f"wds:{out}/{name}-{{0000..{len(shards) - 1:04d}}}.tar"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    train, val = FolderImages(DEMO_DATA / "train"), FolderImages(DEMO_DATA / "val")
    return {"train": write_shards(train, root, 300, "train"), "val": write_shards(val, root, 1000, "val"), "root": root}


def test_shards_give_the_folder_images_labels_and_a_location_free_fingerprint(shards, tmp_path):
    folder, source = FolderImages(DEMO_DATA / "train"), open_images(shards["train"])
    assert isinstance(source, ShardImages) and len(source.shards) == 4  # 1,000 images, 300 a shard
    assert len(source) == len(folder) and source.labels == folder.labels
    for i in (0, 299, 300, 999):  # across shard boundaries: the same pixels as the folder's file
        assert np.array_equal(np.asarray(source.load(i)), np.asarray(folder.load(i)))
        assert source.size(i) == folder.size(i)
    assert source.keys[0] == f"{folder.classes[0]}_{folder.paths[0].stem}"
    moved = tmp_path / "elsewhere"
    shutil.copytree(shards["root"], moved)
    assert open_images(shards["train"].replace(str(shards["root"]), str(moved))).fingerprint() == source.fingerprint()
    assert source.fingerprint() != folder.fingerprint()


def test_a_path_list_gives_the_listed_images_with_their_classes(tmp_path):
    folder = FolderImages(DEMO_DATA / "val")
    listing = tmp_path / "val.txt"
    lines = ["# demo val"] + [f"{p}\t{folder.classes[c]}" for p, c in zip(folder.paths, folder.labels)]
    listing.write_text("\n".join(lines) + "\n")
    source = open_images(str(listing))
    assert isinstance(source, ListImages) and len(source) == len(folder) and source.labels == folder.labels
    assert source.classes == folder.classes
    relative = tmp_path / "rel.txt"  # unlabelled, relative to the list's folder
    (tmp_path / "img").mkdir()
    shutil.copy(folder.paths[0], tmp_path / "img" / "a.jpg")
    relative.write_text("img/a.jpg\n")
    assert open_images(str(relative)).labels is None and np.array_equal(np.asarray(open_images(str(relative)).load(0)), np.asarray(folder.load(0)))


def test_bad_lists_and_shards_are_refused_in_one_line(tmp_path):
    listing = tmp_path / "bad.txt"
    listing.write_text("img/nowhere.jpg\n")
    with pytest.raises(DataError, match=r"bad.txt line 1: img/nowhere.jpg not found"):
        open_images(str(listing))
    folder = FolderImages(DEMO_DATA / "val")
    listing.write_text(f"{folder.paths[0]}\tcat\n{folder.paths[1]}\n")
    with pytest.raises(DataError, match="some lines name a class and some do not"):
        open_images(str(listing))
    with pytest.raises(DataError, match=r"shard .*missing-0000.tar not found; give local .tar shards"):
        open_images(f"wds:{tmp_path}/missing-{{0000..0001}}.tar")


def test_training_on_shards_and_on_a_list_matches_the_folder(shards, tmp_path):
    """Same images in the same order, same seed: the folder run, the WebDataset run (two loader workers reading the
    shards in place) and the list run train the same student."""
    folder = FolderImages(DEMO_DATA / "train")
    listing = tmp_path / "train.txt"
    listing.write_text("\n".join(f"{p}\t{folder.classes[c]}" for p, c in zip(folder.paths, folder.labels)) + "\n")
    import torch

    scores, students = {}, {}
    for name, train, val, workers in (
        ("folder", str(DEMO_DATA / "train"), str(DEMO_DATA / "val"), 0),
        ("wds", shards["train"], shards["val"], 2),
        ("list", str(listing), str(DEMO_DATA / "val"), 0),
    ):
        # one teacher weights file for the three runs (tiny_config writes it once under tmp_path)
        config = tiny_config(tmp_path, data={"train": train, "val": val, "num_workers": workers}, trainer={"epochs": 2}, run={"name": name})
        results = distill(config, quiet=True)
        scores[name] = results["knn"]["student"]["top1"]
        assert results["data"]["train"] == train and results["data"]["train_size"] == 64
        state = torch.load(tmp_path / "runs" / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        students[name] = {k: v for k, v in state.items() if k.startswith("student.")}
    for name in ("wds", "list"):  # the same student, weight for weight, and so the same k-NN
        assert students[name].keys() == students["folder"].keys()
        assert all(torch.equal(students[name][k], students["folder"][k]) for k in students["folder"]), name
        assert scores[name] == scores["folder"]
