"""Datasets that return the sample index with the views.

An *image source* gives ``len``, ``load(i) -> PIL image``, ``labels`` (None when unlabelled),
``classes`` and a ``fingerprint`` that changes when its content changes. ``IndexedViews`` wraps a
source and a dict of view recipes and yields ``{"index", "label", "views": {name: tensor}}``, so
per-sample teacher signals can be looked up by index.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Callable, Protocol

import torch
from PIL import Image
from torch.utils.data import Dataset

from ssdistill.data.images import is_image_file, keep_readable, load_rgb
from ssdistill.errors import DataError

TORCHVISION_SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
}


def lines_digest(header: bytes, lines: list[str]) -> str:
    """The fingerprint of a source from its kind header and one line per image."""
    digest = hashlib.sha1(header)
    for line in lines:
        digest.update(line.encode())
    return digest.hexdigest()[:16]


class ImageSource(Protocol):
    labels: list[int] | None
    classes: list[str]
    skipped: list  # unreadable files left out (data.skip_corrupt=true)

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def size(self, index: int) -> tuple[int, int]: ...

    def fingerprint(self) -> str: ...


class FolderImages:
    """Images under a folder. With class sub-folders (``root/<class>/*.jpg``) it is labelled like
    torchvision's ImageFolder; a flat or nested folder without that structure is unlabelled."""

    def __init__(self, root: str | Path, skip_corrupt: bool = False) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DataError(f"data path {self.root} not found; point data.train / data.val at an image folder")
        if not self.root.is_dir():
            raise DataError(f"data path {self.root} is not a folder; point it at a folder of images")
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        loose = [p for p in self.root.iterdir() if p.is_file() and is_image_file(p)]
        labelled = bool(class_dirs) and not loose and all(
            any(is_image_file(p) for p in d.rglob("*")) for d in class_dirs
        )
        if labelled:
            self.classes = [d.name for d in class_dirs]
            pairs = [(p, c) for c, d in enumerate(class_dirs) for p in sorted(d.rglob("*")) if is_image_file(p)]
            self.paths = [p for p, _ in pairs]
            self.labels: list[int] | None = [c for _, c in pairs]
        else:
            self.classes = []
            self.paths = sorted(p for p in self.root.rglob("*") if p.is_file() and is_image_file(p))
            self.labels = None
        if not self.paths:
            raise DataError(f"no images found under {self.root} (looked for {', '.join(('jpg', 'png', 'webp', '...'))})")
        self._fingerprint: str | None = None
        self._lines: list[str] | None = None
        self.skipped: list[Path] = []
        if skip_corrupt:
            good, self.skipped = keep_readable(self.paths)
            self.paths = [self.paths[i] for i in good]
            if self.labels is not None:
                self.labels = [self.labels[i] for i in good]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])

    def size(self, index: int) -> tuple[int, int]:
        """(width, height) from the file header, without decoding the pixels."""
        try:
            with Image.open(self.paths[index]) as image:
                return image.size
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {self.paths[index]} ({exc}); replace or delete it") from None

    def fingerprint_lines(self) -> tuple[bytes, list[str]]:
        """What the fingerprint digests: a kind header and one line per image, relative path and size in bytes (one
        stat per file). A union of folders digests its parts' lines one after another, so it matches the folder that
        holds the same files in the same order (``UnionImages.fingerprint``)."""
        if self._lines is None:
            self._lines = [f"{path.relative_to(self.root)}:{path.stat().st_size}\n" for path in self.paths]
        return b"", self._lines

    def fingerprint(self) -> str:
        """Relative paths and sizes of the files (done once per source)."""
        if self._fingerprint is None:
            self._fingerprint = lines_digest(*self.fingerprint_lines())
        return self._fingerprint


class ListImages:
    """Images named in a text file, one per line: ``path`` or ``path<TAB>class``; relative paths are read from the
    list file's folder, blank lines and ``#`` comments are skipped. Labelled when every line names a class (class ids
    in sorted name order, as for folders)."""

    def __init__(self, path: str | Path) -> None:
        self.list_file = Path(path).expanduser()
        try:
            lines = self.list_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read the image list {self.list_file} ({exc}); give a text file with one image path per line") from None
        entries = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, label = line.rstrip("\n").partition("\t")
            file = Path(name.strip()).expanduser()
            file = file if file.is_absolute() else self.list_file.parent / file
            if not file.is_file():
                raise DataError(f"{self.list_file} line {number}: {name.strip()} not found; fix the path (relative paths start at the list's folder)")
            entries.append((file, name.strip(), label.strip() or None))
        if not entries:
            raise DataError(f"{self.list_file} names no images; write one image path per line")
        self.paths = [file for file, _, _ in entries]
        self.names = [name for _, name, _ in entries]
        named = [label for _, _, label in entries]
        if all(named):
            self.classes = sorted(set(named))
            ids = {c: i for i, c in enumerate(self.classes)}
            self.labels: list[int] | None = [ids[label] for label in named]
        elif any(named):
            raise DataError(f"{self.list_file}: some lines name a class and some do not; give every line a class (path<TAB>class) or none")
        else:
            self.classes, self.labels = [], None
        self.skipped: list = []
        self.description = str(self.list_file)
        self._fingerprint: str | None = None
        self._lines: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])

    def size(self, index: int) -> tuple[int, int]:
        with Image.open(self.paths[index]) as image:
            return image.size

    def fingerprint_lines(self) -> tuple[bytes, list[str]]:
        """A kind header and one line per image: the path as the list writes it and the file's size."""
        if self._lines is None:
            self._lines = [f"{name}:{path.stat().st_size}\n" for name, path in zip(self.names, self.paths)]
        return b"list\n", self._lines

    def fingerprint(self) -> str:
        """The paths as the list writes them and the files' sizes (the same list and files under another root match)."""
        if self._fingerprint is None:
            self._fingerprint = lines_digest(*self.fingerprint_lines())
        return self._fingerprint


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp")
_SHARD_INDEX: dict[tuple, list[dict]] = {}  # (shard paths, sizes, mtimes) -> samples: each set of shards indexed once


class ShardImages:
    """WebDataset tar shards (``wds:/data/train-{000000..000099}.tar``, the pattern brace-expanded as webdataset does):
    each sample is the tar members that share a key (``<key>.jpg``, optionally ``<key>.cls`` with its integer class).
    The shards are indexed once (tar headers only, no image is decoded) and read in place: sample i is always the same
    key, so teacher-cache rows, banks and neighbour lists stay addressable, and every loader worker reads its images
    straight from their offsets. Keys must be unique across the shards."""

    def __init__(self, pattern: str) -> None:
        try:
            from webdataset.shardlists import expand_urls
        except ImportError:
            raise DataError("wds: shards need the webdataset package: pip install 'ssdistill[data]' (or pip install webdataset)") from None

        self.pattern = pattern
        self.shards = [Path(url).expanduser() for url in expand_urls(pattern)]
        missing = [str(s) for s in self.shards if not s.is_file()]
        if not self.shards or missing:
            raise DataError(f"wds:{pattern}: shard {missing[0] if missing else pattern} not found; give local .tar shards (brace patterns allowed)")
        stats = tuple((str(shard.resolve()), shard.stat().st_size, shard.stat().st_mtime_ns) for shard in self.shards)
        if stats not in _SHARD_INDEX:  # a split is opened several times a run (checks, monitor, evaluation): index it once
            _SHARD_INDEX[stats] = self._index(pattern)
        self.samples = _SHARD_INDEX[stats]
        if not self.samples:
            raise DataError(f"wds:{pattern} holds no images ({', '.join(IMAGE_EXTENSIONS)} members)")
        self.keys = [sample["key"] for sample in self.samples]
        if all("cls" in sample for sample in self.samples):
            self.labels: list[int] | None = [sample["cls"] for sample in self.samples]
            self.classes = [str(c) for c in range(max(self.labels) + 1)]
        else:
            self.labels, self.classes = None, []
        self.skipped: list = []
        self.description = f"wds:{pattern}"
        self._files: dict[int, int] = {}
        self._fingerprint: str | None = None

    def _index(self, pattern: str) -> list[dict]:
        """Every sample with an image: its key, shard, image member's (offset, size) and class, in shard order."""
        import tarfile

        samples: dict[str, dict] = {}
        for shard_id, shard in enumerate(self.shards):
            try:
                with tarfile.open(shard, "r:") as tar:
                    for member in tar:
                        if not member.isfile():
                            continue
                        stem = member.name.rsplit("/", 1)
                        base = stem[-1]
                        key = (stem[0] + "/" if len(stem) == 2 else "") + base.split(".", 1)[0]
                        ext = base.split(".", 1)[1].lower() if "." in base else ""
                        sample = samples.setdefault(key, {"key": key, "shard": shard_id})
                        if sample["shard"] != shard_id:
                            raise DataError(f"wds:{pattern}: key {key} appears in two shards; sample keys must be unique")
                        if ext in IMAGE_EXTENSIONS and "image" not in sample:
                            sample["image"] = (member.offset_data, member.size)
                        elif ext == "cls":
                            sample["cls"] = int(tar.extractfile(member).read().decode().strip())
            except (tarfile.TarError, OSError, ValueError) as exc:
                raise DataError(f"cannot index shard {shard} ({exc}); shards must be uncompressed tar files of WebDataset samples") from None
        return [sample for sample in samples.values() if "image" in sample]

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:  # open shard files stay in their process (each loader worker opens its own)
        return {**self.__dict__, "_files": {}}

    def _bytes(self, index: int) -> bytes:
        """The image member's bytes, read with pread: no shared file offset, so forked loader workers that inherit an
        open shard never race on a seek."""
        sample = self.samples[index]
        fd = self._files.get(sample["shard"])
        if fd is None:
            fd = self._files[sample["shard"]] = os.open(self.shards[sample["shard"]], os.O_RDONLY)
        offset, size = sample["image"]
        return os.pread(fd, size, offset)

    def load(self, index: int) -> Image.Image:
        import io

        try:
            with Image.open(io.BytesIO(self._bytes(index))) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot decode sample {self.keys[index]} of wds:{self.pattern} ({exc})") from None

    def size(self, index: int) -> tuple[int, int]:
        import io

        with Image.open(io.BytesIO(self._bytes(index))) as image:
            return image.size

    def fingerprint(self) -> str:
        """Shard names, sample keys and image sizes in bytes (the same shards under another path match)."""
        if self._fingerprint is None:
            digest = hashlib.sha1(b"wds\n")
            for sample in self.samples:
                digest.update(f"{self.shards[sample['shard']].name}:{sample['key']}:{sample['image'][1]}\n".encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint


class TorchvisionImages:
    """CIFAR-10/100 and STL-10 by name (``cifar10:train``); downloads only when asked to."""

    def __init__(self, name: str, split: str, root: str | Path, download: bool) -> None:
        import torchvision.datasets as tvd

        root = Path(root).expanduser()
        self.name, self.split = name, split
        try:
            if name == "stl10":
                self.dataset = tvd.STL10(str(root), split=split, download=download)
                targets = [int(t) for t in self.dataset.labels]
            else:
                cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
                self.dataset = cls(str(root), train=split == "train", download=download)
                targets = list(self.dataset.targets)
        except RuntimeError as exc:
            raise DataError(
                f"{name}:{split} not found under {root} ({str(exc).splitlines()[0]}); set data.download=true when online "
                f"or data.root to a folder that holds it"
            ) from None
        self.classes = list(self.dataset.classes)
        self.labels = None if all(t < 0 for t in targets) else targets
        self.skipped: list = []

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> Image.Image:
        return self.dataset[index][0].convert("RGB")

    def size(self, index: int) -> tuple[int, int]:
        return self.load(index).size

    def fingerprint(self) -> str:
        return hashlib.sha1(f"{self.name}:{self.split}:{len(self)}".encode()).hexdigest()[:16]


class SubsetImages:
    """A fixed subset of another source; positions are re-numbered 0 … n-1."""

    def __init__(self, source: ImageSource, positions: list[int]) -> None:
        self.source, self.positions = source, positions
        self.classes = source.classes
        self.skipped = getattr(source, "skipped", [])
        self.labels = None if source.labels is None else [source.labels[i] for i in positions]
        parts = getattr(source, "parts", None)
        self.parts = None if parts is None else [parts[i] for i in positions]
        self.part_names = getattr(source, "part_names", None)

    def __len__(self) -> int:
        return len(self.positions)

    def load(self, index: int) -> Image.Image:
        return self.source.load(self.positions[index])

    def size(self, index: int) -> tuple[int, int]:
        return self.source.size(self.positions[index])

    def fingerprint(self) -> str:
        digest = hashlib.sha1(self.source.fingerprint().encode())
        digest.update(",".join(map(str, self.positions)).encode())
        return digest.hexdigest()[:16]


class UnionImages:
    """Several sources one after another (CKA's tasks: the training set is the union of the tasks' data). ``parts[i]``
    is the position (in ``part_names``) of the source image i comes from; the union is labelled when every part is,
    class ids offset part by part and class names prefixed with the part's name."""

    def __init__(self, parts: dict[str, ImageSource]) -> None:
        if not parts:
            raise DataError("a union of image sources needs at least one source")
        self.part_names, self.sources = list(parts), list(parts.values())
        self.description = "union of " + ", ".join(self.part_names)  # what records call the training set
        self.starts = [0]
        for source in self.sources:
            self.starts.append(self.starts[-1] + len(source))
        self.parts = [p for p, source in enumerate(self.sources) for _ in range(len(source))]
        self.skipped = [item for source in self.sources for item in getattr(source, "skipped", [])]
        if all(source.labels is not None for source in self.sources):
            self.labels: list[int] | None = []
            self.classes: list[str] = []
            for name, source in zip(self.part_names, self.sources):
                offset = len(self.classes)
                self.labels += [offset + label for label in source.labels]
                self.classes += [f"{name}/{c}" for c in (source.classes or range(max(source.labels) + 1))]
        else:
            self.labels, self.classes = None, []

    def __len__(self) -> int:
        return self.starts[-1]

    def _locate(self, index: int) -> tuple[ImageSource, int]:
        part = self.parts[index]
        return self.sources[part], index - self.starts[part]

    def load(self, index: int) -> Image.Image:
        source, position = self._locate(index)
        return source.load(position)

    def size(self, index: int) -> tuple[int, int]:
        source, position = self._locate(index)
        return source.size(position)

    def fingerprint_lines(self) -> tuple[bytes, list[str]] | None:
        """The parts' lines one after another when every part has lines of one kind (folders, or lists), else None."""
        parts = [getattr(source, "fingerprint_lines", lambda: None)() for source in self.sources]
        if any(part is None for part in parts) or len({header for header, _ in parts}) != 1:
            return None
        return parts[0][0], [line for _, lines in parts for line in lines]

    def fingerprint(self) -> str:
        """Content, not structure: a union of folders fingerprints as the one folder holding the same files in the same
        order (the teacher cache of Imagenette's train folder serves a union of its class subsets in class order);
        other unions digest their parts' names and fingerprints."""
        lines = self.fingerprint_lines()
        if lines is not None:
            return lines_digest(*lines)
        digest = hashlib.sha1()
        for name, source in zip(self.part_names, self.sources):
            digest.update(f"{name}:{source.fingerprint()}\n".encode())
        return digest.hexdigest()[:16]


def open_images(spec: str, root: str = "~/.cache/ssdistill/datasets", download: bool = False, skip_corrupt: bool = False) -> ImageSource:
    """A folder path, a text file listing image paths (``.txt``), WebDataset shards (``wds:`` + a shard pattern), or
    ``cifar10:train`` / ``cifar100:test`` / ``stl10:unlabeled`` style names."""
    if not spec:
        raise DataError("no data given; set data.train to an image folder (for example data.train=data/imagenette_mini/train)")
    if spec.startswith("wds:"):
        return ShardImages(spec[len("wds:"):])
    if spec.endswith(".txt") and Path(spec).expanduser().is_file():
        return ListImages(spec)
    name, _, split = spec.partition(":")
    if name.lower() in TORCHVISION_SPLITS and not Path(spec).exists():
        split = split or "train"
        if split not in TORCHVISION_SPLITS[name.lower()]:
            raise DataError(f"unknown split '{split}' for {name}; choose one of {', '.join(TORCHVISION_SPLITS[name.lower()])}")
        return TorchvisionImages(name.lower(), split, root, download)
    return FolderImages(spec, skip_corrupt=skip_corrupt)


def seeded_subset(source: ImageSource, size: int | None, seed: int) -> ImageSource:
    if size is None or size >= len(source):
        return source
    positions = sorted(random.Random(seed).sample(range(len(source)), size))
    return SubsetImages(source, positions)


View = Callable[[Image.Image], torch.Tensor]


class IndexedViews(Dataset):
    """Yields ``{"index": i, "label": y or -1, "views": {name: view(image)}}`` for every image of a source, plus one
    integer per image for each of ``extras`` (for example ``{"task": task ids}``)."""

    def __init__(self, source: ImageSource, views: dict[str, View], extras: dict[str, list[int]] | None = None) -> None:
        if not views:
            raise ValueError("IndexedViews needs at least one view recipe")
        for key, values in (extras or {}).items():
            if len(values) != len(source) or key in ("index", "label", "views"):
                raise ValueError(f"extra item key '{key}' needs one value per image and a name of its own")
        self.source, self.views, self.extras = source, views, dict(extras or {})

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        image = self.source.load(index)
        label = -1 if self.source.labels is None else self.source.labels[index]
        item = {"index": index, "label": label, "views": {name: view(image) for name, view in self.views.items()}}
        for key, values in self.extras.items():
            item[key] = values[index]
        return item
