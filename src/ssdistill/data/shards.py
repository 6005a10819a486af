"""WebDataset tar shards as an image source whose sample i is always the same key.

``wds:`` + a shard pattern, brace-expanded as webdataset does (``train-{000..009}.tar``, ``a.tar::b.tar``). A shard is
a local path (or ``file://``), an ``http://`` / ``https://`` URL, or ``pipe:<command>`` (webdataset's convention: the
shell command writes the tar to its standard output). A remote shard is downloaded once into a shard cache folder
(``<data.root>/wds-cache/<digest of the URL>/<shard name>``): written to a temporary file, checked to be a whole tar,
then renamed into place, so a killed or failed download never leaves a shard that a later run trusts; one process
downloads at a time (a file lock), the others, later runs and loader workers read the cached file. Every shard is then
indexed from its tar headers (no image decoded) and read in place with pread.

Labels, per sample, from the first of its members that gives one:

- ``<key>.cls``: a non-negative integer, the class index;
- ``<key>.json``: an object whose ``"label"``, ``"cls"`` or ``"class"`` key holds a class index (a JSON integer) or a
  class name (a JSON string); two of those keys with different values are refused;
- ``<key>.txt``: one line, the class name.

Class names become ids in sorted name order, as class folders do, so a split labelled by names matches another split
by name; integer labels name their classes "0", "1" ... Every sample is labelled or none is, and all by index or all by
name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import io
import json
import logging
import os
import re
import shlex
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ssdistill._version import __version__
from ssdistill.data.images import IMAGE_EXTENSIONS, decode, displayed_size, keep_readable
from ssdistill.errors import DataError

SHARD_IMAGE_MEMBERS = tuple(extension[1:] for extension in IMAGE_EXTENSIONS)  # a shard member's image extensions, no dot
JSON_LABEL_KEYS = ("label", "cls", "class")  # where a .json member holds the sample's class (index or name)
CACHE_FOLDER = "wds-cache"  # under data.root: downloaded shards
SHARDS_HINT = "give local .tar shards, http(s):// URLs or pipe:<command> (brace patterns allowed)"
PIPE_EXAMPLES = {"s3": "aws s3 cp {url} -", "gs": "gcloud storage cat {url}"}  # a command that writes a shard to stdout
CAPTION_CHECK = 20  # from this many samples on, more class names than half the samples is warned about (captions?)
_WARNED: set[str] = set()
_SHARD_INDEX: dict[tuple, list[dict]] = {}  # (shard paths, sizes, mtimes) -> samples: each set of shards indexed once

log = logging.getLogger(__name__)


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "pipe:"))


def shard_name(url: str) -> str:
    """The file name a shard goes by in fingerprints and in the cache: the URL's last path part, for ``pipe:`` the last
    word of the command that names a ``.tar`` (``pipe:aws s3 cp s3://b/train-003.tar -`` -> ``train-003.tar``), so a
    downloaded shard fingerprints as a local copy of it."""
    if url.startswith("pipe:"):
        try:
            words = shlex.split(url[len("pipe:") :])
        except ValueError:
            words = url[len("pipe:") :].split()
        named = [w for w in words if ".tar" in w]
        name = named[-1].rstrip("/").rsplit("/", 1)[-1] if named else ""
    else:
        name = urllib.parse.unquote(urllib.parse.urlparse(url).path).rstrip("/").rsplit("/", 1)[-1]
    return name if name and name not in (".", "..") else "shard.tar"


def expand(pattern: str) -> list[str]:
    """The shard URLs of a pattern; a URL of a scheme no shard is read from is refused in one line."""
    try:
        from webdataset.shardlists import expand_urls
    except ImportError:
        raise DataError("wds: shards need the webdataset package: pip install 'ssdistill[data]' (or pip install webdataset)") from None
    unset = [name for name in re.findall(r"\$\{(\w+)\}", pattern) if f"WDS_{name}" not in os.environ]
    if unset:  # webdataset reads ${name} from the environment variable WDS_name
        raise DataError(
            f"wds:{pattern}: ${{{unset[0]}}} reads the environment variable WDS_{unset[0]}, which is not set; set it or "
            "write the value into the pattern"
        )
    urls = expand_urls(pattern)
    for url in urls:
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
        if scheme and scheme.group(1).lower() not in ("http", "https", "file"):
            name = scheme.group(1).lower()
            command = PIPE_EXAMPLES.get(name, "<a command that writes the shard to its standard output>").format(url=pattern)
            raise DataError(f"wds:{pattern}: shards cannot be read from {name}:// URLs; {SHARDS_HINT}, for example wds:pipe:{command}")
    return urls


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created) across processes, where the platform has one."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps half shards out
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_shard(url: str, cache: Path) -> Path:
    """The local file of remote shard ``url``: the cached download when there is one, else downloaded now."""
    folder = cache / hashlib.sha1(url.encode()).hexdigest()[:16]
    dest = folder / shard_name(url)
    if dest.is_file():
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the shard cache folder {folder} ({exc.strerror or exc}); set data.root to a writable folder") from None
    with _locked(folder / ".lock"):
        if dest.is_file():  # another process downloaded it while this one waited
            return dest
        for stale in folder.glob(f".{dest.name}.*.part"):  # left by a killed download (the lock holder is the only writer)
            stale.unlink(missing_ok=True)
        temp = folder / f".{dest.name}.{os.getpid()}.part"
        try:
            log.info("downloading shard %s to %s", url, dest)
            (_run_command if url.startswith("pipe:") else _download)(url, temp)
            problem = _tar_problem(temp)
            if problem:
                raise DataError(f"cannot index shard {url} ({problem}); shards must be uncompressed tar files of WebDataset samples")
            os.replace(temp, dest)
        except OSError as exc:  # writing the cache (the network's errors are DataErrors by now)
            raise DataError(
                f"cannot write shard {url} into the shard cache {folder} ({exc.strerror or exc}); free space there or set data.root "
                "to a writable folder with room"
            ) from None
        finally:
            temp.unlink(missing_ok=True)
    return dest


LOCAL_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def _download(url: str, temp: Path) -> None:
    """``url`` into ``temp``; an HTTP error, an unreachable server or a body shorter than announced is one line."""
    request = urllib.request.Request(url, headers={"User-Agent": f"ssdistill/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(temp, "wb") as out:
            announced = response.headers.get("Content-Length")
            while chunk := response.read(1 << 20):
                out.write(chunk)
            received = out.tell()
        if announced is not None and announced.isdigit() and received != int(announced):
            raise OSError(f"the connection closed after {received:,} of {int(announced):,} bytes")
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, a body cut short
        if isinstance(exc, OSError) and exc.errno in LOCAL_WRITE_ERRORS:
            raise  # the cache's disk, not the network
        reason = str(exc) or type(exc).__name__
    else:
        return
    raise DataError(f"cannot download shard {url} ({reason}); check the URL and that the server is reachable")


def _run_command(url: str, temp: Path) -> None:
    """Run ``pipe:`` command ``url`` with its standard output into ``temp``; a non-zero exit status is one line with
    the last line the command wrote to its standard error."""
    command = url[len("pipe:") :]
    with open(temp, "wb") as out, tempfile.TemporaryFile() as errors:
        status = subprocess.run(command, shell=True, stdout=out, stderr=errors, stdin=subprocess.DEVNULL).returncode
        errors.seek(0)
        said = [line.strip() for line in errors.read().decode("utf-8", errors="replace").splitlines() if line.strip()]
    if status != 0:
        last = f": {said[-1][:200]}" if said else ""
        raise DataError(
            f"shard command {command!r} failed (exit status {status}{last}); fix the command: it must write one tar shard to its standard output"
        )


def _tar_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole tar file (every header walked: a file cut short in a member fails), else None."""
    try:
        with tarfile.open(path, "r:") as tar:
            for _ in tar:
                pass
    except (tarfile.TarError, OSError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _label(sample: dict, name: str) -> tuple[str, int | str] | None:
    """The sample's label from its label members: ("index", id) or ("name", class name), None when it has none."""
    if "cls" in sample:
        text = sample["cls"].decode("utf-8", errors="replace").strip()
        if not text.isdigit() or not text.isascii():
            raise DataError(f"{name}: its .cls member holds {_shown(text)}, not a class index; .cls must hold a non-negative integer (0, 1, ...)")
        return "index", int(text)
    if "json" in sample:
        try:
            data = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{name}: its .json member is not valid JSON ({exc}); fix the member or remove it") from None
        found = {key: data[key] for key in JSON_LABEL_KEYS if isinstance(data, dict) and key in data}
        if len({json.dumps(v) for v in found.values()}) > 1:
            given = ", ".join(f'"{k}": {json.dumps(v)}' for k, v in found.items())
            raise DataError(
                f"{name}: its .json member gives two labels ({given}); keep one of the keys {', '.join(json.dumps(k) for k in JSON_LABEL_KEYS)}"
            )
        if found:
            key, value = next(iter(found.items()))
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return "index", value
            if isinstance(value, str) and value.strip():
                return "name", value.strip()
            raise DataError(
                f'{name}: its .json "{key}" holds {json.dumps(value)}, not a class; give a non-negative integer (a class index) or a class name'
            )
    if "txt" in sample:
        try:
            text = sample["txt"].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{name}: its .txt member is not UTF-8 text; .txt must hold the class name") from None
        if not text or "\n" in text:
            what = "is empty" if not text else f"holds more than one line ({_shown(text)})"
            raise DataError(f"{name}: its .txt member {what}; .txt must hold one class name")
        return "name", text
    return None


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


class OpenShards:
    """The shard files one process reads from, open for pread: at most ``limit`` at once, the least recently read
    closed first (a set of thousands of shards stays under the process's open-file limit), all closed when the
    source is garbage-collected or ``close()`` is called."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self.open: OrderedDict[int, int] = OrderedDict()
        self._finalizer = weakref.finalize(self, OpenShards._close_all, self.open)

    @staticmethod
    def _close_all(open_files: OrderedDict) -> None:
        while open_files:
            os.close(open_files.popitem()[1])

    def descriptor(self, shard: int, path: Path) -> int:
        fd = self.open.get(shard)
        if fd is not None:
            self.open.move_to_end(shard)
            return fd
        if len(self.open) >= self.limit:
            os.close(self.open.popitem(last=False)[1])
        fd = self.open[shard] = os.open(path, os.O_RDONLY)
        return fd

    def close(self) -> None:
        self._close_all(self.open)


class ShardImages:
    """WebDataset tar shards (``wds:/data/train-{000000..000099}.tar``, ``wds:https://host/train-{000..009}.tar``,
    ``wds:pipe:<command>``): each sample is the tar members that share a key (``<key>.jpg`` and optionally a label
    member, see the module docstring). Remote shards are downloaded once into ``cache``; every shard is indexed once
    (tar headers only, no image is decoded) and read in place: sample i is always the same key, so teacher-cache rows,
    banks and neighbour lists stay addressable, and every loader worker reads its images straight from their offsets.
    Keys must be unique across the shards. With ``skip_corrupt`` unreadable images are left out (the class list stays
    that of every sample)."""

    def __init__(self, pattern: str, skip_corrupt: bool = False, cache: str | Path = "~/.cache/ssdistill/datasets/" + CACHE_FOLDER) -> None:
        self.pattern = pattern
        self.urls = expand(pattern)
        if not self.urls:
            raise DataError(f"wds:{pattern} names no shards; {SHARDS_HINT}")
        local = [Path(re.sub(r"^file://", "", url)).expanduser() for url in self.urls if not is_remote(url)]
        missing = [str(path) for path in local if not path.is_file()]
        if missing:
            raise DataError(f"wds:{pattern}: shard {missing[0]} not found; {SHARDS_HINT}")
        cache = Path(cache).expanduser()
        local_files = iter(local)
        self.shards = [cached_shard(url, cache) if is_remote(url) else next(local_files) for url in self.urls]
        self.names = [path.name if not is_remote(url) else shard_name(url) for url, path in zip(self.urls, self.shards)]
        # how messages name a shard: the URL of a remote one, the path of a local one
        self.shown = [url if is_remote(url) else str(path) for url, path in zip(self.urls, self.shards)]
        stats = tuple((str(shard.resolve()), shard.stat().st_size, shard.stat().st_mtime_ns) for shard in self.shards)
        if stats not in _SHARD_INDEX:  # a split is opened several times a run (checks, monitor, evaluation): index it once
            _SHARD_INDEX[stats] = self._index(pattern)
        self.samples = _SHARD_INDEX[stats]
        if not self.samples:
            raise DataError(
                f"wds:{pattern} holds no images ({', '.join(SHARD_IMAGE_MEMBERS)} members); each sample needs an image member such as <key>.jpg"
            )
        self.classes, labels = self._classes(pattern)
        self.description = f"wds:{pattern}"
        self._files = OpenShards()
        self._fingerprint: str | None = None
        self.skipped: list = []
        if skip_corrupt:
            identity = hashlib.sha1(repr(("wds", stats)).encode()).hexdigest()  # the index's positions are its samples
            good, bad = keep_readable(identity, len(self.samples), self.load, self._name)
            self.skipped = [self._name(i) for i in bad]
            self.samples = [self.samples[i] for i in good]  # a new list: the shared index stays whole
            labels = None if labels is None else [labels[i] for i in good]
            if not self.samples:
                raise DataError(f"every image in wds:{pattern} is unreadable; check the shards")
        self.keys = [sample["key"] for sample in self.samples]
        self.labels: list[int] | None = labels

    def _index(self, pattern: str) -> list[dict]:
        """Every sample with an image: its key, shard, image member's (offset, size) and label, in shard order."""
        samples: dict[str, dict] = {}
        for shard_id, shard in enumerate(self.shards):
            found: list[dict] = []
            try:
                with tarfile.open(shard, "r:") as tar:
                    for member in tar:
                        if not member.isfile():
                            continue
                        stem = member.name.rsplit("/", 1)
                        base = stem[-1]
                        if base.startswith("."):  # macOS tar's ._<name> resource forks, hidden files
                            continue
                        key = (stem[0] + "/" if len(stem) == 2 else "") + base.split(".", 1)[0]
                        ext = base.split(".", 1)[1].lower() if "." in base else ""
                        sample = samples.get(key)
                        if sample is None:
                            sample = samples[key] = {"key": key, "shard": shard_id}
                            found.append(sample)
                        if sample["shard"] != shard_id:
                            raise DataError(f"wds:{pattern}: key {key} appears in two shards; sample keys must be unique")
                        if ext in SHARD_IMAGE_MEMBERS and "image" not in sample:
                            sample["image"] = (member.offset_data, member.size)
                        elif ext in ("cls", "json", "txt"):
                            sample[ext] = tar.extractfile(member).read()
            except (tarfile.TarError, OSError) as exc:
                raise DataError(
                    f"cannot index shard {self.shown[shard_id]} ({exc}); shards must be uncompressed tar files of WebDataset samples"
                ) from None
            for sample in found:  # labels once the shard's members are all seen (a .cls may follow its image)
                label = _label(sample, f"sample {sample['key']} in shard {self.shown[shard_id]}")
                for ext in ("cls", "json", "txt"):
                    sample.pop(ext, None)
                if label is not None:
                    sample["label"] = label
        return [sample for sample in samples.values() if "image" in sample]

    def _classes(self, pattern: str) -> tuple[list[str], list[int] | None]:
        """(class names, label per sample), ([], None) when no sample has a label; partly labelled shards, or labels
        by index and by name mixed, are refused."""
        labelled = [sample for sample in self.samples if "label" in sample]
        if not labelled:
            return [], None
        if len(labelled) < len(self.samples):
            bare = next(i for i, sample in enumerate(self.samples) if "label" not in sample)
            raise DataError(
                f"wds:{pattern}: {len(labelled):,} of {len(self.samples):,} samples have a label and {self._name(bare)} has none; "
                "label every sample (.cls, .json or .txt) or none"
            )
        kinds = {sample["label"][0] for sample in labelled}
        if len(kinds) > 1:
            index, name = (next(i for i, s in enumerate(self.samples) if s["label"][0] == kind) for kind in ("index", "name"))
            raise DataError(
                f"wds:{pattern}: {self._name(index)} is labelled by a class index and {self._name(name)} by a class name; "
                "label every sample the same way (.cls or a .json integer, or a .txt or .json class name)"
            )
        values = [sample["label"][1] for sample in self.samples]
        if kinds == {"index"}:
            return [str(c) for c in range(max(values) + 1)], values
        classes = sorted(set(values))
        if len(values) >= CAPTION_CHECK and len(classes) > len(values) / 2 and pattern not in _WARNED:
            _WARNED.add(pattern)  # a split is opened several times a run
            log.warning(
                "wds:%s: its %s samples have %s different class names; if the .txt / .json names are captions rather "
                "than classes, give the k-NN a labelled memory split (data.knn_train)",
                pattern,
                f"{len(values):,}",
                f"{len(classes):,}",
            )
        ids = {name: i for i, name in enumerate(classes)}
        return classes, [ids[value] for value in values]

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:  # open shard files stay in their process (each loader worker opens its own)
        return {**self.__dict__, "_files": OpenShards()}

    def _name(self, index: int) -> str:
        """How messages and ``skipped`` name sample ``index``: its key and shard."""
        sample = self.samples[index]
        return f"sample {sample['key']} in shard {self.shown[sample['shard']]}"

    def _bytes(self, index: int) -> bytes:
        """The image member's bytes, read with pread: no shared file offset, so forked loader workers that inherit an
        open shard never race on a seek."""
        sample = self.samples[index]
        fd = self._files.descriptor(sample["shard"], self.shards[sample["shard"]])
        offset, size = sample["image"]
        return os.pread(fd, size, offset)

    def load(self, index: int) -> Image.Image:
        return decode(io.BytesIO(self._bytes(index)), self._name(index))

    def size(self, index: int) -> tuple[int, int]:
        """(width, height) as ``load`` returns the image (EXIF orientation applied), from the image's header."""
        return displayed_size(io.BytesIO(self._bytes(index)), self._name(index))

    def fingerprint(self) -> str:
        """Shard names, sample keys and image sizes in bytes: the same shards under another path, or downloaded from a
        URL, match (skipped unreadable samples are left out)."""
        if self._fingerprint is None:
            digest = hashlib.sha1(b"wds\n")
            for sample in self.samples:
                digest.update(f"{self.names[sample['shard']]}:{sample['key']}:{sample['image'][1]}\n".encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint
