import errno
import json
import multiprocessing as mp
import os
from dataclasses import replace

import pytest
import torch

from ssdistill.cache.neighbours import cached_neighbours
from ssdistill.cache.store import Entry, EntryKey, list_entries, open_or_fill, remove_entries
from ssdistill.errors import StorageError

KEY = EntryKey("t", "fp", "pooled", "original:32:1.0:bilinear", "dfp", n=37, dtype="float32")
DIM = 5


def rows_to_vectors(rows: list[int]) -> torch.Tensor:
    """A deterministic 'teacher': row r -> [sin(r), sin(2r), ...]."""
    r = torch.tensor(rows, dtype=torch.float64).view(-1, 1)
    return torch.sin(r * torch.arange(1, DIM + 1, dtype=torch.float64)).float()


def compute_in_batches(batch: int, fail_after: int | None = None):
    """``compute(rows)`` in blocks of ``batch``; killed when the ``fail_after``-th block (counted over every call, as the
    fill calls it once per chunk) is due."""
    blocks = [0]

    def compute(rows):
        for start in range(0, len(rows), batch):
            if fail_after is not None and blocks[0] == fail_after:
                raise KeyboardInterrupt("killed")
            blocks[0] += 1
            yield rows_to_vectors(rows[start : start + batch])

    return compute


def test_every_key_field_changes_the_entry():
    digests = {KEY.digest()}
    for field, value in [
        ("teacher", "u"),
        ("teacher_fingerprint", "fp2"),
        ("tap", "logits"),
        ("view", "original:64:1.0:bilinear"),
        ("dataset_fingerprint", "dfp2"),
        ("n", 38),
        ("dtype", "float16"),
    ]:
        digests.add(replace(KEY, **{field: value}).digest())
    assert len(digests) == 8


def test_fill_then_read_gives_the_rows_and_a_manifest(tmp_path):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    table = open_or_fill(entry, compute_in_batches(4))
    assert table.shape == (37, DIM) and table.dtype == torch.float32
    assert torch.equal(table, rows_to_vectors(list(range(37))))
    manifest = json.loads(entry.manifest_path.read_text())
    assert manifest["shape"] == [37, DIM] and len(manifest["chunks"]) == 5 and manifest["key"]["n"] == 37
    # a second open reads without computing anything
    assert torch.equal(open_or_fill(entry, compute_in_batches(4, fail_after=0)), table)


def test_fp16_storage(tmp_path):
    entry = Entry(tmp_path, replace(KEY, dtype="float16"), DIM, chunk_rows=8)
    table = open_or_fill(entry, compute_in_batches(8))
    assert table.dtype == torch.float16
    assert torch.allclose(table.float(), rows_to_vectors(list(range(37))), atol=1e-3)
    assert entry.data_path.stat().st_size == 37 * DIM * 2


def test_a_killed_fill_resumes_to_byte_identical_content(tmp_path):
    whole = Entry(tmp_path / "a", KEY, DIM, chunk_rows=8)
    open_or_fill(whole, compute_in_batches(4))
    resumed = Entry(tmp_path / "b", KEY, DIM, chunk_rows=8)
    with pytest.raises(KeyboardInterrupt):
        resumed.fill(compute_in_batches(4, fail_after=5))  # dies inside chunk 2
    assert resumed.done_chunks() == {0, 1} and not resumed.is_complete()
    seen = []

    def recording(rows):
        seen.extend(rows)
        yield from compute_in_batches(4)(rows)

    open_or_fill(resumed, recording)
    assert seen == list(range(16, 37))  # only the missing rows were computed
    assert resumed.data_path.read_bytes() == whole.data_path.read_bytes()


def test_truncated_file_is_detected_and_rebuilt(tmp_path):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    open_or_fill(entry, compute_in_batches(4))
    with open(entry.data_path, "r+b") as handle:
        handle.truncate(100)
    table = open_or_fill(entry, compute_in_batches(4))
    assert torch.equal(table, rows_to_vectors(list(range(37))))


def test_flipped_byte_is_detected_and_only_its_chunk_recomputed(tmp_path):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    open_or_fill(entry, compute_in_batches(4))
    raw = bytearray(entry.data_path.read_bytes())
    raw[8 * DIM * 4 * 3 + 7] ^= 0x10  # a byte inside chunk 3
    entry.data_path.write_bytes(bytes(raw))
    assert entry.damaged_chunks() == [3]
    seen = []

    def recording(rows):
        seen.extend(rows)
        yield from compute_in_batches(4)(rows)

    table = open_or_fill(entry, recording)
    assert seen == list(range(24, 32))
    assert torch.equal(table, rows_to_vectors(list(range(37))))


