"""The benchmarks' data (benchmarks/datasets.py: the CIFAR-10 slice, the full datasets, the two-task folders) and the
demo's blocks (benchmarks/demo.py)."""

import io
import tarfile

import pytest

from benchmarks.datasets import cifar10_slice


def test_cifar_slice_takes_the_first_images_of_every_class(tmp_path):
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, count in (("train", 5), ("test", 3)):
            for cls in ("cat", "dog"):
                for i in range(count):
                    data = f"{split}/{cls}/{i}".encode()
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    dest = cifar10_slice({"train": 2, "test": 1}, dest=tmp_path / "slice", archive=archive)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.jpg"))
    assert files == ["test/cat/0000.jpg", "test/dog/0000.jpg", "train/cat/0000.jpg", "train/cat/0001.jpg", "train/dog/0000.jpg", "train/dog/0001.jpg"]
    assert (dest / "train" / "dog" / "0001.jpg").read_bytes() == b"train/dog/1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    archive.unlink()
    assert cifar10_slice({"train": 2, "test": 1}, dest=tmp_path / "slice", archive=archive) == dest  # reused
    with pytest.raises(FileNotFoundError, match="need ../shared/data next to the repository"):
        cifar10_slice({"train": 2}, dest=tmp_path / "other", archive=archive)


def test_full_benchmark_data_is_unpacked_once(tmp_path):
    from benchmarks.datasets import unpack_benchmark_data

    shared = tmp_path / "shared"
    shared.mkdir()
    with tarfile.open(shared / "cifar10_jpeg.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("train/cat/0000.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"jpg"))
    dest = unpack_benchmark_data("q2", tmp_path / "data", shared)
    assert dest == tmp_path / "data" / "cifar10" and (dest / "train" / "cat" / "0000.jpg").read_bytes() == b"jpg"
    (shared / "cifar10_jpeg.tar.gz").unlink()
    assert unpack_benchmark_data("q2", tmp_path / "data", shared) == dest  # already there: the archive is not read
    with pytest.raises(FileNotFoundError, match="the q1 benchmark needs ../shared/data"):
        unpack_benchmark_data("q1", tmp_path / "data", shared)


def test_demo_blocks_are_rendered_from_the_demo_record(tmp_path):
    """The README's demo figures are the demo run's record, rendered (python -m benchmarks.demo --readme)."""
    from benchmarks import demo

    row = lambda top1, speed: {"top1": top1, "params_m": 1.52, "images_per_s": speed}  # noqa: E731
    record = {
        "created": "2026-12-01T10:00:00+00:00",
        "epochs": 20,
        "steps": 300,
        "retained_pct": 47.5,
        "student": {"resolution": 96},
        "data": {"train_size": 1000},
        "protocol": {"knn": {"k": 20, "temperature": 0.07}},
        "knn": {"teacher": row(94.0, 40.0), "random_init": row(21.0, 2400.0), "student": row(44.65, 2200.0)},
        "timing": {"train_seconds": 91.4},
        "versions": {"ssdistill": "0.1.0", "torch": "2.x"},
        "machine": {"cpus": 2, "cpu_model": "Some CPU", "torch_cpu_capability": "AVX2"},
        "printed": "model ...\nrun directory: runs/demo",
    }
    block = demo.results_block(record)
    assert "| **distilled student** (feature distillation, 20 epochs, 91 s of training) | **44.6 %** | 1.52 M | 2,200 |" in block
    assert "keeps 47.5 % of the teacher's k-NN accuracy after 300 optimisation steps on 1,000 images" in block
    assert "about 55 times faster" in block and "2 cores of an Some CPU" in block
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- demo:results -->\nold\n<!-- /demo:results -->\nb\n<!-- demo:output -->\nx\n<!-- /demo:output -->\n")
    demo.write(record, readme)
    text = readme.read_text()
    assert "old" not in text and "**44.6 %**" in text and "```\nmodel ...\nrun directory: runs/demo\n```" in text


def test_task_folders_link_each_task_s_classes_and_their_union(tmp_path):
    from benchmarks.datasets import task_folders

    for split in ("train", "test"):
        for c in ("c0", "c1", "c2", "c3"):
            (tmp_path / "src" / split / c).mkdir(parents=True)
            (tmp_path / "src" / split / c / "1.jpg").write_bytes(b"x")
    out = task_folders(tmp_path / "src", tmp_path / "tasks", {"a": [0, 1], "b": [2, 3]})
    assert sorted(p.name for p in (out / "a" / "test").iterdir()) == ["c0", "c1"]
    assert sorted(p.name for p in (out / "union" / "train").iterdir()) == ["c0", "c1", "c2", "c3"]
    assert (out / "b" / "train" / "c3").resolve() == (tmp_path / "src" / "train" / "c3").resolve()
