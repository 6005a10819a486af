"""Benchmark datasets, unpacked from ../shared/data on first use (docs/benchmarks.md).

The smoke tier uses a fixed, class-balanced CIFAR-10 slice (the first N images of every class of the JPEG copy),
extracted straight from the archive: seconds, no full unpack.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CIFAR10_ARCHIVE = SHARED_DATA / "cifar10_jpeg.tar.gz"


@contextmanager
def _staged_folder(dest: Path):
    """Yields a temporary sibling of ``dest``, renamed to ``dest`` when the block finishes, deleted when it fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        yield staging
        try:
            staging.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another process wrote the same folder first: keep its copy
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def cifar10_slice(per_class: dict[str, int], dest: Path | None = None, archive: Path = CIFAR10_ARCHIVE) -> Path:
    """Folder with ``split/<class>/NNNN.jpg`` for the first ``per_class[split]`` images of each class.

    The folder is written once (into a temporary sibling, then renamed) and reused afterwards.
    """
    name = "cifar10-" + "-".join(f"{split}{n}" for split, n in sorted(per_class.items()))
    dest = Path(dest) if dest is not None else REPO / ".data" / "smoke" / name
    if dest.is_dir():
        return dest
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} not found: the benchmarks need ../shared/data next to the repository")
    with _staged_folder(dest) as staging, tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            stem = Path(parts[2]).stem
            if stem.isdigit() and int(stem) < per_class[parts[0]]:
                target = staging.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
    return dest


FULL_DATASETS = {  # benchmark -> (archive under ../shared/data, folder under .data/ that the recipes read)
    "q1": ("imagenette2_224_jpeg.tar.gz", "imagenette2_224"),
    "q2": ("cifar10_jpeg.tar.gz", "cifar10"),
}


def unpack_benchmark_data(bench: str, data_root: Path = REPO / ".data", shared_data: Path = SHARED_DATA) -> Path:
    """The benchmark's full dataset under ``data_root`` (what ``make data`` does), unpacked once, atomically."""
    archive_name, folder = FULL_DATASETS[bench]
    dest = Path(data_root) / folder
    if dest.is_dir():
        return dest
    archive = Path(shared_data) / archive_name
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} not found: the {bench} benchmark needs ../shared/data next to the repository")
    with _staged_folder(dest) as staging, tarfile.open(archive, "r:gz") as tar:
        tar.extractall(staging, filter="data")
    return dest


def task_folders(source: Path, dest: Path, tasks: dict[str, list[int]]) -> Path:
    """Q3's tasks: ``dest/<task>/<split>/<class>`` symlinks to the class folders of ``source/<split>/`` (every split
    present), task ``t`` holding the classes at the positions ``tasks[t]`` of the sorted class names; plus
    ``dest/union/<split>/<class>`` with every class of any task (for the rows that read one training folder)."""
    if dest.is_dir():
        return dest
    splits = sorted(p.name for p in Path(source).iterdir() if p.is_dir())
    with _staged_folder(dest) as staging:
        for split in splits:
            classes = sorted(p.name for p in (Path(source) / split).iterdir() if p.is_dir())
            for task, positions in tasks.items():
                for position in positions:
                    for group in (task, "union"):
                        link = staging / group / split / classes[position]
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.symlink_to((Path(source) / split / classes[position]).resolve())
    return dest


Q3_TASKS = {"a": [0, 1, 2, 3, 4], "b": [5, 6, 7, 8, 9]}  # Imagenette / CIFAR-10 classes 0-4 and 5-9
Q3C_IMAGES = {"train": 1000, "test": 1000}  # the CIFAR-10 variant of Q3: the first 1,000 images of every class


def q3_data(bench: str, data_root: Path = REPO / ".data") -> Path:
    """The two-task folders of Q3 (Imagenette) or Q3C (its CIFAR-10 variant) under ``data_root/q3`` / ``q3c``."""
    if bench == "q3":
        return task_folders(unpack_benchmark_data("q1", data_root), Path(data_root) / "q3", Q3_TASKS)
    return task_folders(cifar10_slice(Q3C_IMAGES), Path(data_root) / "q3c", Q3_TASKS)


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def _idx(path: Path):
    """The array in an IDX file (gzipped): unsigned bytes, shape from its header."""
    import numpy as np

    data = gzip.decompress(Path(path).read_bytes())
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise SystemExit(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist_folders(per_class: dict[str, int], dest: Path | None = None, source: Path = FASHION_MNIST) -> Path:
    """``dest/<split>/<class>/NNNNN.png``: the first ``per_class[split]`` images of every class of Fashion-MNIST's
    ``train`` and ``test`` splits (28 px grayscale, written as RGB PNG), read from Debian's package; written once."""
    from PIL import Image

    name = "fashion-mnist-" + "-".join(f"{split}{n}" for split, n in sorted(per_class.items()))
    dest = Path(dest) if dest is not None else REPO / ".data" / name
    if dest.is_dir():
        return dest
    files = {"train": "train", "test": "t10k"}
    if not (Path(source) / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"Fashion-MNIST not found in {source}: apt-get install dataset-fashion-mnist")
    with _staged_folder(dest) as staging:
        for split, n in per_class.items():
            images = _idx(Path(source) / f"{files[split]}-images-idx3-ubyte.gz")
            labels = _idx(Path(source) / f"{files[split]}-labels-idx1-ubyte.gz")
            if len(images) != len(labels):
                raise SystemExit(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
            for label, folder in enumerate(FASHION_CLASSES):
                (staging / split / folder).mkdir(parents=True)
                for index in [i for i in range(len(labels)) if labels[i] == label][:n]:
                    Image.fromarray(images[index]).convert("RGB").save(staging / split / folder / f"{index:05d}.png")
    return dest