def _fill_as_rank(root, rank, world):
    entry = Entry(root, KEY, DIM, chunk_rows=8)
    entry.fill(compute_in_batches(4), rank=rank, world=world, poll_seconds=0.05, wait_seconds=60)


def test_two_process_sharded_fill_equals_the_single_process_fill(tmp_path):
    single = Entry(tmp_path / "single", KEY, DIM, chunk_rows=8)
    open_or_fill(single, compute_in_batches(4))
    context = mp.get_context("spawn")
    workers = [context.Process(target=_fill_as_rank, args=(tmp_path / "sharded", r, 2)) for r in (1, 0)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    sharded = Entry(tmp_path / "sharded", KEY, DIM, chunk_rows=8)
    assert sharded.is_complete()
    assert sharded.data_path.read_bytes() == single.data_path.read_bytes()


def test_list_and_remove(tmp_path):
    open_or_fill(Entry(tmp_path, KEY, DIM, chunk_rows=8), compute_in_batches(4))
    partial = Entry(tmp_path, replace(KEY, dataset_fingerprint="x"), DIM, chunk_rows=8)
    with pytest.raises(KeyboardInterrupt):
        partial.fill(compute_in_batches(4, fail_after=1))
    listed = {e["name"]: e for e in list_entries(tmp_path)}
    assert sorted(e["state"] for e in listed.values()) == ["complete", "partial"]
    complete = next(e for e in listed.values() if e["state"] == "complete")
    assert complete["shape"] == [37, DIM] and complete["bytes"] >= 37 * DIM * 4
    assert remove_entries([complete["name"][:12]], tmp_path) == [complete["name"]]
    assert remove_entries(["all"], tmp_path) and list_entries(tmp_path) == []


def _fill_independently(root, log_path):
    """A separate run filling the entry on its own (rank 0 of 1), slowly, recording the rows it computes."""
    import time

    def compute(rows):
        for start in range(0, len(rows), 4):
            time.sleep(0.1)
            with open(log_path, "a") as log:
                log.write(" ".join(str(r) for r in rows[start : start + 4]) + "\n")
            yield rows_to_vectors(rows[start : start + 4])

    Entry(root, KEY, DIM, chunk_rows=8).fill(compute, poll_seconds=0.05, wait_seconds=60)


def test_two_processes_filling_one_entry_compute_each_chunk_once(tmp_path):
    """Two runs that start filling the same entry at once share it through chunk claims: every row is computed by
    exactly one of them, and the content equals a single fill's."""
    single = Entry(tmp_path / "single", KEY, DIM, chunk_rows=8)
    open_or_fill(single, compute_in_batches(4))
    context = mp.get_context("spawn")
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    workers = [context.Process(target=_fill_independently, args=(tmp_path / "shared", log)) for log in logs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    computed = [[int(r) for r in log.read_text().split()] if log.exists() else [] for log in logs]
    assert sorted(computed[0] + computed[1]) == list(range(37))  # each row once between them
    assert computed[0] and computed[1]  # both did part of the work
    shared = Entry(tmp_path / "shared", KEY, DIM, chunk_rows=8)
    assert shared.is_complete() and shared.data_path.read_bytes() == single.data_path.read_bytes()
    assert not list(shared.chunk_dir.glob("*.claim"))


def test_a_claim_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    entry.chunk_dir.mkdir(parents=True)
    (entry.chunk_dir / "000000.claim").write_text(f"{socket.gethostname()} {gone.pid}\n")
    (entry.chunk_dir / "prepare.claim").write_text(f"{socket.gethostname()} {gone.pid}\n")
    table = open_or_fill(entry, compute_in_batches(4))
    assert torch.equal(table, rows_to_vectors(list(range(37)))) and "taking over 000000.claim" in caplog.text


def test_a_damaged_manifest_is_listed_removable_and_rebuilt_without_recomputing(tmp_path, caplog):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    table = open_or_fill(entry, compute_in_batches(4)).clone()
    for damage in ('{"shape": [1, 2], "digest', json.dumps({"shape": [37, DIM], "digest": "another entry's"})):
        entry.manifest_path.write_text(damage)
        assert [e["state"] for e in list_entries(tmp_path)] == ["damaged"]
        assert not entry.is_complete()
        rebuilt = open_or_fill(entry, compute_in_batches(4, fail_after=0))  # nothing may be computed
        assert torch.equal(rebuilt, table) and entry.is_complete() and "rebuilding it from the chunks" in caplog.text
    entry.manifest_path.write_text("not json")
    assert remove_entries(["all"], tmp_path) == [entry.dir.name] and list_entries(tmp_path) == []


# ----- a full disk, a read-only folder, an I/O error: one line, nothing stale ---------------------------------------


def _raise(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def test_no_room_for_an_entry_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "posix_fallocate", _raise(errno.ENOSPC))
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    with pytest.raises(StorageError) as caught:
        entry.fill(compute_in_batches(4))
    message = str(caught.value)
    assert message.startswith(f"the teacher cache entry t (37 x {DIM} float32) needs 740 B in {tmp_path} (no space left on the device, ")
    assert message.endswith(
        "; free space there, or point the cache at another folder (cache.dir=PATH, `ssdistill cache --dir PATH` or "
        "$SSDISTILL_CACHE_DIR), or set cache.enabled=false"
    )
    assert "\n" not in message and list(tmp_path.iterdir()) == []  # no claim, no staging file, no entry folder


def test_a_disk_that_fills_mid_fill_releases_its_claims_and_the_fill_resumes(tmp_path, monkeypatch):
    whole = Entry(tmp_path / "whole", KEY, DIM, chunk_rows=8)
    open_or_fill(whole, compute_in_batches(4))
    entry = Entry(tmp_path / "b", KEY, DIM, chunk_rows=8)
    writes, pwrite = [0], os.pwrite

    def filling_up(fd, data, offset):  # chunks 0 and 1 fit, then the disk is full (a file system without fallocate)
        writes[0] += 1
        if writes[0] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", filling_up)
    with pytest.raises(StorageError, match=rf"needs more space in {tmp_path / 'b'} \(no space left on the device, "):
        entry.fill(compute_in_batches(4))
    assert entry.done_chunks() == {0, 1} and not list(entry.chunk_dir.glob("*.claim")) and not list(entry.dir.glob(".*"))
    monkeypatch.setattr(os, "pwrite", pwrite)
    open_or_fill(entry, compute_in_batches(4))
    assert entry.data_path.read_bytes() == whole.data_path.read_bytes()


def test_a_quota_and_a_read_only_folder_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "posix_fallocate", _raise(errno.EDQUOT))
    with pytest.raises(StorageError, match=rf"needs 740 B in {tmp_path} \(the disk quota is exceeded\); free space there"):
        Entry(tmp_path, KEY, DIM, chunk_rows=8).fill(compute_in_batches(4))
    monkeypatch.setattr(os, "posix_fallocate", _raise(errno.EROFS))
    with pytest.raises(
        StorageError,
        match=rf"^cannot write the teacher cache entry t \(37 x {DIM} float32\) in {tmp_path}: the folder "
        r"is not writable \(Read-only file system\); make the folder writable, or point the cache",
    ):
        Entry(tmp_path, KEY, DIM, chunk_rows=8).fill(compute_in_batches(4))


def test_an_io_error_reading_an_entry_is_one_line(tmp_path, monkeypatch):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    open_or_fill(entry, compute_in_batches(4))
    real_open = open

    def failing_open(path, *args, **kwargs):  # a network file system that answers EIO
        if str(path) == str(entry.data_path):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(StorageError) as caught:
        open_or_fill(entry, compute_in_batches(4, fail_after=0))
    assert str(caught.value) == (
        f"cannot read the teacher cache entry t (37 x {DIM} float32) in {tmp_path} (Input/output error); check the disk, or remove "
        f"the entry (`ssdistill cache rm {entry.dir.name}`) so the next run recomputes it"
    )


def test_on_a_real_full_disk_and_a_read_only_one(tmp_path, caplog):
    """A small tmpfs: an entry larger than the disk is refused in one line with nothing left; a complete entry in a
    cache that became read-only still reads, its derived results are then only not kept; a fill there is one line."""
    from integration.test_full_disk import mounted_tmpfs, remount

    big = replace(KEY, n=300)
    with mounted_tmpfs(tmp_path / "disk", "64k") as disk:
        with pytest.raises(StorageError, match=rf"needs 960 kB in {disk} \(no space left on the device, 65.5 kB free\)"):
            Entry(disk, big, 800, chunk_rows=64).fill(compute_in_batches(4))
        assert list(disk.iterdir()) == []
        entry = Entry(disk, KEY, DIM, chunk_rows=8)
        table = open_or_fill(entry, compute_in_batches(4)).clone()
        remount(disk, "ro")
        assert torch.equal(open_or_fill(entry, compute_in_batches(4, fail_after=0)), table)
        assert cached_neighbours(entry, 3).shape == (37, 3) and "is not writable (Read-only file system)" in caplog.text
        with pytest.raises(StorageError, match=r"the folder is not writable \(Read-only file system\)"):
            Entry(disk, replace(KEY, n=38), DIM, chunk_rows=8).fill(compute_in_batches(4))


def test_a_claim_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    entry.chunk_dir.mkdir(parents=True)
    monkeypatch.setattr(os, "fdopen", _raise(errno.ENOSPC))
    with pytest.raises(StorageError, match="no space left on the device"):
        entry.fill(compute_in_batches(4))
    assert list(tmp_path.iterdir()) == []


def test_an_io_error_writing_an_entry_is_one_line_and_keeps_what_was_finished(tmp_path, monkeypatch):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    writes, pwrite = [0], os.pwrite

    def failing(fd, data, offset):  # a network file system that fails after the first chunk
        writes[0] += 1
        if writes[0] > 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", failing)
    with pytest.raises(StorageError) as caught:
        entry.fill(compute_in_batches(4))
    assert str(caught.value) == (
        f"cannot write the teacher cache entry t (37 x {DIM} float32) in {tmp_path} (Input/output error); check the disk, or point "
        "the cache at another folder (cache.dir=PATH, `ssdistill cache --dir PATH` or $SSDISTILL_CACHE_DIR), or set cache.enabled=false"
    )
    assert entry.done_chunks() == {0} and not list(entry.chunk_dir.glob("*.claim"))


def test_an_os_error_of_the_teacher_input_is_not_called_a_cache_error(tmp_path):
    """An unreadable image (PIL raises OSError subclasses) is the caller's error, unchanged."""
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)

    def unreadable(rows):
        yield rows_to_vectors(rows[:4])
        raise OSError("image file is truncated (3 bytes not processed)")

    with pytest.raises(OSError, match="^image file is truncated") as caught:
        entry.fill(unreadable)
    assert not isinstance(caught.value, StorageError) and not list(entry.chunk_dir.glob("*.claim"))


