"""Datasets that return the sample index with the views.

An *image source* gives ``len``, ``load(i) -> PIL image``, ``labels`` (None when unlabelled),
``classes`` and a ``fingerprint`` that changes when its content changes. ``IndexedViews`` wraps a
source and a dict of view recipes and yields ``{"index", "label", "views": {name: tensor}}``, so
per-sample teacher signals can be looked up by index.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from torch.utils.data import Dataset

from ssdistill.data.images import IMAGE_EXTENSIONS, UNREADABLE_EXTENSIONS, displayed_size, files_identity, is_image_file, keep_readable, load_rgb  # noqa: F401 - IMAGE_EXTENSIONS re-exported (ssdistill.data.datasets is the public import)
from ssdistill.data.shards import CACHE_FOLDER, SHARD_IMAGE_MEMBERS, ShardImages  # noqa: F401 (SHARD_IMAGE_MEMBERS: re-exported)
from ssdistill.errors import DataError

TORCHVISION_SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
}

log = logging.getLogger(__name__)


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


# folder (or list file) names that name a split of a data set, not the data set: a folder whose sub-folders all have
# such names is refused as a split (it is the data set), and an export names the data set after the split's parent
SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing", "eval", "evaluation", "holdout", "unlabeled", "unlabelled")
VAL_SPLIT_NAMES = ("val", "valid", "validation", "eval", "evaluation", "holdout", "test", "testing")  # what data.val points at
# folders that file managers, archivers and NAS boxes leave behind: never a class
JUNK_FOLDERS = {"__MACOSX", "@eaDir", "lost+found", "$RECYCLE.BIN", "System Volume Information", "__pycache__"}


def _visible(path: Path, root: Path) -> bool:
    """No hidden or junk part between ``root`` and ``path`` (``.thumbnails/``, ``.DS_Store``, macOS ``._photo.jpg``,
    ``__MACOSX/``, a Synology's ``@eaDir/`` thumbnails)."""
    return not any(part.startswith(".") or part in JUNK_FOLDERS for part in path.relative_to(root).parts)


def _split_layout(root: Path, folders: list[Path]) -> str | None:
    """The one-line refusal for a folder whose sub-folders are all split names (train/, val/ ...), else None."""
    names = {d.name.lower(): d for d in folders}
    if not folders or not set(names) <= set(SPLIT_NAMES):
        return None
    found = ", ".join(f"{d.name}/" for d in folders)
    train = next((names[n] for n in ("train", "training", "unlabeled", "unlabelled") if n in names), None)
    val = next((names[n] for n in VAL_SPLIT_NAMES if n in names), None)
    point = " and ".join(f"{key} at {folder}" for key, folder in (("data.train", train), ("data.val", val)) if folder)
    return f"{root} holds the splits {found} rather than class folders; point {point}"


class FolderImages:
    """Images under a folder. With class sub-folders (``root/<class>/**/*.jpg``) it is labelled like torchvision's
    ImageFolder, class ids in sorted name order; a class folder without images stays a class (so class ids still
    match the other splits) and is named in a warning. A flat or nested folder with images of its own at the top is
    unlabelled. A folder whose sub-folders are all split names (``train/``, ``val/`` ...) is refused: it is the
    dataset, not a split. Hidden files and folders and symlinks to missing files are left out; photos in a format PIL
    cannot read (HEIC, camera raw ...) are left out with a warning."""

    def __init__(self, root: str | Path, skip_corrupt: bool = False) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DataError(f"data path {self.root} not found; point data.train / data.val at an image folder")
        if not self.root.is_dir():
            raise DataError(
                f"data path {self.root} is a file, not a folder; give a folder of images, a .txt list of images "
                f"({LIST_FORMAT.replace('each line is ', '')} lines) or wds: shards"
            )
        folders = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in JUNK_FOLDERS)
        loose = [p for p in self.root.iterdir() if p.is_file() and is_image_file(p)]
        refusal = _split_layout(self.root, folders)
        if refusal and not loose:
            raise DataError(refusal)
        images = {} if loose else {d: self._images(d) for d in folders}
        if folders and not loose and any(images.values()):
            self.classes = [d.name for d in folders]
            pairs = [(p, c) for c, d in enumerate(folders) for p in images[d]]
            self.paths = [p for p, _ in pairs]
            self.labels: list[int] | None = [c for _, c in pairs]
            empty = [d.name for d in folders if not images[d]]
            if empty:
                log.warning(
                    "class folder(s) %s under %s hold no images; kept as classes without images so that class ids match the other splits",
                    ", ".join(f"{name}/" for name in empty),
                    self.root,
                )
        else:
            self.classes = []
            self.paths = self._images(self.root)
            self.labels = None
        if not self.paths:
            raise DataError(f"no images found under {self.root} (looked for jpg, png, webp, bmp, tif, gif and other image files)")
        self._fingerprint: str | None = None
        self._lines: list[str] | None = None
        self.skipped: list[Path] = []
        if skip_corrupt:
            good, bad = keep_readable(files_identity(self.paths), len(self.paths), self.load, lambda i: str(self.paths[i]))
            self.skipped = [self.paths[i] for i in bad]
            self.paths = [self.paths[i] for i in good]
            if self.labels is not None:
                self.labels = [self.labels[i] for i in good]
            if not self.paths:
                raise DataError(f"every image under {self.root} is unreadable; check the files")

    def _images(self, folder: Path) -> list[Path]:
        """Image files under ``folder`` at any depth, sorted, without hidden ones; a symlink to a missing file is left
        out with a warning."""
        found, dangling, foreign = [], [], []
        for path in sorted(folder.rglob("*")):
            if not _visible(path, self.root):
                continue
            if not is_image_file(path):
                if path.suffix.lower() in UNREADABLE_EXTENSIONS:
                    foreign.append(path)
            elif path.is_file():
                found.append(path)
            elif path.is_symlink() and not path.exists():
                dangling.append(path)
        for what, paths in (
            ("symlink(s) to missing files", dangling),
            ("photo(s) in a format PIL cannot read (convert them to JPEG or PNG)", foreign),
        ):
            if paths:
                log.warning(
                    "left out %d %s under %s: %s%s", len(paths), what, folder, ", ".join(str(p) for p in paths[:3]), " ..." if len(paths) > 3 else ""
                )
        return found

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])

    def size(self, index: int) -> tuple[int, int]:
        """(width, height) as ``load`` returns the image (EXIF orientation applied), from the file header."""
        return displayed_size(self.paths[index], str(self.paths[index]))

    def fingerprint_lines(self) -> tuple[bytes, list[str]]:
        """What the fingerprint digests: a kind header and one line per image, relative path and size in bytes (one
        stat per file). A union of folders digests its parts' lines one after another, so it matches the folder that
        holds the same files in the same order (``UnionImages.fingerprint``). Skipped unreadable files have no line."""
        if self._lines is None:
            self._lines = [f"{path.relative_to(self.root)}:{path.stat().st_size}\n" for path in self.paths]
        return b"", self._lines

    def fingerprint(self) -> str:
        """Relative paths and sizes of the files (done once per source)."""
        if self._fingerprint is None:
            self._fingerprint = lines_digest(*self.fingerprint_lines())
        return self._fingerprint


