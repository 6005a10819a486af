"""Benchmark datasets, unpacked from ../shared/data on first use (BENCHMARKS.md).

The smoke tier uses a fixed, class-balanced CIFAR-10 slice (the first N images of every class of the JPEG copy),
extracted straight from the archive: seconds, no full unpack.
"""

from __future__ import annotations

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