def test_a_file_system_without_fallocate_gets_the_space_written(tmp_path, monkeypatch):
    whole = Entry(tmp_path / "a", KEY, DIM, chunk_rows=8)
    open_or_fill(whole, compute_in_batches(4))
    monkeypatch.setattr(os, "posix_fallocate", _raise(errno.EOPNOTSUPP))
    entry = Entry(tmp_path / "b", KEY, DIM, chunk_rows=8)
    open_or_fill(entry, compute_in_batches(4))
    assert entry.data_path.read_bytes() == whole.data_path.read_bytes()
    monkeypatch.delattr(os, "posix_fallocate")  # macOS has none
    entry = Entry(tmp_path / "c", KEY, DIM, chunk_rows=8)
    open_or_fill(entry, compute_in_batches(4))
    assert entry.data_path.read_bytes() == whole.data_path.read_bytes()


def test_a_fill_that_waits_too_long_on_other_processes_is_one_line(tmp_path):
    """Chunks claimed by a live process that never finishes them: after wait_seconds the fill gives up in one line (a
    StorageError: the CLI's `error: ...`, exit 2) naming the process that holds a claim, not a TimeoutError that the
    CLI would call a folder that is not writable or full."""
    import socket

    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    entry.chunk_dir.mkdir(parents=True)
    for chunk in range(entry.num_chunks):  # this test's own pid: alive, so never taken over as stale
        (entry.chunk_dir / f"{chunk:06d}.claim").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    with pytest.raises(StorageError) as caught:
        entry.fill(compute_in_batches(4, fail_after=0), wait_seconds=0.2, poll_seconds=0.05)
    assert str(caught.value) == (
        f"other processes did not finish their part of the teacher cache entry t in {tmp_path} within 0.2 s (chunk 000000 "
        f"is claimed by process {os.getpid()} on {socket.gethostname()}); if they hang, stop them and run again (the "
        "finished chunks are kept), or set cache.enabled=false"
    )
    assert len(list(entry.chunk_dir.glob("*.claim"))) == entry.num_chunks  # the other process's claims stay