LIST_FORMAT = "each line is `path` or `path<TAB>class`"


class ListImages:
    """Images named in a UTF-8 text file, one per line: ``path`` or ``path<TAB>class``; relative paths are read from
    the list file's folder, blank lines and ``#`` comments are skipped, Windows line endings and a byte-order mark are
    accepted. Labelled when every line names a class (class ids in sorted name order, as for folders). A line with
    more than two tab-separated columns, an empty class after a tab, or an image listed twice is refused with its
    line number. With ``skip_corrupt`` unreadable images are left out (their classes stay)."""

    def __init__(self, path: str | Path, skip_corrupt: bool = False) -> None:
        self.list_file = Path(path).expanduser()
        entries = self._parse()
        self.paths = [file for file, _, _ in entries]
        self.names = [name for _, name, _ in entries]
        named = [label for _, _, label in entries]
        if all(named):
            self.classes = sorted(set(named))
            ids = {c: i for i, c in enumerate(self.classes)}
            self.labels: list[int] | None = [ids[label] for label in named]
        elif any(named):
            first = next(n for n, (_, _, label) in zip(self._numbers, entries) if not label)
            raise DataError(
                f"{self.list_file}: some lines name a class and some do not (line {first} names none); give every line a "
                "class (path<TAB>class) or none"
            )
        else:
            self.classes, self.labels = [], None
        self.skipped: list = []
        self.description = str(self.list_file)
        self._fingerprint: str | None = None
        self._lines: list[str] | None = None
        if skip_corrupt:
            good, bad = keep_readable(files_identity(self.paths), len(self.paths), self.load, lambda i: str(self.paths[i]))
            self.skipped = [self.paths[i] for i in bad]
            self.paths, self.names = [self.paths[i] for i in good], [self.names[i] for i in good]
            if self.labels is not None:
                self.labels = [self.labels[i] for i in good]
            if not self.paths:
                raise DataError(f"every image listed in {self.list_file} is unreadable; check the files")

    def _parse(self) -> list[tuple[Path, str, str | None]]:
        """(file, path as written, class or None) per image line; ``self._numbers`` their line numbers."""
        try:
            text = self.list_file.read_bytes().decode("utf-8-sig")
        except OSError as exc:
            raise DataError(
                f"cannot read the image list {self.list_file} ({exc.strerror or exc}); give a text file with one image path per line"
            ) from None
        except UnicodeDecodeError as exc:
            line = self.list_file.read_bytes()[: exc.start].count(b"\n") + 1
            raise DataError(f"{self.list_file} line {line} is not UTF-8 text; save the list as UTF-8 ({LIST_FORMAT})") from None
        entries, self._numbers, seen = [], [], {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            columns = line.split("\t")
            if len(columns) > 2:
                raise DataError(f"{self.list_file} line {number} has {len(columns)} tab-separated columns; {LIST_FORMAT}")
            name, label = columns[0].strip(), columns[1].strip() if len(columns) == 2 else None
            if label == "":
                raise DataError(f"{self.list_file} line {number} has a tab but no class after it; {LIST_FORMAT}")
            if not name:
                raise DataError(f"{self.list_file} line {number} has a class but no path; {LIST_FORMAT}")
            file = Path(name).expanduser()
            file = file if file.is_absolute() else self.list_file.parent / file
            if file.is_dir():
                raise DataError(f"{self.list_file} line {number}: {name} is a folder, not an image; list image files")
            if not file.is_file():
                first = Path(name.split()[0]).expanduser() if " " in name else None
                if first is not None and label is None and (first if first.is_absolute() else self.list_file.parent / first).is_file():
                    raise DataError(f"{self.list_file} line {number}: {name} not found; separate the path and its class with a TAB, not spaces")
                raise DataError(f"{self.list_file} line {number}: {name} not found; fix the path (relative paths start at the list's folder)")
            where = os.path.normpath(os.path.abspath(file))
            if where in seen:
                raise DataError(
                    f"{self.list_file} lines {seen[where]} and {number} both list {name}; list each image once (a repeated "
                    "image counts twice in training and in the k-NN)"
                )
            seen[where] = number
            entries.append((file, name, label))
            self._numbers.append(number)
        if not entries:
            raise DataError(f"{self.list_file} names no images; write one image path per line")
        return entries

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])

    def size(self, index: int) -> tuple[int, int]:
        """(width, height) as ``load`` returns the image (EXIF orientation applied), from the file header."""
        return displayed_size(self.paths[index], str(self.paths[index]))

    def fingerprint_lines(self) -> tuple[bytes, list[str]]:
        """A kind header and one line per image: the path as the list writes it and the file's size (skipped unreadable
        images have no line)."""
        if self._lines is None:
            self._lines = [f"{name}:{path.stat().st_size}\n" for name, path in zip(self.names, self.paths)]
        return b"list\n", self._lines

    def fingerprint(self) -> str:
        """The paths as the list writes them and the files' sizes (the same list and files under another root match)."""
        if self._fingerprint is None:
            self._fingerprint = lines_digest(*self.fingerprint_lines())
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
    """A folder path, a text file listing image paths (``.txt``), WebDataset shards (``wds:`` + a shard pattern of local
    paths, http(s):// URLs or ``pipe:`` commands; remote shards are cached under ``root``/wds-cache), or
    ``cifar10:train`` / ``cifar100:test`` / ``stl10:unlabeled`` style names. With ``skip_corrupt`` a folder, list or set of
    shards decodes every image once up front and leaves the unreadable ones out (named in ``source.skipped`` and in a
    warning; the fingerprint then covers only the images kept); torchvision datasets have no unreadable files."""
    if not spec:
        raise DataError("no data given; set data.train to an image folder (for example data.train=data/imagenette_mini/train)")
    if spec.startswith("wds:"):
        return ShardImages(spec[len("wds:") :], skip_corrupt=skip_corrupt, cache=Path(root).expanduser() / CACHE_FOLDER)
    if spec.endswith(".txt") and Path(spec).expanduser().is_file():
        return ListImages(spec, skip_corrupt=skip_corrupt)
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
