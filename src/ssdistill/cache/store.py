"""On-disk teacher embedding store: compute each teacher signal once, reuse it in every later run.

An *entry* holds N vectors (fp16 by default) of one teacher output for one dataset and one
deterministic view, in a raw file (written with ordinary writes, read through a memory map). Its key is everything that changes the content:
teacher fingerprint (weights, preprocessing, output tap), view spec, dataset fingerprint (its files'
relative paths and sizes, so the same data under another path is a hit), N and dtype.
A changed key is a different entry, so nothing stale is ever read.

Filling goes chunk by chunk (``chunk_rows`` rows, a multiple of the batch size so batch boundaries never
move). After a chunk's rows are flushed to disk its checksum is written atomically to ``chunks/NNNNNN``;
a killed fill therefore resumes at the first chunk without a checksum file and produces the same bytes
as an uninterrupted fill. Processes that fill one entry at once (the ranks of a launch, or two runs that
happen to start together) share the work: a process claims a chunk by creating ``chunks/NNNNNN.claim``
exclusively (its host and pid inside, touched while it computes), computes it, and moves on; a claim whose
process has died (or, from another host, that has not been touched for ``stale_seconds``) is taken over.
Ranks start on their own share (chunk % world == rank). ``manifest.json`` is written last and marks the
entry complete; opening an entry re-checks size and checksums and refills any chunk that does not match,
and a manifest that cannot be read or does not match its key is rebuilt from the chunks.

The data file's space is reserved when it is created (``posix_fallocate``), so a disk too small for the entry fails at
once, and rows are written with ordinary writes, never through a writable memory map: a full disk, a quota or a network
file system's I/O error is an ``OSError`` (a page fault on a mapping would be SIGBUS, the process killed without a word).
A fill that fails so says it in one line (``StorageError``: how much space, where), releases its claims and, when no
chunk of the entry was finished, leaves no folder behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ssdistill._version import __version__
from ssdistill.errors import StorageError
from ssdistill.files import NO_SPACE, NOT_WRITABLE, atomic_output, atomic_write_text, remedy, write_failure

# 2: images decoded upright (EXIF orientation) and by their value range (data/images.py); an entry of format 1 may hold
# a sideways or clipped image's features under the same dataset fingerprint, so it is never read again
FORMAT_VERSION = 2
DEFAULT_ROOT = "~/.cache/ssdistill/teacher-cache"
ROOT_ENV = "SSDISTILL_CACHE_DIR"
DTYPES = {"float16": np.float16, "float32": np.float32}

log = logging.getLogger(__name__)


def cache_root(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser()


@dataclass(frozen=True)
class EntryKey:
    """Everything that determines an entry's content."""

    teacher: str
    teacher_fingerprint: str
    tap: str
    view: str
    dataset_fingerprint: str
    n: int
    dtype: str = "float16"

    def digest(self) -> str:
        payload = json.dumps({**asdict(self), "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def folder_name(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.teacher)
        return f"{safe}-{self.tap}-{self.digest()}"


def _sha1(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


class Entry:
    """One cache entry on disk (see the module docstring for the layout)."""

    def __init__(self, root: Path, key: EntryKey, dim: int, chunk_rows: int = 4096, label: str = "") -> None:
        if key.dtype not in DTYPES:
            raise ValueError(f"cache dtype must be one of {sorted(DTYPES)}, got {key.dtype}")
        self.key, self.dim, self.chunk_rows = key, int(dim), int(chunk_rows)
        self.label = label  # where the data came from, for people; not part of the key
        self.dir = root / key.folder_name()
        self.data_path = self.dir / "embeddings.bin"
        self.chunk_dir = self.dir / "chunks"
        self.manifest_path = self.dir / "manifest.json"
        self.np_dtype = DTYPES[key.dtype]

    # ----- layout -----------------------------------------------------------------------------------
    @property
    def num_chunks(self) -> int:
        return (self.key.n + self.chunk_rows - 1) // self.chunk_rows

    def rows_of(self, chunk: int) -> range:
        return range(chunk * self.chunk_rows, min(self.key.n, (chunk + 1) * self.chunk_rows))

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(self.np_dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.key.n * self.row_bytes

    def _memmap(self, mode: str) -> np.memmap:
        return np.memmap(self.data_path, dtype=self.np_dtype, mode=mode, shape=(self.key.n, self.dim))

    def _chunk_file(self, chunk: int) -> Path:
        return self.chunk_dir / f"{chunk:06d}"

    def done_chunks(self) -> set[int]:
        if not self.chunk_dir.is_dir():
            return set()
        return {int(p.name) for p in self.chunk_dir.iterdir() if p.name.isdigit()}

    def manifest(self) -> dict | None:
        """The manifest when it can be read and matches this entry's key (else None: missing or damaged)."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
            valid = manifest["shape"] == [self.key.n, self.dim] and manifest["digest"] == self.key.digest()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return manifest if valid else None

    def is_complete(self) -> bool:
        return self.manifest() is not None

    # ----- claims: which process computes which chunk -----------------------------------------------
    def _claim_file(self, chunk: int | str) -> Path:
        return self.chunk_dir / (f"{chunk:06d}.claim" if isinstance(chunk, int) else f"{chunk}.claim")

    def _claim(self, chunk: int | str, stale_seconds: float) -> bool:
        """Claim a chunk (or the ``prepare`` step) for this process; False when a live process holds it."""
        path = self._claim_file(chunk)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not _stale(path, stale_seconds):
                    return False
                log.warning("cache %s: taking over %s, left by a process that is gone", self.dir, path.name)
                path.unlink(missing_ok=True)
                continue
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(f"{socket.gethostname()} {os.getpid()}\n")
            except BaseException:  # a disk too full for the claim's line: no empty claim left behind
                path.unlink(missing_ok=True)
                raise
            return True
        return False

    def _release(self, chunk: int | str) -> None:
        self._claim_file(chunk).unlink(missing_ok=True)

    # ----- checking ---------------------------------------------------------------------------------
    def damaged_chunks(self) -> list[int]:
        """Chunks whose bytes on disk do not match their recorded checksum (all chunks if the file is the wrong size)."""
        if not self.data_path.is_file() or self.data_path.stat().st_size != self.nbytes:
            return list(range(self.num_chunks))
        damaged = []
        with open(self.data_path, "rb") as handle:  # ordinary reads: an I/O error is an OSError, not SIGBUS
            for chunk in sorted(self.done_chunks()):
                rows = self.rows_of(chunk)
                handle.seek(rows.start * self.row_bytes)
                stored = handle.read(len(rows) * self.row_bytes)
                if self._chunk_file(chunk).read_text().strip() != hashlib.sha1(stored).hexdigest():
                    damaged.append(chunk)
        return damaged

    def _forget(self, chunks: list[int]) -> None:
        for chunk in chunks:
            self._chunk_file(chunk).unlink(missing_ok=True)
        if chunks:
            self.manifest_path.unlink(missing_ok=True)

    # ----- filling ----------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        if self.data_path.is_file() and self.data_path.stat().st_size != self.nbytes:
            log.warning("cache %s: data file has the wrong size (truncated?); rebuilding it", self.dir)
            self._forget(list(range(self.num_chunks)))
            self.data_path.unlink()
        if not self.data_path.is_file():
            with atomic_output(self.data_path) as tmp, open(tmp, "wb") as handle:
                _reserve(handle.fileno(), self.nbytes)
        damaged = [c for c in self.damaged_chunks() if c in self.done_chunks()]
        if damaged:
            log.warning("cache %s: %d chunk(s) fail their checksum; recomputing them", self.dir, len(damaged))
            self._forget(damaged)

    def fill(
        self,
        compute: Callable[[list[int]], Iterator[torch.Tensor]],
        rank: int = 0,
        world: int = 1,
        wait_seconds: float = 24 * 3600,
        poll_seconds: float = 0.5,
        stale_seconds: float = 3600.0,
    ) -> None:
        """Compute every missing chunk no other live process has claimed (this rank's share, chunk % world == rank,
        first), then wait for the chunks others compute; the first process to see them all writes the manifest.

        ``compute(rows)`` yields consecutive output blocks [b, dim] for the given dataset rows, in order. A file-system
        error (full disk, quota, read-only folder, I/O error) is raised as one line (``StorageError``)."""
        try:
            self._fill(compute, rank, world, wait_seconds, poll_seconds, stale_seconds)
        except _ComputeFailed as failed:  # an image the teacher reads, not the cache: its own error, unchanged
            raise failed.error from None
        except _WaitedTooLong:
            raise self.wait_error(wait_seconds) from None
        except OSError as exc:
            need = self.nbytes if not self.data_path.is_file() else None
            self.discard_if_unused()
            raise self.storage_error(exc, "writing", need) from None

    def storage_error(self, exc: OSError, doing: str, need: int | None = None) -> StorageError:
        """One line for a file-system error met while ``doing`` (reading / writing) this entry: for a full disk how much
        space the entry needs and where, and what to do."""
        root = self.dir.parent
        what = f"the teacher cache entry {self.key.teacher} ({self.key.n} x {self.dim} {self.key.dtype})"
        if doing == "reading" and exc.errno not in NO_SPACE:
            return StorageError(
                f"cannot read {what} in {root} ({exc.strerror or type(exc).__name__}); check the disk, or remove the entry "
                f"(`ssdistill cache rm {self.dir.name}`) so the next run recomputes it"
            )
        hint = (
            f"{remedy(exc)}, or point the cache at another folder (cache.dir=PATH, `ssdistill cache --dir PATH` or "
            "$SSDISTILL_CACHE_DIR), or set cache.enabled=false"
        )
        return StorageError(f"{write_failure(exc, root, what, need)}; {hint}")

    def wait_error(self, wait_seconds: float) -> StorageError:
        """One line for a fill that gave up waiting on the chunks other processes claimed: which process holds a claim
        still (host and pid, from the claim file) and what to do."""
        holder = ""
        try:
            claims = sorted(self.chunk_dir.glob("*.claim"))
            if claims:
                host, pid = claims[0].read_text().split()
                holder = f" (chunk {claims[0].stem} is claimed by process {pid} on {host})"
        except (OSError, ValueError):  # released or half-written meanwhile: no holder to name
            pass
        return StorageError(
            f"other processes did not finish their part of the teacher cache entry {self.key.teacher} in {self.dir.parent} "
            f"within {_duration(wait_seconds)}{holder}; if they hang, stop them and run again (the finished chunks are "
            "kept), or set cache.enabled=false"
        )

    def discard_if_unused(self) -> None:
        """After a failed fill: remove the entry's folder when it holds no finished chunk and no process claims any of
        it (nothing worth resuming, and a full disk gets its space back); otherwise the finished chunks stay."""
        try:
            if self.done_chunks() or any(self.chunk_dir.glob("*.claim")):
                return
            shutil.rmtree(self.dir)
        except OSError:  # a read-only or vanished folder: nothing to remove
            pass

    def _fill(self, compute, rank: int, world: int, wait_seconds: float, poll_seconds: float, stale_seconds: float) -> None:
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_seconds
        while not self._claim("prepare", stale_seconds):  # one process at a time sizes the file and checks the chunks
            self._sleep_until(deadline, poll_seconds)
        try:
            self._prepare()
        finally:
            self._release("prepare")
        order = sorted(range(self.num_chunks), key=lambda c: (c % world != rank, c))
        data: int | None = None  # the data file, opened for writing when this process first computes a chunk
        try:
            while True:
                missing = [c for c in order if c not in self.done_chunks()]
                if not missing:
                    break
                computed = False
                for chunk in missing:
                    if not self._claim(chunk, stale_seconds):
                        continue
                    try:
                        if chunk not in self.done_chunks():  # finished by another process between the listing and the claim
                            data = os.open(self.data_path, os.O_WRONLY) if data is None else data
                            self._compute_chunk(chunk, compute, data)
                            computed = True
                    finally:
                        self._release(chunk)
                if not computed:
                    self._sleep_until(deadline, poll_seconds)
        finally:
            if data is not None:
                os.close(data)
        if not self.is_complete():
            self._write_manifest()

    def _compute_chunk(self, chunk: int, compute: Callable[[list[int]], Iterator[torch.Tensor]], data: int) -> None:
        """Compute a chunk's rows and write them at their place in the data file (``data``: a descriptor open for
        writing), flushed to disk before its checksum file marks the chunk done."""
        span = self.rows_of(chunk)
        blocks, position = [], 0
        for block in _compute_errors_apart(compute(list(span))):
            blocks.append(block.detach().cpu().float().numpy().astype(self.np_dtype))
            position += len(block)
            os.utime(self._claim_file(chunk))  # the claim's heartbeat
        if position != len(span):
            raise RuntimeError(f"cache fill produced {position} rows for chunk {chunk}, expected {len(span)}")
        rows = np.ascontiguousarray(np.concatenate(blocks))
        _write_at(data, memoryview(rows).cast("B"), span.start * self.row_bytes)
        os.fsync(data)
        atomic_write_text(self._chunk_file(chunk), _sha1(rows))

    def _sleep_until(self, deadline: float, poll_seconds: float) -> None:
        if time.monotonic() > deadline:
            raise _WaitedTooLong()
        time.sleep(poll_seconds)

    def _write_manifest(self) -> None:
        manifest = {
            "format": FORMAT_VERSION,
            "key": asdict(self.key),
            "dataset": self.label,
            "digest": self.key.digest(),
            "shape": [self.key.n, self.dim],
            "dtype": self.key.dtype,
            "chunk_rows": self.chunk_rows,
            "chunks": [self._chunk_file(c).read_text().strip() for c in range(self.num_chunks)],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ssdistill": __version__,
        }
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1))

    # ----- reading ----------------------------------------------------------------------------------
    def read(self, verify: bool = True) -> torch.Tensor:
        """The whole table [N, dim] as a tensor backed by the memory-mapped file (read-only)."""
        if not self.is_complete():
            raise RuntimeError(f"cache entry {self.dir} is not complete (or its manifest is damaged); fill it first")
        if verify and self.damaged_chunks():
            raise RuntimeError(f"cache entry {self.dir} is damaged")
        # copy-on-write mapping: pages load lazily and the file can never be modified through the tensor
        return torch.from_numpy(self._memmap("c"))


def open_or_fill(
    entry: Entry,
    compute: Callable[[list[int]], Iterator[torch.Tensor]],
    rank: int = 0,
    world: int = 1,
) -> torch.Tensor:
    """Read a complete, intact entry; otherwise fill (or repair) it first. Returns [N, dim] (stored dtype). A
    file-system error is one line (``StorageError``)."""
    try:
        if entry.manifest_path.is_file() and not entry.is_complete():
            log.warning("cache %s: manifest.json cannot be read or does not match the entry; rebuilding it from the chunks", entry.dir)
            entry.manifest_path.unlink(missing_ok=True)
        if entry.is_complete():
            damaged = entry.damaged_chunks()
            if not damaged:
                return entry.read(verify=False)
            log.warning("cache %s: %d chunk(s) damaged on disk; recomputing them", entry.dir, len(damaged))
    except OSError as exc:
        raise entry.storage_error(exc, "writing" if exc.errno in NO_SPACE + NOT_WRITABLE else "reading") from None
    entry.fill(compute, rank=rank, world=world)
    try:
        return entry.read(verify=False)
    except OSError as exc:
        raise entry.storage_error(exc, "reading") from None


def list_entries(root: str | Path | None = None) -> list[dict]:
    """Entries under the cache root with their key, shape, size and state."""
    base = cache_root(root)
    rows = []
    for folder in sorted(base.iterdir() if base.is_dir() else []):
        if not folder.is_dir():
            continue
        manifest_path = folder / "manifest.json"
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
                rows.append(
                    {
                        "name": folder.name,
                        "state": "complete",
                        "bytes": size,
                        **manifest["key"],
                        "dataset": manifest.get("dataset", ""),
                        "shape": manifest["shape"],
                    }
                )
            except (OSError, ValueError, KeyError, TypeError):  # rebuilt by the next run that opens it; `cache rm` removes it
                rows.append({"name": folder.name, "state": "damaged", "bytes": size})
        else:
            rows.append({"name": folder.name, "state": "partial", "bytes": size})
    return rows


def remove_entries(names: list[str], root: str | Path | None = None) -> list[str]:
    """Delete entries by folder name or unique prefix; ``all`` removes every entry. Returns what was removed."""
    base = cache_root(root)
    existing = [e["name"] for e in list_entries(base)]
    chosen = existing if names == ["all"] else [n for n in existing if any(n == q or n.startswith(q) for q in names)]
    for name in chosen:
        shutil.rmtree(base / name)
    return chosen


class _WaitedTooLong(Exception):
    """The fill waited ``wait_seconds`` for chunks that other live processes claimed (``Entry.wait_error`` says it)."""


def _duration(seconds: float) -> str:
    """A wait for people: ``24 h``, ``30 min``, ``0.5 s``."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


class _ComputeFailed(Exception):
    """Carries an OSError of ``compute`` (an unreadable image, say) past the translation of the cache's own file-system
    errors into ``StorageError``."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _compute_errors_apart(blocks: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    iterator = iter(blocks)
    while True:
        try:
            block = next(iterator)
        except StopIteration:
            return
        except OSError as exc:
            raise _ComputeFailed(exc) from exc
        yield block


def _reserve(fd: int, nbytes: int) -> None:
    """Allocate ``nbytes`` of disk for the new, empty file ``fd`` now, so that a disk without room fails here (ENOSPC)
    and not rows later. Where the file system cannot allocate (no ``posix_fallocate``), the file is written with zeros
    instead."""
    if nbytes <= 0:
        return
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(fd, 0, nbytes)
            return
        except OSError as exc:
            if exc.errno in NO_SPACE or exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
    block = bytes(1 << 20)
    for offset in range(0, nbytes, len(block)):
        _write_at(fd, memoryview(block)[: min(len(block), nbytes - offset)], offset)


def _write_at(fd: int, payload: memoryview, offset: int) -> None:
    """Write all of ``payload`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    while len(payload):
        written = os.pwrite(fd, payload, offset)
        payload, offset = payload[written:], offset + written


def _stale(claim: Path, stale_seconds: float) -> bool:
    """A claim is stale when its process is gone (same host) or it has not been touched for ``stale_seconds``."""
    try:
        host, pid = claim.read_text().split()
        age = time.time() - claim.stat().st_mtime
    except (OSError, ValueError):  # vanished, or half-written by a process killed while creating it
        return not claim.exists() or time.time() - claim.stat().st_mtime > 5
    if host != socket.gethostname():
        return age > stale_seconds
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
